"""Thumbnails and previews: JPEGs made once per version of a file and cached under DATA_DIR,
keyed by content hash so a changed file gets fresh ones."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from PIL import Image

from core.media.pictures import render_picture, to_rgb
from core.media.videos import frame_at

THUMBNAIL_SIZE = 320
PREVIEW_SIZE = 2048  # the larger view of a picture browsers cannot show as it is (HEIC, RAW, ...)
FACE_SIZE = 160  # a face's crop, for covers and chips
_FACE_SOURCE = 1024  # the picture a face is cut from, on its long side
_FACE_MARGIN = 0.25  # of the face's size on each side: a bit of hair and chin


def rendition_path(cache_dir: Path, image_id: int, content_hash: str, variant: str = "") -> Path:
    suffix = f"-{variant}" if variant else ""
    return cache_dir / f"{image_id % 256:02x}" / f"{image_id}-{content_hash[:16]}{suffix}.jpg"


def ensure_picture(source: Path, target: Path, longest: int, max_pixels: int) -> Path:
    """A JPEG of the picture at most `longest` px on its long side, made if not there yet.
    Raises whatever the decoder raises for a file that can no longer be read."""
    return _ensure(target, lambda: render_picture(source, longest, max_pixels=max_pixels), longest)


def ensure_video_frame(source: Path, second: float, target: Path, longest: int, max_pixels: int) -> Path:
    return _ensure(target, lambda: frame_at(source, second, max_pixels=max_pixels), longest)


def _ensure(target: Path, render: Callable[[], Image.Image], longest: int) -> Path:
    if target.exists():
        return target
    picture = to_rgb(render())
    picture.thumbnail((longest, longest), Image.Resampling.LANCZOS)
    target.parent.mkdir(parents=True, exist_ok=True)
    # write then rename, so a concurrent request never serves half a file
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            picture.save(out, "JPEG", quality=82 if longest <= THUMBNAIL_SIZE else 88, optimize=True)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def ensure_face(
    source: Path, box: tuple[float, ...], second: float, target: Path, max_pixels: int, *, video: bool
) -> Path:
    """A square JPEG of one face (`box` in fractions of the picture as displayed), with a margin."""

    def render() -> Image.Image:
        picture = frame_at(source, second, max_pixels=max_pixels) if video else None
        if picture is None:
            picture = render_picture(source, _FACE_SOURCE, max_pixels=max_pixels)
        width, height = picture.size
        x0, y0, x1, y1 = box[0] * width, box[1] * height, box[2] * width, box[3] * height
        side = max(x1 - x0, y1 - y0) * (1 + 2 * _FACE_MARGIN)
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        return picture.crop((round(cx - side / 2), round(cy - side / 2), round(cx + side / 2), round(cy + side / 2)))

    return _ensure(target, render, FACE_SIZE)
