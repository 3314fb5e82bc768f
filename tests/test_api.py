"""Search over HTTP and from the terminal: ranking, filters, paging, similar images, upload search,
thumbnails and originals, status, and a clear answer for every bad request."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import httpx
import pytest
from conftest import ROOT, Process, env_for, free_port, indexed_folder, query, run_main, wait_for
from fastapi.testclient import TestClient
from PIL import Image
from shapes import Drawing, draw, write_corpus

from api.app import create_app
from core.settings import Settings


def dated_jpeg(drawing: Drawing, when: str) -> bytes:
    exif = Image.Exif()
    exif.get_ifd(0x8769)[36867] = when
    buffer = io.BytesIO()
    draw(drawing, width=160, height=120).save(buffer, "JPEG", quality=92, exif=exif)
    return buffer.getvalue()


def add_trips(folder: Path) -> None:
    """Beside the 18 shapes in `folder`: EXIF-dated JPEGs in trips/ and a copy of one shape (22 in all)."""
    trips = folder / "trips"
    trips.mkdir()
    (trips / "old-green-triangle.jpg").write_bytes(dated_jpeg(Drawing("green", "triangle"), "2019:05:01 10:00:00"))
    (trips / "new-green-triangle.jpg").write_bytes(dated_jpeg(Drawing("green", "triangle"), "2023:08:15 18:30:00"))
    (trips / "blue-circle.jpg").write_bytes(dated_jpeg(Drawing("blue", "circle"), "2023:01:02 09:00:00"))
    shutil.copy(folder / "orange-square.png", folder / "orange-square-copy.png")


@pytest.fixture(scope="module")
def indexed(pg_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """One indexed folder for the module's tests that only look (search, read, run the CLI's search);
    a test that changes the folder uses `own_indexed`."""
    top = tmp_path_factory.mktemp("api")
    write_corpus(top / "img")
    add_trips(top / "img")
    with indexed_folder(pg_server, top) as settings:
        yield settings


@pytest.fixture(scope="module")
def client(indexed: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(indexed)) as c:
        yield c


@pytest.fixture
def own_indexed(settings: Settings, index: Any) -> Settings:
    """The same folder, indexed for this test alone."""
    add_trips(settings.image_dir)
    index(settings)
    return settings


@pytest.fixture
def own_client(own_indexed: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(own_indexed)) as c:
        yield c


class JsonResponse(Protocol):
    """What `paths` reads of a response: an `httpx.Response`, or the TestClient's (from `httpx2`)."""

    @property
    def status_code(self) -> int: ...

    @property
    def text(self) -> str: ...

    def json(self) -> Any: ...


def paths(response: JsonResponse) -> list[str]:
    assert response.status_code == 200, response.text
    return [r["path"] for r in response.json()["results"]]


def image_id(settings: Settings, path: str) -> int:
    return int(query(settings, "SELECT id FROM images WHERE path = %s", (path,))[0][0])


class TestTextSearch:
    def test_the_described_picture_comes_first_with_a_cosine_score(self, client: TestClient) -> None:
        response = client.get("/api/search", params={"q": "a purple square", "limit": 5})
        body = response.json()
        assert paths(response)[0] == "purple-square.png"
        first = body["results"][0]
        assert set(first) >= {"id", "path", "score", "width", "height", "taken_at", "url", "thumbnail_url"}
        assert 0 < first["score"] <= 1 and first["score"] >= body["results"][1]["score"]
        assert body["query"] == "a purple square" and body["limit"] == 5 and body["offset"] == 0
        assert all(0 <= r["id"] < 2**53 for r in body["results"])  # ids survive JavaScript numbers

    def test_folder_filter_keeps_the_ranking_within_the_folder(self, client: TestClient) -> None:
        found = paths(client.get("/api/search", params={"q": "a green triangle", "folder": "trips"}))
        assert sorted(found) == [
            "trips/blue-circle.jpg",
            "trips/new-green-triangle.jpg",
            "trips/old-green-triangle.jpg",
        ]
        assert found[-1] == "trips/blue-circle.jpg"

    def test_date_filters_use_the_exif_date(self, client: TestClient) -> None:
        found = paths(
            client.get(
                "/api/search",
                params={"q": "a green triangle", "taken_after": "2023-01-01", "taken_before": "2023-08-15"},
            )
        )
        assert found == ["trips/new-green-triangle.jpg", "trips/blue-circle.jpg"]
        older = paths(client.get("/api/search", params={"q": "a green triangle", "taken_before": "2020-01-01"}))
        assert older == ["trips/old-green-triangle.jpg"]

    def test_format_filter_returns_every_match_not_a_post_filtered_few(self, client: TestClient) -> None:
        found = paths(client.get("/api/search", params={"q": "a red circle", "format": "jpg", "limit": 50}))
        assert len(found) == 3 and all(p.endswith(".jpg") for p in found)

    def test_pages_continue_each_other_without_gaps_or_repeats(self, client: TestClient) -> None:
        whole = paths(client.get("/api/search", params={"q": "a yellow circle", "limit": 22}))
        pages: list[str] = []
        for offset in range(0, 22, 5):
            response = client.get("/api/search", params={"q": "a yellow circle", "limit": 5, "offset": offset})
            pages += paths(response)
            assert response.json()["has_more"] == (offset + 5 < 22)
        assert pages == whole and len(set(whole)) == 22


