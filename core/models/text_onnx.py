"""The text tower compiled for queries: an ONNX graph, quantized to int8 where that keeps its answers,
run by onnxruntime on one thread.

A query through transformers' ViT-B/32 text tower takes about 10 ms in bfloat16 on one core here,
mostly spent reading 126 MB of weights and stepping through Python for each layer; the int8 graph
reads 64 MB in one call and takes about 3.4 ms. A cold `main.py search` also needs neither torch nor
transformers this way: onnxruntime and tokenizers import in a tenth of a second, where the two
took about 6 s.

It is made once per checkpoint (`compile_text_tower`, from the float32 transformers tower) and kept
under DATA_DIR/text-towers/<key>, the key a digest of the checkpoint's files. It is used only where
its check passed, on `PROBES` (short and long, cased, accented, other scripts, past the token limit):
- the token ids of its tokenizer equal transformers' for every probe, alone and padded in a batch;
- its embeddings are within `INT8_MIN_COSINE` of the float32 tower's for every probe; where the int8
  graph misses that, the float32 graph is kept if it is within `FLOAT32_MIN_COSINE`, and where even
  that fails, the folder records why and searches use the transformers tower.
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

from core.models import onnx_graphs
from core.models.onnx_graphs import open_session, publish, quiet, read_manifest, unit
from core.privacy import reports_off

log = logging.getLogger("sightline.model")

VERSION = 1  # of this module's graphs: a new one compiles them again
INT8_MIN_COSINE = 0.998
FLOAT32_MIN_COSINE = 0.99999

PROBES = (
    "a dog",
    "a dog running on the beach at sunset",
    "Two children playing football in a park, late afternoon light",
    "receipt from Café Luna, Lisbon",
    "CAFE LUNA",
    "IMG_4711",
    "a red square",
    "東京の夜景",
    "une tarte aux pommes sur la table",
    "birthday cake 🎂 with candles",
    "  extra   spaces\tand a tab ",
    "screenshot of a chat",
    "snow",
    "mountains, lake & forest (summer 2019)",
    "a photo of " + "a very long description that goes on " * 12,  # past every model's token limit
)


@dataclass(frozen=True)
class Compiled:
    """What a compiled folder holds, as its manifest says."""

    folder: Path
    usable: bool
    kind: str  # int8 | float32 | "" (not usable)
    inputs: tuple[str, ...]
    pad_to_max: bool
    pad_id: int
    max_tokens: int
    why: str = ""  # not usable: what the check found


def key_of(name: str, folder: str) -> str:
    """The compiled folder's name for a checkpoint: a changed checkpoint compiles again."""
    return onnx_graphs.key_of(name, folder, VERSION)


def read_compiled(folder: Path) -> Compiled | None:
    """The compiled tower in `folder`, or None where there is none (yet)."""
    manifest = read_manifest(folder)
    if manifest is None:
        return None
    return Compiled(
        folder=folder,
        usable=bool(manifest["usable"]),
        kind=str(manifest.get("kind", "")),
        inputs=tuple(manifest.get("inputs", ())),
        pad_to_max=bool(manifest.get("pad_to_max", False)),
        pad_id=int(manifest.get("pad_id", 0)),
        max_tokens=int(manifest.get("max_tokens", 77)),
        why=str(manifest.get("why", "")),
    )


