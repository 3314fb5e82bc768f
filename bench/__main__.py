"""`python -m bench`: Sightline against the usual way, side by side in one run, as one markdown table.

    python -m bench                                   # generated corpus, CLIP_MODEL
    python -m bench --corpus ../shared/data/coco-mini --random-weights ViT-B/32
    python -m bench --smoke                           # seconds: proves the benchmark still runs

Writes the table to bench/RESULTS.md (or --out) with the machine's CPU, cores and the date.
"""

from __future__ import annotations

import os

os.environ.setdefault("COCOINDEX_DISABLE_USAGE_TRACKING", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from collections.abc import Callable  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from bench.cold_index import bench_cold_index  # noqa: E402
from bench.common import Report, cpu_name, env_for, generate_photos  # noqa: E402
from bench.defaults import bench_defaults  # noqa: E402
from bench.duplicates import bench_duplicates  # noqa: E402
from bench.faces import bench_faces  # noqa: E402
from bench.formats import bench_formats  # noqa: E402
from bench.indexing import EMBEDDERS, bench_indexing  # noqa: E402
from bench.load import load_test  # noqa: E402
from bench.ocr import bench_ocr  # noqa: E402
from bench.precision import bench_precision  # noqa: E402
from bench.random_model import DEFAULT_TOKENIZER, build_random_clip  # noqa: E402
from bench.scale import query_at_scale  # noqa: E402
from bench.serving import cold_search, live_latency  # noqa: E402
from bench.switch import model_switch  # noqa: E402
from bench.writes import bench_writes  # noqa: E402
from core.models.embedder import open_embedder  # noqa: E402
from core.settings import PROJECT_ROOT, get_settings, load_settings  # noqa: E402
from core.store.db import database_url  # noqa: E402

# Part 10 at smoke size: every kind still made, indexed and decoded, at 2 MP and 720p, with short
# shots and timings (the 12 MP HEIC and DNG writes alone took about 20 s)
SMOKE_FORMATS: dict[str, Any] = {"size": (1600, 1200), "video": (1280, 720), "shot_seconds": 1.0, "decode_seconds": 0.5}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, help="a folder of images (default: generate --images photos)")
    parser.add_argument("--images", type=int, default=240, help="how many photos to generate")
    parser.add_argument("--model", help="model id or folder (default: CLIP_MODEL)")
    parser.add_argument("--random-weights", metavar="ARCH", help="time a randomly initialised ARCH, e.g. ViT-B/32")
    parser.add_argument("--tokenizer", type=Path, default=DEFAULT_TOKENIZER, help="tokenizer for --random-weights")
    parser.add_argument("--scale", default="10000,100000", help="index sizes for query latency")
    parser.add_argument("--dup-scale", default="10000,100000", help="index sizes for duplicate grouping")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--drops", type=int, default=20)
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients in the load test")
    parser.add_argument("--load-seconds", type=float, default=60, help="how long the load test runs")
    parser.add_argument("--load-size", type=int, default=10_000, help="images in the load test's index")
    parser.add_argument("--usual-sample", type=int, default=120, help="images timed the usual way")
    parser.add_argument("--cold-photos", type=int, default=2000, help="photos in part 1's larger cold-process run")
    parser.add_argument(
        "--cold-repeats", type=int, default=3, help="cold `main.py search` runs timed per case (part 6)"
    )
    parser.add_argument("--format-files", type=int, default=16, help="12 MP files of each format to index")
    parser.add_argument("--ocr-photos", type=int, default=240, help="photos read by OCR (half with words on them)")
    parser.add_argument("--unchanged-files", type=int, default=10_000, help="files in the cold re-index's folder")
    parser.add_argument("--write-files", type=int, default=200_000, help="files whose rows part 15 writes")
    parser.add_argument("--default-photos", type=int, default=2000, help="photos indexed with the default settings")
    parser.add_argument(
        "--parts",
        help="comma-separated parts to run (default all): indexing, formats, ocr, faces, live, "
        "scale, cold, coldindex, load, duplicates, switch, precision, writes, defaults",
    )
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, tiny model, a few seconds per part")
    parser.add_argument("--out", type=Path, help="where to write the table (default bench/RESULTS.md)")
    parser.add_argument("--keep", action="store_true", help="keep the working folder")
    args = parser.parse_args()
    if args.smoke:
        args.images, args.scale, args.queries, args.drops, args.usual_sample = 12, "500", 10, 2, 6
        args.format_files = 2
        args.ocr_photos = 6
        args.cold_photos, args.cold_repeats, args.default_photos = 48, 1, 12
        args.unchanged_files = 50
        args.write_files = 200
        args.dup_scale = "500"
        args.clients, args.load_seconds, args.load_size = 4, 3, 500
        args.model = args.model or str(PROJECT_ROOT / "tests" / "fixtures" / "tiny-clip")
    return args