class TestImageSearch:
    def test_similar_images_rank_a_duplicate_first_and_leave_the_image_out(
        self, client: TestClient, indexed: Settings
    ) -> None:
        original = image_id(indexed, "orange-square.png")
        found = paths(client.get(f"/api/images/{original}/similar", params={"limit": 5}))
        assert found[0] == "orange-square-copy.png" and "orange-square.png" not in found

    def test_an_uploaded_example_finds_its_kind_and_is_not_stored(self, client: TestClient, indexed: Settings) -> None:
        upload = io.BytesIO()
        draw(Drawing("yellow", "triangle"), width=140, height=110, background=(40, 40, 40)).save(upload, "PNG")
        response = client.post("/api/search/image", files={"file": ("example.png", upload.getvalue(), "image/png")})
        assert paths(response)[0] == "yellow-triangle.png"
        assert not any(p.name == "example.png" for p in indexed.image_dir.rglob("*"))


class TestFiles:
    def test_the_original_comes_with_its_content_type(self, client: TestClient, indexed: Settings) -> None:
        response = client.get(f"/api/images/{image_id(indexed, 'trips/blue-circle.jpg')}/file")
        assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
        assert response.content == (indexed.image_dir / "trips" / "blue-circle.jpg").read_bytes()

    def test_thumbnails_are_small_cached_and_renewed_when_the_file_changes(
        self, own_client: TestClient, own_indexed: Settings, index: Callable[[Settings], Any]
    ) -> None:
        client, indexed = own_client, own_indexed
        big = indexed.image_dir / "big.png"
        draw(Drawing("red", "square"), width=1000, height=600).save(big)
        index(indexed)
        ident = image_id(indexed, "big.png")
        first = client.get(f"/api/images/{ident}/thumbnail")
        assert first.status_code == 200 and first.headers["content-type"] == "image/jpeg"
        assert Image.open(io.BytesIO(first.content)).size == (320, 192)
        cached = list(indexed.thumbnail_dir.rglob(f"{ident}-*.jpg"))
        assert len(cached) == 1
        draw(Drawing("blue", "circle"), width=500, height=1000).save(big)
        index(indexed)
        second = client.get(f"/api/images/{ident}/thumbnail")
        assert Image.open(io.BytesIO(second.content)).size == (160, 320)
        assert len(list(indexed.thumbnail_dir.rglob(f"{ident}-*.jpg"))) == 2


class TestBadRequests:
    @pytest.mark.parametrize("q", ["", "   "])
    def test_an_empty_query_is_a_422_with_a_message(self, client: TestClient, q: str) -> None:
        response = client.get("/api/search", params={"q": q})
        assert response.status_code == 422 and "q must not be empty" in response.json()["detail"]

    def test_a_long_query_is_truncated_not_refused_up_to_2000_characters(self, client: TestClient) -> None:
        assert client.get("/api/search", params={"q": "a red circle " * 150}).status_code == 200
        # past that a search would take seconds (every word is a test of the text search)
        refused = client.get("/api/search", params={"q": "a red circle " * 400})
        assert refused.status_code == 422
        assert refused.json()["detail"] == "q: String should have at most 2000 characters"

    @pytest.mark.parametrize("limit", [0, 201, -3])
    def test_limit_outside_1_to_200_is_a_422(self, client: TestClient, limit: int) -> None:
        response = client.get("/api/search", params={"q": "a red circle", "limit": limit})
        assert response.status_code == 422 and response.json()["detail"].startswith("limit:")

    @pytest.mark.parametrize(
        "params",
        [{"taken_after": "last tuesday"}, {"folder": "../etc"}, {"offset": -1}],
    )
    def test_bad_filters_are_a_422(self, client: TestClient, params: dict[str, Any]) -> None:
        assert client.get("/api/search", params={"q": "a red circle", **params}).status_code == 422

    @pytest.mark.parametrize(
        "url", ["/api/images/12345/file", "/api/images/12345/thumbnail", "/api/images/12345/similar"]
    )
    def test_unknown_ids_are_a_404(self, client: TestClient, url: str) -> None:
        response = client.get(url)
        assert response.status_code == 404 and "12345" in response.json()["detail"]

    def test_an_id_that_is_not_a_number_is_a_422(self, client: TestClient) -> None:
        assert client.get("/api/images/..%2f..%2fetc%2fpasswd/file").status_code in (404, 422)

    def test_an_upload_that_is_not_an_image_is_a_415(self, client: TestClient) -> None:
        response = client.post("/api/search/image", files={"file": ("x.jpg", b"hello, not a jpeg", "image/jpeg")})
        assert response.status_code == 415 and "not an image" in response.json()["detail"]

    def test_an_upload_over_the_limit_is_a_413(self, indexed: Settings) -> None:
        small_cap = indexed.with_overrides(upload_max_bytes=100_000)
        with TestClient(create_app(small_cap)) as c:
            response = c.post("/api/search/image", files={"file": ("big.png", b"\0" * 150_000, "image/png")})
        assert response.status_code == 413 and "MB" in response.json()["detail"]

    def test_a_deleted_file_is_not_served_even_by_its_old_id(
        self, own_client: TestClient, own_indexed: Settings
    ) -> None:
        client, indexed = own_client, own_indexed
        ident = image_id(indexed, "red-circle.png")
        (indexed.image_dir / "red-circle.png").unlink()
        assert client.get(f"/api/images/{ident}/file").status_code == 404


