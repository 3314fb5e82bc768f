"""The CLIP model wrapper: one model per process, shared by the indexer and the server.

Weights load through `transformers.from_pretrained` for a hub id and a local folder alike, so the
project's tiny test model exercises the same code as a real checkpoint. Everything heavy is lazy:
opening a model reads its JSON files only; torch and transformers are imported, and each tower's
weights loaded, the first time that tower is needed. An `index` run with nothing new to embed
never pays for them.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from core.errors import UserError
from flows.images import Preprocessing, normalize, prepare_pixels


class ModelLoadError(UserError, RuntimeError):
    """The model could not be loaded; the message says what to do."""


def cpu_has_native_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def choose_device(requested: str) -> str:
    import torch

    if requested == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("DEVICE=cuda but no CUDA device is available; set DEVICE=auto or cpu")
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return requested


def choose_precision(requested: str, device: str) -> str:
    """`auto`: float16 on CUDA, bfloat16 on CPUs with native BF16, float32 elsewhere."""
    if requested != "auto":
        return requested
    if device == "cuda":
        return "float16"
    return "bfloat16" if cpu_has_native_bf16() else "float32"


@dataclass(frozen=True)
class ModelSpec:
    """What a checkpoint's JSON files say: enough to create the table and preprocess images."""

    dim: int
    max_tokens: int
    preprocessing: Preprocessing


def read_spec(folder: str) -> ModelSpec:
    config = json.loads((Path(folder) / "config.json").read_text())
    processor = json.loads((Path(folder) / "preprocessor_config.json").read_text())
    size = processor.get("size", {"shortest_edge": 224})
    shortest = size if isinstance(size, int) else size.get("shortest_edge") or min(size["height"], size["width"])
    crop = processor.get("crop_size", shortest)
    crop_h, crop_w = (crop, crop) if isinstance(crop, int) else (crop["height"], crop["width"])
    if processor.get("do_center_crop") is False:
        crop_h = crop_w = shortest
    return ModelSpec(
        dim=int(config["projection_dim"]),
        max_tokens=int(config.get("text_config", {}).get("max_position_embeddings", 77)),
        preprocessing=Preprocessing(
            size=int(shortest),
            crop_height=int(crop_h),
            crop_width=int(crop_w),
            mean=tuple(float(v) for v in processor.get("image_mean", (0.48145466, 0.4578275, 0.40821073))),  # type: ignore[arg-type]
            std=tuple(float(v) for v in processor.get("image_std", (0.26862954, 0.26130258, 0.27577711))),  # type: ignore[arg-type]
            resample=int(processor.get("resample", 3)),
        ),
    )


class ClipModel:
    """CLIP at the chosen precision with L2-normalised output. The two towers load on first use,
    each with only its own weights: an indexer holds no text tower until a query comes, and a
    text search never loads the image tower."""

    def __init__(self, folder: str, name: str, spec: ModelSpec, device: str = "auto", precision: str = "auto"):
        self.name = name
        self.dim = spec.dim
        self.max_tokens = spec.max_tokens
        self.preprocessing = spec.preprocessing
        self._folder = folder
        self._requested = (device, precision)
        self._device: str | None = None
        self._precision: str | None = None
        self._vision: Any = None
        self._text: Any = None
        self._tokenizer: Any = None
        self._text_cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._text_cache_size = 1024
        self._text_waiting: dict[str, Future[np.ndarray]] = {}  # queries queued for the next batch
        self._text_forward = threading.Lock()
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
        return self._resolve()[1]

    @property
    def loaded(self) -> bool:
        """Whether any weights are in memory (device and precision are then settled)."""
        return self._vision is not None or self._text is not None

    def _dtype(self) -> Any:
        import torch

        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[self.precision]

    def _load(self, loader_name: str, part: str) -> Any:
        import transformers

        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()
        config = transformers.CLIPConfig.from_pretrained(self._folder)
        tower_config = getattr(config, part)
        tower_config.projection_dim = self.dim  # the tower's own config may lack the projection size
        try:
            tower = getattr(transformers, loader_name).from_pretrained(
                self._folder, config=tower_config, dtype=self._dtype()
            )
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"Cannot load the weights of CLIP_MODEL={self.name!r}: {exc}") from exc
        return tower.to(self.device).eval()

    def vision_tower(self) -> Any:
        with self._lock:
            if self._vision is None:
                self._vision = self._load("CLIPVisionModelWithProjection", "vision_config")
            return self._vision

    def text_tower(self) -> tuple[Any, Any]:
        with self._lock:
            if self._text is None:
                from transformers import AutoTokenizer

                self._tokenizer = AutoTokenizer.from_pretrained(self._folder)
                self._text = self._load("CLIPTextModelWithProjection", "text_config")
            return self._text, self._tokenizer

    def embed_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 N×H×W×3 crops (see `flows.images.prepare_pixels`) → float32 N×D unit vectors."""
        import torch

        tower = self.vision_tower()
        batch = torch.from_numpy(normalize(pixels, self.preprocessing)).to(self.device, self._dtype())
        with torch.inference_mode():
            features = tower(pixel_values=batch).image_embeds
        return _unit(features)

    def embed_image(self, image: Image.Image) -> np.ndarray:
        return self.embed_pixels(prepare_pixels(image, self.preprocessing)[None])[0]

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        """Texts → float32 N×D unit vectors; padded to the longest text, cut at the model's limit."""
        import torch

        tower, tokenizer = self.text_tower()
        tokens = tokenizer(texts, padding=True, truncation=True, max_length=self.max_tokens, return_tensors="pt")
        tokens = {k: v.to(self.device) for k, v in tokens.items()}
        with torch.inference_mode():
            features = tower(**tokens).text_embeds
        return _unit(features)

    def embed_text(self, text: str) -> np.ndarray:
        """One query, with an LRU cache so a repeated query skips the model. Queries that arrive
        while the text tower is busy wait and then go through it together, in one batch: under
        load that is one forward pass for many clients instead of many passes fighting over the
        cores, and a lone query goes straight through."""
        with self._lock:
            cached = self._text_cache.get(text)
            if cached is not None:
                self._text_cache.move_to_end(text)
                return cached
            waiting = self._text_waiting.get(text)
            if waiting is None:
                waiting = self._text_waiting[text] = Future()
        while not waiting.done():
            with self._text_forward:  # one batch at a time; whoever holds it serves everyone queued
                if waiting.done():
                    break
                with self._lock:
                    batch = dict(self._text_waiting)
                    self._text_waiting.clear()
                self.text_batches += 1
                try:
                    vectors = self.embed_texts(list(batch))
                except BaseException as exc:
                    for future in batch.values():
                        future.set_exception(exc)
                    raise
                with self._lock:
                    for (query, future), vector in zip(batch.items(), vectors):
                        self._text_cache[query] = vector
                        future.set_result(vector)
                    while len(self._text_cache) > self._text_cache_size:
                        self._text_cache.popitem(last=False)
        return waiting.result()


