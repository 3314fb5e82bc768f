"""Pictures with words painted on them, and what OCR reads in them.

Until the OCR pass is merged, its table (`picture_text`) is filled by `read_signs` with what each
picture says and where, exactly as the pass records it (text, lines with boxes as fractions of the
picture, confidence); everything else about these pictures is real files, indexed for real.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from PIL import Image, ImageDraw, ImageFont


@dataclass(frozen=True)
class Sign:
    """A picture with `lines` painted on it, one below the other."""

    name: str
    lines: tuple[str, ...]
    background: tuple[int, int, int] = (90, 60, 40)


@dataclass(frozen=True)
class Painted:
    path: Path
    content_hash: str
    lines: list[dict[str, Any]]  # as the OCR pass records them


def paint(folder: Path, sign: Sign, width: int = 320, height: int = 240) -> Painted:
    """Write the sign as a JPEG; returns each line's box as a fraction of the picture."""
    image = Image.new("RGB", (width, height), sign.background)
    pen = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=28)
    lines: list[dict[str, Any]] = []
    y = 40.0
    for text in sign.lines:
        x0, y0, x1, y1 = pen.textbbox((24, y), text, font=font)
        pen.text((24, y), text, font=font, fill=(250, 240, 200))
        box = [round(x0 / width, 4), round(y0 / height, 4), round(x1 / width, 4), round(y1 / height, 4)]
        lines.append({"text": text, "box": box, "confidence": 0.97})
        y = y1 + 24
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=92)
    data = buffer.getvalue()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / sign.name
    path.write_bytes(data)
    return Painted(path, hashlib.sha256(data).hexdigest(), lines)


def read_signs(url: str, painted: list[Painted]) -> None:
    """What the OCR pass writes for these pictures."""
    with psycopg.connect(url, autocommit=True) as conn:
        for p in painted:
            text = "\n".join(str(line["text"]) for line in p.lines)
            conn.execute(
                "INSERT INTO picture_text (content_hash, text, lines, engine) VALUES (%s, %s, %s, 'test')",
                (p.content_hash, text, json.dumps(p.lines)),
            )
