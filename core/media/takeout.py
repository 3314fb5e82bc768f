"""Google Photos Takeout's JSON sidecars: which picture (or video) a JSON file describes, by name,
and the facts in it.

A Takeout export puts each item's metadata in a JSON file beside it, named after it:

- `IMG_1234.jpg.json`, and in exports since late 2024 `IMG_1234.jpg.supplemental-metadata.json`;
- names cut short: the JSON's name, `.json` aside, is cut at 46 characters (a few exports cut
  later), so `.supplemental-metadata` may lose its tail (`IMG_20190101_123456.jpg.supplemen.json`)
  or go altogether with the end of the item's own name (`Screenshot_2022…_com.snapchat.androi.json`);
- a duplicate name's counter moves to the end: `IMG_1234(1).jpg` ↔ `IMG_1234.jpg(1).json`
  (`IMG_1234.jpg.supplemental-metadata(1).json`);
- an edited copy has none of its own: `IMG_1234-edited.jpg` is described by `IMG_1234.jpg`'s.

Names are matched against the media files of the folder, case aside. A cut name matches the one
media file whose name starts with what is left of it (a picture before a video); where several
could be meant, none is.

The facts: `photoTakenTime` (seconds since 1970, UTC), `geoData` (else `geoDataExif`; 0.0/0.0
means none), `description` (what was typed in Google Photos), `title` (the file's name as uploaded,
kept only when it is not a file name) and the names in `people`. JSON comes from untrusted
files: anything that is not such an object, or over `MAX_JSON_BYTES`, reads as no facts; nothing
here raises.
"""

from __future__ import annotations

import bisect
import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from core.media.library import extension, kind_of
from core.media.xmp import XmpFacts, union_keywords

SUPPLEMENTAL = "supplemental-metadata"
CUT_FROM = 46  # a JSON file whose whole name is shorter was not cut
MAX_JSON_BYTES = 1 << 20  # Takeout's are a few hundred bytes
MAX_PEOPLE = 100
MAX_NAME = 100  # as a person's name (`core.store.people.MAX_NAME`)
EDITED = "-edited"
_COUNTER = re.compile(r"^(.*?)(\(\d{1,4}\))$", re.DOTALL)


@dataclass(frozen=True)
class TakeoutFacts:
    taken_at: datetime | None = None  # UTC, without its zone: Takeout does not say where it was
    latitude: float | None = None
    longitude: float | None = None
    title: str | None = None
    description: str | None = None
    people: tuple[str, ...] = ()


def is_json(name: str) -> bool:
    return extension(name) == "json"


def _split_counter(name: str) -> tuple[str, str]:
    """`IMG_1234(1).jpg` → (`IMG_1234.jpg`, `(1)`); a name without a counter → (name, "")."""
    stem, dot, ext = name.rpartition(".")
    if not dot:
        stem, ext = name, ""
    found = _COUNTER.match(stem)
    if found is None or not found[1]:
        return name, ""
    return found[1] + (f".{ext}" if dot else ""), found[2]


class MediaNames:
    """The media files of one folder, to find the one a Takeout JSON names."""

    def __init__(self, names: Iterable[str]) -> None:
        self._by_key = {n.casefold(): n for n in names}
        # (name, "", name) and, for a name that ends in a counter, (name without it, the counter, name):
        # sorted, so a cut name's candidates are a range
        entries = {(key, "", name) for key, name in self._by_key.items()}
        entries |= {(*_split_counter(key), name) for key, name in self._by_key.items()}
        self._plain = sorted(entries)
        self._keys = [plain for plain, _, _ in self._plain]

    def described_by(self, json_name: str) -> str | None:
        """The media file `json_name` describes, or None when it names none here (or several)."""
        if not is_json(json_name):
            return None
        base, counter = json_name[: -len(".json")].casefold(), ""
        if (numbered := _COUNTER.match(base)) is not None and numbered[1]:  # `IMG.jpg(1).json`, `…metadata(1).json`
            base, counter = numbered[1], numbered[2]
        candidates = [base.rstrip(".")]
        head, dot, tail = base.rpartition(".")
        if dot and head and SUPPLEMENTAL.startswith(tail):  # `.supplemental-metadata`, whole or cut
            candidates.insert(0, head.rstrip("."))
        for candidate in candidates:
            if (found := self._exact(candidate, counter)) is not None:
                return found
        if len(json_name) < CUT_FROM:
            return None
        for candidate in candidates:
            if (found := self._cut(candidate, counter)) is not None:
                return found
        return None

    def _exact(self, name: str, counter: str) -> str | None:
        if not counter:
            return self._by_key.get(name)
        i = bisect.bisect_left(self._keys, name)
        for plain, their_counter, real in self._plain[i:]:
            if plain != name:
                break
            if their_counter == counter:
                return real
        return self._by_key.get(name + counter)

    def _cut(self, start: str, counter: str) -> str | None:
        """The one media file whose name (its counter aside) starts with `start`; a picture before
        a video or a RAW where both could be meant."""
        i = bisect.bisect_left(self._keys, start)
        found: list[str] = []
        for plain, their_counter, real in self._plain[i:]:
            if not plain.startswith(start):
                break
            if their_counter == counter and real not in found:
                found.append(real)
        if len(found) > 1:
            found = [name for name in found if kind_of(name) == "picture"]
        return found[0] if len(found) == 1 else None

    def edited_of(self, name: str) -> str | None:
        """`IMG_1234.jpg` for `IMG_1234-edited.jpg` when it is here: the original whose JSON it shares."""
        stem, dot, ext = name.rpartition(".")
        if not dot or not stem.casefold().endswith(EDITED):
            return None
        return self._by_key.get(f"{stem[: -len(EDITED)]}.{ext}".casefold())

    def edited_copies(self, name: str) -> tuple[str, ...]:
        """The edited copies that share `name`'s JSON (`IMG_1234-edited.jpg` for `IMG_1234.jpg`)."""
        stem, dot, ext = name.rpartition(".")
        copy = self._by_key.get(f"{stem}{EDITED}.{ext}".casefold()) if dot else None
        return (copy,) if copy is not None else ()


