"""Faces (part 13): the faces pass after the embeddings, on the corpus plus the shared portraits and
pictures made from them (two people side by side, mirrored, darker): pictures per second alone;
what it adds to an update with the default settings, where it runs beside the text pass as
`main.py index` runs them, against half of the embeddings' time (the goal); how well the faces
group into people (pairwise precision and recall, every face of a portrait counted); and the memory
the face models take.

    python -m bench --parts faces [--corpus ../shared/data/coco-mini]
"""

from __future__ import annotations

import asyncio
import itertools
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from PIL import Image, ImageEnhance, ImageOps

from bench.common import Report, list_images, verdict
from core.settings import PROJECT_ROOT, Settings

T = TypeVar("T")
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
    rows.sort(key=lambda row: (row[0], row[1]))  # side by side, the left face first
    for n, (path, _x0, person) in enumerate(rows):
        names = who[path.removeprefix("portraits/")].split("+")
        truth.append(names[0] if len(names) == 1 or n == 0 or rows[n - 1][0] != path else names[1])
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
    from core.store.db import database_url, ensure_schema
    from core.store.model_state import model_table
    from flows import passes
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
    pictures, embeddings = summary.added, summary.seconds
    # the faces pass alone, then what it adds to an update with the default settings, where it runs
    # beside the text pass (`flows.passes.run_once`): the text alone, then both, from the same start
    read, alone = _timed(lambda: FacePass(trial.with_overrides(faces=True), url).run_until_done())
    _forget_passes(url)
    _, text = _timed(lambda: OcrPass(trial.with_overrides(ocr="auto"), url).run_until_done())
    _forget_passes(url)
    defaults = trial.with_overrides(ocr="auto", faces=True)
    _, both = _timed(lambda: asyncio.run(passes.run_once(defaults, url, None)))
    report.add(
        "13 faces",
        f"the faces pass alone after indexing {pictures} pictures: pictures/s, against the embeddings' time",
        f"{read / alone:.1f}/s, {alone:.1f} s = {alone / embeddings:.2f} × the embeddings' {embeddings:.1f} s",
    )
    added = both - text
    report.add(
        "13 faces",
        "what the faces add to an update with the default settings (text and faces side by side, "
        "against the text alone)",
        f"{added:+.1f} s = {added / embeddings:+.2f} × the embeddings' time",
        f"text alone {text:.1f} s, both {both:.1f} s",
        target="≤ 0.5 × the embeddings' time",
        met=verdict(added <= embeddings / 2),
    )
    precision, recall, faces = grouping(url, model_table(trial.clip_model), who)
    report.add(
        "13 faces",
        f"grouping the {faces} faces of {len(who)} portraits and pictures made of them: pairwise precision / recall",
        f"{precision:.3f} / {recall:.3f}",
    )
    report.add(
        "13 faces", "memory of the face models (RSS a process adds by loading them and finding faces once)",
        f"{face_model_memory():.0f} MB",
    )  # fmt: skip


def _timed(work: Callable[[], T]) -> tuple[T, float]:
    started = time.perf_counter()
    done = work()
    return done, time.perf_counter() - started


def _forget_passes(url: str) -> None:
    """Forget what the text and faces passes stored, as if the library had just been indexed."""
    from core.store.db import connect

    with connect(url) as conn:
        conn.execute("TRUNCATE picture_text, face_scans, faces, face_people, face_corrections, people CASCADE")


def face_model_memory() -> float:
    """In a process of its own, so that what this one loaded before does not count."""
    probe = (
        "import psutil; from PIL import Image; import core.models.faces as faces\n"
        "process = psutil.Process(); before = process.memory_info().rss\n"
        "faces.open_face_model().find(Image.new('RGB', (1600, 1200), (128, 128, 128)))\n"
        "print((process.memory_info().rss - before) / 2**20)"
    )
    run = subprocess.run([sys.executable, "-c", probe], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True)
    return float(run.stdout)
