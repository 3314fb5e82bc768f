"""Switching models without downtime: a newly chosen model is built in a table of its own while
searches keep using the old one, takes over when it covers the collection (or when asked), and
the old model's table and cached embeddings are dropped afterwards. A search never mixes models.

The new model is a tiny SigLIP with 48-dimensional embeddings, so the switch also changes the
vector size (the tiny CLIP's are 32).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from conftest import free_port, query, run_main, shared_server, wait_for
from shapes import ALL_DRAWINGS, write_corpus
from test_model_families import build_tiny_siglip

from core.settings import Settings
from core.store.model_state import model_table

N = len(ALL_DRAWINGS)
QUERY = "a red circle"


@pytest.fixture(scope="module")
def siglip(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(build_tiny_siglip(tmp_path_factory.mktemp("switch") / "tiny-siglip-48", "siglip", hidden=48))


def tables(settings: Settings) -> set[str]:
    rows = query(settings, "SELECT tablename FROM pg_tables WHERE tablename ~ '^images_[0-9a-f]{12}$'")
    return {r[0] for r in rows}


def cached_models(settings: Settings) -> set[str]:
    return {r[0] for r in query(settings, "SELECT DISTINCT model FROM embedding_cache")}


def answer(response: httpx.Response) -> tuple[tuple[str, float], ...]:
    assert response.status_code == 200, response.text
    return tuple((r["path"], r["score"]) for r in response.json()["results"])


class TestChangingClipModel:
    def test_index_builds_the_new_model_beside_the_old_one_then_drops_the_old(
        self, settings: Settings, index: Any, siglip: str
    ) -> None:
        first = index(settings)
        old = settings.clip_model
        assert tables(settings) == {model_table(old)}
        assert query(settings, "SELECT vector_dims(embedding) FROM images LIMIT 1")[0][0] == 32
        assert first.text_read == N  # OCR=auto
        text = query(settings, "SELECT content_hash, text, engine FROM picture_text ORDER BY 1")

        summary = index(settings.with_overrides(clip_model=siglip))
        assert summary.text_read == 0  # the text belongs to the contents, not to a model: never read again
        assert query(settings, "SELECT content_hash, text, engine FROM picture_text ORDER BY 1") == text

        assert summary.embedded == N  # every file went through the new model once
        assert (summary.added, summary.deleted, summary.unchanged) == (0, 0, N)
        assert tables(settings) == {model_table(siglip)}
        rows = query(settings, "SELECT model, vector_dims(embedding) FROM images")
        assert len(rows) == N and set(rows) == {(siglip, 48)}
        assert cached_models(settings) == {siglip}

    def test_the_cli_searches_with_the_model_in_use_until_the_new_one_is_built(
        self, settings: Settings, index: Any, siglip: str
    ) -> None:
        index(settings)
        # CLIP_MODEL now names the SigLIP, but nothing has built it: the CLIP answers, not an error
        changed = settings.with_overrides(clip_model=siglip)
        found = run_main(changed, "search", QUERY, "--json", "--limit", "3")
        assert found.returncode == 0, found.stderr
        assert len(json.loads(found.stdout)["results"]) == 3
        status = json.loads(run_main(changed, "status", "--json").stdout)
        assert status["model"] == settings.clip_model
        assert status["models"]["configured"] == siglip


class TestTheModelCommand:
    def test_model_shows_chooses_and_reports_the_build(
        self, settings: Settings, index: Any, siglip: str, tmp_path: Path
    ) -> None:
        index(settings)
        shown = run_main(settings, "model")
        assert shown.returncode == 0, shown.stderr
        assert f"in use     {settings.clip_model} ({N} images)" in shown.stdout

        chosen = run_main(settings, "model", siglip)
        assert chosen.returncode == 0, chosen.stderr
        assert f"building   {siglip}: 0/{N} files" in chosen.stdout
        # CLIP_MODEL still names the old model: the choice stands, and the next run builds it
        summary = index(settings)
        assert summary.embedded == N
        after = json.loads(run_main(settings, "model", "--json").stdout)
        assert after["active"] == {"name": siglip, "images": N} and after["building"] is None

        missing = run_main(settings, "model", str(tmp_path / "nowhere"))
        assert missing.returncode == 2
        lines = [line for line in missing.stderr.splitlines() if line.startswith("error: ")]
        assert len(lines) == 1 and "nowhere" in lines[0] and "Traceback" not in missing.stderr


class Server:
    """`main.py serve` (server and live indexer) on a free port."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.client = httpx.Client(base_url=base, timeout=30)

    def status(self) -> dict[str, Any]:
        return self.client.get("/api/status").json()

    def search(self) -> httpx.Response:
        return self.client.get("/api/search", params={"q": QUERY, "limit": 40})


@pytest.fixture
def server(settings: Settings, start_process: Any) -> Iterator[Server]:
    port = free_port()
    start_process(settings, "serve", PORT=str(port))
    live = Server(f"http://127.0.0.1:{port}")

    def ready() -> bool:
        try:
            s = live.status()
        except httpx.HTTPError:
            return False
        return bool(s["live"] and not s["scanning"] and s["images"] == N)

    wait_for(ready, timeout=120, interval=0.2)
    yield live
    live.client.close()


@pytest.fixture
def cache_frozen(settings: Settings) -> Iterator[threading.Event]:
    """Hold off every write to the embedding cache, which every newly embedded image passes
    through, so the new model's build cannot finish until the test sets the event."""
    locked, release = threading.Event(), threading.Event()

    def hold() -> None:
        with psycopg.connect(settings.database_url) as conn:  # one transaction until released
            conn.execute("LOCK TABLE embedding_cache IN EXCLUSIVE MODE")  # reads still pass
            locked.set()
            release.wait(120)

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    assert locked.wait(10)
    yield release
    release.set()
    holder.join(10)


