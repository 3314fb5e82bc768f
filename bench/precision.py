"""Part 14: the image tower at each precision this CPU can run, on the corpus' own photos, in one run.

transformers at float32 and at bfloat16 (emulated, and slow, where the CPU has no native BF16),
the compiled graph (`core.models.image_onnx`) at float32 and at int8: pictures per second of batched
forward passes over already-prepared pixels (wall and CPU time, the best of interleaved rounds, so
load from other processes touches each alike), the lowest cosine of each to transformers' float32
over the photos, and what `PRECISION=auto` chose here.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from bench.common import Report, list_images, verdict
from core.media.pictures import Preprocessing, normalize, prepare_pixels
from core.models.checkpoints import cpu_has_native_bf16, cpu_kernels
from core.models.embedder import open_embedder
from core.models.image_onnx import CompiledImage, CompiledImageTower, compile_image_tower
from core.settings import Settings

ROUNDS = 3
PART = "14 precision"


def bench_precision(settings: Settings, report: Report, work: Path, photos: int = 64) -> None:
    files = list_images(settings.image_dir)[:photos]
    compiled = open_embedder(settings.clip_model, "cpu", "auto", image_dir=work / "precision-towers")
    prep = compiled.preprocessing
    pixels = np.stack([prepare_pixels(Image.open(f).convert("RGB"), prep) for f in files])
    size = settings.batch_size or compiled.batch_size
    started = time.perf_counter()
    compiled.embed_pixels(pixels[:1])  # compiles: what a first index pays once per model
    compile_seconds = time.perf_counter() - started
    chosen = compiled.precision
    candidates: dict[str, Callable[[np.ndarray], np.ndarray]] = {}
    for dtype in ("float32", "bfloat16"):
        candidates[f"transformers {dtype}"] = open_embedder(settings.clip_model, "cpu", dtype).embed_pixels
    # both graphs, whatever the check kept, to time each
    reference = open_embedder(settings.clip_model, "cpu", "float32")
    both = compile_image_tower(
        reference.vision_tower(), reference.family.image_output, prep, work / "precision-both", keep_both=True
    )
    threads = len(os.sched_getaffinity(0))
    for kind in ("float32", "int8"):
        if (both.folder / f"image-{kind}.onnx").exists():
            candidates[f"compiled {kind}"] = _through(
                CompiledImageTower(CompiledImage(both.folder, True, kind), threads), prep
            )
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in candidates}
    vectors: dict[str, np.ndarray] = {}
    for name, embed in candidates.items():  # warm-up: loads, first-call allocations
        vectors[name] = np.concatenate([embed(pixels[i : i + size]) for i in range(0, len(pixels), size)])
    for _ in range(ROUNDS):
        for name, embed in candidates.items():
            wall, cpu = time.perf_counter(), time.process_time()
            for i in range(0, len(pixels), size):
                embed(pixels[i : i + size])
            times[name].append((time.perf_counter() - wall, time.process_time() - cpu))
    expected = vectors["transformers float32"]
    base_wall = min(w for w, _ in times["transformers float32"])
    native = "native" if cpu_has_native_bf16() else "emulated: no native BF16 here"
    for name in candidates:
        wall = min(w for w, _ in times[name])
        cpu = min(c for _, c in times[name])
        cosine = float(np.sum(vectors[name] * expected, axis=1).min())
        label = f"{name} ({native})" if name == "transformers bfloat16" else name
        report.add(
            PART,
            f"image tower, {label}: pictures/s (CPU ms a picture), lowest cosine to float32 over {len(files)} photos",
            f"{len(pixels) / wall:.1f}/s ({1000 * cpu / len(pixels):.0f} ms), {cosine:.4f}",
            f"× {base_wall / wall:.2f} float32's speed",
            target="cosine ≥ 0.99" if "int8" in name else "",
            met=verdict(cosine >= 0.99) if "int8" in name else "",
        )
    made = f" (compiled once, {compile_seconds:.1f} s)" if compiled.compiled_image() is not None else ""
    report.add(
        PART,
        f"PRECISION=auto chose, on a CPU offering {cpu_kernels() or 'none of AVX2, AVX-512, AMX'}",
        f"{chosen}{made}",
    )


def _through(graph: CompiledImageTower, prep: Preprocessing) -> Callable[[np.ndarray], np.ndarray]:
    return lambda batch: graph.embed(normalize(batch, prep))
