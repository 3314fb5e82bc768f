"""Synthetic pictures of coloured shapes: the test corpus and the tiny model's training data.

A picture shows one shape in one colour on a background of another colour. Size, position,
background and aspect ratio vary so that a model trained on them generalises to pictures
drawn with other parameters.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 60, 220),
    "yellow": (240, 220, 20),
    "purple": (140, 40, 170),
    "orange": (250, 140, 10),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
BACKGROUNDS: tuple[tuple[int, int, int], ...] = (
    (255, 255, 255),
    (235, 235, 235),
    (200, 200, 200),
    (120, 120, 120),
    (40, 40, 40),
    (0, 0, 0),
    (245, 235, 215),
)


@dataclass(frozen=True)
class Drawing:
    color: str
    shape: str

    @property
    def caption(self) -> str:
        return f"a {self.color} {self.shape}"

    @property
    def slug(self) -> str:
        return f"{self.color}-{self.shape}"


ALL_DRAWINGS: tuple[Drawing, ...] = tuple(Drawing(c, s) for c in COLORS for s in SHAPES)


def draw(
    drawing: Drawing,
    *,
    width: int = 96,
    height: int = 96,
    scale: float = 0.6,
    center: tuple[float, float] = (0.5, 0.5),
    background: tuple[int, int, int] = (255, 255, 255),
    jitter: tuple[int, int, int] = (0, 0, 0),
) -> Image.Image:
    """Draw one shape. `scale` is the shape's size relative to the shorter side; `center`
    is its centre as a fraction of width and height."""
    image = Image.new("RGB", (width, height), background)
    pen = ImageDraw.Draw(image)
    side = min(width, height)
    r = max(2.0, scale * side / 2)
    cx, cy = center[0] * width, center[1] * height
    fill = tuple(max(0, min(255, c + j)) for c, j in zip(COLORS[drawing.color], jitter))
    box = (cx - r, cy - r, cx + r, cy + r)
    if drawing.shape == "circle":
        pen.ellipse(box, fill=fill)
    elif drawing.shape == "square":
        s = r * 0.85
        pen.rectangle((cx - s, cy - s, cx + s, cy + s), fill=fill)
    elif drawing.shape == "triangle":
        pen.polygon([(cx, cy - r), (cx + r, cy + r * 0.8), (cx - r, cy + r * 0.8)], fill=fill)
    else:
        raise ValueError(f"unknown shape {drawing.shape!r}")
    return image


def random_drawing(drawing: Drawing, rng: random.Random, base: int = 96) -> Image.Image:
    """A randomly varied picture of `drawing`, kept inside the central square so that a
    centre crop never cuts the shape off."""
    aspect = rng.uniform(0.7, 1.45)
    width, height = (int(base * aspect), base) if rng.random() < 0.5 else (base, int(base * aspect))
    scale = rng.uniform(0.3, 0.75)
    side = min(width, height)
    margin_x = (scale / 2) * side / width
    margin_y = (scale / 2) * side / height
    # keep the shape inside the centred square of side `side`
    lo_x, hi_x = 0.5 - (side / width) / 2 + margin_x, 0.5 + (side / width) / 2 - margin_x
    lo_y, hi_y = 0.5 - (side / height) / 2 + margin_y, 0.5 + (side / height) / 2 - margin_y
    center = (rng.uniform(lo_x, max(lo_x, hi_x)), rng.uniform(lo_y, max(lo_y, hi_y)))
    background = rng.choice(BACKGROUNDS)
    jitter = (rng.randint(-20, 20), rng.randint(-20, 20), rng.randint(-20, 20))
    return draw(
        drawing,
        width=width,
        height=height,
        scale=scale,
        center=center,
        background=background,
        jitter=jitter,
    )


def write_corpus(folder: Path, drawings: tuple[Drawing, ...] = ALL_DRAWINGS, seed: int = 7) -> dict[str, Path]:
    """Write one PNG per drawing into `folder`; returns caption → path."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for d in drawings:
        path = folder / f"{d.slug}.png"
        random_drawing(d, rng, base=128).save(path)
        written[d.caption] = path
    return written
