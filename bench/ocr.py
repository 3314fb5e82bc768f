"""Text in pictures (OCR): how fast each way of reading is and how many of the words written over
real photos it finds, and what the OCR pass adds to indexing.

Every second photo of the corpus gets a short line of words (from the corpus's own captions where
it has them) rendered over it, in one of the machine's TrueType fonts, at 16 to 40 px, on a plate
or outlined, as signs, labels and captions look; the other half stay as they are. A word counts
as found when its letters appear in the picture's text, case aside: PP-OCRv4 often runs English
words together ("CAFELUNA"), which a substring or trigram search still finds; how many were also
read as separate words is said beside it.

    python -m bench.ocr [CORPUS] [--photos N]   # this part alone (default: coco-mini, every photo)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from bench.common import Report, list_images
from core.models.ocr import GLANCE_LONGEST, Reading, TextReader, read_picture
from core.settings import PROJECT_ROOT, Settings

FONTS = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSerif-Regular.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
)
FALLBACK_WORDS = "open daily bakery street coffee museum exit parking station market garden hotel river".split()
SIZES = (16, 20, 24, 32, 40)  # px on a 640 px photo; scaled with the photo's width


@dataclass(frozen=True)
class Sign:
    path: Path  # the photo it was made from
    picture: Image.Image
    words: tuple[str, ...]  # () for the photos left as they are


def corpus_words(folder: Path) -> list[str]:
    captions = folder / "captions.jsonl"
    if not captions.exists():
        return FALLBACK_WORDS
    words = set()
    for line in captions.read_text().splitlines():
        for caption in json.loads(line)["captions"]:
            words.update(re.findall(r"[A-Za-z]{3,}", caption))
    return sorted(words)


def _font(rng: random.Random, size: int) -> ImageFont.FreeTypeFont:
    fonts = [f for f in FONTS if Path(f).exists()]
    if not fonts:
        raise SystemExit("no TrueType font found (install fonts-dejavu-core)")
    return ImageFont.truetype(rng.choice(fonts), size)


def make_signs(photos: list[Path], words: list[str], seed: int = 1) -> list[Sign]:
    rng = random.Random(seed)
    signs = []
    for i, path in enumerate(photos):
        with Image.open(path) as opened:
            picture = opened.convert("RGB")
        if i % 2:
            signs.append(Sign(path, picture, ()))
            continue
        line = [rng.choice(words) for _ in range(rng.randint(2, 4))]
        if rng.random() < 0.4:
            line = [w.upper() for w in line]
        text = " ".join(line)
        pen = ImageDraw.Draw(picture)
        size = round(rng.choice(SIZES) * picture.width / 640)
        font = _font(rng, size)
        while pen.textlength(text, font=font) > picture.width - 20 and size > 10:
            size -= 2
            font = _font(rng, size)
        width = pen.textlength(text, font=font)
        x = rng.randint(6, max(6, int(picture.width - width - 6)))
        y = rng.randint(6, max(6, picture.height - int(1.4 * size) - 6))
        if rng.random() < 0.5:
            pen.rectangle((x - 6, y - 4, x + width + 6, y + 1.3 * size), fill=(245, 240, 228))
            pen.text((x, y), text, fill=(25, 25, 25), font=font)
        else:
            pen.text(
                (x, y), text, fill=(255, 255, 255), font=font, stroke_width=max(1, size // 12), stroke_fill="black"
            )
        signs.append(Sign(path, picture, tuple(line)))
    return signs


def _letters(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def words_found(written: tuple[str, ...], text: str) -> tuple[int, int]:
    """(words whose letters appear in `text`, words read as a separate word)."""
    joined = _letters(text)
    separate = {_letters(w) for w in text.split()}
    return sum(_letters(w) in joined for w in written), sum(_letters(w) in separate for w in written)


@dataclass
class Tally:
    seconds: float = 0.0
    pictures: int = 0
    written: int = 0
    found: int = 0
    separate: int = 0
    skipped_plain: int = 0  # photos without rendered words that auto skipped
    skipped_signs: int = 0  # photos with words that auto skipped

    @property
    def rate(self) -> float:
        return self.pictures / max(self.seconds, 1e-9)

    @property
    def recall(self) -> float:
        return self.found / max(self.written, 1)


def glance_first(reader: TextReader, picture: Image.Image) -> Reading:
    """The alternative measured for OCR=auto and not taken: detection alone on a small copy, and
    the fine reading only where it saw text."""
    if not reader.glance(picture):
        return Reading([], skipped="no text at a glance")
    return Reading(reader.read(picture, fine=True))


WAYS: dict[str, Callable[[TextReader, Image.Image], Reading]] = {
    "on": lambda reader, picture: read_picture(reader, picture, "on"),
    "auto": lambda reader, picture: read_picture(reader, picture, "auto"),
    f"glance at {GLANCE_LONGEST} px, then as on (not taken)": glance_first,
}


def measure(reader: TextReader, signs: list[Sign], way: Callable[[TextReader, Image.Image], Reading]) -> Tally:
    tally = Tally()
    for sign in signs:
        started = time.perf_counter()
        reading = way(reader, sign.picture)
        tally.seconds += time.perf_counter() - started
        tally.pictures += 1
        found, separate = words_found(sign.words, reading.text)
        tally.written += len(sign.words)
        tally.found += found
        tally.separate += separate
        if reading.skipped is not None:
            if sign.words:
                tally.skipped_signs += 1
            else:
                tally.skipped_plain += 1
    return tally


def bench_reading(report: Report, signs: list[Sign]) -> dict[str, Tally]:
    reader = TextReader(threads=1)  # as the OCR pass reads: one thread, beside the indexer
    reader.read(signs[0].picture)  # load and warm up
    tallies = {name: measure(reader, signs, way) for name, way in WAYS.items()}
    plain = sum(1 for s in signs if not s.words)
    with_words = len(signs) - plain
    for mode, t in tallies.items():
        report.add(
            "11 text",
            f"{'' if ' ' in mode else 'OCR='}{mode}: pictures/s (one thread), word recall; {len(signs)} photos, "
            f"{t.written} words rendered over {with_words}",
            f"{t.rate:.2f}/s, recall {t.recall:.3f} ({t.found}/{t.written}; {t.separate} as separate words)",
            "",
            "",
            "",
            "",
        )
    on = tallies["on"]
    for name, t in tallies.items():
        if name == "on":
            continue
        report.add(
            "11 text",
            f"{name} against OCR=on: time saved, words lost; photos skipped (without words, with words)",
            f"{1 - t.seconds / max(on.seconds, 1e-9):.0%} less time, {on.found - t.found} words lost",
            f"skipped {t.skipped_plain}/{plain} without, {t.skipped_signs}/{with_words} with",
        )
    return tallies


def bench_pass_share(settings: Settings, report: Report, work: Path, signs: list[Sign]) -> None:
    """Index the photos with the words on them (OCR=off), then let the OCR pass read them
    (OCR=auto): its share of the whole."""
    from bench.indexing import EMBEDDERS, model_ceiling
    from core.store.db import database_url, ensure_schema
    from flows.engine import index_once
    from flows.ocr_pass import OcrPass

    folder = work / "ocr-photos"
    folder.mkdir(parents=True, exist_ok=True)
    for n, sign in enumerate(signs):
        sign.picture.save(folder / f"{n:04d}.jpg", "JPEG", quality=90)
    trial = settings.with_overrides(image_dir=folder, data_dir=work / "ocr-data", ocr="off")
    # the model loaded and the database started first, as in a running server: neither is the files'
    model_ceiling(trial, 8)
    ensure_schema(database_url(trial))
    summary = asyncio.run(index_once(trial, embedders=EMBEDDERS))
    reading = OcrPass(trial.with_overrides(ocr="auto"), database_url(trial))
    started = time.perf_counter()
    done = reading.run_until_done()
    ocr_seconds = time.perf_counter() - started
    total = summary.seconds + ocr_seconds
    report.add(
        "11 text",
        f"the OCR pass after indexing {len(signs)} photos (OCR=auto): pictures/s, share of total indexing time",
        f"{done / ocr_seconds:.2f}/s, {ocr_seconds / total:.0%} of {total:.1f} s",
        f"embeddings {summary.seconds:.1f} s ({summary.embedded / summary.seconds:.1f} img/s)",
    )


def bench_ocr(settings: Settings, report: Report, work: Path, corpus: Path | None, photos: int) -> None:
    files = list_images(settings.image_dir)[:photos]
    signs = make_signs(files, corpus_words(corpus) if corpus else FALLBACK_WORDS)
    bench_reading(report, signs)
    bench_pass_share(settings, report, work, signs)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ocr", description=__doc__.splitlines()[0])
    parser.add_argument("corpus", nargs="?", type=Path, default=PROJECT_ROOT.parent / "shared" / "data" / "coco-mini")
    parser.add_argument("--photos", type=int, default=10_000)
    parser.add_argument("--model", help="also index the photos with this model and time the OCR pass after it")
    args = parser.parse_args()
    signs = make_signs(list_images(args.corpus)[: args.photos], corpus_words(args.corpus))
    report = Report()
    bench_reading(report, signs)
    if args.model:
        import tempfile

        from core.settings import get_settings

        with tempfile.TemporaryDirectory(prefix="sightline-bench-ocr-") as work:
            settings = get_settings().with_overrides(clip_model=args.model, database_url="", ocr="off")
            bench_pass_share(settings, report, Path(work), signs)
    for row in report.rows:
        print(f"| {row.part} | {row.metric} | {row.ours} | {row.usual} |")


if __name__ == "__main__":
    main()
