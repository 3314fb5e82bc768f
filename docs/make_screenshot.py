"""Remake docs/screenshot.png and docs/screenshot-larger-view.png: the search page over a small,
real-looking photo library, and the larger view of one of its pictures.

    python docs/make_screenshot.py [--out docs/screenshot.png] [--corpus ../shared/data/coco-mini]

In a temporary folder (never in the repository) it lays out a phone's camera roll: real photos from
the coco-mini corpus (only those under CC BY or CC BY-SA), most with the GPS position and date of a
trip (Lisbon, Tokyo, Paris, Milan, Berlin) in their EXIF; a café terrace with its sign, its receipt
and a menu board, all of which OCR reads; a short video; and two people, from the shared portraits
(`../shared/data/faces`), in Lisbon too: their portraits, and snapshots with them cut out and put in
front of the café's sign, beside its menu board and at a viewpoint. Then it starts the real server on
that folder (`main.py serve`: its own embedded Postgres, the tiny test model, OCR and faces on), waits
until the first scan is done, the text of every picture read and every item looked at for faces,
names the two people through the API, searches for `QUERY` in Chromium and saves the page (its
chips: a term, a person and a place; tiles marked with the text found in them) as a PNG, then opens
`LARGER_VIEW` with its faces marked and saves that too. Beside it, `screenshot-credits.md` lists every file of the
library with the source, author and licence of its photos (from the corpus's captions.jsonl). The
server and the folder are removed in any case; a failure prints one line.

The library is made by the functions in `STEPS`, in order, each adding files to a `Library` and
counting them; a new kind of content is one more function there.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFilter, ImageFont

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "data" / "coco-mini"
FACES = ROOT.parent / "shared" / "data" / "faces"
TINY_CLIP = ROOT / "tests" / "fixtures" / "tiny-clip"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
QUERY = "Barack Obama cafe in Lisbon"
# the result shown in the larger view (its text, its faces, its place); None: the results alone
LARGER_VIEW = "Camera Roll/2023/IMG_3149.jpg"
WIDTH, HEIGHT = 1280, 800  # a desktop window, at a device scale of 1
READY_TIMEOUT = 600.0  # seconds for the first scan and the text pass, on a busy two-core machine
SERIF_BOLD = "/usr/share/fonts/truetype/dejavu/DejaVuSerif-Bold.ttf"
SANS = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
MONO = "/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf"
MONO_BOLD = "/usr/share/fonts/truetype/dejavu/DejaVuSansMono-Bold.ttf"


class Failure(Exception):
    """What went wrong, in one line."""


# ---------------------------------------------------------------------------------------------
# The library: where each photo comes from, where it goes, when and where it was taken


@dataclass(frozen=True)
class Spot:
    latitude: float
    longitude: float


BAIXA = Spot(38.7110, -9.1366)
ALFAMA = Spot(38.7112, -9.1277)
BAIRRO_ALTO = Spot(38.7133, -9.1459)
RIBEIRA = Spot(38.7068, -9.1418)  # the riverside by Cais do Sodré
CASCAIS = Spot(38.6967, -9.4207)
ASAKUSA = Spot(35.7148, 139.7967)
SHINJUKU = Spot(35.6938, 139.7034)
SHIBUYA = Spot(35.6595, 139.7005)
LE_MARAIS = Spot(48.8590, 2.3620)
MONTMARTRE = Spot(48.8867, 2.3431)
POTSDAMER_PLATZ = Spot(52.5096, 13.3759)
PORTA_GENOVA = Spot(45.4527, 9.1700)  # Milan


@dataclass(frozen=True)
class Photo:
    """A corpus photo (`source`, relative to the corpus) copied to `name` in the library."""

    source: str
    name: str
    taken: str  # ISO date and time, local
    spot: Spot | None = None


CAMERA = ("Apple", "iPhone 13")
# Fixed choices, so that the picture only changes when this list does.
PHOTOS: tuple[Photo, ...] = (
    # Lisbon, May 2023
    Photo("train2017/000000216794.jpg", "Camera Roll/2023/IMG_3118.jpg", "2023-05-12T17:40", ALFAMA),
    Photo("val2017/000000062554.jpg", "Camera Roll/2023/IMG_3125.jpg", "2023-05-12T20:31", BAIRRO_ALTO),
    Photo("val2017/000000568290.jpg", "Camera Roll/2023/IMG_3140.jpg", "2023-05-13T09:05", BAIXA),
    Photo("val2017/000000434204.jpg", "Camera Roll/2023/IMG_3151.jpg", "2023-05-13T11:22", RIBEIRA),
    Photo("val2017/000000214753.jpg", "Camera Roll/2023/IMG_3177.jpg", "2023-05-14T18:02", CASCAIS),
    Photo("val2017/000000160012.jpg", "Camera Roll/2023/IMG_3190.jpg", "2023-05-14T21:15", BAIRRO_ALTO),
    # Tokyo, April 2024
    Photo("val2017/000000099053.jpg", "Camera Roll/2024/IMG_5203.jpg", "2024-04-03T12:40", ASAKUSA),
    Photo("val2017/000000423617.jpg", "Camera Roll/2024/IMG_5230.jpg", "2024-04-04T19:12", SHINJUKU),
    Photo("train2017/000000125870.jpg", "Camera Roll/2024/IMG_5188.jpg", "2024-04-02T08:30", SHIBUYA),
    # Paris, September 2022
    Photo("val2017/000000551780.jpg", "Camera Roll/2022/IMG_1408.jpg", "2022-09-17T15:03", LE_MARAIS),
    Photo("train2017/000000121647.jpg", "Camera Roll/2022/IMG_1415.jpg", "2022-09-17T20:48", MONTMARTRE),
    Photo("val2017/000000377575.jpg", "Camera Roll/2022/IMG_1421.jpg", "2022-09-18T10:26", MONTMARTRE),
    # Milan, October 2021, and Berlin, December 2021: street signs OCR reads as they are
    Photo("val2017/000000183709.jpg", "Camera Roll/2021/IMG_0655.jpg", "2021-10-09T10:14", PORTA_GENOVA),
    Photo("train2017/000000231460.jpg", "Camera Roll/2021/IMG_0912.jpg", "2021-12-04T16:55", POTSDAMER_PLATZ),
    # at home, no GPS
    Photo("val2017/000000397133.jpg", "Camera Roll/2023/IMG_2877.jpg", "2023-02-11T19:20"),
    Photo("train2017/000000000790.jpg", "Camera Roll/2023/IMG_2950.jpg", "2023-03-26T16:05"),
    Photo("train2017/000000358083.jpg", "Camera Roll/2024/IMG_4410.jpg", "2024-01-07T09:48"),
    Photo("train2017/000000196393.jpg", "Camera Roll/2024/IMG_4452.jpg", "2024-01-20T18:30"),
    Photo("val2017/000000553664.jpg", "Camera Roll/2024/IMG_4601.jpg", "2024-02-09T14:12"),
    Photo("train2017/000000129648.jpg", "Camera Roll/2024/IMG_4733.jpg", "2024-03-02T11:57"),
)


@dataclass(frozen=True)
class Credit:
    """What a file of the library is made of: corpus photos (`train2017/…`), portraits (`faces/…`),
    and what the script did to them."""

    name: str  # in the library
    sources: tuple[str, ...]
    made: str


@dataclass
class Library:
    """The folder being laid out, and what the steps put in it."""

    folder: Path
    corpus: Path
    portraits: Path = FACES
    pictures: int = 0  # files the index will hold as pictures
    videos: int = 0
    texts: list[tuple[str, str]] = field(default_factory=list)  # (words, file) OCR must have read before the shot
    people: dict[str, str] = field(default_factory=dict)  # a name, and the portrait the person is named by
    shown: list[tuple[str, str]] = field(default_factory=list)  # (a name, a file that shows their face)
    credits: list[Credit] = field(default_factory=list)

    @property
    def items(self) -> int:
        return self.pictures + self.videos


def exif_of(taken: datetime, spot: Spot | None) -> Image.Exif:
    """EXIF as a phone writes it: make, model, the date taken and the GPS position."""
    exif = Image.Exif()
    exif[271], exif[272] = CAMERA
    exif[306] = taken.strftime("%Y:%m:%d %H:%M:%S")
    exif.get_ifd(0x8769)[36867] = exif[306]  # DateTimeOriginal
    if spot is not None:
        gps = exif.get_ifd(0x8825)
        gps[0] = b"\x02\x02\x00\x00"
        gps[1], gps[2] = ("N" if spot.latitude >= 0 else "S"), _dms(spot.latitude)
        gps[3], gps[4] = ("E" if spot.longitude >= 0 else "W"), _dms(spot.longitude)
    return exif


def _dms(value: float) -> tuple[float, float, float]:
    value = abs(value)
    degrees = int(value)
    minutes = int((value - degrees) * 60)
    return float(degrees), float(minutes), round(((value - degrees) * 60 - minutes) * 60, 3)


def save_photo(
    library: Library,
    picture: Image.Image,
    name: str,
    taken: str,
    spot: Spot | None,
    sources: tuple[str, ...],
    made: str,
) -> None:
    """Write `picture` as a JPEG at `name` with its EXIF, dated `taken` on disk too; `sources` and
    `made` for its credit."""
    when = datetime.fromisoformat(taken)
    path = library.folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    extra = {"icc_profile": picture.info["icc_profile"]} if "icc_profile" in picture.info else {}
    picture.save(path, "JPEG", quality=92, exif=exif_of(when, spot), **extra)
    os.utime(path, (when.timestamp(), when.timestamp()))
    library.pictures += 1
    library.credits.append(Credit(name, sources, made))


def corpus_photo(library: Library, source: str) -> Image.Image:
    path = library.corpus / source
    if not path.is_file():
        raise Failure(f"{path} is missing: pass the coco-mini folder with --corpus")
    with Image.open(path) as opened:
        picture = opened.convert("RGB")
        picture.info.update(opened.info)
    return picture


def add_photos(library: Library) -> None:
    for photo in PHOTOS:
        picture = corpus_photo(library, photo.source)
        save_photo(library, picture, photo.name, photo.taken, photo.spot, (photo.source,), "none")


# ---------------------------------------------------------------------------------------------
# Text that OCR reads: a café's sign on its terrace, its receipt and its menu board


def font(path: str, size: int) -> ImageFont.FreeTypeFont:
    try:
        return ImageFont.truetype(path, size)
    except OSError as exc:
        raise Failure(f"font {path} is missing (Debian: apt-get install fonts-dejavu-core)") from exc


def signboard(width: int, lines: list[tuple[str, ImageFont.FreeTypeFont]], post: int) -> Image.Image:
    """A painted wooden board on a post: cream letters on dark green, with a frame."""
    pen = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    heights = [round(pen.textbbox((0, 0), text, font=face)[3]) for text, face in lines]
    gap = 8
    board_h = sum(heights) + gap * (len(lines) + 1) + 4
    board = Image.new("RGBA", (width, board_h + post), (0, 0, 0, 0))
    pen = ImageDraw.Draw(board)
    middle = width // 2
    pen.rectangle((middle - 3, board_h - 4, middle + 3, board_h + post), fill=(60, 42, 30, 255))
    pen.rounded_rectangle((0, 0, width - 1, board_h), radius=5, fill=(84, 58, 38, 255))
    pen.rounded_rectangle((4, 4, width - 5, board_h - 4), radius=4, fill=(26, 62, 48, 255))
    y = gap + 2
    for (text, face), height in zip(lines, heights):
        text_w = round(pen.textbbox((0, 0), text, font=face)[2])
        pen.text(((width - text_w) // 2, y), text, fill=(236, 224, 196, 255), font=face)
        y += height + gap
    return board


def in_the_light(layer: Image.Image, tint: tuple[int, int, int], amount: float, dim: float) -> Image.Image:
    """`layer` as the scene's light would show it: dimmed, tinted and a little soft."""
    rgb = Image.blend(layer.convert("RGB"), Image.new("RGB", layer.size, tint), amount)
    rgb = rgb.point(lambda v: int(v * dim)).filter(ImageFilter.GaussianBlur(0.5))
    rgb.putalpha(layer.getchannel("A"))
    return rgb


