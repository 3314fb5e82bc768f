"""Part 16, indexing with the default settings (issue 29): a cold `python main.py index` on about 2,000
photos with text in pictures (`OCR=auto`) and faces on, against the model alone measured in the
same run, the same with `OCR=off` (what reading the text adds), and the peak memory of both.

    python -m bench --corpus ../shared/data/coco-mini --random-weights ViT-B/32 --parts defaults

The photos are the corpus's, copied until about `--default-photos` (each copy's bytes made distinct,
so each is embedded, read and searched for faces as a new photo would be). Each run finds the image
tower already compiled for this CPU, as every run after a model's first does; the compiling itself,
once per model, is measured apart (its time and peak memory). The passes run niced: on a machine
shared with other work their wall time grows with that work's load, so say the load beside the
figures.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

from bench.common import Report, env_for, list_images, main_py, run_measured, verdict
from bench.indexing import distinct_copies, model_ceiling
from core.settings import Settings

GOAL_SHARE = 0.5  # of the model-alone rate, text and faces included
GOAL_BYTES = 1.5 * 2**30


def cold_index(settings: Settings, folder: Path, data: Path, ocr: str) -> tuple[dict[str, float], float, int]:
    """(summary, wall seconds, peak RSS) of `main.py index` from a cold process with OCR=`ocr`, faces on,
    the image tower compiled already (copied from this process's)."""
    towers = settings.compiled_image_dir
    if towers is not None and towers.is_dir():
        shutil.copytree(towers, data / "image-towers", dirs_exist_ok=True)
    trial = settings.with_overrides(image_dir=folder, data_dir=data, database_url="", ocr=ocr, faces=True)
    result, wall, peak = run_measured(main_py("index", "--json"), env_for(trial, FACES="on"))
    if result.returncode != 0:
        raise RuntimeError(f"index (OCR={ocr}) failed: {result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1]), wall, peak


def compiling(settings: Settings, work: Path) -> tuple[float, int] | None:
    """(wall seconds, peak RSS) of a fresh process compiling the image tower and embedding one
    picture with it; None where pictures do not go through a compiled tower."""
    if settings.compiled_image_dir is None:
        return None
    script = (
        "import sys; from pathlib import Path; import numpy as np; "
        "from core.models.embedder import open_embedder; "
        "e = open_embedder(sys.argv[1], 'cpu', sys.argv[2], image_dir=Path(sys.argv[3])); "
        "p = e.preprocessing; e.embed_pixels(np.zeros((1, p.crop_height, p.crop_width, 3), dtype=np.uint8))"
    )
    towers = work / "defaults-compile"
    cmd = [sys.executable, "-c", script, settings.clip_model, settings.precision, str(towers)]
    result, wall, peak = run_measured(cmd, dict(os.environ))
    if result.returncode != 0:
        raise RuntimeError(f"compiling the image tower failed: {result.stderr[-2000:]}")
    return wall, peak


def bench_defaults(settings: Settings, report: Report, work: Path, photos: int, without_text: bool = True) -> None:
    folder = work / "defaults-img"
    count = distinct_copies(list_images(settings.image_dir), folder, photos)
    loads = [os.getloadavg()[0]]
    before = model_ceiling(settings, 256)
    modes = ("auto", "off") if without_text else ("auto",)
    runs = {ocr: cold_index(settings, folder, work / f"defaults-data-{ocr}", ocr) for ocr in modes}
    ceiling = max(before, model_ceiling(settings, 256))
    loads.append(os.getloadavg()[0])
    auto, auto_wall, auto_peak = runs["auto"]
    if auto["text_read"] != count or auto["faces_read"] != count:
        raise RuntimeError(f"expected the text and faces of {count} photos read, got {auto}")
    share = count / auto_wall / ceiling
    load = f"load average {min(loads):.1f} to {max(loads):.1f}"
    report.add(
        "16 defaults",
        f"cold `main.py index`, {count} photos, default settings (text `auto`, faces on): photos/s, "
        "share of the model alone in the same run",
        f"{count / auto_wall:.1f}/s = {share:.0%} ({auto_wall:.0f} s)",
        f"model alone {ceiling:.1f}/s; {load}",
        "",
        f"≥ {GOAL_SHARE:.0%}",
        verdict(share >= GOAL_SHARE),
    )
    peaks = [auto_peak]
    if "off" in runs:
        _, off_wall, off_peak = runs["off"]
        peaks.append(off_peak)
        report.add(
            "16 defaults",
            "the same with OCR=off; the text's time against the rest's",
            f"{count / off_wall:.1f}/s = {count / off_wall / ceiling:.0%} ({off_wall:.0f} s)",
            f"the text adds {(auto_wall - off_wall) / off_wall:.2f} × the rest's time",
        )
    compiled = compiling(settings, work)
    if compiled is not None:
        report.add(
            "16 defaults",
            "once per model, before the first run: compiling the image tower for this CPU (a process of its own)",
            f"{compiled[0]:.0f} s, peak RSS {compiled[1] / 2**30:.2f} GB",
        )
    report.add(
        "16 defaults",
        f"peak RSS of those processes (text {' / '.join(runs)})",
        " / ".join(f"{peak / 2**30:.2f}" for peak in peaks) + " GB",
        "",
        "",
        "≤ 1.5 GB",
        verdict(max(peaks) <= GOAL_BYTES),
    )
