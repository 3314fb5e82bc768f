"""Model checkpoints: which families load, what a checkpoint's files say, where it is on disk, and the
device and precision it runs at.

CLIP and SigLIP checkpoints (SigLIP 2's fixed-resolution ones included: they are published as
SigLIP models with a Gemma tokenizer) load through the same path; config.json's `model_type`
picks the tower classes, the preprocessing and the tokenisation (see `FAMILIES`). Reading a
checkpoint here touches its JSON files only, never torch: `python main.py index` with nothing new
to embed stays fast.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache, cached_property
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import Unavailable
from core.media.pictures import Preprocessing

DEFAULT_LOGIT_SCALE = 100.0  # OpenAI CLIP's, for a checkpoint that does not store its own


class ModelLoadError(Unavailable):
    """The model could not be loaded; the message says what to do."""


# the instruction sets that decide which precision is fast here, as /proc/cpuinfo names them
_KERNEL_FLAGS = ("avx2", "avx_vnni", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


@cache
def _cpu_flags() -> frozenset[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


def cpu_kernels() -> str:
    """What this CPU offers of `_KERNEL_FLAGS`, space-separated ("" where none or unknown)."""
    return " ".join(flag for flag in _KERNEL_FLAGS if flag in _cpu_flags())


def cpu_has_native_bf16() -> bool:
    return bool({"avx512_bf16", "amx_bf16"} & _cpu_flags())


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
    """The transformers towers' dtype. `auto`: float16 on CUDA, bfloat16 on CPUs with native BF16,
    float32 elsewhere. `int8` is the compiled image tower's (`core.models.image_onnx`); what still
    goes through transformers then (a query without a compiled text tower, or a picture whose
    compiled tower failed its check) is float32."""
    if requested == "int8":
        return "float32"
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


_CHECKPOINT_FILES = ["*.json", "*.txt", "*.safetensors", "*.model"]


def _exists(name: str) -> bool:
    try:
        return Path(name).exists()
    except (OSError, ValueError):  # a name too long to be a path, or with a NUL in it
        return False


def local_checkpoint(name: str) -> str:
    """A local folder holding the checkpoint: `name` itself, or the Hugging Face cache's copy,
    downloaded first if it is missing (the only network traffic Sightline ever makes)."""
    if _exists(name) and Path(name).is_dir():
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


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint found on disk: its name as the user gave it, its folder and what its files say."""

    name: str  # a hub id or a folder, as in CLIP_MODEL
    folder: str
    spec: ModelSpec

    @cached_property
    def logit_scale(self) -> float:
        """The learned temperature, exp of the checkpoint's `logit_scale` (CLIP and SigLIP both
        store its log); OpenAI CLIP's when the checkpoint has none. SigLIP's sigmoid also adds a
        `logit_bias`; it shifts every score alike, so ranking by cosine and margins between scores
        are unchanged by it. Read once, from the weights file's header and one tensor."""
        try:
            for file in sorted(Path(self.folder).glob("*.safetensors")):
                value = _one_number(file, "logit_scale")
                if value is not None:
                    return float(np.exp(value))
        except Exception:  # an unusual checkpoint: the CLIP default rather than a failed search
            return DEFAULT_LOGIT_SCALE
        return DEFAULT_LOGIT_SCALE


_SAFETENSORS_DTYPES = {"F16": np.float16, "F32": np.float32, "F64": np.float64}


def _one_number(file: Path, name: str) -> float | None:
    """The first value of one tensor of a .safetensors file, read from the file's JSON header and
    its bytes, without torch (a cold search never imports it); None where the file has no such tensor."""
    with file.open("rb") as f:
        size = int.from_bytes(f.read(8), "little")
        entry = json.loads(f.read(size)).get(name)
        if entry is None:
            return None
        start, end = entry["data_offsets"]
        f.seek(8 + size + start)
        raw = f.read(end - start)
    if entry["dtype"] == "BF16":  # the top half of a float32
        return float((np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)[0])
    return float(np.frombuffer(raw, dtype=_SAFETENSORS_DTYPES[entry["dtype"]])[0])


def find_checkpoint(name: str) -> Checkpoint:
    """Find a CLIP or SigLIP checkpoint by hub id or local folder and read its configuration, or
    raise `ModelLoadError` saying what to do."""
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
            if _exists(name)
            else "it is not downloaded and the model hub cannot be reached"
        )
        raise ModelLoadError(
            f"Cannot load CLIP_MODEL={name!r}: {hint}. Set CLIP_MODEL to a local model folder "
            f"(e.g. CLIP_MODEL=tests/fixtures/tiny-clip), or download it once with network access "
            f"and then run with HF_HUB_OFFLINE=1."
        ) from exc
    return Checkpoint(name, folder, spec)