def parse_takeout(data: bytes | None) -> TakeoutFacts | None:
    """The facts of one Takeout JSON sidecar; None for anything that is not one."""
    if not data or len(data) > MAX_JSON_BYTES:
        return None
    try:
        document = json.loads(data)
    except (ValueError, RecursionError):
        return None
    if not isinstance(document, dict) or not {"photoTakenTime", "geoData", "title", "people"} & document.keys():
        return None
    position = _position(document.get("geoData")) or _position(document.get("geoDataExif"))
    title = _text(document.get("title"), 1000)
    return TakeoutFacts(
        taken_at=_moment(document.get("photoTakenTime")),
        latitude=position[0] if position else None,
        longitude=position[1] if position else None,
        title=title if title is not None and kind_of(title) == "other" else None,
        description=_text(document.get("description"), 10_000),
        people=_names(document.get("people")),
    )


def _moment(value: Any) -> datetime | None:
    """`{"timestamp": "1577880000", "formatted": "…"}`: the moment, UTC; 0 is Takeout's "unknown"."""
    if not isinstance(value, dict):
        return None
    try:
        seconds = int(str(value.get("timestamp", "")).strip())
        return datetime.fromtimestamp(seconds, UTC).replace(tzinfo=None) if seconds else None
    except (ValueError, OverflowError, OSError):
        return None


def _position(value: Any) -> tuple[float, float] | None:
    if not isinstance(value, dict):
        return None
    try:
        latitude, longitude = float(value["latitude"]), float(value["longitude"])
    except (KeyError, TypeError, ValueError):
        return None
    if not (math.isfinite(latitude) and math.isfinite(longitude)) or (latitude == 0.0 and longitude == 0.0):
        return None
    return (latitude, longitude) if abs(latitude) <= 90 and abs(longitude) <= 180 else None


def _text(value: Any, limit: int) -> str | None:
    return (value.strip()[:limit] or None) if isinstance(value, str) else None


def _names(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        return ()
    names = []
    for person in value[: MAX_PEOPLE * 2]:
        name = person.get("name") if isinstance(person, dict) else None
        if isinstance(name, str) and (name := " ".join(name.split())[:MAX_NAME]):
            names.append(name)
    return union_keywords(tuple(names))[:MAX_PEOPLE]


def under_file(own: XmpFacts, takeout: TakeoutFacts) -> XmpFacts:
    """The file's own facts with its Takeout JSON's filling in: the date and the position where the
    file has none (the camera's EXIF wins), the description over the file's (it is what was typed
    in Google Photos), the title where the file has none, and the people's names as keywords."""
    has_position = own.latitude is not None and own.longitude is not None
    return XmpFacts(
        keywords=union_keywords(own.keywords, takeout.people),
        title=own.title or takeout.title,
        description=takeout.description or own.description,
        rating=own.rating,
        taken_at=own.taken_at or takeout.taken_at,
        latitude=own.latitude if has_position else takeout.latitude,
        longitude=own.longitude if has_position else takeout.longitude,
    )
