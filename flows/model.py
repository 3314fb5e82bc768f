"""The model wrapper: one model per process, shared by the indexer and the server.

CLIP and SigLIP checkpoints (SigLIP 2's fixed-resolution ones included: they are published as
SigLIP models with a Gemma tokenizer) load through the same path; config.json's `model_type`
picks the tower classes, the preprocessing and the tokenisation (see `FAMILIES`).

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
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from core.errors import UserError
from flows.images import Preprocessing, normalize, normalize_tensor, one_line, prepare_pixels


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


def auto_batch_size(device: str) -> int:
    """A GPU needs larger batches to be kept busy; on a CPU larger ones only cost memory."""
    return 128 if device == "cuda" else 32


def choose_precision(requested: str, device: str) -> str:
    """`auto`: float16 on CUDA, bfloat16 on CPUs with native BF16, float32 elsewhere."""
    if requested != "auto":
        return requested
    if device == "cuda":
        return "float16"
    return "bfloat16" if cpu_has_native_bf16() else "float32"


@dataclass(frozen=True)
class Family:
    """How one model family's checkpoints load, tokenise and pool."""

    label: str
    config_class: str
    vision_class: str
    text_class: str
    # the output attribute holding the projected, pooled embedding of each tower
    image_output: str
    text_output: str
    # SigLIP was trained on texts padded to the full length and pools the last position, so
    # padding only to the longest text in a batch gives different (wrong) embeddings
    pad_to_max: bool


FAMILIES: dict[str, Family] = {
    "clip": Family(
        "CLIP", "CLIPConfig", "CLIPVisionModelWithProjection", "CLIPTextModelWithProjection",
        "image_embeds", "text_embeds", pad_to_max=False,
    ),
    # SigLIP and the fixed-resolution SigLIP 2 checkpoints (published with model_type "siglip")
    "siglip": Family(
        "SigLIP", "SiglipConfig", "SiglipVisionModel", "SiglipTextModel",
        "pooler_output", "pooler_output", pad_to_max=True,
    ),
}  # fmt: skip
_NAFLEX = "siglip2"


@dataclass(frozen=True)
class ModelSpec:
    """What a checkpoint's JSON files say: enough to create the table and preprocess images."""

    dim: int
    max_tokens: int
    preprocessing: Preprocessing
    family: Family = FAMILIES["clip"]


def read_spec(folder: str) -> ModelSpec:
    config = json.loads((Path(folder) / "config.json").read_text())
    processor = json.loads((Path(folder) / "preprocessor_config.json").read_text())
    model_type = config.get("model_type", "clip")
    if model_type == _NAFLEX:
        raise ModelLoadError(
            f"{folder} is a SigLIP 2 NaFlex checkpoint (variable resolution), which Sightline does not "
            f"support; use a fixed-resolution one such as google/siglip2-base-patch16-224"
        )
    if model_type not in FAMILIES:
        raise ModelLoadError(
            f"{folder} has model_type {model_type!r}; Sightline supports CLIP and SigLIP / SigLIP 2 "
            f"checkpoints (model_type clip or siglip)"
        )
    if model_type == "siglip":
        return _siglip_spec(config, processor)
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


def _siglip_spec(config: dict[str, Any], processor: dict[str, Any]) -> ModelSpec:
    # real SigLIP configs leave most fields at transformers' defaults (hidden size 768, 64 tokens,
    # 224 px, bicubic, mean and std 0.5), so the same defaults apply here
    vision = config.get("vision_config", {})
    text = config.get("text_config", {})
    image_size = int(vision.get("image_size", 224))
    size = processor.get("size", {"height": image_size, "width": image_size})
    height, width = (size, size) if isinstance(size, int) else (int(size["height"]), int(size["width"]))
    dim = int(vision.get("hidden_size", 768))
    text_dim = int(text.get("projection_size") or text.get("hidden_size", 768))
    if text_dim != dim:
        raise ModelLoadError(f"the SigLIP towers disagree on the embedding size ({dim} and {text_dim})")
    return ModelSpec(
        dim=dim,
        max_tokens=int(text.get("max_position_embeddings", 64)),
        preprocessing=Preprocessing(
            size=max(height, width),
            crop_height=height,
            crop_width=width,
            mean=tuple(float(v) for v in processor.get("image_mean", (0.5, 0.5, 0.5))),  # type: ignore[arg-type]
            std=tuple(float(v) for v in processor.get("image_std", (0.5, 0.5, 0.5))),  # type: ignore[arg-type]
            resample=int(processor.get("resample", 3)),
            squash=True,
        ),
        family=FAMILIES["siglip"],
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
        self.family = spec.family
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
        return self._resolve()[1]

    @property
    def logit_scale(self) -> float | None:
        """The learned temperature, exp of the checkpoint's `logit_scale` (CLIP and SigLIP both
        store its log), or None when the checkpoint has none. SigLIP's sigmoid also adds a
        `logit_bias`; it shifts every score alike, so ranking by cosine and margins between
        scores are unchanged by it."""
        try:
            from safetensors import safe_open

            for file in sorted(Path(self._folder).glob("*.safetensors")):
                with safe_open(str(file), framework="pt") as weights:
                    if "logit_scale" in weights.keys():  # noqa: SIM118 (safe_open has no __contains__)
                        return float(np.exp(float(weights.get_tensor("logit_scale").float())))
        except Exception:  # an unusual checkpoint: the caller's default rather than a failure
            return None
        return None

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
        config = getattr(transformers, self.family.config_class).from_pretrained(self._folder)
        tower_config = getattr(config, part)
        if self.family.config_class == "CLIPConfig":
            tower_config.projection_dim = self.dim  # the tower's own config may lack the projection size
        try:
            tower = getattr(transformers, loader_name).from_pretrained(
                self._folder, config=tower_config, dtype=self._dtype()
            )
        except (OSError, ValueError) as exc:
            raise ModelLoadError(
                f"Cannot load the weights of CLIP_MODEL={self.name!r} ({self.family.label}): {exc}"
            ) from exc
        return tower.to(self.device).eval()

    def vision_tower(self) -> Any:
        with self._lock:
            if self._vision is None:
                self._vision = self._load(self.family.vision_class, "vision_config")
            return self._vision

    def text_tower(self) -> tuple[Any, Any]:
        with self._lock:
            if self._text is None:
                from transformers import AutoTokenizer

                try:
                    self._tokenizer = AutoTokenizer.from_pretrained(self._folder)
                except (ImportError, OSError, ValueError) as exc:
                    reason = one_line(exc)
                    raise ModelLoadError(f"Cannot load the tokenizer of CLIP_MODEL={self.name!r}: {reason}") from exc
                self._text = self._load(self.family.text_class, "text_config")
            return self._text, self._tokenizer

    def embed_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 N×H×W×3 crops (see `flows.images.prepare_pixels`) → float32 N×D unit vectors."""
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
    """Find a CLIP or SigLIP checkpoint by hub id or local folder and read its configuration (weights load
    on first use), or raise `ModelLoadError` saying what to do."""
    try:
        folder = local_checkpoint(name)
        spec = read_spec(folder)
        if not any(Path(folder).glob("*.safetensors")) and not any(Path(folder).glob("*.bin")):
            raise FileNotFoundError(f"no model weights in {folder}")
    except ModelLoadError as exc:
        raise ModelLoadError(f"Cannot load CLIP_MODEL={name!r}: {exc}") from exc
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


def release_model(name: str) -> None:
    """Let go of a model no longer in use, so its memory can be reclaimed once nothing else holds it."""
    with _loaded_lock:
        for key in [k for k in _loaded if k[0] == name]:
            del _loaded[key]
