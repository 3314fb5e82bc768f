"""Duplicates: exact copies and near copies grouped over HTTP, from the terminal and on the page;
distinct pictures left alone; nothing ever deleted."""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import indexed_folder, run_main
from fastapi.testclient import TestClient
from PIL import Image
from shapes import write_corpus
from test_browser import open_page, server  # noqa: F401  (the gallery's shared server, reused as it is)

from api.app import create_app
from api.near_pairs import near_pairs
from core.settings import Settings


def add_copies(image_dir: Path) -> None:
    """Beside the corpus: a byte-identical copy of one picture and a resized, re-encoded copy of another."""
    folder = image_dir / "copies"
    folder.mkdir()
    shutil.copy(image_dir / "red-circle.png", folder / "red-circle-copy.png")
    original = Image.open(image_dir / "blue-square.png").convert("RGB")
    buffer = io.BytesIO()
    original.resize((original.width * 9 // 10, original.height * 9 // 10)).save(buffer, "JPEG", quality=88)
    (folder / "blue-square-small.jpg").write_bytes(buffer.getvalue())


@pytest.fixture(scope="module")
def copies(pg_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """The corpus and its copies, indexed once for the module's tests that only look."""
    top = tmp_path_factory.mktemp("copies")
    write_corpus(top / "img")
    add_copies(top / "img")
    with indexed_folder(pg_server, top) as settings:
        yield settings


@pytest.fixture(scope="module")
def client(copies: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(copies)) as c:
        yield c


@pytest.fixture
def own_copies(settings: Settings, index: Any) -> Settings:
    """The same, indexed for a test that adds a file."""
    add_copies(settings.image_dir)
    index(settings)
    return settings


@pytest.fixture
def own_client(own_copies: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(own_copies)) as c:
        yield c


def group_paths(body: dict[str, Any]) -> list[tuple[str, set[str]]]:
    return [(g["kind"], {i["path"] for i in g["images"]}) for g in body["groups"]]


def files_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def test_exact_and_near_copies_are_grouped_and_distinct_pictures_are_not(client: TestClient, copies: Settings) -> None:
    before = files_under(copies.image_dir)
    response = client.get("/api/duplicates")
    assert response.status_code == 200, response.text
    body = response.json()
    groups = group_paths(body)
    assert ("exact", {"red-circle.png", "copies/red-circle-copy.png"}) in groups
    assert ("near", {"blue-square.png", "copies/blue-square-small.jpg"}) in groups
    assert len(groups) == 2 and body["total_groups"] == 2 and body["images_in_groups"] == 4
    near = next(g for g in body["groups"] if g["kind"] == "near")
    assert 0.95 <= near["similarity"] < 1.0
    first = near["images"][0]
    assert {"size", "width", "height", "taken_at", "thumbnail_url", "url"} <= first.keys()
    # the most pixels first: the original, not the resized copy
    assert first["path"] == "blue-square.png"
    assert client.get(first["thumbnail_url"]).status_code == 200
    assert files_under(copies.image_dir) == before  # nothing deleted


def test_threshold_folder_and_paging(client: TestClient) -> None:
    # at 1.0 only identical embeddings group: the re-encoded copy drops out, the exact copy stays
    strict = client.get("/api/duplicates", params={"threshold": 1.0}).json()
    assert group_paths(strict) == [("exact", {"red-circle.png", "copies/red-circle-copy.png"})]
    # a loose threshold joins more pictures, so the groups grow
    loose = client.get("/api/duplicates", params={"threshold": 0.5}).json()
    assert loose["images_in_groups"] > 4
    inside = client.get("/api/duplicates", params={"folder": "copies"}).json()
    assert inside["total_groups"] == 0  # each copy's twin is outside the folder
    first = client.get("/api/duplicates", params={"limit": 1}).json()
    second = client.get("/api/duplicates", params={"limit": 1, "offset": 1}).json()
    assert first["has_more"] and not second["has_more"]
    assert group_paths(first) + group_paths(second) == group_paths(client.get("/api/duplicates").json())


@pytest.mark.parametrize("threshold", ["0.4", "1.5", "nan", "abc", "-1"])
def test_a_threshold_outside_half_to_one_is_a_422_with_one_line(client: TestClient, threshold: str) -> None:
    response = client.get("/api/duplicates", params={"threshold": threshold})
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail and "threshold" in detail


def test_a_new_copy_shows_up_after_the_indexer_reports_the_change(
    own_client: TestClient, own_copies: Settings, index: Any
) -> None:
    client, copies = own_client, own_copies
    assert client.get("/api/duplicates").json()["total_groups"] == 2
    shutil.copy(copies.image_dir / "green-triangle.png", copies.image_dir / "copies" / "green-again.png")
    index(copies)
    groups = group_paths(client.get("/api/duplicates").json())
    assert ("exact", {"green-triangle.png", "copies/green-again.png"}) in groups


def test_the_command_line_prints_groups_and_json(copies: Settings) -> None:
    before = files_under(copies.image_dir)
    result = run_main(copies, "duplicates")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    headers = [line for line in lines if line.startswith("group ")]
    assert len(headers) == 2 and "nothing is deleted" in result.stderr
    assert any(line.startswith("\tcopies/red-circle-copy.png\t") for line in lines)
    body = json.loads(run_main(copies, "duplicates", "--json", "--threshold", "1").stdout)
    assert group_paths(body) == [("exact", {"red-circle.png", "copies/red-circle-copy.png"})]
    bad = run_main(copies, "duplicates", "--threshold", "2")
    assert bad.returncode == 2 and "threshold must be between" in bad.stderr
    assert files_under(copies.image_dir) == before


@pytest.mark.browser
def test_the_page_shows_each_group_side_by_side(server: str) -> None:  # noqa: F811
    for page in open_page():
        page.goto(server + "/")
        page.click("#duplicates-link")
        page.wait_for_url("**/duplicates")
        group = page.locator(".dup-group", has_text="holiday/beach.png")
        group.wait_for()
        # the gallery's other yellow squares may join at 0.95, so the copy and its original are in one group
        assert "yellow-square.png" in group.inner_text()
        boxes = [f.bounding_box() for f in group.locator("figure").all()]
        assert len(boxes) >= 2
        assert boxes[0]["y"] == boxes[1]["y"] and boxes[0]["x"] < boxes[1]["x"]  # side by side
        assert "×" in group.inner_text() and "B" in group.inner_text()  # dimensions and size
        assert "Nothing is deleted by Sightline" in page.inner_text("#note")
        page.fill("#threshold", "1")
        page.click("#dup-form button")
        exact = page.locator(".dup-group[data-kind=exact]", has_text="holiday/beach.png")
        exact.wait_for()
        assert exact.locator("figure").count() == 2
        # the choice is in the URL: a reload, or a bookmark, shows the same view
        assert page.url.endswith("/duplicates?threshold=1")
        page.select_option("#folder", "holiday")
        page.wait_for_url("**/duplicates?threshold=1&folder=holiday")
        page.wait_for_function("document.querySelector('#summary').textContent.startsWith('No duplicates')")
        page.reload()
        page.wait_for_function("document.querySelector('#summary').textContent.startsWith('No duplicates')")
        assert page.input_value("#threshold") == "1" and page.input_value("#folder") == "holiday"


def _planted(count: int, dim: int, seed: int) -> np.ndarray:
    """Clustered unit vectors with a tenth of them replaced by close copies of others."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((count // 20, dim)).astype(np.float32)
    vectors = centers[rng.integers(0, len(centers), count)] + rng.standard_normal((count, dim)).astype(np.float32)
    for a, b in rng.choice(count, (count // 10, 2), replace=False):
        vectors[b] = vectors[a] + 0.05 * rng.standard_normal(dim).astype(np.float32)
    return vectors


def _all_pairs(vectors: np.ndarray, threshold: float) -> set[tuple[int, int]]:
    x = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    a, b = np.nonzero(np.triu(x @ x.T >= threshold - 1e-6, 1))
    return set(zip(a.tolist(), b.tolist()))


@pytest.mark.parametrize("threshold", [0.8, 0.95, 1.0])
def test_near_pairs_are_every_pair_above_the_threshold_checked_against_all_pairs(threshold: float) -> None:
    vectors = _planted(2000, 48, seed=3)
    vectors[7] = vectors[8]  # identical embeddings count at threshold 1.0
    a, b, sims = near_pairs(vectors, threshold)
    assert set(zip(a.tolist(), b.tolist())) == _all_pairs(vectors, threshold)
    assert bool(np.all(sims >= threshold - 1e-6)) and bool(np.all(sims <= 1.0))


def test_the_cells_find_the_same_pairs_as_all_against_all_on_planted_copies() -> None:
    vectors = _planted(3000, 48, seed=4)
    exact = near_pairs(vectors, 0.9)
    cells = near_pairs(vectors, 0.9, exact_max=0)  # the path larger collections take
    assert len(exact[0]) > 250
    assert set(zip(cells[0].tolist(), cells[1].tolist())) == set(zip(exact[0].tolist(), exact[1].tolist()))
    assert np.allclose(cells[2], exact[2])


def test_no_pairs_from_fewer_than_two_vectors() -> None:
    assert all(len(part) == 0 for part in near_pairs(np.ones((1, 8), dtype=np.float32), 0.9))
