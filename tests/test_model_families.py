"""CLIP, SigLIP and SigLIP 2 checkpoints through the one loading path.

Each SigLIP family gets a tiny randomly initialised model built here from a configuration and saved
like a downloaded checkpoint. Random weights understand nothing, so every check compares with what
the reference transformers model computes from the same files with its own processor: our
preprocessing, our embeddings, and the ranking that `main.py index` + `main.py search` produce.
"""

from __future__ import annotations

import json
import math
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import TINY_CLIP, run_main
from PIL import Image
from shapes import ALL_DRAWINGS, random_drawing

from core.media.pictures import normalize, prepare_pixels
from core.models.checkpoints import ModelLoadError
from core.models.embedder import Embedder, open_embedder
from core.settings import Settings

IMAGE_SIZE = 32
LOGIT_SCALE = 10.0  # what SigLIP starts training from; stored as its log, like CLIP's
CAPTIONS = ["a red circle", "a blue square", "a green triangle on grey", "yellow"]
FAMILIES = ["clip", "siglip", "siglip-spm", "siglip2"]
SIGLIPS = ["siglip", "siglip-spm", "siglip2"]
# what the SentencePiece vocabulary is trained on: the captions, and the same in other languages,
# as the multilingual SigLIP's covers them
SPM_TEXTS = [*CAPTIONS, "un cercle rouge", "ein blaues Quadrat", "un triangle vert", "赤い円", "красный круг"]


def _siglip_tokenizer_files(folder: Path) -> dict[str, int]:
    # the CLIP BPE tokenizer files of the tiny CLIP: AutoTokenizer loads them whatever the model
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(TINY_CLIP / name, folder / name)
    return {"vocab_size": 578, "pad_token_id": 577, "eos_token_id": 577, "bos_token_id": 576}


def _siglip_spm_tokenizer_files(folder: Path) -> dict[str, int]:
    # SigLIP (v1) checkpoints as they ship, the multilingual one included: a SentencePiece model
    # (spiece.model) read by SiglipTokenizer, trained here on a few lines in several languages
    import io

    import sentencepiece
    from transformers import SiglipTokenizer

    trained = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(SPM_TEXTS * 20),
        model_writer=trained,
        vocab_size=80,
        hard_vocab_limit=False,
        character_coverage=1.0,
        minloglevel=2,
    )
    (folder / "spiece.model").write_bytes(trained.getvalue())
    tokenizer = SiglipTokenizer(vocab_file=str(folder / "spiece.model"))
    tokenizer.save_pretrained(folder)
    return {
        "vocab_size": len(tokenizer),
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "bos_token_id": tokenizer.eos_token_id,
    }


def _siglip2_tokenizer_files(folder: Path) -> dict[str, int]:
    # SigLIP 2's own tokenizer class (Gemma's, lower-casing), with a vocabulary of single letters
    from transformers import Siglip2Tokenizer

    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3, "<mask>": 4}
    for char in ["▁", *"abcdefghijklmnopqrstuvwxyz0123456789"]:
        vocab[char] = len(vocab)
    Siglip2Tokenizer(vocab=vocab, merges=[]).save_pretrained(folder)
    return {"vocab_size": len(vocab), "pad_token_id": 0, "eos_token_id": 1, "bos_token_id": 2}


def build_tiny_siglip(folder: Path, tokenizer: str, hidden: int = 32) -> Path:
    """A SigLIP checkpoint (fixed-resolution SigLIP 2 checkpoints are the same architecture with
    the Gemma tokenizer): two layers per tower, 32 px images, random weights; its embeddings have
    `hidden` dimensions."""
    import torch
    from transformers import SiglipConfig, SiglipImageProcessorPil, SiglipModel

    folder.mkdir(parents=True)
    files = {"siglip": _siglip_tokenizer_files, "siglip-spm": _siglip_spm_tokenizer_files}
    token_ids = files.get(tokenizer, _siglip2_tokenizer_files)(folder)
    tower = {"hidden_size": hidden, "intermediate_size": 2 * hidden, "num_hidden_layers": 2, "num_attention_heads": 2}
    config = SiglipConfig(
        text_config={**tower, **token_ids},  # 64 tokens, as the real ones
        vision_config={**tower, "image_size": IMAGE_SIZE, "patch_size": 8},
    )
    torch.manual_seed(11)
    model = SiglipModel(config)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(LOGIT_SCALE))
        model.logit_bias.fill_(-10.0)
    model.save_pretrained(folder)
    SiglipImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("families")
    return {
        "clip": TINY_CLIP,
        "siglip": build_tiny_siglip(root / "siglip", "siglip"),
        "siglip-spm": build_tiny_siglip(root / "siglip-spm", "siglip-spm"),
        "siglip2": build_tiny_siglip(root / "siglip2", "siglip2"),
    }