class TestSwitchingALiveServer:
    def test_searches_keep_the_old_model_while_the_new_one_builds_then_switch_whole(
        self, settings: Settings, server: Server, siglip: str, cache_frozen: threading.Event
    ) -> None:
        old_answer = answer(server.search())
        assert len(old_answer) == N
        seen: list[tuple[int, tuple[tuple[str, float], ...]]] = []
        stop = threading.Event()

        def keep_searching() -> None:
            with httpx.Client(base_url=server.base, timeout=30) as client:
                while not stop.is_set():
                    r = client.get("/api/search", params={"q": QUERY, "limit": 40})
                    seen.append((r.status_code, answer(r) if r.status_code == 200 else ()))

        searching = threading.Thread(target=keep_searching)
        searching.start()
        try:
            chosen = server.client.post("/api/model", json={"model": siglip})
            assert chosen.status_code == 200, chosen.text
            assert chosen.json()["building"]["name"] == siglip

            # the build is held back: the new model has its own table, searches still use the old one
            building = wait_for(lambda: (s := server.status())["models"]["building"] and s, timeout=60)
            assert building["model"] == settings.clip_model
            assert building["models"]["building"]["done"] < N
            assert model_table(siglip) in wait_for(lambda: tables(settings) - {model_table(settings.clip_model)})
            assert answer(server.search()) == old_answer

            cache_frozen.set()  # let it finish: searches switch once the new model has every file
            wait_for(lambda: server.status()["model"] == siglip, timeout=60, interval=0.2)
            # a server asks which model is in use once a second (core.store.model_state.CHECK_SECONDS)
            new_answer = wait_for(lambda: (a := answer(server.search())) != old_answer and a, timeout=5)
            wait_for(lambda: len(seen) > 5)
        finally:
            stop.set()
            searching.join(30)

        assert len(new_answer) == N
        assert [code for code, _ in seen if code != 200] == []  # no downtime
        # every answer is wholly one model's: never a mix, never a partial page
        assert {a for _, a in seen} <= {old_answer, new_answer}
        first_new = next(i for i, (_, a) in enumerate(seen) if a == new_answer)
        assert all(a == new_answer for _, a in seen[first_new:])  # and never back

        # afterwards the old model's table and cached embeddings go
        wait_for(lambda: tables(settings) == {model_table(siglip)}, timeout=30)
        wait_for(lambda: cached_models(settings) == {siglip}, timeout=30)
        assert server.status()["models"]["building"] is None

    def test_a_switch_on_request_happens_before_the_build_is_complete(
        self, settings: Settings, server: Server, siglip: str, cache_frozen: threading.Event
    ) -> None:
        server.client.post("/api/model", json={"model": siglip})
        wait_for(lambda: server.status()["models"]["building"], timeout=60)
        switched = server.client.post("/api/model", json={"model": siglip, "switch_now": True})
        assert switched.status_code == 200, switched.text
        assert switched.json()["building"]["switch_requested"] is True

        status = wait_for(lambda: (s := server.status())["model"] == siglip and s, timeout=60)
        assert status["images"] < N  # searches use the new model with what it has so far
        old_answer_count = N
        wait_for(lambda: len(answer(server.search())) == status["images"] < old_answer_count, timeout=5)

        cache_frozen.set()
        wait_for(lambda: server.status()["images"] == N, timeout=60)
        assert len(answer(server.search())) == N

    def test_choosing_the_model_in_use_again_cancels_a_build(
        self, settings: Settings, server: Server, siglip: str, cache_frozen: threading.Event
    ) -> None:
        server.client.post("/api/model", json={"model": siglip})
        wait_for(lambda: model_table(siglip) in tables(settings), timeout=60)
        cancelled = server.client.post("/api/model", json={"model": settings.clip_model})
        assert cancelled.status_code == 200
        assert cancelled.json()["building"] is None
        cache_frozen.set()
        wait_for(lambda: tables(settings) == {model_table(settings.clip_model)}, timeout=60)
        assert server.status()["model"] == settings.clip_model
        assert len(answer(server.search())) == N


@pytest.fixture(scope="module")
def unswitched(pg_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for the tests whose choice is refused: they look, and nothing changes."""
    top = tmp_path_factory.mktemp("unswitched")
    write_corpus(top / "img")
    with shared_server(pg_server, top, N) as (base, _):
        live = Server(base)
        yield live
        live.client.close()


class TestChoosingABadModel:
    def test_a_model_that_does_not_exist_is_refused_with_one_line(self, unswitched: Server, tmp_path: Path) -> None:
        server = unswitched
        missing = server.client.post("/api/model", json={"model": str(tmp_path / "no-such-model")})
        assert missing.status_code == 422
        detail = missing.json()["detail"]
        assert "\n" not in detail and "no-such-model" in detail
        assert server.status()["models"]["building"] is None
        assert server.client.post("/api/model", json={"model": ""}).status_code == 422
        assert server.client.post("/api/model", json={"name": "x"}).status_code == 422

    def test_another_site_cannot_choose_the_model_with_a_plain_form_post(self, unswitched: Server, siglip: str) -> None:
        server = unswitched
        # a page elsewhere can send text/plain without a CORS preflight; only JSON is accepted
        sent = server.client.post(
            "/api/model", content=json.dumps({"model": siglip}), headers={"Content-Type": "text/plain"}
        )
        assert sent.status_code == 422
        assert server.status()["models"]["building"] is None
