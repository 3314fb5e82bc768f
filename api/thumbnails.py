"""Thumbnails: at most 320 px on the long side, cached under DATA_DIR, keyed by content hash so a
changed file gets a fresh one."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from PIL import Image

from core.pictures import render_picture

THUMBNAIL_SIZE = 320


def thumbnail_path(cache_dir: Path, image_id: int, content_hash: str) -> Path:
    return cache_dir / f"{image_id % 256:02x}" / f"{image_id}-{content_hash[:16]}.jpg"


def ensure_thumbnail(source: Path, target: Path, max_pixels: int) -> Path:
    """Make the thumbnail if it is not there yet, for a still of any format; returns its path. Raises
    `ImageError` for files that can no longer be decoded, OSError for ones that cannot be read."""
    if target.exists():
        return target
    picture = render_picture(source, THUMBNAIL_SIZE, max_pixels=max_pixels)
    picture.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE), Image.Resampling.LANCZOS)
    target.parent.mkdir(parents=True, exist_ok=True)
    # write then rename, so a concurrent request never serves half a file
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            picture.save(out, "JPEG", quality=82, optimize=True)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target
