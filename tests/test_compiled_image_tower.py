"""Pictures through the compiled image tower (`core.models.image_onnx`): on a CPU, made once per
checkpoint, int8 where it stays within cosine 0.99 of the float32 transformers tower, used by the
indexer and reported in the status; and never a reason for a picture not to be embedded."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_CLIP, query, run_main
from PIL import Image
from shapes import ALL_DRAWINGS, random_drawing

from core.media.pictures import prepare_pixels
from core.models import image_onnx
from core.models.checkpoints import choose_precision, cpu_kernels
from core.models.embedder import Embedder, Embedders, open_embedder
from core.settings import Settings, SettingsError, load_settings
from core.store.db import IMAGES_TABLE


def compiled_embedder(where: Path, name: str = str(TINY_CLIP)) -> Embedder:
    return open_embedder(name, image_dir=where)


def held_out_pictures(model: Embedder) -> np.ndarray:
    """Shapes drawn with other parameters than the probes and the corpus: uint8 N×H×W×3."""
    rng = random.Random(11)
    drawings: list[Image.Image] = [random_drawing(d, rng, base=160) for d in ALL_DRAWINGS]
    return np.stack([prepare_pixels(picture, model.preprocessing) for picture in drawings])


def float32_vectors(pixels: np.ndarray) -> np.ndarray:
    return open_embedder(str(TINY_CLIP), precision="float32").embed_pixels(pixels)


class TestCompiling:
    def test_the_tiny_clip_compiles_to_int8_and_agrees_with_float32_transformers(self, tmp_path: Path) -> None:
        model = compiled_embedder(tmp_path / "towers")
        pixels = held_out_pictures(model)
        ours = model.embed_pixels(pixels)
        assert model.precision == "int8" and model.compiled_image() is not None
        (folder,) = (tmp_path / "towers").iterdir()
        manifest = json.loads((folder / "compiled.json").read_text())
        assert manifest["usable"] and manifest["kind"] == "int8"
        assert manifest["min_cosine"] >= image_onnx.INT8_MIN_COSINE
        assert sorted(p.name for p in folder.iterdir()) == ["compiled.json", "image-int8.onnx"]
        cosines = np.sum(ours * float32_vectors(pixels), axis=1)
        assert cosines.min() >= image_onnx.INT8_MIN_COSINE, cosines
        assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)

    def test_it_is_made_once_and_read_by_the_next_process(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.INFO, logger="sightline.model")
        first = compiled_embedder(tmp_path / "towers")
        pixels = held_out_pictures(first)
        vectors = first.embed_pixels(pixels)
        assert caplog.text.count("preparing") == 1
        again = compiled_embedder(tmp_path / "towers")
        assert np.allclose(again.embed_pixels(pixels), vectors, atol=1e-6)
        assert caplog.text.count("preparing") == 1 and again.precision == "int8"
        assert again._vision is None  # the transformers tower was never loaded for it

    def test_a_changed_checkpoint_compiles_again(self, tmp_path: Path) -> None:
        copy = tmp_path / "model"
        shutil.copytree(TINY_CLIP, copy)
        compiled_embedder(tmp_path / "towers", str(copy)).embed_pixels(held_out_pictures(open_embedder(str(copy))))
        (copy / "config.json").write_text((copy / "config.json").read_text() + "\n")
        compiled_embedder(tmp_path / "towers", str(copy)).embed_pixels(held_out_pictures(open_embedder(str(copy))))
        assert len(list((tmp_path / "towers").iterdir())) == 2


class TestWhenItCannotBeUsed:
    def test_a_graph_too_far_from_float32_leaves_pictures_to_transformers(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # floors no graph can reach: the check must refuse both, say why, and keep embedding
        monkeypatch.setattr(image_onnx, "INT8_MIN_COSINE", 1.5)
        monkeypatch.setattr(image_onnx, "FLOAT32_MIN_COSINE", 1.5)
        model = compiled_embedder(tmp_path / "towers")
        pixels = held_out_pictures(model)
        vectors = model.embed_pixels(pixels)
        assert model.compiled_image() is None and model.precision == choose_precision("auto", "cpu")
        assert caplog.text.count("too far from the float32 tower") == 1
        (folder,) = (tmp_path / "towers").iterdir()
        found = image_onnx.read_compiled_image(folder)
        assert found is not None and not found.usable and "too far" in found.why
        assert not list(folder.glob("*.onnx"))
        assert np.sum(vectors * float32_vectors(pixels), axis=1).min() > 0.99
        monkeypatch.undo()  # a refusal is remembered: the next process does not compile again
        assert compiled_embedder(tmp_path / "towers").compiled_image() is None

    def test_a_damaged_graph_is_left_for_transformers_and_made_again(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        first = compiled_embedder(tmp_path / "towers")
        pixels = held_out_pictures(first)
        first.embed_pixels(pixels)
        (folder,) = (tmp_path / "towers").iterdir()
        (folder / "image-int8.onnx").write_bytes(b"not an onnx graph")
        again = compiled_embedder(tmp_path / "towers")
        assert again.embed_pixels(pixels).shape == (len(pixels), again.dim)
        assert again.precision == choose_precision("auto", "cpu") and caplog.text.count("does not load") == 1
        assert again.embed_pixels(pixels[:1]).shape == (1, again.dim)
        assert caplog.text.count("does not load") == 1  # said once, not at every batch
        assert compiled_embedder(tmp_path / "towers").embed_pixels(pixels[:1]).shape == (1, again.dim)
        assert (folder / "compiled.json").exists()  # made again

    @pytest.mark.parametrize(
        ("env", "wanted"),
        [
            ({}, True),
            ({"PRECISION": "int8"}, True),
            ({"IMAGE_TOWER": "torch"}, False),
            ({"PRECISION": "bfloat16"}, False),
            ({"PRECISION": "float32"}, False),
            ({"DEVICE": "cuda"}, False),
        ],
    )
    def test_which_settings_use_it(self, tmp_path: Path, env: dict[str, str], wanted: bool) -> None:
        settings = load_settings({"DATA_DIR": str(tmp_path), "IMAGE_TOWER": "auto", **env})
        assert (settings.compiled_image_dir is not None) == wanted

    @pytest.mark.parametrize(
        ("env", "says"),
        [
            ({"PRECISION": "int8", "IMAGE_TOWER": "torch"}, "PRECISION=int8 needs the compiled image tower"),
            ({"PRECISION": "int8", "DEVICE": "cuda"}, "PRECISION=int8 runs on the CPU"),
        ],
    )
    def test_int8_where_it_cannot_run_is_refused_in_one_line(self, env: dict[str, str], says: str) -> None:
        with pytest.raises(SettingsError, match=says) as caught:
            load_settings(env)
        assert "\n" not in str(caught.value)


class TestIndexing:
    def test_the_indexer_embeds_through_it_and_the_status_says_int8_and_why(self, settings: Settings) -> None:
        from flows.engine import index_once

        settings = settings.with_overrides(image_tower="auto")
        embedders = Embedders(settings.compiled_text_dir, settings.compiled_image_dir)
        summary = asyncio.run(index_once(settings, embedders=embedders))
        assert summary is not None
        assert any((settings.data_dir / "image-towers").glob("*/image-int8.onnx"))
        (count,) = query(settings, f"SELECT count(*) FROM {IMAGES_TABLE}")[0]
        assert count == len(ALL_DRAWINGS)
        status = run_main(settings, "status", "--json", IMAGE_TOWER="auto")
        assert status.returncode == 0, status.stderr
        body = json.loads(status.stdout)
        assert body["precision"] == "int8" and body["cpu"] == cpu_kernels()
        found = run_main(settings, "search", "a red circle", "--json", "--limit", "3", IMAGE_TOWER="auto")
        assert found.returncode == 0, found.stderr
        assert json.loads(found.stdout)["results"][0]["path"] == "red-circle.png"
