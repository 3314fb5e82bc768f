"""Pictures with words painted on them, where the indexer's OCR pass reads them."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSerif-Bold.ttf"  # serifs: a sans capital I reads as l


@dataclass(frozen=True)
class Sign:
    """A picture with `lines` painted on light plates, one below the other, over a darker scene."""

    name: str
    lines: tuple[str, ...]


@dataclass(frozen=True)
class Painted:
    path: Path
    boxes: list[tuple[float, float, float, float]]  # each line's, as fractions of the picture


def paint(folder: Path, sign: Sign, width: int = 480, height: int = 320) -> Painted:
    picture = Image.new("RGB", (width, height), (70, 90, 80))
    pen = ImageDraw.Draw(picture)
    for n in range(0, width, 40):  # some structure, as a photo has
        pen.rectangle((n, height * 3 // 4, n + 20, height - 10), fill=(110, 60 + n % 120, 50))
    font = ImageFont.truetype(FONT, 34)
    boxes: list[tuple[float, float, float, float]] = []
    y = 30.0
    for text in sign.lines:
        x0, y0, x1, y1 = pen.textbbox((24, y), text, font=font)
        pen.rectangle((x0 - 10, y0 - 8, x1 + 10, y1 + 8), fill=(240, 236, 220))
        pen.text((24, y), text, fill=(20, 20, 20), font=font)
        boxes.append((x0 / width, y0 / height, x1 / width, y1 / height))
        y = y1 + 40
    buffer = io.BytesIO()
    picture.save(buffer, "JPEG", quality=92)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / sign.name
    path.write_bytes(buffer.getvalue())
    return Painted(path, boxes)
