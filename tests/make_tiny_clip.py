"""Build the project's tiny CLIP model: `python tests/make_tiny_clip.py [OUT_DIR]`.

A real `transformers` CLIPModel (64 px images, 8 px patches, two layers per tower) with a small
BPE tokenizer of its own, trained on CPU for well under a minute on synthetic pictures of coloured
shapes captioned "a red circle" and so on. It is saved with `save_pretrained`, so it loads through
exactly the same code as a downloaded checkpoint. Deterministic for a given machine: fixed seeds,
fixed thread count.
"""

from __future__ import annotations

import json
import math
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from shapes import ALL_DRAWINGS, COLORS, SHAPES, random_drawing  # noqa: E402

from core.media.pictures import Preprocessing, normalize, prepare_pixels  # noqa: E402

OUT_DIR = Path(__file__).resolve().parent / "fixtures" / "tiny-clip"
IMAGE_SIZE = 64
MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)
PREP = Preprocessing(IMAGE_SIZE, IMAGE_SIZE, IMAGE_SIZE, MEAN, STD)
WORDS = ["a", "an", "photo", "picture", "drawing", "of", "the", "shape", *COLORS, *SHAPES]
TEMPLATES = ("a {c} {s}", "a photo of a {c} {s}", "{c} {s}", "a drawing of a {c} {s}")
STEPS = 650
LEARNING_RATE = 8e-4
PER_CLASS = 3  # pictures of each of the 18 classes per step
SEED = 1234


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte-level alphabet: every byte gets a printable stand-in character."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(161, 173)) + list(range(174, 256))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in chars)))


def build_tokenizer_files(folder: Path) -> None:
    """A CLIP-format BPE vocabulary: all bytes, plus merges that spell each caption word whole."""
    alphabet = list(_bytes_to_unicode().values())
    vocab_tokens = alphabet + [c + "</w>" for c in alphabet]
    merges: list[tuple[str, str]] = []
    for word in WORDS:
        # add merges until BPE with everything so far spells the word as one token
        while len(parts := _bpe(word, merges)) > 1:
            merges.append((parts[0], parts[1]))
            vocab_tokens.append(parts[0] + parts[1])
    vocab_tokens += ["<|startoftext|>", "<|endoftext|>"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab_tokens)}, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in merges) + "\n")


def _warmup_then_cosine(step: int) -> float:
    if step < 40:
        return (step + 1) / 40
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - 40) / (STEPS - 40))))


def _bpe(word: str, merges: list[tuple[str, str]]) -> list[str]:
    """Byte-pair encoding of one word, lowest-ranked merge first, as CLIP's tokenizer applies it."""
    ranks = {pair: i for i, pair in enumerate(merges)}
    parts = list(word[:-1]) + [word[-1] + "</w>"]
    while len(parts) > 1:
        pairs = [(ranks.get((a, b), len(ranks)), i) for i, (a, b) in enumerate(zip(parts, parts[1:]))]
        rank, i = min(pairs)
        if rank == len(ranks):
            break
        parts = [*parts[:i], parts[i] + parts[i + 1], *parts[i + 2 :]]
    return parts


def make_batch(rng: random.Random, per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = [], []
    for label, drawing in enumerate(ALL_DRAWINGS):
        for _ in range(per_class):
            images.append(prepare_pixels(random_drawing(drawing, rng, base=rng.randint(48, 140)), PREP))
            labels.append(label)
    return torch.from_numpy(normalize(np.stack(images), PREP)), torch.tensor(labels)


def main(out_dir: Path = OUT_DIR) -> None:
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPTokenizer

    torch.manual_seed(SEED)
    torch.set_num_threads(2)
    rng = random.Random(SEED)
    tok_dir = out_dir / "_tokenizer_src"
    build_tokenizer_files(tok_dir)
    tokenizer = CLIPTokenizer(vocab=str(tok_dir / "vocab.json"), merges=str(tok_dir / "merges.txt"))
    tokenizer.model_max_length = 77
    for word in WORDS:
        assert len(tokenizer(word, add_special_tokens=False)["input_ids"]) == 1, word

    config = CLIPConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "max_position_embeddings": 77,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={
            "image_size": IMAGE_SIZE,
            "patch_size": 8,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
        },
        projection_dim=32,
    )
    model = CLIPModel(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, weight_decay=0.01)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _warmup_then_cosine)

    captions = [[t.format(c=d.color, s=d.shape) for t in TEMPLATES] for d in ALL_DRAWINGS]
    started = time.monotonic()
    step = 0
    model.train()
    while step < STEPS:
        pixels, labels = make_batch(rng, per_class=PER_CLASS)
        # every class's caption is a candidate for every image; one template per class per step
        texts = [captions[k][rng.randrange(len(TEMPLATES))] for k in range(len(ALL_DRAWINGS))]
        tokens = tokenizer(texts, padding=True, return_tensors="pt")
        img = F.normalize(model.get_image_features(pixel_values=pixels).pooler_output, dim=-1)
        txt = F.normalize(model.get_text_features(**tokens).pooler_output, dim=-1)
        logits = img @ txt.T * model.logit_scale.exp()
        loss_i = F.cross_entropy(logits, labels)
        # text → image: each caption's positives are all images of its class
        targets = F.one_hot(labels, len(ALL_DRAWINGS)).float().T
        loss_t = -(F.log_softmax(logits.T, dim=1) * targets / targets.sum(1, keepdim=True)).sum(1).mean()
        loss = (loss_i + loss_t) / 2
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, 4.6)
        step += 1
        if step % 50 == 0:
            print(f"step {step:4d}  loss {loss.item():.3f}  {time.monotonic() - started:.0f}s", flush=True)

    model.eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    CLIPImageProcessorPil(
        size={"shortest_edge": IMAGE_SIZE},
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        image_mean=list(MEAN),
        image_std=list(STD),
    ).save_pretrained(out_dir)
    for leftover in tok_dir.iterdir():
        leftover.unlink()
    tok_dir.rmdir()
    print(f"saved {out_dir} after {step} steps, {time.monotonic() - started:.0f}s")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT_DIR)
