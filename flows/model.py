"""The CLIP model wrapper: one loaded model per process, shared by the indexer and the server.

Loading goes through `transformers.from_pretrained` for a hub id and a local folder alike, so the
project's tiny test model exercises the same code as a real checkpoint.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from core.errors import UserError
from flows.images import Preprocessing, normalize, prepare_pixels

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ModelLoadError(UserError, RuntimeError):
    """The model could not be loaded; the message says what to do."""


@dataclass(frozen=True)
class ModelInfo:
    name: str
    device: str
    precision: str
    dim: int


def cpu_has_native_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def choose_device(requested: str) -> str:
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


class ClipModel:
    """CLIP at the chosen precision with L2-normalised output. The two towers load on first use,
    each with only its own weights: an indexer never holds the text tower until a query comes,
    and a text search never loads the image tower."""

    def __init__(self, folder: str, name: str, config: Any, processor: Any, device: str, precision: str):
        self.name = name
        self.device = device
        self.precision = precision
        self._folder = folder
        self._config = config
        self._dtype = _DTYPES[precision]
        self.dim = int(config.projection_dim)
        self.max_tokens = int(config.text_config.max_position_embeddings)
        crop = processor.crop_size
        size = processor.size
        self.preprocessing = Preprocessing(
            size=int(size.get("shortest_edge") or min(size.get("height", 224), size.get("width", 224))),
            crop_height=int(crop["height"]),
            crop_width=int(crop["width"]),
            mean=tuple(float(v) for v in processor.image_mean),  # type: ignore[arg-type]
            std=tuple(float(v) for v in processor.image_std),  # type: ignore[arg-type]
            resample=int(processor.resample),
        )
        self._vision: Any = None
        self._text: Any = None
        self._tokenizer: Any = None
        self._text_cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._text_cache_size = 1024
        # guards loading and the text cache; forward passes may overlap, so a search never waits
        # for an indexing batch
        self._lock = threading.Lock()

    @property
    def info(self) -> ModelInfo:
        return ModelInfo(self.name, self.device, self.precision, self.dim)

    def _load(self, loader: Any, tower_config: Any) -> Any:
        # the tower's own config does not always carry the checkpoint's projection size
        tower_config.projection_dim = self.dim
        try:
            tower = loader.from_pretrained(self._folder, config=tower_config, dtype=self._dtype)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"Cannot load the weights of CLIP_MODEL={self.name!r}: {exc}") from exc
        return tower.to(self.device).eval()

    def vision_tower(self) -> Any:
        with self._lock:
            if self._vision is None:
                from transformers import CLIPVisionModelWithProjection

                self._vision = self._load(CLIPVisionModelWithProjection, self._config.vision_config)
            return self._vision

    def text_tower(self) -> tuple[Any, Any]:
        with self._lock:
            if self._text is None:
                from transformers import AutoTokenizer, CLIPTextModelWithProjection

                self._tokenizer = AutoTokenizer.from_pretrained(self._folder)
                self._text = self._load(CLIPTextModelWithProjection, self._config.text_config)
            return self._text, self._tokenizer

    def embed_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 N×H×W×3 crops (see `flows.images.prepare_pixels`) → float32 N×D unit vectors."""
        tower = self.vision_tower()
        batch = torch.from_numpy(normalize(pixels, self.preprocessing)).to(self.device, self._dtype)
        with torch.inference_mode():
            features = tower(pixel_values=batch).image_embeds
        return _unit(features)

    def embed_image(self, image: Image.Image) -> np.ndarray:
        return self.embed_pixels(prepare_pixels(image, self.preprocessing)[None])[0]

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        """Texts → float32 N×D unit vectors; padded to the longest text, cut at the model's limit."""
        tower, tokenizer = self.text_tower()
        tokens = tokenizer(texts, padding=True, truncation=True, max_length=self.max_tokens, return_tensors="pt")
        tokens = {k: v.to(self.device) for k, v in tokens.items()}
        with torch.inference_mode():
            features = tower(**tokens).text_embeds
        return _unit(features)

    def embed_text(self, text: str) -> np.ndarray:
        """One query, with an LRU cache so a repeated query skips the model."""
        with self._lock:
            cached = self._text_cache.get(text)
            if cached is not None:
                self._text_cache.move_to_end(text)
                return cached
        vector = self.embed_texts([text])[0]
        with self._lock:
            self._text_cache[text] = vector
            while len(self._text_cache) > self._text_cache_size:
                self._text_cache.popitem(last=False)
        return vector


def _unit(features: torch.Tensor) -> np.ndarray:
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
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    from transformers import CLIPConfig, CLIPImageProcessorPil

    device = choose_device(device)
    precision = choose_precision(precision, device)
    try:
        folder = local_checkpoint(name)
        config = CLIPConfig.from_pretrained(folder)
        processor = CLIPImageProcessorPil.from_pretrained(folder)
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
    return ClipModel(folder, name, config, processor, device, precision)


_loaded: dict[tuple[str, str, str], ClipModel] = {}
_loaded_lock = threading.Lock()


def get_model(name: str, device: str = "auto", precision: str = "auto") -> ClipModel:
    """The process-wide model for these settings, loaded on first use."""
    key = (name, device, precision)
    with _loaded_lock:
        if key not in _loaded:
            _loaded[key] = load_model(name, device, precision)
        return _loaded[key]