def main() -> None:
    args = parse_args()
    work = Path(tempfile.mkdtemp(prefix="sightline-bench-"))
    base = get_settings()
    # as the settings read CLIP_MODEL (a relative folder under the project is that folder), so
    # that `main.py` runs given it by name find the same model as this process
    model_name = load_settings({"CLIP_MODEL": args.model}).clip_model if args.model else base.clip_model
    if args.random_weights:
        cached = base.data_dir / "bench-models" / args.random_weights.replace("/", "-")
        if not (cached / "config.json").exists():
            print(f"building a randomly initialised {args.random_weights} in {cached}", flush=True)
            build_random_clip(args.random_weights, cached, args.tokenizer)
        model_name = str(cached)
    image_dir = work / "img"
    if args.corpus:
        shutil.copytree(args.corpus, image_dir, symlinks=False)
    else:
        generate_photos(image_dir, args.images)
    # the other parts time the embeddings alone; part 11 times the OCR pass after them, part 13 the faces pass
    settings = base.with_overrides(
        image_dir=image_dir, data_dir=work / "data", database_url="", clip_model=model_name, ocr="off", faces=False
    )
    env = env_for(settings)
    # the model alone goes the way the indexer's processes go: through the compiled image tower where it serves
    EMBEDDERS.image_dir = settings.compiled_image_dir
    model = open_embedder(settings.clip_model, settings.device, settings.precision)
    report = Report()
    parts: dict[str, Callable[[], None]] = {
        "indexing": lambda: bench_indexing(settings, env, report, args.usual_sample, args.cold_photos),
        "formats": lambda: bench_formats(
            settings, report, work, args.format_files, **(SMOKE_FORMATS if args.smoke else {})
        ),
        "ocr": lambda: bench_ocr(settings, report, work, args.corpus, args.ocr_photos),
        "faces": lambda: bench_faces(settings, report, work, args.corpus, variants=not args.smoke),
        "live": lambda: live_latency(settings, env, report, args.drops, work),
        "scale": lambda: query_at_scale(
            settings, env, report, [int(s) for s in args.scale.split(",")], args.queries, work
        ),
        "cold": lambda: cold_search(settings, env, report, work, args.cold_repeats),
        "coldindex": lambda: bench_cold_index(settings, report, work, args.unchanged_files, 1 if args.smoke else 3),
        "load": lambda: load_test(settings, env, report, work, args.clients, args.load_seconds, args.load_size),
        "duplicates": lambda: bench_duplicates(
            database_url(settings), report, [int(s) for s in args.dup_scale.split(",")], model.dim
        ),
        "switch": lambda: model_switch(settings, env, report, work, args.queries),
        "precision": lambda: bench_precision(settings, report, work, 8 if args.smoke else 64),
        "writes": lambda: bench_writes(settings, report, work, args.write_files),
        "defaults": lambda: bench_defaults(settings, report, work, args.default_photos, without_text=not args.smoke),
    }
    chosen = [p.strip() for p in args.parts.split(",")] if args.parts else list(parts)
    unknown = [p for p in chosen if p not in parts]
    if unknown:
        raise SystemExit(f"--parts: unknown {', '.join(unknown)}; expected some of {', '.join(parts)}")
    try:
        for name in chosen:
            parts[name]()
        used = EMBEDDERS.get(settings.clip_model, settings.device, settings.precision)
        precision = used.precision if used.loaded else model.precision
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    table = render(report, model.name, precision, model.device, args)
    out = args.out or PROJECT_ROOT / "bench" / "RESULTS.md"
    out.write_text(table)
    print(table)
    print(f"written to {out}")


def render(report: Report, model: str, precision: str, device: str, args: argparse.Namespace) -> str:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    corpus = str(args.corpus) if args.corpus else f"{args.images} generated 640×480 JPEGs"
    shown_model = args.random_weights + " (random weights, timing only)" if args.random_weights else model
    lines = [
        "# Sightline benchmark",
        "",
        f"- date: {when}",
        f"- machine: {cpu_name()}, {os.cpu_count()} cores",
        f"- model: {shown_model}, {precision} on {device}",
        f"- corpus: {corpus}",
        f"- command: `python -m bench {' '.join(sys.argv[1:])}`".rstrip(),
        "",
        "| part | metric | Sightline | usual way | ratio | target | met |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in report.rows:
        lines.append(f"| {r.part} | {r.metric} | {r.ours} | {r.usual} | {r.ratio} | {r.target} | {r.met} |")
    lines += ["", *(f"- {n}" for n in report.notes), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
