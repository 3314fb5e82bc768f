"""The embedding model: the image and text towers of one CLIP or SigLIP checkpoint, loaded lazily.

Weights load through `transformers.from_pretrained` for a hub id and a local folder alike, so the
project's tiny test model exercises the same code as a real checkpoint. Everything heavy is lazy:
opening an embedder reads the checkpoint's JSON files only (`core.models.checkpoints`); torch and
transformers are imported, and each tower's weights loaded, the first time that tower is needed.
An `index` run with nothing new to embed never pays for them.

`Embedders` holds the ones a process has opened, so the live indexer and the web server of
`python main.py serve` share one loaded model.
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from core.errors import first_line
from core.media.pictures import normalize, normalize_tensor, prepare_pixels
from core.models import image_onnx
from core.models.checkpoints import (
    Checkpoint,
    ModelLoadError,
    auto_batch_size,
    choose_device,
    choose_precision,
    find_checkpoint,
)
from core.models.image_onnx import CompiledImageTower, compile_image_tower, read_compiled_image
from core.models.text_onnx import Compiled, CompiledTextTower, compile_text_tower, key_of, read_compiled
from core.threads import one_torch_thread, usable_cores

log = logging.getLogger("sightline.model")

# `from_pretrained` sets torch's default dtype for the whole process while it builds a model, so a
# float32 tower built or traced in one thread while another builds a bfloat16 one gets some
# bfloat16 tensors ("mixed dtype" in the first layer norm). Building and compiling take turns.
_BUILDING = threading.RLock()


class Embedder:
    """A checkpoint's towers at the chosen precision, with L2-normalised output. The two towers
    load on first use, each with only its own weights: an indexer holds no text tower until a
    query comes, and a text search never loads the image tower.

    With `compiled_dir`, queries go through the compiled text tower kept there once it is made
    (`core.models.text_onnx`); with `image_dir`, pictures on the CPU go through the compiled image
    tower kept there, made the first time one is embedded (`core.models.image_onnx`)."""

    def __init__(
        self,
        checkpoint: Checkpoint,
        device: str = "auto",
        precision: str = "auto",
        compiled_dir: Path | None = None,
        image_dir: Path | None = None,
    ):
        self.checkpoint = checkpoint
        self.name = checkpoint.name
        self.dim = checkpoint.spec.dim
        self.max_tokens = checkpoint.spec.max_tokens
        self.preprocessing = checkpoint.spec.preprocessing
        self.family = checkpoint.spec.family
        self._folder = checkpoint.folder
        self._requested = (device, precision)
        self._device: str | None = None
        self._precision: str | None = None
        self._vision: Any = None
        self._text: Any = None
        self._tokenizer: Any = None
        # the compiled text tower (`core.models.text_onnx`): kept under compiled_dir, looked for once
        self._compiled_dir = compiled_dir
        self._compiled: CompiledTextTower | None = None
        self._compiled_looked = False
        self._image_dir = image_dir
        self._compiled_image: CompiledImageTower | None = None
        self._image_looked = False
        self._image_kind: str | None = None  # the compiled graph's, once one served (kept by `unload`)
        # compiling takes seconds: a lock of its own, so queries never wait for it
        self._image_lock = threading.Lock()
        self._text_cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._text_cache_size = 1024
        self._text_waiting: dict[str, Future[np.ndarray]] = {}  # queries queued for the next batch
        self._text_worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sightline-text-tower")
        self.text_batches = 0  # forward passes of the text tower made by `embed_text`
        # guards loading and the text cache; forward passes may overlap, so a search never waits
        # for an indexing batch
        self._lock = threading.RLock()

    def _resolve(self) -> tuple[str, str]:
        with self._lock:
            if self._device is None or self._precision is None:
                self._device = choose_device(self._requested[0])
                self._precision = choose_precision(self._requested[1], self._device)
            return self._device, self._precision

    @property
    def device(self) -> str:
        return self._resolve()[0]

    @property
    def precision(self) -> str:
        """What pictures are embedded in: the compiled image tower's graph (int8 or float32) once it
        serves, else the transformers towers' dtype."""
        return self._image_kind or self._resolve()[1]

    @property
    def logit_scale(self) -> float:
        return self.checkpoint.logit_scale

    @property
    def loaded(self) -> bool:
        """Whether any weights are in memory (device and precision are then settled)."""
        return self._vision is not None or self._text is not None or self._compiled_image is not None

    @property
    def settled(self) -> bool:
        """Whether the device and precision are known (they are once any weights were loaded)."""
        return self._device is not None and self._precision is not None

    def unload(self) -> None:
        """Let go of the towers' weights (the next use loads them again), keeping what was settled."""
        with self._lock, self._image_lock:
            self._vision = self._text = None
            self._compiled_image = None  # read again from its folder at the next use
            self._image_looked = False

    def _dtype(self) -> Any:
        import torch

        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[self._resolve()[1]]

    def _load(self, loader_name: str, part: str, float32_cpu: bool = False) -> Any:
        with _BUILDING:
            return self._build(loader_name, part, float32_cpu)

    def _build(self, loader_name: str, part: str, float32_cpu: bool) -> Any:
        import torch
        import transformers

        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()
        config = getattr(transformers, self.family.config_class).from_pretrained(self._folder)
        tower_config = getattr(config, part)
        if self.family.config_class == "CLIPConfig":
            tower_config.projection_dim = self.dim  # the tower's own config may lack the projection size
        try:
            tower = getattr(transformers, loader_name).from_pretrained(
                self._folder, config=tower_config, dtype=torch.float32 if float32_cpu else self._dtype()
            )
        except (OSError, ValueError) as exc:
            raise ModelLoadError(
                f"Cannot load the weights of CLIP_MODEL={self.name!r} ({self.family.label}): {exc}"
            ) from exc
        return tower.to("cpu" if float32_cpu else self.device).eval()

    def vision_tower(self) -> Any:
        with self._lock:
            if self._vision is None:
                self._vision = self._load(self.family.vision_class, "vision_config")
            return self._vision

    def _hf_tokenizer(self) -> Any:
        with self._lock:
            if self._tokenizer is None:
                from transformers import AutoTokenizer

                try:
                    self._tokenizer = AutoTokenizer.from_pretrained(self._folder)
                except (ImportError, OSError, ValueError) as exc:
                    reason = first_line(exc)
                    raise ModelLoadError(f"Cannot load the tokenizer of CLIP_MODEL={self.name!r}: {reason}") from exc
            return self._tokenizer

    def text_tower(self) -> tuple[Any, Any]:
        """The transformers text tower and its tokenizer."""
        with self._lock:
            tokenizer = self._hf_tokenizer()
            if self._text is None:
                self._text = self._load(self.family.text_class, "text_config")
            return self._text, tokenizer

    @cached_property
    def compiled_folder(self) -> Path | None:
        """Where this checkpoint's compiled text tower is kept; None where none is used. Found once:
        the key stats the checkpoint's files, and every query asks."""
        if self._compiled_dir is None:
            return None
        return self._compiled_dir / key_of(self.name, self._folder)

    def compiled_text(self) -> CompiledTextTower | None:
        """The compiled text tower, where one was made for this checkpoint and passed its check."""
        if self._compiled is not None or self._compiled_looked:
            return self._compiled
        with self._lock:
            folder = self.compiled_folder
            if self._compiled is None and not self._compiled_looked and folder is not None:
                self._compiled_looked = True
                found = read_compiled(folder)
                if found is not None and found.usable:
                    try:
                        self._compiled = CompiledTextTower(found)
                    except Exception as exc:
                        # damaged: transformers answers, and the next compile makes it again
                        log.warning("the compiled text tower in %s does not load (%s); using transformers", folder, exc)
                        shutil.rmtree(folder, ignore_errors=True)
            return self._compiled

    def needs_compiling(self) -> bool:
        folder = self.compiled_folder
        return folder is not None and self.compiled_text() is None and read_compiled(folder) is None

    def compile_text(self) -> Compiled | None:
        """Make the compiled text tower where one is wanted and none was made yet (seconds, once per
        checkpoint, from a float32 copy of the transformers tower let go of after); queries use it
        from then on. Returns what was made, usable or not."""
        folder = self.compiled_folder
        if folder is None or not self.needs_compiling():
            return None
        tokenizer = self._hf_tokenizer()
        with _BUILDING:
            tower = self._load(self.family.text_class, "text_config", float32_cpu=True)
            compiled = compile_text_tower(
                tower, tokenizer, self.family.text_output, self.family.pad_to_max, self.max_tokens, folder
            )
        if not compiled.usable:
            log.warning(
                "queries keep going through transformers: the compiled text tower failed its check (%s)", compiled.why
            )
            return compiled
        with self._lock:
            self._compiled = CompiledTextTower(compiled)
            self._text = None  # the transformers tower is not needed any more
        return compiled

    @property
    def text_tower_kind(self) -> str:
        """How queries are embedded now: "compiled (int8)", "compiled (float32)" or "transformers"."""
        compiled = self.compiled_text()
        return f"compiled ({compiled.compiled.kind})" if compiled is not None else "transformers"

    def warm_text(self) -> None:
        """Ready for the first query: the compiled tower where there is one, else transformers'."""
        if self.compiled_text() is None:
            self.text_tower()

    def compiled_image(self) -> CompiledImageTower | None:
        """The compiled image tower where one is wanted: read, or made the first time (once per
        checkpoint), and used where its check passed; else None, and transformers embeds."""
        if self._image_looked:
            return self._compiled_image
        with self._image_lock:
            if self._image_looked or self._image_dir is None or self.device != "cpu":
                self._image_looked = True
                return self._compiled_image
            folder = self._image_dir / image_onnx.key_of(self.name, self._folder)
            found = read_compiled_image(folder)
            if found is None:
                log.info("preparing %s for this CPU (once per model, seconds)", self.name)
                with _BUILDING:
                    tower = self._load(self.family.vision_class, "vision_config", float32_cpu=True)
                    found = compile_image_tower(tower, self.family.image_output, self.preprocessing, folder)
                    del tower
                if not found.usable:
                    log.warning("pictures are embedded through transformers: %s", found.why)
            if found.usable:
                try:
                    self._compiled_image = CompiledImageTower(found, threads=usable_cores())
                    self._image_kind = found.kind
                except Exception as exc:
                    # damaged: transformers embeds, and the next start compiles it again
                    log.warning("the compiled image tower in %s does not load (%s); using transformers", folder, exc)
                    shutil.rmtree(folder, ignore_errors=True)
            self._image_looked = True
            return self._compiled_image

    def embed_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 N×H×W×3 crops (see `core.media.pictures.prepare_pixels`) → float32 N×D unit vectors."""
        compiled = self.compiled_image()
        if compiled is not None:
            return compiled.embed(normalize(pixels, self.preprocessing))
        import torch

        tower = self.vision_tower()
        if self.device == "cuda":
            batch = normalize_tensor(pixels, self.preprocessing, self.device, self._dtype())
        else:  # numpy's in-place arithmetic is the faster of the two on a CPU
            batch = torch.from_numpy(normalize(pixels, self.preprocessing)).to(self.device, self._dtype())
        with torch.inference_mode():
            features = getattr(tower(pixel_values=batch), self.family.image_output)
        return _unit(features)

    @property
    def batch_size(self) -> int:
        """Images per forward pass when BATCH_SIZE is auto."""
        return auto_batch_size(self.device)

    def embed_image(self, image: Image.Image) -> np.ndarray:
        return self.embed_pixels(prepare_pixels(image, self.preprocessing)[None])[0]

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        """Texts → float32 N×D unit vectors; cut at the model's limit and padded as the family was
        trained (CLIP: to the longest text; SigLIP: always to the limit)."""
        compiled = self.compiled_text()
        if compiled is not None:
            return compiled.embed_texts(texts)
        import torch

        tower, tokenizer = self.text_tower()
        padding = "max_length" if self.family.pad_to_max else True
        tokens = tokenizer(texts, padding=padding, truncation=True, max_length=self.max_tokens, return_tensors="pt")
        # only what the tokenizer gives: SigLIP's own returns no attention mask (it was trained
        # attending to the padding), and the model must see exactly that
        tokens = {k: v.to(self.device) for k, v in tokens.items() if k in ("input_ids", "attention_mask")}
        with torch.inference_mode():
            features = getattr(tower(**tokens), self.family.text_output)
        return _unit(features)

    def embed_text(self, text: str) -> np.ndarray:
        """One query, with an LRU cache so a repeated query skips the model.

        Queries go through the text tower on one thread of its own, in batches: those that arrive
        while it is busy go through together in its next pass. Under load that is one forward pass
        for many clients instead of many passes fighting over the cores, and a lone query goes
        straight through. One thread also means one team of compute threads for the tower, where
        running it on whichever web worker thread took the request would wake a new team for each.
        That team is one thread (`core.threads`).
        """
        with self._lock:
            cached = self._text_cache.get(text)
            if cached is not None:
                self._text_cache.move_to_end(text)
                return cached
            waiting = self._text_waiting.get(text)
            if waiting is None:
                waiting = self._text_waiting[text] = Future()
                self._text_worker.submit(self._embed_waiting_texts)
        return waiting.result()

    def _embed_waiting_texts(self) -> None:
        with self._lock:
            batch = dict(self._text_waiting)
            self._text_waiting.clear()
        if not batch:
            return  # served by an earlier pass
        self.text_batches += 1
        try:
            # a few short queries: the barriers of more torch threads cost more (the compiled
            # tower has one thread of its own already)
            with nullcontext() if self.compiled_text() is not None else one_torch_thread():
                vectors = self.embed_texts(list(batch))
        except BaseException as exc:
            for future in batch.values():
                future.set_exception(exc)
            return
        with self._lock:
            for (query, future), vector in zip(batch.items(), vectors):
                self._text_cache[query] = vector
                future.set_result(vector)
            while len(self._text_cache) > self._text_cache_size:
                self._text_cache.popitem(last=False)


def _unit(features: Any) -> np.ndarray:
    out = features.float().cpu().numpy()
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return (out / np.maximum(norms, 1e-12)).astype(np.float32)


def open_embedder(
    name: str,
    device: str = "auto",
    precision: str = "auto",
    compiled_dir: Path | None = None,
    image_dir: Path | None = None,
) -> Embedder:
    """An embedder for the checkpoint `name` (weights load on first use), or `ModelLoadError`.
    With `compiled_dir`, queries use the compiled text tower kept there, once it is made; with
    `image_dir`, pictures go through the compiled image tower kept there (made on first need)."""
    embedder = Embedder(find_checkpoint(name), device, precision, compiled_dir, image_dir)
    if device == "cuda":
        embedder.device  # noqa: B018  (fail now, with the clear message, if there is no CUDA)
    return embedder


class Embedders:
    """The embedders one process has opened, one per (model, device, precision), so everything in
    the process that embeds with a model shares its loaded weights."""

    def __init__(self, compiled_dir: Path | None = None, image_dir: Path | None = None) -> None:
        self._open: dict[tuple[str, str, str], Embedder] = {}
        self._lock = threading.Lock()
        self.compiled_dir = compiled_dir
        self.image_dir = image_dir

    def get(self, name: str, device: str = "auto", precision: str = "auto") -> Embedder:
        key = (name, device, precision)
        with self._lock:
            if key not in self._open:
                self._open[key] = open_embedder(name, device, precision, self.compiled_dir, self.image_dir)
            return self._open[key]

    def release(self, name: str) -> None:
        """Let go of a model no longer in use, so its memory can be reclaimed once nothing else holds it."""
        with self._lock:
            for key in [k for k in self._open if k[0] == name]:
                del self._open[key]