def paste_with_shadow(scene: Image.Image, layer: Image.Image, at: tuple[int, int], offset: int, blur: int) -> None:
    shadow = Image.new("RGBA", layer.size, (0, 0, 0, 0))
    shadow.putalpha(layer.getchannel("A").point(lambda a: a * 100 // 255))
    shadow = shadow.filter(ImageFilter.GaussianBlur(blur))
    scene.paste(shadow, (at[0] + offset, at[1] + offset), shadow)
    scene.paste(layer, at, layer)


TERRACE = "train2017/000000159269.jpg"
SUNSET = (255, 170, 90)  # the light on the terrace


def cafe_terrace(library: Library, sign_at: tuple[int, int]) -> Image.Image:
    """The terrace of a café by the river, with its name on a board among the tables."""
    terrace = corpus_photo(library, TERRACE)
    board = signboard(150, [("CAFE LUNA", font(SERIF_BOLD, 22)), ("esplanada · bar", font(SANS, 12))], post=62)
    board = board.rotate(-1.5, resample=Image.Resampling.BICUBIC, expand=True)
    paste_with_shadow(terrace, in_the_light(board, SUNSET, 0.12, 0.9), sign_at, offset=4, blur=3)
    return terrace


def add_cafe_sign(library: Library) -> None:
    name = "Camera Roll/2023/IMG_3146.jpg"
    terrace = cafe_terrace(library, (96, 330))
    save_photo(library, terrace, name, "2023-05-13T19:48", RIBEIRA, (TERRACE,), "a sign drawn in")
    library.texts.append(("CAFE LUNA", name))


def _item(what: str, price: str) -> str:
    return f"{what:<19}{price:>6}"


RECEIPT: list[tuple[str, bool]] = [  # (line, bold)
    ("CAFE LUNA", True),
    ("Av. Brasilia 202, Lisboa", False),
    ("NIF 509 112 347", False),
    ("", False),
    ("13/05/2023 19:52   Mesa 7", False),
    ("-" * 25, False),
    (_item("2 Galao", "3,20"), False),
    (_item("2 Pastel de nata", "2,60"), False),
    (_item("1 Agua 50cl", "1,50"), False),
    (_item("1 Vinho verde", "4,00"), False),
    ("-" * 25, False),
    (_item("TOTAL EUR", "11,30"), True),
    ("", False),
    ("Obrigado e volte sempre!", False),
]


def wooden_table(width: int, height: int) -> Image.Image:
    """Planks of a café table: grain along them, a seam between them, a little light falloff."""
    import numpy as np

    rng = np.random.default_rng(7)
    plank = 120
    rows = np.arange(height)[:, None]
    grain = rng.normal(0, 1, (height, width // 24 + 2))
    grain = np.asarray(Image.fromarray(grain.astype(np.float32), "F").resize((width, height), Image.Resampling.BICUBIC))
    grain = grain + 0.35 * rng.normal(0, 1, (height, width))
    tone = 1 + 0.06 * np.sin(rows // plank * 2.1)  # each plank a little different
    shade = (1 + 0.07 * grain) * tone
    seam = (rows % plank) < 2
    cols = np.arange(width)[None, :]
    light = 1 - 0.25 * (((cols - width / 2) / width) ** 2 + ((rows - height / 2) / height) ** 2)
    base = np.array([138, 92, 56], dtype=np.float32)
    rgb = base[None, None, :] * (shade * light)[..., None]
    rgb[np.broadcast_to(seam, (height, width))] *= 0.55
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB")


def add_receipt(library: Library) -> None:
    """The café's receipt, photographed on a wooden table."""
    width, height = 640, 480
    table = wooden_table(width, height)
    slip_w = 300
    face, bold, title = font(MONO, 15), font(MONO_BOLD, 15), font(MONO_BOLD, 19)
    slip = Image.new("RGBA", (slip_w, 36 + 22 * len(RECEIPT)), (250, 248, 242, 255))
    spen = ImageDraw.Draw(slip)
    for n, (text, strong) in enumerate(RECEIPT):
        use = title if n == 0 else bold if strong else face
        text_w = spen.textbbox((0, 0), text, font=use)[2]
        x = (slip_w - text_w) // 2 if n < 3 or n == len(RECEIPT) - 1 else 24
        spen.text((x, 18 + 22 * n), text, fill=(35, 35, 40, 255), font=use)
    slip = slip.rotate(-7, resample=Image.Resampling.BICUBIC, expand=True)
    at = ((width - slip.width) // 2 + 40, (height - slip.height) // 2)
    paste_with_shadow(table, in_the_light(slip, (255, 200, 140), 0.06, 0.97), at, offset=8, blur=6)
    name = "Camera Roll/2023/IMG_3147.jpg"
    save_photo(library, table, name, "2023-05-13T19:53", RIBEIRA, (), "drawn by the script")
    library.texts.append(("TOTAL", name))


MENU = [("CAFE DO CAIS", ""), ("Bica", "0,90"), ("Galão", "1,60"), ("Pastel de nata", "1,30"), ("Tosta mista", "3,50")]


def azulejos(width: int, height: int, size: int = 80) -> Image.Image:
    """A wall of blue and white tiles, each a little different, with grout between them."""
    import numpy as np

    rng = np.random.default_rng(11)
    wall = Image.new("RGB", (width, height), (196, 192, 180))
    pen = ImageDraw.Draw(wall)
    for row in range(height // size + 1):
        for col in range(width // size + 1):
            x, y = col * size, row * size
            white = tuple(int(v) for v in np.array([238, 240, 236]) - rng.integers(0, 14))
            blue = tuple(int(v) for v in np.array([34, 74, 150]) + rng.integers(-12, 12, 3))
            pen.rectangle((x + 2, y + 2, x + size - 2, y + size - 2), fill=white)
            c = size // 2
            pen.ellipse((x + c - 22, y + c - 22, x + c + 22, y + c + 22), outline=blue, width=2)
            pen.polygon([(x + c, y + 14), (x + c + 6, y + c), (x + c, y + size - 14), (x + c - 6, y + c)], fill=blue)
            pen.polygon([(x + 14, y + c), (x + c, y + c - 6), (x + size - 14, y + c), (x + c, y + c + 6)], fill=blue)
            for cx, cy in ((x + 2, y + 2), (x + size - 2, y + 2), (x + 2, y + size - 2), (x + size - 2, y + size - 2)):
                pen.arc((cx - 12, cy - 12, cx + 12, cy + 12), 0, 360, fill=blue, width=2)
    return wall.filter(ImageFilter.GaussianBlur(0.7))


def menu_wall(board_x: int | None = None) -> Image.Image:
    """A café's chalkboard of prices, hung on a tiled wall (in the middle, or `board_x` from the left)."""
    import numpy as np

    width, height = 640, 480
    wall = azulejos(width, height)
    board_w, board_h = 330, 300
    board = Image.new("RGBA", (board_w, board_h), (96, 64, 40, 255))
    pen = ImageDraw.Draw(board)
    pen.rectangle((12, 12, board_w - 13, board_h - 13), fill=(38, 44, 42, 255))
    title, face = font(SERIF_BOLD, 30), font(SANS, 21)
    name = MENU[0][0]
    pen.text(((board_w - pen.textbbox((0, 0), name, font=title)[2]) // 2, 30), name, fill=(240, 238, 228), font=title)
    for n, (what, price) in enumerate(MENU[1:]):
        y = 96 + 44 * n
        pen.text((34, y), what, fill=(232, 232, 222), font=face)
        pen.text((board_w - 34 - pen.textbbox((0, 0), price, font=face)[2], y), price, fill=(246, 214, 120), font=face)
    chalk = np.asarray(board).astype(np.int16)
    dust = np.random.default_rng(5).integers(-18, 18, chalk.shape[:2])[..., None]
    chalk[..., :3] = np.clip(chalk[..., :3] + dust, 0, 255)
    board = Image.fromarray(chalk.astype(np.uint8), "RGBA").rotate(1.2, resample=Image.Resampling.BICUBIC, expand=True)
    paste_with_shadow(
        wall,
        in_the_light(board, (255, 220, 170), 0.05, 0.95),
        ((width - board.width) // 2 if board_x is None else board_x, (height - board.height) // 2),
        offset=10,
        blur=8,
    )
    return wall


def add_menu_board(library: Library) -> None:
    name = "Camera Roll/2023/IMG_3108.jpg"
    save_photo(library, menu_wall(), name, "2023-05-12T11:02", ALFAMA, (), "drawn by the script")
    library.texts.append(("CAFE DO CAIS", name))


# ---------------------------------------------------------------------------------------------
# A video: a slow pan along a street, with the position and date an iPhone writes


def add_video(library: Library) -> None:
    import av

    source, name = "train2017/000000252639.jpg", "Camera Roll/2023/IMG_3141.MOV"
    street = corpus_photo(library, source)
    size, fps, seconds = (480, 270), 15, 6
    path = library.folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {
        "com.apple.quicktime.creationdate": "2023-05-13T09:12:30+0100",
        "com.apple.quicktime.location.ISO6709": f"{BAIXA.latitude:+.4f}{BAIXA.longitude:+09.4f}+010.000/",
        "com.apple.quicktime.make": CAMERA[0],
        "com.apple.quicktime.model": CAMERA[1],
    }
    crop_w = int(street.height * size[0] / size[1] * 0.9)
    crop_h = crop_w * size[1] // size[0]
    with av.open(str(path), "w", options={"movflags": "use_metadata_tags"}) as out:
        out.metadata.update(metadata)
        stream = out.add_stream("h264", rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        for n in range(fps * seconds):
            x = round((street.width - crop_w) * n / (fps * seconds - 1))
            frame = street.crop((x, 0, x + crop_w, crop_h)).resize(size, Image.Resampling.LANCZOS)
            out.mux(stream.encode(av.VideoFrame.from_image(frame)))
        out.mux(stream.encode(None))
    when = datetime.fromisoformat("2023-05-13T09:12:30").timestamp()
    os.utime(path, (when, when))
    library.videos += 1
    library.credits.append(Credit(name, (source,), "a six-second video panning across the photo"))


# ---------------------------------------------------------------------------------------------
# People: the shared portraits, and snapshots of them in Lisbon (one at the café's sign)


@dataclass(frozen=True)
class Portrait:
    """A portrait of the faces folder (`source`, of `who`: see its NOTICE.md) copied to `name` in the
    library."""

    source: str
    who: str
    name: str
    taken: str
    spot: Spot


OBAMA, BIDEN = "Barack Obama", "Joe Biden"
PORTRAITS: tuple[Portrait, ...] = (
    Portrait("obama.jpg", OBAMA, "Camera Roll/2023/IMG_3112.jpg", "2023-05-12T12:18", ALFAMA),
    Portrait("obama2.jpg", OBAMA, "Camera Roll/2023/IMG_3131.jpg", "2023-05-12T21:02", BAIRRO_ALTO),
    Portrait("obama3.jpg", OBAMA, "Camera Roll/2023/IMG_3158.jpg", "2023-05-13T15:40", RIBEIRA),
    Portrait("obama_partial_face.jpg", OBAMA, "Camera Roll/2023/IMG_3163.jpg", "2023-05-13T16:05", RIBEIRA),
    Portrait("obama_partial_face2.jpg", OBAMA, "Camera Roll/2023/IMG_3164.jpg", "2023-05-13T16:05", RIBEIRA),
    Portrait("biden.jpg", BIDEN, "Camera Roll/2023/IMG_3172.jpg", "2023-05-14T10:31", CASCAIS),
)


def add_portraits(library: Library) -> None:
    for portrait in PORTRAITS:
        picture = face_photo(library, portrait.source)
        sources = (f"faces/{portrait.source}",)
        save_photo(library, picture, portrait.name, portrait.taken, portrait.spot, sources, "none")
        library.people.setdefault(portrait.who, portrait.name)  # the person is named by their first portrait
        library.shown.append((portrait.who, portrait.name))


def face_photo(library: Library, source: str) -> Image.Image:
    path = library.portraits / source
    if not path.is_file():
        raise Failure(f"{path} is missing: the shared portraits belong in ../shared/data/faces")
    with Image.open(path) as opened:
        return opened.convert("RGB")


@dataclass(frozen=True)
class Cutout:
    """A person cut out of a portrait (RGBA), with their face's box in it."""

    picture: Image.Image
    face: tuple[int, int, int, int]  # left, top, right, bottom


def cut_out(library: Library, source: str) -> Cutout:
    """The person of a portrait without the room around them: GrabCut (OpenCV, which the OCR engine
    brings) seeded with a head-and-shoulders shape laid on the face dlib finds, at 640 px high."""
    import cv2
    import dlib
    import numpy as np

    portrait = face_photo(library, source)
    height = 640
    portrait = portrait.resize((round(portrait.width * height / portrait.height), height), Image.Resampling.LANCZOS)
    pixels = np.asarray(portrait)
    found = dlib.get_frontal_face_detector()(pixels, 1)
    if len(found) != 1:
        raise Failure(f"{len(found)} faces found in {source}, where one was expected")
    left, top, right, bottom = found[0].left(), found[0].top(), found[0].right(), found[0].bottom()
    size, middle = right - left, (left + right) / 2

    def shape(widen: float) -> Any:
        """Head, neck and shoulders, `widen` times as wide as a person's."""
        drawn = Image.new("L", portrait.size, 0)
        pen = ImageDraw.Draw(drawn)
        head = size * 0.62 * widen
        pen.ellipse((middle - head, top - size * 0.55 * widen, middle + head, bottom + size * 0.15), fill=255)
        neck, shoulders, low = size * 0.4 * widen, size * 1.5 * widen, size * 1.6 * widen
        pen.polygon(
            [
                (middle - neck, bottom),
                (middle + neck, bottom),
                (middle + shoulders, bottom + size * 0.95),
                (middle + low, height),
                (middle - low, height),
                (middle - shoulders, bottom + size * 0.95),
            ],
            fill=255,
        )
        return np.asarray(drawn) > 0

    mask = np.full(pixels.shape[:2], cv2.GC_BGD, np.uint8)
    mask[shape(1.2)] = cv2.GC_PR_BGD
    mask[shape(1.0)] = cv2.GC_PR_FGD
    core = Image.new("L", portrait.size, 0)  # surely the person: the head, hair included, and the chest
    pen = ImageDraw.Draw(core)
    half = size * 0.47
    pen.ellipse((middle - half, top - size * 0.42, middle + half, top + size * 0.8), fill=255)
    chest = [(-0.3, 0.35), (0.3, 0.35), (0.8, 1.2), (0.9, 9), (-0.9, 9), (-0.8, 1.2)]
    pen.polygon([(middle + x * size, min(bottom + y * size, height)) for x, y in chest], fill=255)
    mask[np.asarray(core) > 0] = cv2.GC_FGD
    # the rooms' bright blue flags and curtains, which GrabCut takes for a suit by the shoulders: seen
    # away from the middle (where a blue tie is), they teach it that this blue is the room's
    hue, saturation, value = np.moveaxis(cv2.cvtColor(pixels, cv2.COLOR_RGB2HSV).astype(np.int32), 2, 0)
    aside = np.abs(np.arange(pixels.shape[1])[None, :] - middle) > size * 0.45
    bright_blue = aside & (hue >= 95) & (hue <= 125) & (saturation > 120) & (value > 90)
    mask[bright_blue & (mask != cv2.GC_FGD)] = cv2.GC_BGD
    cv2.setRNGSeed(1)
    models = (np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64))
    cv2.grabCut(cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR), mask, (0, 0, 0, 0), *models, 6, cv2.GC_INIT_WITH_MASK)
    alpha: Any = np.where((mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD), 255, 0).astype(np.uint8)
    # no thin strips of the room, and only the person: the largest piece left
    alpha = cv2.morphologyEx(alpha, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7)))
    count, labels, stats, _ = cv2.connectedComponentsWithStats(alpha)
    if count > 1:
        alpha = np.where(labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA])), 255, 0).astype(np.uint8)
    alpha = cv2.GaussianBlur(alpha, (5, 5), 0)
    return Cutout(Image.fromarray(np.dstack([pixels, alpha]), "RGBA"), (left, top, right, bottom))


def put_in(
    scene: Image.Image,
    person: Cutout,
    face_width: int,
    face_at: tuple[int, int],
    light: tuple[tuple[int, int, int], float, float],
) -> None:
    """`person` standing in `scene` with the face `face_width` px wide, its top middle at `face_at`,
    in the scene's `light` (tint, amount, dim: see `in_the_light`)."""
    left, top, right, _ = person.face
    scale = face_width / (right - left)
    size = (round(person.picture.width * scale), round(person.picture.height * scale))
    picture = in_the_light(person.picture.resize(size, Image.Resampling.LANCZOS), *light)
    at = (round(face_at[0] - (left + right) / 2 * scale), round(face_at[1] - top * scale))
    scene.paste(picture, at, picture)


VIEWPOINT = "train2017/000000216794.jpg"
CUT = "the person cut out of the portrait and put in"


def add_snapshots(library: Library) -> None:
    """Barack Obama by the café's sign at sunset (the README's picture) and beside its menu board, and
    with Joe Biden at a viewpoint over the city. The cut-out of obama.jpg keeps a scrap of the room
    by the shoulder on the picture's right: each time, that side is out of frame."""
    obama, biden = cut_out(library, "obama.jpg"), cut_out(library, "biden.jpg")

    name = "Camera Roll/2023/IMG_3149.jpg"
    terrace = cafe_terrace(library, (40, 318))
    put_in(terrace, obama, 100, (300, 335), (SUNSET, 0.16, 0.86))
    made = f"a sign drawn in; {CUT}"
    save_photo(library, terrace, name, "2023-05-13T19:51", RIBEIRA, (TERRACE, "faces/obama.jpg"), made)
    library.texts.append(("CAFE LUNA", name))
    library.shown.append((OBAMA, name))

    name = "Camera Roll/2023/IMG_3110.jpg"
    wall = menu_wall(board_x=60)
    put_in(wall, obama, 84, (540, 200), ((255, 220, 170), 0.06, 0.95))
    made = f"the tiles and the menu board drawn; {CUT}"
    save_photo(library, wall, name, "2023-05-12T11:04", ALFAMA, ("faces/obama.jpg",), made)
    library.texts.append(("CAFE DO CAIS", name))
    library.shown.append((OBAMA, name))

    name = "Camera Roll/2023/IMG_3121.jpg"
    view = corpus_photo(library, VIEWPOINT)
    put_in(view, biden, 74, (436, 200), ((255, 240, 210), 0.05, 1.0))
    put_in(view, obama, 78, (570, 212), ((255, 240, 210), 0.05, 1.0))
    sources = (VIEWPOINT, "faces/biden.jpg", "faces/obama.jpg")
    save_photo(library, view, name, "2023-05-12T17:52", ALFAMA, sources, "both people cut out and put in")
    library.shown += [(BIDEN, name), (OBAMA, name)]


Step = Callable[[Library], None]
STEPS: tuple[Step, ...] = (
    add_photos,
    add_cafe_sign,
    add_receipt,
    add_menu_board,
    add_video,
    add_portraits,
    add_snapshots,
)


# ---------------------------------------------------------------------------------------------
# The server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Server:
    base: str  # http://127.0.0.1:PORT
    process: subprocess.Popen[bytes]
    log: Path

    def check(self) -> None:
        """Raise if the server has exited."""
        if self.process.poll() is not None:
            lines = [line.strip() for line in self.log.read_text(errors="replace").splitlines() if line.strip()]
            raise Failure(f"the server exited ({self.process.returncode}): {lines[-1] if lines else 'no output'}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # it stops its embedded Postgres on the way out
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)  # its own session: it and what it started
                self.process.wait(10)


@contextlib.contextmanager
def serving(top: Path, library: Path) -> Iterator[Server]:
    """`main.py serve` over `library`, with its data folder and its own embedded Postgres under
    `top`, on a free port; stopped on the way out."""
    port = free_port()
    env = dict(os.environ)
    env.update(
        IMAGE_DIR=str(library),
        DATA_DIR=str(top / "data"),
        DATABASE_URL="",  # empty: the embedded Postgres, under DATA_DIR
        CLIP_MODEL=str(TINY_CLIP),
        TEXT_TOWER="torch",
        OCR="on",
        FACES="on",
        HOST="127.0.0.1",
        PORT=str(port),
        API_TOKEN="",
        WATCH="auto",
        COCOINDEX_DISABLE_USAGE_TRACKING="1",
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_OFFLINE="1",
        PYTHONUNBUFFERED="1",
    )
    log = top / "serve.log"
    with open(log, "w") as out:
        process = subprocess.Popen(
            [sys.executable, str(ROOT / "main.py"), "serve"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Server(f"http://127.0.0.1:{port}", process, log)
    try:
        yield server
    finally:
        server.stop()


def wait_until_ready(server: Server, library: Library) -> None:
    """Poll `/api/status` until the first scan has indexed every item, the text pass has read every
    picture and the faces pass has looked at every item."""
    import httpx

    deadline = time.monotonic() + READY_TIMEOUT
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        server.check()
        try:
            status = httpx.get(f"{server.base}/api/status", timeout=5).json()
        except (httpx.TransportError, ValueError):
            status = {}
        if status.get("failed"):
            failed = status["failed"]
            raise Failure(f"{len(failed)} files could not be indexed, {failed[0]['path']}: {failed[0]['reason']}")
        text, faces = status.get("text") or {}, status.get("faces") or {}
        if faces.get("failed"):
            raise Failure(f"the faces pass could not read {faces['failed']} files: see the status page")
        if (
            status.get("live")
            and not status.get("scanning")
            and status.get("images") == library.items
            and text.get("waiting") == 0
            and text.get("read", 0) + text.get("skipped", 0) == library.pictures
            and faces.get("waiting") == 0
            and faces.get("read") == library.items
        ):
            return
        time.sleep(0.5)
    summary = {k: status.get(k) for k in ("live", "scanning", "images", "text", "faces")} if status else "no answer"
    raise Failure(f"the server was not ready after {READY_TIMEOUT:.0f} s (status: {summary})")


def check_text_read(server: Server, library: Library) -> None:
    """OCR read every line the picture relies on, in the file that shows it."""
    import httpx

    for words, name in library.texts:
        body = httpx.get(f"{server.base}/api/search", params={"q": f'text:"{words}"', "limit": 100}, timeout=30).json()
        where = [(r.get("text_match") or {}).get("where", []) for r in body.get("results", []) if r["path"] == name]
        if not any("ocr" in found for found in where):
            raise Failure(f"OCR did not read {words!r} in {name}")


def name_people(server: Server, library: Library) -> None:
    """Name each person of `library.people` through the API (the person found in their portrait), and
    check that each face the library shows was found, in the person it belongs to."""
    import httpx

    api = f"{server.base}/api/people"
    found = httpx.get(api, params={"hidden": "true"}, timeout=30).json()["people"]
    files = {}  # a person, and the files of their faces
    for p in found:
        files[p["id"]] = {item["path"] for item in httpx.get(f"{api}/{p['id']}", timeout=30).json()["items"]}
    for name, portrait in library.people.items():
        holders = [person for person, held in files.items() if portrait in held]
        if len(holders) != 1:
            raise Failure(f"{len(holders)} people found in {portrait} ({name}'s portrait), where one was expected")
        answer = httpx.patch(f"{api}/{holders[0]}", json={"name": name}, timeout=30)
        if answer.is_error:
            raise Failure(f"naming {name}: HTTP {answer.status_code} {answer.text[:200]}")
        missed = [file for who, file in library.shown if who == name and file not in files[holders[0]]]
        if missed:
            raise Failure(f"{name}'s face was not found in {', '.join(missed)}, or went to someone else")


# ---------------------------------------------------------------------------------------------
# The shot

# every thumbnail in view has loaded (those below the fold load lazily, and need not)
SHOWN = """() => [...document.querySelectorAll('.tile img, #chips img:not([hidden])')]
    .filter((img) => img.getBoundingClientRect().top < window.innerHeight)
    .every((img) => img.complete && img.naturalWidth > 0)"""
# the larger view has its picture, the boxes of the words and of the faces over it, and the faces' crops
LAID_OUT = """() => [...document.querySelectorAll('#viewer img:not([hidden])')]
    .every((img) => img.complete && img.naturalWidth > 0)
    && !document.getElementById('viewer-highlights').hidden
    && !document.getElementById('viewer-faces').hidden"""


def capture(base: str, grid: Path, larger: Path) -> None:
    """The results with the query's chips (`grid`), then the larger view of `LARGER_VIEW` (`larger`)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": WIDTH, "height": HEIGHT}, device_scale_factor=1)
            page.set_default_timeout(30_000)
            page.goto(f"{base}/")
            page.fill("#q", QUERY)
            page.press("#q", "Enter")
            page.wait_for_selector("#chips .chip.place")
            page.wait_for_selector("#chips .chip.with-person img:not([hidden])")
            page.wait_for_selector("#results .tile .badge.text")
            page.wait_for_function(SHOWN)
            page.mouse.move(0, HEIGHT - 1)  # no hover effects
            page.screenshot(path=str(grid), animations="disabled")
            page.click(f'.tile[data-path="{LARGER_VIEW}"] > button')
            page.wait_for_selector("#viewer-people-list .person-chip")
            page.wait_for_function(LAID_OUT)
            # the pointer on the picture (above the face) marks the faces, as "Show faces" would
            page.hover("#viewer-img", position={"x": 10, "y": 10})
            page.screenshot(path=str(larger), animations="disabled")
        finally:
            browser.close()


def compress(raw: Path, out: Path) -> None:
    """The screenshot as a 256-colour PNG: under half the size, and no visible difference. The octree's
    palette keeps skies smooth where median cut bands them; mapping onto it with Floyd-Steinberg keeps the
    photo in the larger view from looking posterised, and the page's flat colours stay flat (each has a
    palette colour within a step of it)."""
    with Image.open(raw) as shot:
        rgb = shot.convert("RGB")
        palette = rgb.quantize(colors=256, method=Image.Quantize.FASTOCTREE)
        small = rgb.quantize(palette=palette, dither=Image.Dither.FLOYDSTEINBERG)
    out.parent.mkdir(parents=True, exist_ok=True)
    small.save(out, "PNG", optimize=True)


# ---------------------------------------------------------------------------------------------
# The credits: every file of the library, and where its photos come from

LICENCES = {  # the names coco-mini's captions.jsonl gives, as COCO's licence list links them
    "Attribution License": ("CC BY 2.0", "https://creativecommons.org/licenses/by/2.0/"),
    "Attribution-ShareAlike License": ("CC BY-SA 2.0", "https://creativecommons.org/licenses/by-sa/2.0/"),
}
FACE_RECOGNITION = "https://pypi.org/project/face-recognition/1.3.0/"


def corpus_credits(corpus: Path) -> dict[str, dict[str, Any]]:
    """coco-mini's own record of each photo (`captions.jsonl`): its licence and its Flickr address."""
    import json

    path = corpus / "captions.jsonl"
    if not path.is_file():
        raise Failure(f"{path} is missing: the photos' licences come from it")
    rows = (json.loads(line) for line in path.read_text().splitlines() if line.strip())
    return {row["file"]: row for row in rows}


def source_label(source: str) -> str:
    return source.removeprefix("faces/") if source.startswith("faces/") else f"COCO {int(Path(source).stem)}"


def source_row(source: str, known: dict[str, dict[str, Any]]) -> str:
    """`| photo | source | author | licence |` for a corpus photo or a portrait."""
    if source.startswith("faces/"):
        who = next(p.who for p in PORTRAITS if f"faces/{p.source}" == source)
        where = f"{who}: `tests/test_images/{source_label(source)}` of [face_recognition 1.3.0]({FACE_RECOGNITION})"
        return f"| {source_label(source)} | {where} | not recorded (the package is Adam Geitgey's) | MIT |"
    row = known.get(source)
    if row is None or row.get("license") not in LICENCES:
        raise Failure(f"{source} has no CC BY or CC BY-SA licence in the corpus's captions.jsonl")
    licence, url = LICENCES[row["license"]]
    photo = Path(row["flickr_url"]).name.split("_")[0]  # 6255196340_da26cf2c9e_z.jpg
    where = f"Flickr photo [{photo}](https://www.flickr.com/photo.gne?id={photo}) ([the file]({row['flickr_url']}))"
    author = "not in coco-mini's record: named on the Flickr page"
    return f"| {source_label(source)} | {where} | {author} | [{licence}]({url}) |"


def write_credits(library: Library, path: Path, picture: str) -> None:
    """`path`: each file of the library as the page names it, what it is made of and how, and for each
    photo its source, author and licence."""
    known = corpus_credits(library.corpus)
    lines = [
        "# Credits for the screenshot",
        "",
        f"[The README's picture]({picture}) shows the search page over a small photo library that",
        "[make_screenshot.py](make_screenshot.py) lays out; it writes this page too. The photos come from",
        "[COCO](https://cocodataset.org/) (Flickr photos under Creative Commons licences, only CC BY and CC BY-SA",
        "here), and the portraits of two public figures from the test images of the face_recognition package.",
        "",
        "## The files",
        "",
        "| file (as the page names it) | made of | changes |",
        "| --- | --- | --- |",
    ]
    for credit in sorted(library.credits, key=lambda c: Path(c.name).name):
        sources = ", ".join(source_label(s) for s in credit.sources) or "–"
        lines.append(f"| {Path(credit.name).name} | {sources} | {credit.made} |")
    lines += ["", "## The photos", "", "| photo | source | author | licence |", "| --- | --- | --- | --- |"]
    used = {s for c in library.credits for s in c.sources}
    coco = sorted((s for s in used if not s.startswith("faces/")), key=lambda s: int(Path(s).stem))
    lines += [source_row(source, known) for source in [*coco, *sorted(used - set(coco))]]
    path.write_text("\n".join(lines) + "\n")


def make(out: Path, corpus: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="sightline-shot-") as name:
        top = Path(name).resolve()
        if top.is_relative_to(ROOT):
            raise Failure(f"the temporary folder {top} is inside the repository: set TMPDIR elsewhere")
        library = Library(folder=top / "Photos", corpus=corpus)
        library.folder.mkdir()
        for step in STEPS:
            step(library)
        with serving(top, library.folder) as server:
            wait_until_ready(server, library)
            check_text_read(server, library)
            name_people(server, library)
            raw, raw_larger = top / "shot.png", top / "larger.png"
            capture(server.base, raw, raw_larger)
        compress(raw, out)
        compress(raw_larger, out.with_name(f"{out.stem}-larger-view.png"))
        write_credits(library, out.with_name(f"{out.stem}-credits.md"), out.name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshot.png", help="the PNG to write")
    parser.add_argument("--corpus", type=Path, default=CORPUS, help="the coco-mini folder (default: %(default)s)")
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        make(args.out.resolve(), args.corpus.resolve())
    except Failure as failure:
        print(f"make_screenshot: {failure}", file=sys.stderr)
        return 1
    except Exception as exc:  # anything else is still one line
        print(f"make_screenshot: {type(exc).__name__}: {exc}".splitlines()[0], file=sys.stderr)
        return 1
    size = args.out.stat().st_size // 1024
    print(f"wrote {args.out} ({size} KB) in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