class Reference:
    """The transformers model and processor of a checkpoint, used the way their docs say."""

    def __init__(self, folder: Path) -> None:
        from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

        self.model = AutoModel.from_pretrained(folder, dtype="float32").eval()
        self.processor = AutoImageProcessor.from_pretrained(folder)
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.siglip = self.model.config.model_type == "siglip"

    def pixels(self, image: Image.Image) -> np.ndarray:
        return self.processor(images=image, return_tensors="np")["pixel_values"][0]

    def image_features(self, images: list[Image.Image]) -> np.ndarray:
        import torch

        batch = self.processor(images=images, return_tensors="pt")
        with torch.no_grad():
            return _unit(self.model.get_image_features(pixel_values=batch["pixel_values"]))

    def text_features(self, texts: list[str], padding: bool | str | None = None) -> np.ndarray:
        import torch

        if padding is None:  # SigLIP's model card: "make sure to set padding='max_length'"
            padding = "max_length" if self.siglip else True
        if padding == "max_length":
            tokens = self.tokenizer(texts, padding=padding, max_length=64, return_tensors="pt")
        else:
            tokens = self.tokenizer(texts, padding=padding, return_tensors="pt")
        with torch.no_grad():
            return _unit(self.model.get_text_features(**tokens))


def _unit(output: Any) -> np.ndarray:
    features = getattr(output, "pooler_output", output).float().numpy()
    return features / np.linalg.norm(features, axis=1, keepdims=True)


Models = dict[str, tuple[Embedder, Reference]]


@pytest.fixture(scope="module")
def models(checkpoints: dict[str, Path]) -> Models:
    return {f: (open_embedder(str(p), precision="float32"), Reference(p)) for f, p in checkpoints.items()}


def _pictures(count: int, seed: int) -> list[Image.Image]:
    rng = random.Random(seed)
    # wide, tall and square, small and large: SigLIP squashes them, CLIP crops them
    return [random_drawing(ALL_DRAWINGS[i % len(ALL_DRAWINGS)], rng, base=rng.randint(20, 400)) for i in range(count)]


@pytest.mark.parametrize("family", FAMILIES)
def test_our_preprocessing_equals_the_familys_own_image_processor(models: Models, family: str) -> None:
    model, reference = models[family]
    for image in _pictures(8, seed=4):
        ours = normalize(prepare_pixels(image, model.preprocessing)[None], model.preprocessing)[0]
        theirs = reference.pixels(image)
        assert ours.shape == theirs.shape
        assert np.abs(ours - theirs).max() < 1e-5, (family, image.size)


@pytest.mark.parametrize("family", FAMILIES)
def test_our_embeddings_equal_the_reference_models_features(models: Models, family: str) -> None:
    model, reference = models[family]
    images = _pictures(6, seed=9)
    ours = np.stack([model.embed_image(image) for image in images])
    assert ours.shape == (6, model.dim)
    assert np.abs(ours - reference.image_features(images)).max() < 1e-4
    texts = model.embed_texts(CAPTIONS)
    assert np.abs(texts - reference.text_features(CAPTIONS)).max() < 1e-4
    # one at a time (the search path) gives the same vectors as a batch
    assert np.abs(model.embed_texts([CAPTIONS[2]])[0] - texts[2]).max() < 1e-4


@pytest.mark.parametrize("family", SIGLIPS)
def test_siglip_needs_padding_to_the_full_length(models: Models, family: str) -> None:
    # the check above would catch a wrapper that padded only to the longest text
    model, reference = models[family]
    assert model.max_tokens == 64
    shortest_padding = reference.text_features(CAPTIONS, padding=True)
    assert np.abs(shortest_padding - model.embed_texts(CAPTIONS)).max() > 1e-2


