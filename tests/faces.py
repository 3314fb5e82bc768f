"""A folder of real faces for the people tests: the shared portraits of two public figures (see
`../shared/data/faces/NOTICE.md`) and variants made from them at run time: a crop, a mirror, a
darker copy, the two people side by side in one picture, and a picture with no face."""

from __future__ import annotations

import shutil
from pathlib import Path

from conftest import ROOT
from PIL import Image, ImageEnhance, ImageOps

SHARED_FACES = ROOT.parent / "shared" / "data" / "faces"

OBAMA = ("obama.jpg", "obama2.jpg", "obama3.jpg", "obama_partial_face.jpg", "obama_partial_face2.jpg")
BIDEN = ("biden.jpg",)


def portrait(name: str) -> Image.Image:
    path = SHARED_FACES / name
    if not path.is_file():
        raise AssertionError(f"{path} is missing: the people tests need the shared portraits")
    return ImageOps.exif_transpose(Image.open(path)).convert("RGB")


def side_by_side(left: Image.Image, right: Image.Image, height: int = 480) -> Image.Image:
    """Two pictures scaled to one height and pasted into one, as a group photo of two."""
    a = left.resize((round(left.width * height / left.height), height))
    b = right.resize((round(right.width * height / right.height), height))
    both = Image.new("RGB", (a.width + b.width, height), (200, 200, 200))
    both.paste(a, (0, 0))
    both.paste(b, (a.width, 0))
    return both


def write_faces(folder: Path) -> dict[str, str]:
    """Write the folder; returns {file name: who is in it} ("obama", "biden", "both" or "nobody")."""
    folder.mkdir(parents=True, exist_ok=True)
    who: dict[str, str] = {}
    for name in (*OBAMA, *BIDEN):
        shutil.copyfile(SHARED_FACES / name, folder / name)
        who[name] = "obama" if name in OBAMA else "biden"
    obama = portrait("obama.jpg")
    width, height = obama.size
    obama.crop((width // 8, 0, width - width // 8, height * 3 // 4)).save(folder / "obama-crop.jpg", quality=90)
    ImageOps.mirror(portrait("obama2.jpg")).save(folder / "obama-mirrored.jpg", quality=90)
    ImageEnhance.Brightness(portrait("biden.jpg")).enhance(0.6).save(folder / "biden-darker.jpg", quality=90)
    side_by_side(portrait("obama3.jpg"), portrait("biden.jpg")).save(folder / "together.jpg", quality=90)
    Image.linear_gradient("L").resize((400, 300)).convert("RGB").save(folder / "no-face.jpg", quality=90)
    who.update({"obama-crop.jpg": "obama", "obama-mirrored.jpg": "obama", "biden-darker.jpg": "biden"})
    who.update({"together.jpg": "both", "no-face.jpg": "nobody"})
    return who
