"""A data folder made by the previous release (Postgres 16 with pgvector 0.6, from pgserver) upgrades
to the embedded Postgres 18 on its first start: the same rows and embeddings bit for bit, CocoIndex's
state still matching (nothing rebuilt, nothing embedded), the old folder kept; an upgrade killed
midway leaves the old folder working and is done again on the next start. And servers with an older
pgvector: 0.6 works, under 0.5 is refused in one line."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest
from conftest import TINY_CLIP, run_main, wait_for
from test_external_postgres import ExternalPostgres, one_error_line, settings_for

from core.db import DatabaseError, ensure_schema, features
from core.embedded import major_version, package_bin
from core.settings import Settings, load_settings

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


@pytest.fixture
def old_data_dir(image_dir: Path, tmp_path: Path) -> tuple[Settings, dict[str, list[Any]]]:
    """A DATA_DIR indexed by this code on the old embedded server; and what its database held."""
    settings = embedded_settings(image_dir, tmp_path / "data")
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


def current_url(settings: Settings) -> str:
    socket_dir = (settings.pg_data_dir / "postmaster.pid").read_text().splitlines()[4]
    return f"postgresql://postgres:@/postgres?host={socket_dir}"


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
        from core.db import database_url

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
        self, old_data_dir: tuple[Settings, dict[str, list[Any]]]
    ) -> None:
        settings, before = old_data_dir
        work = settings.data_dir / "postgres-upgrade"
        env = {**os.environ, "IMAGE_DIR": str(settings.image_dir), "DATA_DIR": str(settings.data_dir)}
        env.update(CLIP_MODEL=str(TINY_CLIP), DATABASE_URL="")
        proc = subprocess.Popen(
            [sys.executable, "main.py", "status"], env=env, cwd=Path(__file__).parent.parent, stderr=subprocess.PIPE
        )
        try:
            # killed once both servers run and the copy is under way
            wait_for(lambda: (work / "new" / "postmaster.pid").exists() or proc.poll() is not None, timeout=120)
            assert proc.poll() is None, "the upgrade ended before it could be interrupted"
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.wait(30)
            assert proc.stderr is not None
            proc.stderr.close()
        assert major_version(settings.pg_data_dir) == 16
        assert not (settings.data_dir / "postgres-16-old").exists()

        # the next start cleans up after it (its two servers included) and upgrades
        status = run_main(settings, "status", "--json")
        assert status.returncode == 0, status.stderr
        assert "Upgraded the embedded database" in status.stderr
        assert major_version(settings.pg_data_dir) == 18 and not work.exists()
        from core.db import database_url

        assert snapshot(database_url(settings)) == before

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
