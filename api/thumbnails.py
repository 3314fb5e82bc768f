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
