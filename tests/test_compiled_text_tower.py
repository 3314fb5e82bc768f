"""Queries through the compiled text tower (`core.models.text_onnx`): made once per checkpoint, checked
against the float32 transformers tower, used by the server and the CLI, and never a reason for a
search to fail."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import TINY_CLIP, Process, run_main, serve_and_wait, wait_for
from test_model_families import build_tiny_siglip

from core.models.embedder import Embedder, open_embedder
from core.models.text_onnx import INT8_MIN_COSINE, read_compiled
from core.settings import Settings

# not among the probes the check runs on: their cosines are held to a floor a little below the check's
HELD_OUT_MIN_COSINE = 0.995
QUERIES = ["a red circle", "a small blue square on white", "green", "yellow triangle, top left", "ein rotes Quadrat"]


def compiled_embedder(name: str, where: Path) -> Embedder:
    return open_embedder(name, compiled_dir=where)


def reference_vectors(name: str, texts: list[str]) -> np.ndarray:
    return open_embedder(name, precision="float32").embed_texts(texts)


class TestCompiling:
    def test_the_tiny_clip_compiles_and_agrees_with_float32_transformers(self, tmp_path: Path) -> None:
        model = compiled_embedder(str(TINY_CLIP), tmp_path / "towers")
        assert model.needs_compiling()
        compiled = model.compile_text()
        assert compiled is not None and compiled.usable and compiled.kind in ("int8", "float32")
        manifest = json.loads((compiled.folder / "compiled.json").read_text())
        assert manifest["min_cosine"][compiled.kind] >= INT8_MIN_COSINE
        assert not model.needs_compiling() and model.compiled_text() is not None
        ours = model.embed_texts(QUERIES)
        cosines = np.sum(ours * reference_vectors(str(TINY_CLIP), QUERIES), axis=1)
        assert cosines.min() >= HELD_OUT_MIN_COSINE, cosines
        assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
        # one query alone is what it is in a batch: the padding is masked (int8 activations are
        # scaled per call, so the two differ a little)
        assert float(model.embed_text(QUERIES[1]) @ ours[1]) > 0.999

    @pytest.mark.parametrize("tokenizer", ["siglip", "siglip2"])
    def test_siglip_pads_to_the_limit_as_it_was_trained(self, tmp_path: Path, tokenizer: str) -> None:
        folder = build_tiny_siglip(tmp_path / tokenizer, tokenizer)
        model = compiled_embedder(str(folder), tmp_path / "towers")
        compiled = model.compile_text()
        assert compiled is not None
        if not compiled.usable:  # a tokenizer without a fast form: transformers answers, and says why
            assert compiled.why and model.compiled_text() is None
            return
        tower = model.compiled_text()
        assert compiled.pad_to_max and tower is not None
        assert tower.tokens(["green"])["input_ids"].shape == (1, model.max_tokens)
        cosines = np.sum(model.embed_texts(QUERIES) * reference_vectors(str(folder), QUERIES), axis=1)
        assert cosines.min() >= HELD_OUT_MIN_COSINE, cosines

    def test_texts_past_the_token_limit_are_cut_like_transformers_cuts_them(self, tmp_path: Path) -> None:
        model = compiled_embedder(str(TINY_CLIP), tmp_path / "towers")
        model.compile_text()
        long = "a red circle beside a blue square " * 30
        ours = model.compiled_text()
        assert ours is not None and ours.tokens([long])["input_ids"].shape[1] == model.max_tokens
        assert float(model.embed_texts([long])[0] @ reference_vectors(str(TINY_CLIP), [long])[0]) >= HELD_OUT_MIN_COSINE

    def test_a_changed_checkpoint_compiles_again(self, tmp_path: Path) -> None:
        import shutil

        copy = tmp_path / "model"
        shutil.copytree(TINY_CLIP, copy)
        first = compiled_embedder(str(copy), tmp_path / "towers")
        first.compile_text()
        (copy / "config.json").write_text((copy / "config.json").read_text() + "\n")
        assert compiled_embedder(str(copy), tmp_path / "towers").needs_compiling()


class TestWhenItCannotBeUsed:
    def test_a_tower_that_failed_its_check_leaves_queries_to_transformers(self, tmp_path: Path) -> None:
        model = compiled_embedder(str(TINY_CLIP), tmp_path / "towers")
        assert model.compiled_folder is not None
        model.compiled_folder.mkdir(parents=True)
        manifest = {"usable": False, "why": "its embeddings are too far from the float32 tower's"}
        (model.compiled_folder / "compiled.json").write_text(json.dumps(manifest))
        assert read_compiled(model.compiled_folder) is not None
        assert model.compiled_text() is None and not model.needs_compiling()
        vector = model.embed_text("a red circle")
        assert float(vector @ reference_vectors(str(TINY_CLIP), ["a red circle"])[0]) > 0.99

    def test_a_damaged_tower_is_left_for_transformers_and_made_again(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        first = compiled_embedder(str(TINY_CLIP), tmp_path / "towers")
        compiled = first.compile_text()
        assert compiled is not None and compiled.usable
        (compiled.folder / f"text-{compiled.kind}.onnx").write_bytes(b"not an onnx graph")
        again = compiled_embedder(str(TINY_CLIP), tmp_path / "towers")
        assert again.embed_texts(["a red circle"]).shape == (1, again.dim)
        assert again.text_tower_kind == "transformers" and caplog.text.count("does not load") == 1
        assert again.embed_texts(["a blue square"]).shape == (1, again.dim)
        assert caplog.text.count("does not load") == 1  # said once, not at every query
        assert again.needs_compiling()
        remade = again.compile_text()
        assert remade is not None and remade.usable and again.text_tower_kind.startswith("compiled")


def _no_torch(folder: Path) -> str:
    """A folder for PYTHONPATH whose sitecustomize makes `import torch` fail."""
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(
        "import sys\nclass _NoTorch:\n    def find_spec(self, name, path=None, target=None):\n"
        "        if name in ('torch', 'transformers'):\n            raise ModuleNotFoundError(name)\n"
        "sys.meta_path.insert(0, _NoTorch())\n"
    )
    return str(folder)


class TestSearching:
    def test_the_command_line_compiles_once_then_searches_without_torch(
        self, settings: Settings, index: Callable[[Settings], Any], tmp_path: Path
    ) -> None:
        index(settings)
        first = run_main(settings, "search", "a red circle", "--json", TEXT_TOWER="auto")
        assert first.returncode == 0, first.stderr
        assert "compiling the text tower" in first.stderr
        blocked = _no_torch(tmp_path / "no-torch")
        again = run_main(settings, "search", "a red circle", "--json", TEXT_TOWER="auto", PYTHONPATH=blocked)
        assert again.returncode == 0, again.stderr
        assert "compiling" not in again.stderr
        before, after = json.loads(first.stdout)["results"], json.loads(again.stdout)["results"]
        assert [r["path"] for r in after][:3] == [r["path"] for r in before][:3]
        assert after[0]["path"] == "red-circle.png"

    def test_the_server_compiles_in_the_background_and_answers_the_same(
        self, settings: Settings, start_process: Callable[..., Process]
    ) -> None:
        import httpx

        server, base = serve_and_wait(start_process, settings, TEXT_TOWER="auto")

        def top(text: str) -> list[str]:
            response = httpx.get(f"{base}/api/search", params={"q": text, "limit": 3}, timeout=30)
            assert response.status_code == 200, response.text
            return [r["path"] for r in response.json()["results"]]

        def compiled() -> bool:
            assert "was not compiled" not in server.output(), server.output()
            return str(httpx.get(f"{base}/api/status", timeout=30).json().get("text_tower")).startswith("compiled")

        assert top("a red circle")[0] == "red-circle.png"
        wait_for(compiled, timeout=120)
        assert any((settings.data_dir / "text-towers").glob("*/compiled.json"))
        # a query the server has not cached, through the compiled tower: the same answer
        assert top("a blue square")[0] == "blue-square.png"
        assert server.proc.poll() is None
