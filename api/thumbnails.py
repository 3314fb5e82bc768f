"""Thumbnails: at most 320 px on the long side, cached under DATA_DIR, keyed by content hash so a
changed file gets a fresh one."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from PIL import Image, ImageOps

from core.pictures import open_picture, to_rgb

THUMBNAIL_SIZE = 320


def thumbnail_path(cache_dir: Path, image_id: int, content_hash: str) -> Path:
    return cache_dir / f"{image_id % 256:02x}" / f"{image_id}-{content_hash[:16]}.jpg"


def ensure_thumbnail(source: Path, target: Path, max_pixels: int) -> Path:
    """Make the thumbnail if it is not there yet; returns its path. Raises OSError/ValueError for
    files that can no longer be decoded."""
    if target.exists():
        return target
    with open_picture(source) as image:
        if image.width * image.height > max_pixels:
            raise ValueError("image too large to thumbnail")
        if image.format == "JPEG":
            image.draft("RGB", (THUMBNAIL_SIZE, THUMBNAIL_SIZE))
        image.load()
        picture = to_rgb(ImageOps.exif_transpose(image) or image)
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
