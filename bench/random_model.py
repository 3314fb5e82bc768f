"""A randomly initialised CLIP or SigLIP of a real architecture, saved like a downloaded checkpoint, for timing
when the real weights cannot be downloaded. Speed does not depend on the weights' values.

    python -m bench.random_model ViT-B/32 OUT_DIR [--tokenizer DIR]
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any

from core.settings import PROJECT_ROOT

# transformers' CLIPConfig defaults are ViT-B/32; the others differ in the vision tower and projection
ARCHITECTURES: dict[str, dict[str, Any]] = {
    "ViT-B/32": {},
    "ViT-B/16": {"vision_config": {"patch_size": 16}},
    "ViT-L/14": {
        "text_config": {"hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12},
        "vision_config": {
            "hidden_size": 1024,
            "intermediate_size": 4096,
            "num_attention_heads": 16,
            "num_hidden_layers": 24,
            "patch_size": 14,
        },
        "projection_dim": 768,
    },
}
# transformers' SiglipConfig defaults are google/siglip-base-patch16-224 (whose fixed-resolution
# SigLIP 2 counterpart has the same towers and a larger vocabulary, which costs no time per token)
SIGLIP_ARCHITECTURES: dict[str, dict[str, Any]] = {
    "SigLIP-B/16": {},
    "SigLIP-B/16-256": {"vision_config": {"image_size": 256}},
}
DEFAULT_TOKENIZER = PROJECT_ROOT.parent / "shared" / "data" / "clip-tokenizer"
# always at hand: the tiny test model's own tokenizer. A query costs the same number of text-tower
# steps per token whatever the vocabulary, so timings stay fair; only its token counts differ a little.
FALLBACK_TOKENIZER = PROJECT_ROOT / "tests" / "fixtures" / "tiny-clip"
TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json")


def find_tokenizer(wanted: Path) -> Path:
    """`wanted` if it holds a tokenizer, else the tiny model's (said on the console)."""
    if (wanted / "vocab.json").exists() or (wanted / "tokenizer.json").exists():
        return wanted
    print(f"no CLIP tokenizer in {wanted}; using the tiny test model's tokenizer instead", flush=True)
    return FALLBACK_TOKENIZER


def build_random_clip(arch: str, out_dir: Path, tokenizer_dir: Path = DEFAULT_TOKENIZER) -> Path:
    import torch
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel

    if arch in SIGLIP_ARCHITECTURES:
        return _build_random_siglip(arch, out_dir, find_tokenizer(tokenizer_dir))
    if arch not in ARCHITECTURES:
        known = ", ".join([*ARCHITECTURES, *SIGLIP_ARCHITECTURES])
        raise SystemExit(f"unknown architecture {arch!r}; choose from {known}")
    tokenizer_dir = find_tokenizer(tokenizer_dir)
    torch.manual_seed(0)
    model: Any = CLIPModel(CLIPConfig(**ARCHITECTURES[arch]))
    _save_with_tokenizer(model, out_dir, tokenizer_dir)
    image_size = model.config.vision_config.image_size
    CLIPImageProcessorPil(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    ).save_pretrained(out_dir)
    return out_dir


def _save_with_tokenizer(model: Any, out_dir: Path, tokenizer_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    for name in TOKENIZER_FILES:
        if (tokenizer_dir / name).exists():
            shutil.copy(tokenizer_dir / name, out_dir / name)


def _build_random_siglip(arch: str, out_dir: Path, tokenizer_dir: Path) -> Path:
    import torch
    from transformers import SiglipConfig, SiglipImageProcessorPil, SiglipModel

    config: dict[str, Any] = dict(SIGLIP_ARCHITECTURES[arch])
    # room for every id of the CLIP tokenizer used in its place (SigLIP's own is not at hand)
    config["text_config"] = {"vocab_size": 49408, **config.get("text_config", {})}
    torch.manual_seed(0)
    model: Any = SiglipModel(SiglipConfig(**config))
    _save_with_tokenizer(model, out_dir, tokenizer_dir)
    image_size = model.config.vision_config.image_size
    SiglipImageProcessorPil(size={"height": image_size, "width": image_size}).save_pretrained(out_dir)
    return out_dir


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("arch", choices=sorted([*ARCHITECTURES, *SIGLIP_ARCHITECTURES]))
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--tokenizer", type=Path, default=DEFAULT_TOKENIZER)
    args = parser.parse_args()
    print(build_random_clip(args.arch, args.out_dir, args.tokenizer))