class TestCommandLine:
    def test_search_prints_plain_lines_when_piped(self, indexed: Settings) -> None:
        result = run_main(indexed, "search", "a blue triangle", "--limit", "3")
        assert result.returncode == 0, result.stderr
        lines = result.stdout.strip().splitlines()
        assert len(lines) == 3 and lines[0].split("\t")[1] == "blue-triangle.png"

    def test_search_json_has_the_api_objects(self, indexed: Settings) -> None:
        result = run_main(indexed, "search", "a blue triangle", "--limit", "2", "--json")
        body = json.loads(result.stdout)
        assert body["results"][0]["path"] == "blue-triangle.png" and "thumbnail_url" in body["results"][0]

    def test_search_draws_a_table_in_a_terminal(self, indexed: Settings) -> None:
        command = f"{sys.executable} {ROOT / 'main.py'} search 'a blue triangle' --limit 3"
        result = subprocess.run(
            ["script", "-qec", command, "/dev/null"],
            env={**env_for(indexed), "COLUMNS": "120"},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stdout
        assert "score" in result.stdout and "blue-triangle.png" in result.stdout and "3 results" in result.stdout

    def test_search_by_example_image(self, indexed: Settings) -> None:
        result = run_main(indexed, "search", "--image", str(indexed.image_dir / "orange-square.png"), "--limit", "2")
        assert {line.split("\t")[1] for line in result.stdout.strip().splitlines()} == {
            "orange-square.png",
            "orange-square-copy.png",
        }

    def test_search_with_nothing_to_search_for_says_so(self, indexed: Settings) -> None:
        result = run_main(indexed, "search")
        assert result.returncode == 2 and result.stderr.startswith("error:")


class TestBeforeTheFirstIndex:
    """A server or CLI pointed at a database the indexer never ran on says so, instead of failing."""

    def test_the_api_answers_503_nothing_indexed_yet(self, settings: Settings) -> None:
        with TestClient(create_app(settings)) as client:
            for url in ("/api/search?q=a+red+circle", "/api/folders", "/api/images/1", "/api/images/1/similar"):
                response = client.get(url)
                assert response.status_code == 503, (url, response.text)
                assert response.json()["detail"].startswith("Nothing is indexed yet")
            assert client.get("/api/status").json()["images"] == 0

    def test_the_cli_search_says_to_index_first(self, settings: Settings) -> None:
        result = run_main(settings, "search", "a red circle")
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert result.stderr.strip() == (
            "error: nothing is indexed in this database yet; run `python main.py index` (or serve) first"
        )


class TestServer:
    def test_serve_runs_the_live_indexer_and_the_api_in_one_process(
        self, settings: Settings, start_process: Callable[..., Process]
    ) -> None:
        port = free_port()
        server = start_process(settings, "serve", PORT=str(port))
        base = f"http://127.0.0.1:{port}"

        def status() -> dict[str, Any] | None:
            try:
                response = httpx.get(f"{base}/api/status", timeout=2)
            except httpx.TransportError:
                return None
            body = response.json()
            return body if body["live"] and not body["scanning"] else None

        body = wait_for(status, timeout=90)
        assert body["images"] == 18 and body["failed"] == [] and body["device"] == "cpu"
        assert body["model"] == settings.clip_model and body["precision"] in ("float32", "bfloat16")

        (settings.image_dir / "broken.png").write_bytes(b"not a png")
        draw(Drawing("orange", "triangle"), width=100, height=130).save(settings.image_dir / "arrived.png")

        def arrived() -> bool:
            found = paths(httpx.get(f"{base}/api/search", params={"q": "a orange triangle", "limit": 2}))
            return "arrived.png" in found

        wait_for(arrived, timeout=30)
        live = httpx.get(f"{base}/api/status").json()
        assert {"path": "broken.png", "reason": live["failed"][0]["reason"]} in live["failed"]
        assert live["last_change_at"] is not None

        through_server = run_main(settings, "search", "a orange triangle", "--json", "--limit", "1", PORT=str(port))
        assert json.loads(through_server.stdout)["results"][0]["path"] in ("arrived.png", "orange-triangle.png")

        cli = run_main(settings, "status", "--json")
        from_cli = json.loads(cli.stdout)
        assert set(from_cli) == set(live) - {"model_error", "text_tower"}  # what this server says of itself
        assert from_cli["live"] is True and from_cli["images"] == 19
        assert "Traceback" not in server.output()
