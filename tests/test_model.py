"""The CLIP wrapper: the tiny model loads like a real one and understands its captions; our fast
preprocessing gives the model's own processor's tensor; a missing model gets one clear line."""

from __future__ import annotations

import io
import random
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import TINY_CLIP, run_main
from PIL import Image
from shapes import ALL_DRAWINGS, random_drawing, write_corpus

from core.media.pictures import decode_image, normalize, normalize_tensor, prepare_pixels
from core.models.checkpoints import ModelLoadError, auto_batch_size, choose_precision
from core.models.embedder import Embedder, open_embedder
from core.settings import Settings, load_settings


@pytest.fixture(scope="module")
def model() -> Embedder:
    return open_embedder(str(TINY_CLIP))


def test_tiny_model_ranks_the_matching_picture_first_for_every_caption(model: Embedder, tmp_path: Path) -> None:
    files = write_corpus(tmp_path)
    captions = list(files)
    image_vectors = np.stack([model.embed_image(Image.open(files[c])) for c in captions])
    text_vectors = model.embed_texts(captions)
    best = (text_vectors @ image_vectors.T).argmax(axis=1)
    wrong = [(captions[i], captions[j]) for i, j in enumerate(best) if i != j]
    assert wrong == [], f"caption → picture ranked first instead: {wrong}"


def test_embeddings_are_unit_length_float32_of_the_projection_size(model: Embedder) -> None:
    vectors = model.embed_texts(["a red circle", "a much longer caption about a blue square on grey"])
    assert vectors.dtype == np.float32
    assert vectors.shape == (2, model.dim) and model.dim == 32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_a_very_long_query_is_cut_at_the_token_limit_not_refused(model: Embedder) -> None:
    vector = model.embed_text("a red circle " * 200)
    assert vector.shape == (model.dim,)


def test_repeated_text_queries_come_from_the_cache(model: Embedder) -> None:
    first = model.embed_text("a purple triangle")
    assert model.embed_text("a purple triangle") is first


def test_fast_preprocessing_equals_the_models_own_processor(model: Embedder) -> None:
    from transformers import CLIPImageProcessorPil

    processor = CLIPImageProcessorPil.from_pretrained(str(TINY_CLIP))
    rng = random.Random(3)
    for drawing in ALL_DRAWINGS[:8]:
        image = random_drawing(drawing, rng, base=rng.randint(40, 500))
        theirs = processor(images=image, return_tensors="np")["pixel_values"][0]
        ours = normalize(prepare_pixels(image, model.preprocessing)[None], model.preprocessing)[0]
        assert ours.shape == theirs.shape
        assert np.abs(ours - theirs).max() < 1e-5, image.size


def test_jpeg_draft_decoding_keeps_the_embedding(model: Embedder) -> None:
    image = random_drawing(ALL_DRAWINGS[4], random.Random(5), base=900)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=92)
    data = buffer.getvalue()
    fast = decode_image(data, model.preprocessing, max_pixels=10**8, draft=True)
    full = decode_image(data, model.preprocessing, max_pixels=10**8, draft=False)
    assert fast.pixels is not None and full.pixels is not None
    a, b = model.embed_pixels(fast.pixels[None])[0], model.embed_pixels(full.pixels[None])[0]
    assert float(a @ b) > 0.99


def test_precision_auto_picks_float16_on_cuda_and_respects_an_explicit_choice() -> None:
    assert choose_precision("auto", "cuda") == "float16"
    assert choose_precision("auto", "cpu") in ("bfloat16", "float32")
    assert choose_precision("float32", "cuda") == "float32"


def test_a_missing_local_model_raises_a_message_naming_clip_model(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="CLIP_MODEL"):
        open_embedder(str(tmp_path / "no-such-model"))


@pytest.mark.parametrize("name", ["openai/clip-vit-base-patch32", "/nowhere/at/all"])
def test_the_cli_says_one_line_about_an_unavailable_model(settings: Settings, name: str) -> None:
    result = run_main(settings, "index", CLIP_MODEL=name, HF_HUB_OFFLINE="1")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and "CLIP_MODEL" in error_lines[0]
    assert "local model folder" in error_lines[0]


def test_concurrent_queries_share_forward_passes_and_get_their_own_vectors() -> None:
    model = open_embedder(str(TINY_CLIP))
    queries = [f"a {color} {shape}" for color in ("red", "green", "blue", "yellow") for shape in ("circle", "square")]
    alone = {q: model.embed_texts([q])[0] for q in queries}
    start = threading.Barrier(len(queries))

    def search(q: str) -> np.ndarray:
        start.wait()
        return model.embed_text(q)

    with ThreadPoolExecutor(len(queries)) as pool:
        together = dict(zip(queries, pool.map(search, queries)))
    for q in queries:
        assert float(np.dot(together[q], alone[q])) > 0.999, q
    assert model.text_batches < len(queries)


class TestOnAGPU:
    """What indexing does differently with CUDA, checked where the suite runs (CPU only): the
    arithmetic the GPU path does, and the batch sizes it picks."""

    def test_normalizing_where_the_model_runs_equals_normalizing_in_numpy(self, model: Embedder) -> None:
        import torch

        pixels = np.random.default_rng(3).integers(0, 256, (5, 64, 64, 3), dtype=np.uint8)
        on_device = normalize_tensor(pixels, model.preprocessing, "cpu", torch.float32)
        assert on_device.shape == (5, 3, 64, 64) and on_device.is_contiguous()
        np.testing.assert_allclose(on_device.numpy(), normalize(pixels, model.preprocessing), rtol=0, atol=1e-6)
        half = normalize_tensor(pixels, model.preprocessing, "cpu", torch.float16)
        assert half.dtype == torch.float16

    def test_batch_size_auto_is_larger_on_a_gpu(self) -> None:
        assert auto_batch_size("cuda") == 128 and auto_batch_size("cpu") == 32
        assert open_embedder(str(TINY_CLIP), "cpu", "float32").batch_size == 32
        assert load_settings({"BATCH_SIZE": "auto"}).batch_size == 0
        assert load_settings({"BATCH_SIZE": "64"}).batch_size == 64

    def test_an_auto_batch_is_split_into_forward_passes_of_the_models_size(self) -> None:
        import asyncio

        from flows.run import make_batched_embed

        model = open_embedder(str(TINY_CLIP), "cpu", "float32")
        passes: list[int] = []
        real = model.embed_pixels

        def counted(batch: np.ndarray) -> np.ndarray:
            passes.append(len(batch))
            return real(batch)

        spied: Any = model  # to replace its method with a spy
        spied.embed_pixels = counted
        embed = make_batched_embed(model, 0)
        pixels = np.random.default_rng(4).integers(0, 256, (70, 64, 64, 3), dtype=np.uint8)

        async def all_at_once() -> list[np.ndarray]:
            return await asyncio.gather(*(embed(p) for p in pixels))

        vectors = asyncio.run(all_at_once())
        assert len(vectors) == 70 and max(passes) <= 32 and sum(passes) == 70
        np.testing.assert_allclose(vectors[0], real(pixels[:1])[0], atol=1e-5)
