"""The places in the collection, and place names as filters.

The indexer stores each picture's place (`core.media.places`) in four columns: locality, city, region
and country. A place *name* is what users ask for: "Lisbon" is a city and a region, "Paris" may be
a city in France and one in Texas; a name matches a picture when any of its four columns holds it,
in any spelling the collection has that compares equal (`core.media.places.place_key`: "Zürich" and
"Zurich"). Only names that occur in the collection are known, so an ordinary word is never taken
for a place.

Several places in one query are alternatives ("Lisbon Tokyo": pictures from either), except
where one lies within another in the collection: then both must hold ("Paris, France" leaves
out Paris, Texas; "Lisbon, Portugal" is Lisbon).
"""

from __future__ import annotations

import functools
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from core.media.places import COUNTRY_ALIASES, KINDS, PLACE_COLUMNS, PLACE_NAMES_SQL, place_key
from core.store.db import database_key
from core.store.freshness import UntilIndexChanges
from core.store.model_state import model_table

PLACES_MAX_AGE = 30.0  # seconds, as for folders: something other than the indexer may write


@dataclass(frozen=True)
class PlaceEntry:
    """One place name of the collection and the pictures it matches."""

    name: str  # as the collection spells it, at its broadest kind
    kind: str  # the broadest column it is in: country, region, city or locality
    images: int
    spellings: tuple[str, ...]  # every spelling of it in the collection
    countries: tuple[str, ...]  # where it lies, most pictures first
    within: frozenset[str]  # the keys of the broader names it lies within

    @property
    def key(self) -> str:
        return place_key(self.name)

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "countries": list(self.countries), "images": self.images}


class PlaceIndex:
    """The place names of the collection, most pictures first."""

    def __init__(self, entries: Sequence[PlaceEntry]) -> None:
        self.entries = sorted(entries, key=lambda e: (-e.images, e.key))
        self._by_key = {e.key: e for e in self.entries}

    def named(self, words: str) -> PlaceEntry | None:
        key = place_key(words)
        if not key:
            return None
        found = self._by_key.get(key)
        alias = COUNTRY_ALIASES.get(key)
        return found if found is not None or alias is None else self._by_key.get(place_key(alias))


PlaceCache = UntilIndexChanges[PlaceIndex]


def place_cache() -> PlaceCache:
    return UntilIndexChanges(PLACES_MAX_AGE)


def places_of(
    conn: psycopg.Connection[Any],
    model: str,
    cache: PlaceCache,
    stamp_of: Callable[[], datetime | None] | None = None,
) -> PlaceIndex:
    """The collection's places. Counting reads every row with a place; every query with a bare word
    asks (is it a place?), hence the cache."""
    return cache.get(conn, (database_key(conn), model), lambda: _count_places(conn, model), stamp_of)


def lazy_places(
    conn: psycopg.Connection[Any],
    model: str,
    cache: PlaceCache,
    stamp_of: Callable[[], datetime | None] | None = None,
) -> Callable[[], PlaceIndex]:
    """The collection's places, read on the first call only (a query of no words never asks)."""
    return functools.cache(lambda: places_of(conn, model, cache, stamp_of))


def _count_places(conn: psycopg.Connection[Any], model: str) -> PlaceIndex:
    columns = sql.SQL(", ").join(sql.Identifier(c) for c in PLACE_COLUMNS)
    query = sql.SQL(
        "SELECT {columns}, count(*) FROM {table} WHERE model = %s AND place_city IS NOT NULL GROUP BY {columns}"
    ).format(columns=columns, table=sql.Identifier(model_table(model)))
    images: Counter[str] = Counter()
    kinds: dict[str, int] = {}
    spellings: dict[str, Counter[str]] = defaultdict(Counter)
    countries: dict[str, Counter[str]] = defaultdict(Counter)
    within: dict[str, set[str]] = defaultdict(set)
    for *names, count in conn.execute(query, (model,)):
        keys = [place_key(n) if n else "" for n in names]
        for level, (name, key) in enumerate(zip(names, keys)):
            if not key:
                continue
            spellings[key][name] += count
            kinds[key] = max(kinds.get(key, level), level)
            within[key].update(k for k in keys[level + 1 :] if k and k != key)
        for key in {k for k in keys if k}:
            images[key] += count
            countries[key][names[-1]] += count
    entries = [
        PlaceEntry(
            name=spellings[key].most_common(1)[0][0],
            kind=KINDS[kinds[key]],
            images=n,
            spellings=tuple(sorted(spellings[key])),
            countries=tuple(c for c, _ in countries[key].most_common()),
            within=frozenset(within[key] - {key}),
        )
        for key, n in images.items()
    ]
    return PlaceIndex(entries)


@dataclass(frozen=True)
class PlaceMatch:
    """Pictures in one of `alternatives`; an alternative is a list of names that must all hold,
    each name as the spellings that stand for it."""

    alternatives: tuple[tuple[tuple[str, ...], ...], ...]


def match_places(index: PlaceIndex, names: Sequence[str]) -> PlaceMatch:
    """The filter for the place names of one query (or the one of `place=`): alternatives, but a
    name that another one lies within narrows it instead. A name the collection does not have is
    kept as it is: it matches only that exact spelling (no pictures, as a rule)."""
    entries: dict[str, PlaceEntry] = {}
    for name in names:
        entry = index.named(name) or PlaceEntry(name, "unknown", 0, (name,), (), frozenset())
        entries.setdefault(entry.key, entry)
    found = list(entries.values())
    narrowest = [e for e in found if not any(e.key in other.within for other in found if other is not e)]
    alternatives = tuple(
        tuple(o.spellings for o in [e, *(o for o in found if o.key in e.within)]) for e in narrowest or found
    )
    return PlaceMatch(alternatives)


def place_conditions(matches: Sequence[PlaceMatch], params: dict[str, Any]) -> list[sql.Composable]:
    """One SQL condition per match (all must hold), its parameters added to `params`."""
    conditions: list[sql.Composable] = []
    for m, match in enumerate(matches):
        alternatives = []
        for a, names in enumerate(match.alternatives):
            all_of = []
            for n, spellings in enumerate(names):
                param = f"place_{m}_{a}_{n}"
                params[param] = list(spellings)
                all_of.append(sql.SQL(PLACE_NAMES_SQL + " && %({})s::text[]").format(sql.SQL(param)))
            alternatives.append(sql.SQL("(") + sql.SQL(" AND ").join(all_of) + sql.SQL(")"))
        conditions.append(sql.SQL("(") + sql.SQL(" OR ").join(alternatives) + sql.SQL(")"))
    return conditions
