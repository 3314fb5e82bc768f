"""Faces (part 13): the faces pass after the embeddings and the text, as `main.py index` runs it with
the default settings, on the corpus plus the shared portraits and pictures made from them (two
people side by side, mirrored, darker): pictures per second, its share of the whole indexing time
against half of the embeddings' (the goal), how well the faces group into people (pairwise
precision and recall, every face of a portrait counted), and the memory the face models take.

    python -m bench --parts faces [--corpus ../shared/data/coco-mini]
"""

from __future__ import annotations

import asyncio
import itertools
import shutil
import time
from pathlib import Path

import psutil
from PIL import Image, ImageEnhance, ImageOps

from bench.common import Report, list_images, verdict
from core.settings import PROJECT_ROOT, Settings

PORTRAITS = PROJECT_ROOT.parent / "shared" / "data" / "faces"


def portrait_folder(folder: Path, variants: bool = True) -> dict[str, str]:
    """The portraits and pictures made of them (mirrored and darker copies with `variants`, and two
    people side by side); returns {file name: who} ("a+b" for two people)."""
    folder.mkdir(parents=True, exist_ok=True)
    who: dict[str, str] = {}
    opened = {}
    for path in sorted(PORTRAITS.glob("*.jpg")):
        shutil.copyfile(path, folder / path.name)
        who[path.name] = path.stem.split("_")[0].rstrip("0123456789")
        opened[path.name] = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
    for name, picture in opened.items() if variants else ():
        ImageOps.mirror(picture).save(folder / f"mirrored-{name}", quality=90)
        ImageEnhance.Brightness(picture).enhance(0.6).save(folder / f"darker-{name}", quality=90)
        who[f"mirrored-{name}"] = who[f"darker-{name}"] = who[name]
    for (a, pa), (b, pb) in itertools.combinations(opened.items(), 2):
        if who[a] != who[b]:
            height = 480
            left = pa.resize((round(pa.width * height / pa.height), height))
            right = pb.resize((round(pb.width * height / pb.height), height))
            both = Image.new("RGB", (left.width + right.width, height))
            both.paste(left, (0, 0))
            both.paste(right, (left.width, 0))
            both.save(folder / f"both-{Path(a).stem}-{b}", quality=90)
            who[f"both-{Path(a).stem}-{b}"] = f"{who[a]}+{who[b]}"
    return who


def grouping(url: str, table: str, who: dict[str, str]) -> tuple[float, float, int]:
    """Pairwise precision and recall of the people the portraits' faces are in, and how many faces."""
    from core.store.db import connect

    with connect(url) as conn:
        rows = conn.execute(
            f"SELECT i.path, f.x0, fp.person_id FROM {table} i JOIN faces f ON f.content_hash = i.content_hash "
            "LEFT JOIN face_people fp ON fp.face_id = f.id WHERE i.path LIKE 'portraits/%%'"
        ).fetchall()
    truth: list[str] = []
    got: list[int | None] = []
    for path, x0, person in rows:
        names = who[path.removeprefix("portraits/")].split("+")
        truth.append(names[0] if len(names) == 1 or x0 < 0.5 else names[1])  # side by side: left, right
        got.append(person)
    same_truth = same_got = both = 0
    for i, j in itertools.combinations(range(len(truth)), 2):
        t = truth[i] == truth[j]
        g = got[i] is not None and got[i] == got[j]
        same_truth += t
        same_got += g
        both += t and g
    return both / max(1, same_got), both / max(1, same_truth), len(truth)


def bench_faces(settings: Settings, report: Report, work: Path, corpus: Path | None, variants: bool = True) -> None:
    from bench.indexing import EMBEDDERS, model_ceiling
    from core.models.faces import open_face_model
    from core.store.db import database_url, ensure_schema
    from core.store.model_state import model_table
    from flows.engine import index_once
    from flows.face_pass import FacePass
    from flows.ocr_pass import OcrPass

    folder = work / "faces-photos"
    folder.mkdir(parents=True, exist_ok=True)
    for n, path in enumerate(list_images(corpus or settings.image_dir)):
        shutil.copyfile(path, folder / f"{n:04d}{path.suffix.lower()}")
    who = portrait_folder(folder / "portraits", variants)
    trial = settings.with_overrides(image_dir=folder, data_dir=work / "faces-data", ocr="off", faces=False)
    model_ceiling(trial, 8)  # the model loaded and the database started first, as in a running server
    url = database_url(trial)
    ensure_schema(url)
    summary = asyncio.run(index_once(trial, embedders=EMBEDDERS))
    started = time.perf_counter()
    OcrPass(trial.with_overrides(ocr="auto"), url).run_until_done()
    ocr_seconds = time.perf_counter() - started
    process = psutil.Process()
    before = process.memory_info().rss
    open_face_model()
    model_mb = (process.memory_info().rss - before) / 2**20
    started = time.perf_counter()
    read = FacePass(trial.with_overrides(faces=True), url).run_until_done()
    face_seconds = time.perf_counter() - started
    total = summary.seconds + ocr_seconds + face_seconds
    pictures = summary.added
    report.add(
        "13 faces",
        f"the faces pass after indexing {pictures} pictures (embeddings, then text, then faces): pictures/s, "
        "share of the whole",
        f"{read / face_seconds:.1f}/s, {face_seconds:.1f} s = {face_seconds / total:.0%} of {total:.1f} s",
        f"embeddings {summary.seconds:.1f} s, text {ocr_seconds:.1f} s",
        target="faces ≤ half of the embeddings' time",
        met=verdict(face_seconds <= summary.seconds / 2),
    )
    precision, recall, faces = grouping(url, model_table(trial.clip_model), who)
    report.add(
        "13 faces",
        f"grouping the {faces} faces of {len(who)} portraits and pictures made of them: pairwise precision / recall",
        f"{precision:.3f} / {recall:.3f}",
    )
    report.add("13 faces", "memory of the face models (RSS added by loading them)", f"{model_mb:.0f} MB")
