"""Camera RAW files (DNG, CR2, CR3, NEF, NRW, ARW, RAF, ORF, RW2, PEF, SRW) through LibRaw.

The cheapest faithful picture of a RAW file is the preview the camera embedded (a JPEG, or a
bitmap) when it is big enough; otherwise a half-size demosaic, which costs a quarter of a full one
and is still far bigger than any model's input. The facts come from the file's own TIFF IFDs where
it is TIFF-shaped, from CR3's metadata boxes, and from the preview's EXIF for the rest (RAF).
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterator
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from core.errors import ImageError, first_line
from core.media.codecs import iso_boxes, open_picture
from core.media.exif import UPRIGHT, ExifFacts, exif_facts, gps_position, image_exif, tiff_exif

if TYPE_CHECKING:
    import rawpy

RAW_EXTENSIONS: tuple[str, ...] = ("dng", "cr2", "cr3", "nef", "nrw", "arw", "raf", "orf", "rw2", "pef", "srw")

# LibRaw's `flip` → the EXIF orientation it stands for (LibRaw maps EXIF 1..8 to 0 1 3 2 4 6 7 5)
_FLIP_TO_ORIENTATION = {0: 1, 1: 2, 3: 3, 2: 4, 4: 5, 6: 6, 7: 7, 5: 8}
_TAG_XMP = 700
_CR3_METADATA = bytes.fromhex("85c0b687820f11e08111f4ce462b6a48")
# what LibRaw's demosaic is asked for: the camera's white balance, sRGB's tone curve, and no
# brightening by histogram (which would make a dark picture lighter than it was taken)
_DEMOSAIC: dict[str, Any] = {"use_camera_wb": True, "no_auto_bright": True, "gamma": (2.4, 12.92), "output_bps": 8}


def is_raw_name(name: str) -> bool:
    return "." in name and name.rsplit(".", 1)[-1].lower() in RAW_EXTENSIONS


class RawFile:
    """One RAW file, opened (header only) until closed; `picture` decodes what it needs."""

    def __init__(self, data: bytes, fmt: str) -> None:
        import rawpy

        self._data = data
        self.format = fmt
        self._thumb: rawpy.Thumbnail | None = None
        self._looked_for_thumb = False
        try:
            self._raw: rawpy.RawPy = rawpy.imread(io.BytesIO(data))
            sizes = self._raw.sizes
        except rawpy.LibRawFileUnsupportedError:
            raise ImageError(f"not a {fmt.upper()} file LibRaw can read (unknown format or corrupt header)") from None
        except rawpy.LibRawError as exc:
            raise ImageError(f"RAW file is truncated or unreadable ({_reason(exc)})") from None
        self.orientation = _FLIP_TO_ORIENTATION.get(sizes.flip, 1)
        self.stored_size = (sizes.width, sizes.height)
        self.size = self.stored_size[::-1] if sizes.flip & 4 else self.stored_size
        self.sensor_pixels = sizes.raw_width * sizes.raw_height

    def __enter__(self) -> RawFile:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._raw.close()

    def facts(self) -> ExifFacts:
        """Date, camera and GPS from the file; orientation as LibRaw applies it."""
        facts = _file_facts(self._data)
        if facts.taken_at is None or facts.camera is None:
            facts = facts.or_else(self._preview_facts())
        if facts.taken_at is None:
            facts = facts.or_else(ExifFacts(taken_at=self._timestamp()))
        return ExifFacts(
            orientation=self.orientation,
            taken_at=facts.taken_at,
            camera=facts.camera,
            latitude=facts.latitude,
            longitude=facts.longitude,
        )

    def xmp_packet(self) -> bytes | None:
        """The XMP packet a DNG (or another TIFF-shaped RAW file) keeps in its first IFD."""
        exif = tiff_exif(self._data)
        packet = exif.get(_TAG_XMP) if exif is not None else None
        return packet if isinstance(packet, bytes) else None

    def picture(self, need: tuple[int, int], max_pixels: int) -> Image.Image:
        """Upright RGB at least `need` (width, height as displayed) where the file is that big:
        the embedded preview if it is, else a half-size demosaic, else a full one."""
        preview = self._preview(need, max_pixels)
        if preview is not None:
            return preview
        if self.sensor_pixels > max_pixels:
            raise ImageError.too_large(*self.stored_size, max_pixels)
        half = (self.size[0] // 2, self.size[1] // 2)
        try:
            rgb = self._raw.postprocess(half_size=half[0] >= need[0] and half[1] >= need[1], **_DEMOSAIC)
        except MemoryError:
            raise
        except Exception as exc:
            raise ImageError(f"RAW data is truncated or corrupt ({_reason(exc)})") from None
        return Image.fromarray(np.ascontiguousarray(rgb), "RGB")

    def _thumbnail(self) -> rawpy.Thumbnail | None:
        if not self._looked_for_thumb:
            self._looked_for_thumb = True
            try:
                self._thumb = self._raw.extract_thumb()
            except Exception:  # no preview, one LibRaw cannot unpack, or a damaged one: demosaic
                self._thumb = None
        return self._thumb

    def _preview_image(self) -> Image.Image | None:
        import rawpy

        thumb = self._thumbnail()
        if thumb is None:
            return None
        if thumb.format == rawpy.ThumbFormat.JPEG and isinstance(thumb.data, bytes):
            try:
                return open_picture(io.BytesIO(thumb.data))
            except Exception:
                return None
        if isinstance(thumb.data, np.ndarray) and thumb.data.ndim == 3 and thumb.data.shape[2] == 3:
            return Image.fromarray(np.ascontiguousarray(thumb.data), "RGB")
        return None

    def _preview(self, need: tuple[int, int], max_pixels: int) -> Image.Image | None:
        image = self._preview_image()
        if image is None:
            return None
        width, height = image.size
        shown = (height, width) if self.orientation in (5, 6, 7, 8) else (width, height)
        if shown[0] < need[0] or shown[1] < need[1]:
            return None
        if width * height > max_pixels:
            raise ImageError.too_large(width, height, max_pixels)
        try:
            if image.format == "JPEG":
                image.draft("RGB", (need[1], need[0]) if shown != (width, height) else need)
            image.load()
        except Exception:
            return None  # a damaged preview does not make the RAW data bad
        if self.orientation in UPRIGHT:
            image = image.transpose(UPRIGHT[self.orientation])
        return image if image.mode == "RGB" else image.convert("RGB")

    def _preview_facts(self) -> ExifFacts:
        image = self._preview_image()
        return exif_facts(image_exif(image)) if image is not None else ExifFacts()

    def _timestamp(self) -> datetime | None:
        try:
            taken = self._raw.other.timestamp
        except Exception:
            return None
        # LibRaw says 0 (the epoch) for "unknown"
        return taken if isinstance(taken, datetime) and taken != datetime.fromtimestamp(0) else None


def _reason(exc: Exception) -> str:
    """LibRaw's message, which rawpy hands over as bytes."""
    message = exc.args[0] if exc.args else None
    return message.decode("utf-8", "replace") if isinstance(message, bytes) else first_line(exc)