def test_a_sentencepiece_vocabulary_reads_other_languages_as_the_reference_does(models: Models) -> None:
    model, reference = models["siglip-spm"]
    texts = SPM_TEXTS[len(CAPTIONS) :]  # French, German, Japanese, Russian
    np.testing.assert_allclose(model.embed_texts(texts), reference.text_features(texts), atol=1e-5)


def test_siglip2_lower_cases_like_its_tokenizer(models: Models) -> None:
    model, _ = models["siglip2"]
    upper, lower = model.embed_texts(["A RED Circle", "a red circle"])
    assert np.abs(upper - lower).max() < 1e-6


@pytest.mark.parametrize("family", SIGLIPS)
def test_the_relevance_scale_is_the_checkpoints_learned_temperature(models: Models, family: str) -> None:
    from api.relevance import Judges

    model, reference = models[family]
    assert model.logit_scale == pytest.approx(LOGIT_SCALE, rel=1e-5)
    assert model.logit_scale == pytest.approx(float(reference.model.logit_scale.detach().exp()), rel=1e-5)
    assert Judges().for_embedder(model).scale == pytest.approx(LOGIT_SCALE, rel=1e-5)
    assert open_embedder(str(TINY_CLIP)).logit_scale == pytest.approx(np.exp(2.727094), rel=1e-4)


@pytest.mark.parametrize("family", SIGLIPS)
def test_index_and_search_rank_as_the_reference_model_does(
    settings: Settings, models: Models, checkpoints: dict[str, Path], family: str
) -> None:
    folder = str(checkpoints[family])
    settings = settings.with_overrides(clip_model=folder)
    indexed = run_main(settings, "index", PRECISION="float32")
    assert indexed.returncode == 0, indexed.stderr
    assert "added 18" in indexed.stdout
    # "photo" is in no file name, so no picture matches by its words and the order is the model's alone
    query = "a photo of a purple square"
    found = run_main(settings, "search", query, "--json", "--limit", "18", PRECISION="float32")
    assert found.returncode == 0, found.stderr
    results = json.loads(found.stdout)["results"]
    assert len(results) == 18

    _, reference = models[family]
    files = sorted(settings.image_dir.glob("*.png"))
    image_vectors = reference.image_features([Image.open(f) for f in files])
    cosines = dict(zip((f.name for f in files), image_vectors @ reference.text_features([query])[0]))
    ranked = sorted(cosines, key=lambda name: -cosines[name])
    ours = [Path(r["path"]).name for r in results]
    for r in results:
        assert r["score"] == pytest.approx(cosines[Path(r["path"]).name], abs=1e-4)
    # the same order, up to pictures whose reference cosines tie within float noise
    in_our_order = [cosines[name] for name in ours]
    assert all(a >= b - 1e-5 for a, b in zip(in_our_order, in_our_order[1:])), (ours, ranked)
    assert ours[0] == ranked[0] or abs(cosines[ours[0]] - cosines[ranked[0]]) < 1e-5


def _write_checkpoint(folder: Path, config: dict[str, Any]) -> Path:
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "preprocessor_config.json").write_text(json.dumps({"size": {"height": 32, "width": 32}}))
    (folder / "model.safetensors").write_bytes(b"")
    return folder


def test_a_naflex_siglip2_checkpoint_is_refused_with_one_line(settings: Settings, tmp_path: Path) -> None:
    folder = _write_checkpoint(tmp_path / "naflex", {"model_type": "siglip2"})
    with pytest.raises(ModelLoadError, match="NaFlex") as raised:
        open_embedder(str(folder))
    assert "\n" not in str(raised.value) and "CLIP_MODEL" in str(raised.value)
    result = run_main(settings.with_overrides(clip_model=str(folder)), "index")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and "NaFlex" in error_lines[0] and "siglip2-base-patch16-224" in error_lines[0]


def test_an_unsupported_model_type_names_the_supported_families(tmp_path: Path) -> None:
    folder = _write_checkpoint(tmp_path / "blip", {"model_type": "blip"})
    with pytest.raises(ModelLoadError, match="supports CLIP and SigLIP"):
        open_embedder(str(folder))