class CompiledTextTower:
    """Texts → unit vectors through a compiled folder; safe to call from several threads."""

    def __init__(self, compiled: Compiled) -> None:
        from tokenizers import Tokenizer

        self.compiled = compiled
        self.tokenizer = Tokenizer.from_file(str(compiled.folder / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length=compiled.max_tokens)
        if compiled.pad_to_max:
            self.tokenizer.enable_padding(pad_id=compiled.pad_id, length=compiled.max_tokens)
        else:
            self.tokenizer.enable_padding(pad_id=compiled.pad_id)
        # one query is a few small products: more threads would wait on each other (`core.threads`)
        self.session = open_session(compiled.folder / f"text-{compiled.kind}.onnx", threads=1)

    def tokens(self, texts: list[str]) -> dict[str, np.ndarray]:
        encodings = self.tokenizer.encode_batch(texts)
        feeds = {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
        }
        return {name: feeds[name] for name in self.compiled.inputs}

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        (out,) = self.session.run(None, self.tokens(texts))
        return unit(out)


def _projected(tower: Any, output: str, inputs: tuple[str, ...]) -> Any:
    """The transformers tower as a module of token tensors → its pooled, projected output."""
    import torch

    class Projected(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.tower = tower

        def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
            return getattr(self.tower(**dict(zip(inputs, tensors))), output)

    return Projected().eval()


def compile_text_tower(
    tower: Any, hf_tokenizer: Any, output: str, pad_to_max: bool, max_tokens: int, target: Path
) -> Compiled:
    """Compile a float32 transformers text tower into `target` and check it (see the module's
    docstring); returns what was written, usable or not. Written whole or not at all."""
    import torch

    reports_off()  # before onnxruntime loads
    from onnxruntime.quantization import QuantType, quantize_dynamic

    started = time.monotonic()
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".compiling-", dir=target.parent))
    try:
        backend = getattr(hf_tokenizer, "backend_tokenizer", None)
        if backend is None:
            return _write(work, target, usable=False, why="the tokenizer has no fast (tokenizers) form")
        backend.save(str(work / "tokenizer.json"))
        padding: Any = "max_length" if pad_to_max else True
        reference = hf_tokenizer(
            list(PROBES), padding=padding, truncation=True, max_length=max_tokens, return_tensors="pt"
        )
        inputs = tuple(k for k in ("input_ids", "attention_mask") if k in reference)
        with torch.inference_mode():
            expected = unit(getattr(tower(**{k: reference[k] for k in inputs}), output).float().numpy())
        module = _projected(tower, output, inputs)
        sample = tuple(reference[k][:2] for k in inputs)
        axes = {k: {0: "texts", 1: "tokens"} for k in inputs}
        with torch.no_grad(), quiet():
            torch.onnx.export(
                module,
                sample,
                str(work / "text-float32.onnx"),
                input_names=list(inputs),
                output_names=["embedding"],
                dynamic_axes={**axes, "embedding": {0: "texts"}},
                opset_version=17,
                dynamo=False,
            )
            quantize_dynamic(work / "text-float32.onnx", work / "text-int8.onnx", weight_type=QuantType.QInt8)
        manifest: dict[str, Any] = {
            "inputs": list(inputs),
            "pad_to_max": pad_to_max,
            "pad_id": int(hf_tokenizer.pad_token_id if hf_tokenizer.pad_token_id is not None else 0),
            "max_tokens": max_tokens,
        }
        checks: dict[str, float] = {}
        for kind, floor in (("int8", INT8_MIN_COSINE), ("float32", FLOAT32_MIN_COSINE)):
            candidate = Compiled(work, True, kind, inputs, pad_to_max, manifest["pad_id"], max_tokens)
            found = _check(CompiledTextTower(candidate), reference, expected, inputs)
            if isinstance(found, str):
                return _write(work, target, usable=False, why=found, **manifest)
            checks[kind] = found
            if found >= floor:
                (work / f"text-{'float32' if kind == 'int8' else 'int8'}.onnx").unlink()
                return _write(
                    work,
                    target,
                    usable=True,
                    kind=kind,
                    min_cosine=checks,
                    seconds=time.monotonic() - started,
                    **manifest,
                )
        why = f"its embeddings are too far from the float32 tower's (lowest cosine {checks})"
        return _write(work, target, usable=False, why=why, **manifest)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _check(tower: CompiledTextTower, reference: Any, expected: np.ndarray, inputs: tuple[str, ...]) -> float | str:
    """The lowest cosine to the float32 tower over the probes, alone and in one batch; or why not."""
    batch = tower.tokens(list(PROBES))
    for name in inputs:
        if not np.array_equal(batch[name], reference[name].numpy()):
            return f"its tokenizer's {name} differ from transformers'"
    together = tower.embed_texts(list(PROBES))
    alone = np.concatenate([tower.embed_texts([p]) for p in PROBES])
    return float(min(np.sum(together * expected, axis=1).min(), np.sum(alone * expected, axis=1).min()))


def _write(work: Path, target: Path, **manifest: Any) -> Compiled:
    publish(work, target, manifest)
    compiled = read_compiled(target)
    assert compiled is not None
    return compiled
