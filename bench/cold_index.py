"""A cold `python main.py index` on an unchanged folder of 10,000 files: what a scheduled re-index
(cron, a NAS task) costs when nothing happened. The folder is indexed once, then a second cold
process is timed; that run embeds nothing, so the model it was indexed with does not change the
figure (the project's tiny test model indexes the first run in about a minute).

    python -m bench.cold_index [--files 10000] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

from bench.common import Report, env_for, main_py, median, run_alone, run_measured, verdict
from core.settings import PROJECT_ROOT, Settings, get_settings

TINY_MODEL = PROJECT_ROOT / "tests" / "fixtures" / "tiny-clip"
GOAL_SECONDS = 2.0


def small_photos(folder: Path, count: int, seed: int = 0) -> None:
    """`count` small JPEGs in 20 subfolders: the engine's work per unchanged file does not depend on
    the file's size, and 10,000 photo-sized ones would take minutes to write and to index."""
    rng = np.random.default_rng(seed)
    for i in range(count):
        sub = folder / f"sub{i % 20:02d}"
        sub.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
        Image.fromarray(pixels).resize((96, 72)).save(sub / f"photo-{i:05d}.jpg", quality=80)


def bench_cold_index(settings: Settings, report: Report, work: Path, files: int = 10_000, runs: int = 3) -> None:
    folder = work / "unchanged"
    small_photos(folder / "img", files)
    cold = settings.with_overrides(
        image_dir=folder / "img", data_dir=folder / "data", database_url="", clip_model=str(TINY_MODEL), ocr="off"
    )
    env = env_for(cold)
    first, first_wall, _ = run_measured(main_py("index", "--json"), env)
    if first.returncode != 0:
        raise RuntimeError(f"the first index failed: {first.stderr[-2000:]}")
    walls, peaks = [], []
    for _ in range(runs):
        again, wall, peak = run_measured(main_py("index", "--json"), env)
        if again.returncode != 0:
            raise RuntimeError(f"the re-index failed: {again.stderr[-2000:]}")
        summary = json.loads(again.stdout.strip().splitlines()[-1])
        if summary.get("unchanged") != files:
            raise RuntimeError(f"expected {files} unchanged files, got {summary}")
        walls.append(wall)
        peaks.append(peak)
    wall = median(walls)
    report.add(
        "12 cold index",
        f"`python main.py index` from a cold process on an unchanged folder of {files:,} files "
        f"(median of {runs}; peak RSS)",
        f"{wall:.2f} s wall ({max(peaks) / 1e9:.2f} GB)",
        f"{first_wall:.1f} s for the first index",
        "",
        "≤ 2 s",
        verdict(wall <= GOAL_SECONDS),
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.cold_index", description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    settings = get_settings()
    run_alone(
        "sightline-cold-index-", lambda report, work: bench_cold_index(settings, report, work, args.files, args.runs)
    )


if __name__ == "__main__":
    main()