def _unit(features: Any) -> np.ndarray:
    out = features.float().cpu().numpy()
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return (out / np.maximum(norms, 1e-12)).astype(np.float32)


_CHECKPOINT_FILES = ["*.json", "*.txt", "*.safetensors", "*.model"]


def local_checkpoint(name: str) -> str:
    """A local folder holding the checkpoint: `name` itself, or the Hugging Face cache's copy,
    downloaded first if it is missing (the only network traffic Sightline ever makes)."""
    if Path(name).is_dir():
        return name
    if Path(name).is_absolute() or name.startswith((".", "~")):
        raise FileNotFoundError(name)
    from huggingface_hub import snapshot_download

    try:
        return str(snapshot_download(name, allow_patterns=_CHECKPOINT_FILES, local_files_only=True))
    except Exception:  # not (completely) in the cache: this is the download the user asked for
        folder = snapshot_download(name, allow_patterns=_CHECKPOINT_FILES)
        if not any(Path(folder).glob("*.safetensors")):
            folder = snapshot_download(name, allow_patterns=[*_CHECKPOINT_FILES, "*.bin"])
        return str(folder)


def load_model(name: str, device: str = "auto", precision: str = "auto") -> ClipModel:
    """Find a CLIP checkpoint by hub id or local folder and read its configuration (weights load
    on first use), or raise `ModelLoadError` saying what to do."""
    try:
        folder = local_checkpoint(name)
        spec = read_spec(folder)
        if not any(Path(folder).glob("*.safetensors")) and not any(Path(folder).glob("*.bin")):
            raise FileNotFoundError(f"no model weights in {folder}")
    except Exception as exc:
        hint = (
            f"the folder {name} is not a CLIP checkpoint (config.json, model weights, tokenizer)"
            if Path(name).exists()
            else "it is not downloaded and the model hub cannot be reached"
        )
        raise ModelLoadError(
            f"Cannot load CLIP_MODEL={name!r}: {hint}. Set CLIP_MODEL to a local model folder "
            f"(e.g. CLIP_MODEL=tests/fixtures/tiny-clip), or download it once with network access "
            f"and then run with HF_HUB_OFFLINE=1."
        ) from exc
    model = ClipModel(folder, name, spec, device, precision)
    if device == "cuda":
        model.device  # noqa: B018  (fail now, with the clear message, if there is no CUDA)
    return model


_loaded: dict[tuple[str, str, str], ClipModel] = {}
_loaded_lock = threading.Lock()


def get_model(name: str, device: str = "auto", precision: str = "auto") -> ClipModel:
    """The process-wide model for these settings, opened on first use."""
    key = (name, device, precision)
    with _loaded_lock:
        if key not in _loaded:
            _loaded[key] = load_model(name, device, precision)
        return _loaded[key]
