"""Decode speed per still format on a 12 MP photo: the cheapest faithful path (JPEG draft, HEIC
thumbnail, RAW preview) against a full decode, through `decode_image` as the indexer calls it.

Usage: python -m bench.formats [PHOTO] — PHOTO defaults to the first of the shared coco-mini photos.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from PIL import Image

from core.pictures import Preprocessing, decode_image
from core.settings import PROJECT_ROOT

CLIP_224 = Preprocessing(224, 224, 224, (0.481, 0.458, 0.408), (0.269, 0.261, 0.276))
TWELVE_MP = (4000, 3000)


def write_formats(photo: Path, folder: Path) -> dict[str, Path]:
    """The photo upscaled to 12 MP and written as a phone or camera would: JPEG, HEIC with a
    320 px thumbnail (as iPhones write), AVIF, JPEG XL, a DNG with a 1024 px preview (as Adobe's
    converter writes) and one without."""
    sys.path.insert(0, str(PROJECT_ROOT / "tests"))
    import stills

    folder.mkdir(parents=True, exist_ok=True)
    with Image.open(photo) as source:
        picture = source.convert("RGB").resize(TWELVE_MP, Image.Resampling.BICUBIC)
    preview = picture.resize((1024, 768), Image.Resampling.BICUBIC)
    facts = stills.Facts(camera="bench")
    return {
        "jpeg": stills.write_jpeg(folder / "photo.jpg", picture, facts),
        "heic": stills.write_heic(folder / "photo.heic", picture, facts, thumbnail=320),
        "avif": stills.write_avif(folder / "photo.avif", picture, facts),
        "jxl": stills.write_jxl(folder / "photo.jxl", picture, facts),
        "dng+preview": stills.write_dng(folder / "photo-preview.dng", picture, facts, preview=preview),
        "dng": stills.write_dng(folder / "photo.dng", picture, facts),
    }


def decode_rate(path: Path, *, draft: bool, seconds: float = 3.0, max_pixels: int = 100_000_000) -> float:
    """Images per second through `decode_image` (bytes in memory, pixels for a 224 px model)."""
    data = path.read_bytes()
    decode_image(data, CLIP_224, max_pixels=max_pixels, draft=draft, name=path.name)  # warm
    count, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds or count < 2:
        decode_image(data, CLIP_224, max_pixels=max_pixels, draft=draft, name=path.name)
        count += 1
    return count / elapsed


def main() -> None:
    photos = sorted((PROJECT_ROOT.parent / "shared" / "data" / "coco-mini").rglob("*.jpg"))
    photo = Path(sys.argv[1]) if len(sys.argv) > 1 else photos[0]
    folder = PROJECT_ROOT / "test-artifacts" / "bench-formats"
    files = write_formats(photo, folder)
    print("| format | file MB | cheapest path img/s | full decode img/s |")
    print("| --- | --- | --- | --- |")
    for name, path in files.items():
        cheap, full = decode_rate(path, draft=True), decode_rate(path, draft=False)
        print(f"| {name} | {path.stat().st_size / 1e6:.1f} | {cheap:.2f} | {full:.2f} |")


if __name__ == "__main__":
    main()
