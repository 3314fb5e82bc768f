"""Formats: indexing 12 MP JPEGs, HEICs, DNGs and videos end to end (files/s), beside decoding
alone and the model alone in the same run, so it shows where the time goes; and decode speed per
still format, the cheapest faithful path (JPEG draft, HEIC thumbnail, RAW preview) against a full
decode, through `decode_image` as the indexer calls it.

    python -m bench.formats [PHOTO]   # the decode table alone; PHOTO: the first coco-mini photo
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import time
from pathlib import Path

from PIL import Image

from bench.common import Report
from core.media.pictures import Preprocessing, decode_image
from core.settings import PROJECT_ROOT, Settings

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


def bench_formats(
    settings: Settings,
    report: Report,
    work: Path,
    count: int,
    size: tuple[int, int] = TWELVE_MP,
    video: tuple[int, int] = (1920, 1080),
    shot_seconds: float = 5.0,
    decode_seconds: float = 2.0,
) -> None:
    """`count` files of each kind made from the corpus's photos, each kind indexed into a fresh
    database with the model loaded; decoding alone and the model alone timed in the same run.
    `size` is the stills' pixels, `video` a clip's frame size, each of its four shots
    `shot_seconds` long (smaller in the smoke run)."""
    from bench.indexing import EMBEDDERS, model_ceiling
    from flows.engine import index_once

    sys.path.insert(0, str(PROJECT_ROOT / "tests"))
    import stills
    from videos import write_video

    photos = sorted(p for p in settings.image_dir.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg"))[:count]
    kinds: dict[str, Path] = {}
    mp = f"{size[0] * size[1] / 1e6:.0f} MP"
    jpeg, heic, dng, mp4 = f"jpeg {mp}", f"heic {mp}", f"dng {mp} + preview", f"mp4 {video[1]}p {4 * shot_seconds:g} s"
    for kind in (jpeg, heic, dng, mp4):
        folder = kinds[kind] = work / "formats" / kind.split()[0]
        folder.mkdir(parents=True, exist_ok=True)
    facts = stills.Facts(camera="bench")
    for i, photo in enumerate(photos):
        with Image.open(photo) as source:
            big = source.convert("RGB").resize(size, Image.Resampling.BICUBIC)
        stills.write_jpeg(kinds[jpeg] / f"{i}.jpg", big, facts)
        stills.write_heic(kinds[heic] / f"{i}.heic", big, facts, thumbnail=320)
        preview = big.resize((1024, 768), Image.Resampling.BICUBIC)
        stills.write_dng(kinds[dng] / f"{i}.dng", big, facts, preview=preview)
        if i % 4 == 0:  # a video of four shots of five seconds each, as a phone clip pans
            shots = [(Image.open(p).convert("RGB"), shot_seconds) for p in photos[i : i + 4]]
            write_video(kinds[mp4] / f"{i}.mp4", shots, fps=30, size=video)
    model = EMBEDDERS.get(settings.clip_model, settings.device, settings.precision)
    ceiling = model_ceiling(settings, 64)
    # what an update costs with nothing to do (starting the engine, opening tables): not the files'
    empty = work / "formats" / "empty"
    empty.mkdir()
    fixed = asyncio.run(
        index_once(
            settings.with_overrides(image_dir=empty, data_dir=work / "formats-data" / "empty"), embedders=EMBEDDERS
        )
    ).seconds
    for kind, folder in kinds.items():
        files = sorted(folder.iterdir())
        trial = settings.with_overrides(image_dir=folder, data_dir=work / "formats-data" / folder.name)
        summary = asyncio.run(index_once(trial, embedders=EMBEDDERS))
        rate = len(files) / max(summary.seconds - fixed, 1e-3)
        if kind.startswith("mp4"):
            from core.media.videos import sample_frames

            started = time.perf_counter()
            frames = sum(len(list(sample_frames(f, model.preprocessing, max_pixels=10**8))) for f in files)
            decode = len(files) / (time.perf_counter() - started)
            alone = ceiling / (frames / len(files))
            detail = f"{frames / len(files):.1f} frames a file"
        else:
            decode = decode_rate(files[0], draft=True, seconds=decode_seconds)
            alone = ceiling
            detail = "decode on the file workers"
        report.add(
            "10 formats",
            f"files/s indexing {len(files)} × {kind} ({detail}; an update's fixed {fixed:.1f} s not counted)",
            f"{rate:.1f}",
            f"decode alone {decode:.1f}/s, model alone {alone:.1f}/s",
            f"{rate / min(decode, alone):.0%} of the slower",
        )
        shutil.rmtree(trial.data_dir, ignore_errors=True)


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
