"""EXIF facts, the same for every format that carries EXIF: orientation, date taken, camera, GPS
position and Apple's Live Photo content identifier.

Damaged metadata reads as absent: it says nothing about whether the picture itself can be shown,
so nothing here raises.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from PIL import Image

T = TypeVar("T")

EXIF_IFD = 0x8769
GPS_IFD = 0x8825
_TAG_DATETIME_ORIGINAL = 36867
_TAG_DATETIME_DIGITIZED = 36868
_TAG_DATETIME = 306
_TAG_MODEL = 272
_TAG_ORIENTATION = 274
_TAG_MAKER_NOTE = 0x927C
_GPS_LATITUDE_REF, _GPS_LATITUDE, _GPS_LONGITUDE_REF, _GPS_LONGITUDE = 1, 2, 3, 4
# Apple's maker note: "Apple iOS\0", a version, "MM", then a big-endian IFD whose offsets count
# from the note's start; tag 0x11 is the identifier a Live Photo's still and movie share
_APPLE_NOTE = b"Apple iOS\x00"
_APPLE_CONTENT_ID = 0x0011
# TIFF-shaped RAW files whose first four bytes are not TIFF's own (Olympus ORF, Panasonic RW2) but
# whose IFDs are plain little-endian TIFF: read with TIFF's signature in their place
_TIFF_SIGNATURES = (b"II*\x00", b"MM\x00*")
_TIFF_LIKE = (b"IIRO", b"IIRS", b"IIU\x00", b"MMOR")

# EXIF orientation → the transposition that shows the picture upright
UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
SIDEWAYS = (5, 6, 7, 8)


@dataclass(frozen=True)
class ExifFacts:
    orientation: int = 1
    taken_at: datetime | None = None
    camera: str | None = None
    latitude: float | None = None
    longitude: float | None = None
    content_id: str | None = None

    def or_else(self, other: ExifFacts) -> ExifFacts:
        """These facts, with the ones missing here taken from `other` (a second source)."""
        return ExifFacts(
            orientation=self.orientation if self.orientation != 1 else other.orientation,
            taken_at=self.taken_at or other.taken_at,
            camera=self.camera or other.camera,
            latitude=self.latitude if self.latitude is not None else other.latitude,
            longitude=self.longitude if self.latitude is not None else other.longitude,
            content_id=self.content_id or other.content_id,
        )


def exif_facts(exif: Image.Exif | None) -> ExifFacts:
    if exif is None:
        return ExifFacts()
    orientation = _or_default(lambda: exif.get(_TAG_ORIENTATION, 1), 1)
    no_position: tuple[float | None, float | None] = (None, None)
    position = _or_default(lambda: _position(exif), no_position)
    return ExifFacts(
        orientation=orientation if isinstance(orientation, int) and orientation in range(1, 9) else 1,
        taken_at=_or_default(lambda: _taken_at(exif), None),
        camera=_or_default(lambda: _camera(exif), None),
        latitude=position[0],
        longitude=position[1],
        content_id=_or_default(lambda: _apple_content_id(exif), None),
    )


def image_exif(image: Image.Image) -> Image.Exif | None:
    try:
        return image.getexif()
    except Exception:
        return None


def tiff_exif(data: bytes) -> Image.Exif | None:
    """The first IFD of a TIFF-shaped file (DNG and most camera RAW formats) as EXIF, with its
    EXIF and GPS sub-IFDs reachable; None for files of another shape."""
    head = data[:4]
    if head in _TIFF_LIKE:
        data = (b"II*\x00" if head.startswith(b"II") else b"MM\x00*") + data[4:]
    elif head not in _TIFF_SIGNATURES:
        return None
    try:
        exif = Image.Exif()
        exif.load(data)
        return exif
    except Exception:
        return None


def _or_default(read: Callable[[], T], default: T) -> T:
    try:
        return read()
    except Exception:
        return default


def parse_exif_date(raw: Any) -> datetime | None:
    if isinstance(raw, bytes):
        raw = raw.decode("ascii", "ignore")
    if not isinstance(raw, str):
        return None
    try:
        return datetime.strptime(raw.strip("\x00 ")[:19], "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return None


def _taken_at(exif: Image.Exif) -> datetime | None:
    empty: dict[int, Any] = {}
    sub = _or_default(lambda: exif.get_ifd(EXIF_IFD), empty)
    # a DNG or CR3 block may keep DateTimeOriginal in the first IFD itself
    for raw in (
        sub.get(_TAG_DATETIME_ORIGINAL),
        exif.get(_TAG_DATETIME_ORIGINAL),
        sub.get(_TAG_DATETIME_DIGITIZED),
        exif.get(_TAG_DATETIME),
    ):
        if (taken := parse_exif_date(raw)) is not None:
            return taken
    return None


def _camera(exif: Image.Exif) -> str | None:
    raw = exif.get(_TAG_MODEL)
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "ignore")
    text = str(raw).strip("\x00 ") if raw else ""
    return text or None


def _position(exif: Image.Exif) -> tuple[float | None, float | None]:
    gps = exif.get_ifd(GPS_IFD)
    if not gps:
        return None, None
    latitude = _degrees(gps.get(_GPS_LATITUDE), gps.get(_GPS_LATITUDE_REF), "S", 90)
    longitude = _degrees(gps.get(_GPS_LONGITUDE), gps.get(_GPS_LONGITUDE_REF), "W", 180)
    if latitude is None or longitude is None:
        return None, None
    return latitude, longitude


def gps_position(gps: dict[int, Any]) -> tuple[float | None, float | None]:
    """(latitude, longitude) from a GPS IFD read on its own (CR3 keeps it in a separate block)."""
    try:
        latitude = _degrees(gps.get(_GPS_LATITUDE), gps.get(_GPS_LATITUDE_REF), "S", 90)
        longitude = _degrees(gps.get(_GPS_LONGITUDE), gps.get(_GPS_LONGITUDE_REF), "W", 180)
    except Exception:
        return None, None
    return (latitude, longitude) if latitude is not None and longitude is not None else (None, None)


def _degrees(value: Any, ref: Any, negative: str, limit: float) -> float | None:
    """Degrees, minutes, seconds (rationals) and a hemisphere letter → signed decimal degrees."""
    if not isinstance(value, tuple | list) or not 1 <= len(value) <= 3:
        return None
    parts = [float(v) for v in value]
    if any(not math.isfinite(p) or p < 0 for p in parts):
        return None
    degrees = sum(p / 60**i for i, p in enumerate(parts))
    if isinstance(ref, bytes):
        ref = ref.decode("ascii", "ignore")
    if isinstance(ref, str) and ref.strip("\x00 ").upper() == negative:
        degrees = -degrees
    return degrees if abs(degrees) <= limit else None


def _apple_content_id(exif: Image.Exif) -> str | None:
    note = exif.get_ifd(EXIF_IFD).get(_TAG_MAKER_NOTE)
    return apple_content_id(note) if isinstance(note, bytes) else None


def apple_content_id(note: bytes) -> str | None:
    """The ContentIdentifier from Apple's maker note, or None."""
    if not note.startswith(_APPLE_NOTE) or len(note) < 16:
        return None
    order = ">" if note[12:14] == b"MM" else "<"
    (count,) = struct.unpack_from(f"{order}H", note, 14)
    for i in range(min(count, 256)):
        entry = 16 + 12 * i
        if entry + 12 > len(note):
            break
        tag, kind, length, value = struct.unpack_from(f"{order}HHI4s", note, entry)
        if tag != _APPLE_CONTENT_ID or kind != 2:
            continue
        if length <= 4:
            raw = value[:length]
        else:
            (offset,) = struct.unpack(f"{order}I", value)
            raw = note[offset : offset + length]
        text = raw.split(b"\x00", 1)[0].decode("ascii", "ignore").strip()
        return text or None
    return None
