"""The image tower compiled for the CPU: an ONNX graph, quantized to int8 where that keeps its
answers, run by onnxruntime.

On a CPU the indexer spends its time in the image tower's matrix products. onnxruntime's int8
kernels (AVX2, and VNNI where the CPU has it) do them for about a third of the compute that
transformers' bfloat16 tower takes on a CPU with native BF16, and a fifth of float32's (ViT-B/32,
this project's 2-core AMD EPYC; `python -m bench --parts precision`), and hold 88 MB of weights
instead of 176 or 351.

It is made once per checkpoint (`compile_image_tower`, from the float32 transformers tower, about
20 s for ViT-B/32 on 2 cores) and kept under DATA_DIR/image-towers/<key>, the key a digest of the
checkpoint's files. It is used only where its check passed, on `probe_pictures` (gradients, noise,
shapes, text, stripes; dark and bright), in one batch and one by one:
- the int8 graph where every probe's embedding is within `INT8_MIN_COSINE` of the float32 tower's;
- else the float32 graph where it is within `FLOAT32_MIN_COSINE` (the same arithmetic, in one call);
- else the folder records why, and the indexer embeds through transformers at the precision the
  CPU suits (`core.models.checkpoints.choose_precision`).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from core.media.pictures import Preprocessing, normalize, prepare_pixels
from core.models import onnx_graphs
from core.models.onnx_graphs import open_session, publish, quiet, read_manifest, unit
from core.privacy import reports_off

log = logging.getLogger("sightline.model")

VERSION = 1  # of this module's graphs: a new one compiles them again
INT8_MIN_COSINE = 0.99
FLOAT32_MIN_COSINE = 0.9999
_PROBE_SIDE = 320


@dataclass(frozen=True)
class CompiledImage:
    """What a compiled image folder holds, as its manifest says."""

    folder: Path
    usable: bool
    kind: str  # int8 | float32 | "" (not usable)
    min_cosine: float | None = None  # of the graph kept, to the float32 tower, over the probes
    why: str = ""  # not usable: what the check found


def key_of(name: str, folder: str) -> str:
    return onnx_graphs.key_of(name, folder, VERSION)


def read_compiled_image(folder: Path) -> CompiledImage | None:
    """The compiled image tower in `folder`, or None where there is none (yet)."""
    manifest = read_manifest(folder)
    if manifest is None:
        return None
    cosine = manifest.get("min_cosine")
    return CompiledImage(
        folder=folder,
        usable=bool(manifest["usable"]),
        kind=str(manifest.get("kind", "")),
        min_cosine=float(cosine) if isinstance(cosine, (int, float)) else None,
        why=str(manifest.get("why", "")),
    )


class CompiledImageTower:
    """Normalised N×3×H×W float32 pixels → unit vectors; safe to call from several threads."""

    def __init__(self, compiled: CompiledImage, threads: int) -> None:
        self.compiled = compiled
        self.session = open_session(compiled.folder / f"image-{compiled.kind}.onnx", threads)

    def embed(self, pixels: np.ndarray) -> np.ndarray:
        (out,) = self.session.run(None, {"pixel_values": np.ascontiguousarray(pixels, dtype=np.float32)})
        return unit(out)


def probe_pictures(prep: Preprocessing) -> np.ndarray:
    """A fixed set of pictures unlike each other, prepared as the model's processor would: uint8
    N×H×W×3. Drawn, not shipped, so the check needs no file and the same set is made everywhere."""
    rng = np.random.default_rng(20261207)
    side = _PROBE_SIDE
    ramp = np.linspace(0, 255, side, dtype=np.float32)
    pictures: list[Image.Image] = []
    for colour in ((255, 80, 40), (40, 120, 255), (60, 200, 90)):  # gradients into a colour
        mix = ramp[None, :, None] / 255 * np.asarray(colour, dtype=np.float32)
        pictures.append(Image.fromarray(np.repeat(mix, side, axis=0).astype(np.uint8)))
    noise = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
    pictures.append(Image.fromarray(noise))
    pictures.append(Image.fromarray(noise).filter(ImageFilter.GaussianBlur(12)))  # soft, like a photo
    sky = np.zeros((side, side, 3), dtype=np.uint8)
    sky[: side // 2] = (135, 190, 235)
    sky[side // 2 :] = (70, 110, 40)
    pictures.append(Image.fromarray(sky))
    for background, ink in (((250, 250, 245), (20, 20, 20)), ((15, 15, 40), (250, 210, 60))):
        picture = Image.new("RGB", (side, side), background)
        draw = ImageDraw.Draw(picture)
        draw.ellipse((40, 40, 180, 180), fill=ink)
        draw.rectangle((170, 150, 300, 290), outline=ink, width=9)
        draw.text((30, 250), "CAFE LUNA 12:45", fill=ink)
        pictures.append(picture)
    stripes = (np.indices((side, side)).sum(axis=0) // 16 % 2 * 255).astype(np.uint8)
    pictures.append(Image.fromarray(stripes).convert("RGB"))
    pictures.append(Image.new("RGB", (side, side), (6, 5, 9)))  # a shot in the dark
    pictures.append(Image.new("RGB", (side, side), (252, 252, 250)))  # a white page
    people = Image.fromarray(rng.integers(90, 160, (side, side, 3), dtype=np.uint8)).filter(ImageFilter.BoxBlur(6))
    ImageDraw.Draw(people).ellipse((110, 60, 210, 190), fill=(224, 172, 140))  # a face-coloured oval
    pictures.append(people)
    return np.stack([prepare_pixels(picture, prep) for picture in pictures])


def compile_image_tower(
    tower: Any, output: str, prep: Preprocessing, target: Path, keep_both: bool = False
) -> CompiledImage:
    """Compile a float32 transformers image tower into `target` and check it (see the module's
    docstring); returns what was written, usable or not. Written whole or not at all. `keep_both`
    keeps the float32 graph beside an int8 one that passed (for the benchmark to time both)."""
    import torch

    reports_off()  # before onnxruntime loads
    from onnxruntime.quantization import QuantType, quantize_dynamic

    started = time.monotonic()
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".compiling-", dir=target.parent))
    try:
        probes = normalize(probe_pictures(prep), prep)
        with torch.inference_mode():
            expected = unit(getattr(tower(pixel_values=torch.from_numpy(probes)), output).float().numpy())
        with torch.no_grad(), quiet():
            torch.onnx.export(
                _projected(tower, output),
                (torch.from_numpy(probes[:2]),),
                str(work / "image-float32.onnx"),
                input_names=["pixel_values"],
                output_names=["embedding"],
                dynamic_axes={"pixel_values": {0: "pictures"}, "embedding": {0: "pictures"}},
                opset_version=17,
                dynamo=False,
            )
            quantize_dynamic(work / "image-float32.onnx", work / "image-int8.onnx", weight_type=QuantType.QInt8)
        checks: dict[str, float] = {}
        for kind, floor in (("int8", INT8_MIN_COSINE), ("float32", FLOAT32_MIN_COSINE)):
            candidate = CompiledImageTower(CompiledImage(work, True, kind), threads=1)
            checks[kind] = _lowest_cosine(candidate, probes, expected)
            del candidate
            if checks[kind] >= floor:
                if not keep_both:
                    (work / f"image-{'float32' if kind == 'int8' else 'int8'}.onnx").unlink()
                manifest = {"kind": kind, "min_cosine": checks[kind], "checks": checks}
                return _write(work, target, usable=True, seconds=round(time.monotonic() - started, 1), **manifest)
        for graph in work.glob("*.onnx"):  # hundreds of MB that will not be used
            graph.unlink()
        why = f"its embeddings are too far from the float32 tower's (lowest cosine {checks})"
        return _write(work, target, usable=False, why=why, checks=checks)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _projected(tower: Any, output: str) -> Any:
    """The transformers tower as a module of pixels → its pooled, projected output."""
    import torch

    class Projected(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.tower = tower

        def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
            return getattr(self.tower(pixel_values=pixel_values), output)

    return Projected().eval()


def _lowest_cosine(tower: CompiledImageTower, probes: np.ndarray, expected: np.ndarray) -> float:
    """Over the probes in one batch and one by one: int8 activations are scaled per call, so a
    picture's embedding depends a little on the batch it came in, and both must pass."""
    together = tower.embed(probes)
    alone = np.concatenate([tower.embed(probes[i : i + 1]) for i in range(len(probes))])
    return float(min(np.sum(together * expected, axis=1).min(), np.sum(alone * expected, axis=1).min()))


def _write(work: Path, target: Path, **manifest: Any) -> CompiledImage:
    publish(work, target, manifest)
    compiled = read_compiled_image(target)
    assert compiled is not None
    return compiled