def _file_facts(data: bytes) -> ExifFacts:
    exif = tiff_exif(data)
    if exif is not None:
        return exif_facts(exif)
    return cr3_facts(data)


def cr3_facts(data: bytes) -> ExifFacts:
    """CR3 is ISO-BMFF: its TIFF-shaped metadata sits in moov/uuid(Canon) boxes CMT1 (the first
    IFD: camera, orientation), CMT2 (the EXIF IFD: date taken) and CMT4 (the GPS IFD)."""
    if data[4:12] != b"ftypcrx ":
        return ExifFacts()
    try:
        blocks = {
            kind: payload
            for kind, payload in _children(data, b"moov", b"uuid", _CR3_METADATA)
            if kind in (b"CMT1", b"CMT2", b"CMT4")
        }
    except (struct.error, ValueError):
        return ExifFacts()
    first = exif_facts(tiff_exif(blocks.get(b"CMT1", b"")))
    taken = exif_facts(tiff_exif(blocks.get(b"CMT2", b""))).taken_at
    gps = tiff_exif(blocks.get(b"CMT4", b""))
    latitude, longitude = gps_position(dict(gps)) if gps is not None else (None, None)
    return ExifFacts(taken_at=taken or first.taken_at, camera=first.camera, latitude=latitude, longitude=longitude)


def _children(data: bytes, parent: bytes, kind: bytes, usertype: bytes) -> Iterator[tuple[bytes, bytes]]:
    """The boxes inside the `kind` box (of `usertype`) inside the top-level `parent` box."""
    for top, top_start, top_end in iso_boxes(data, 0, len(data)):
        if top != parent:
            continue
        for inner, start, end in iso_boxes(data, top_start, top_end):
            if inner == kind and data[start : start + 16] == usertype:
                for box, box_start, box_end in iso_boxes(data, start + 16, end):
                    yield box, data[box_start:box_end]
