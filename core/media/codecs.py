"""The decoders Pillow does not bring itself, registered on first use, and what they need around
them: HEIC/HEIF through pillow-heif (libheif), JPEG XL through pillow-jxl-plugin (libjxl). AVIF is
Pillow's own (11.3 and later, libavif inside its wheels). `open_picture` opens a file with all of
them and every format of Pillow's but PostScript; it lives here, below both `core.media.pictures`
and `core.media.raw`, which each need it.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from PIL import Image, ImageFile

_JXL_CODESTREAM = b"\xff\x0a"
_JXL_CONTAINER = b"\x00\x00\x00\x0cJXL \x0d\x0a\x87\x0a"
# SizeHeader's aspect ratios: xsize = ysize * numerator / denominator
_JXL_RATIOS = {1: (1, 1), 2: (12, 10), 3: (4, 3), 4: (3, 2), 5: (16, 9), 6: (5, 4), 7: (2, 1)}


@functools.cache
def register_decoders() -> None:
    """Teach Pillow HEIC/HEIF and JPEG XL; once per process, at the first picture opened (importing
    Sightline's modules registers nothing)."""
    import pillow_heif

    # thumbnails: HEIC files carry a small copy of the picture that `draft` can decode instead
    pillow_heif.register_heif_opener(thumbnails=True)
    import pillow_jxl  # noqa: F401  (registers its plugin with Pillow when imported)


@functools.cache
def _opened_formats() -> tuple[str, ...]:
    """Every format Pillow and the plugins read, in Pillow's order, but PostScript: Pillow renders an
    EPS by running Ghostscript on it, a program from the folder (and without Ghostscript, cannot)."""
    register_decoders()
    Image.init()
    return tuple(f for f in Image.ID if f != "EPS")


def open_picture(source: str | Path | IO[bytes]) -> ImageFile.ImageFile:
    """`Image.open` with Sightline's own size limit (MAX_IMAGE_PIXELS, checked by the callers with a
    clearer message) in place of Pillow's lower one, and with every decoder Sightline brings."""
    formats = _opened_formats()
    Image.MAX_IMAGE_PIXELS = None
    return Image.open(source, formats=formats)


def is_jxl(data: bytes) -> bool:
    return data.startswith(_JXL_CODESTREAM) or data.startswith(_JXL_CONTAINER)


def jxl_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG XL header, or None if it cannot be read. pillow-jxl-plugin decodes
    the whole picture as soon as it is opened, so a decompression bomb has to be caught before."""
    try:
        codestream = data if data.startswith(_JXL_CODESTREAM) else _jxl_codestream_start(data)
        return _size_header(codestream[2:64]) if codestream else None
    except (IndexError, struct.error):
        return None


def _jxl_codestream_start(data: bytes) -> bytes | None:
    """The first bytes of the codestream in the container's `jxlc` box or first `jxlp` box."""
    for kind, start, _end in iso_boxes(data, 0, len(data)):
        if kind == b"jxlc":
            return data[start : start + 64]
        if kind == b"jxlp":
            return data[start + 4 : start + 68]
    return None


def iso_boxes(data: bytes, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """(type, payload start, payload end) of each ISO-BMFF box between `start` and `end`: the
    container of JPEG XL, HEIF and Canon's CR3."""
    position = start
    while position + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, position)
        header = 8
        if size == 1:
            (size,) = struct.unpack_from(">Q", data, position + 8)
            header = 16
        elif size == 0:
            size = end - position
        if size < header or position + size > end:
            return
        yield kind, position + header, position + size
        position += size


def _size_header(raw: bytes) -> tuple[int, int]:
    bits = _Bits(raw)
    small = bits.read(1)
    height = (bits.read(5) + 1) * 8 if small else bits.u32_size()
    ratio = bits.read(3)
    if ratio:
        numerator, denominator = _JXL_RATIOS[ratio]
        width = height * numerator // denominator
    else:
        width = (bits.read(5) + 1) * 8 if small else bits.u32_size()
    return width, height


class _Bits:
    """JPEG XL's bit reader: least significant bit first."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self.position = 0

    def read(self, count: int) -> int:
        value = 0
        for i in range(count):
            byte = self.raw[(self.position + i) // 8]
            value |= ((byte >> ((self.position + i) % 8)) & 1) << i
        self.position += count
        return value

    def u32_size(self) -> int:
        return 1 + self.read((9, 13, 18, 30)[self.read(2)])
