"""Outages: telling a database or disk failure from a bug, and waiting until the part is back.

Whatever the indexer is doing when the database goes away or a disk fills up (starting, the first
scan, a rescan, a model build or the switch, forgetting a stale cache), its engine stops, the
indexer says so in one line, waits here, says in one line when the part is back, and starts the
engine again. Restarting is cheap and always right: CocoIndex remembers each file it finished
(memo and target state are committed together, after the rows), and every embedding computed
reached the content-hash cache or is kept in memory until it does (`flows.cache`), so unchanged
files cost a stat and embedded ones a cache read, never a model call.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import psycopg

from core.errors import first_line
from core.settings import Settings
from core.store.db import connect, database_url, restart_embedded
from core.store.indexer_status import LocalIndexer
from flows.cache import DatabaseUnavailable

log = logging.getLogger("sightline.indexer")

RETRY_FIRST_SECONDS = 0.25
RETRY_MAX_SECONDS = 2.0  # a restarted database is noticed within this (a refused connection costs nothing)
# one look at the database (starting the embedded server again included) that takes longer is
# taken for "away": a server that stops answering without closing its connections hangs a query
PROBE_SECONDS = 60.0
# Below this much free space the indexer's state (LMDB) and thumbnails cannot be trusted to write
MIN_FREE_BYTES = 1024 * 1024
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
_CONNECTION_ERRORS = (
    DatabaseUnavailable,
    psycopg.OperationalError,
    psycopg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.CannotConnectNowError,
    # what asyncpg says of a connection whose server went away in the middle of an operation
    asyncpg.exceptions._base.InternalClientError,
    ConnectionError,
    TimeoutError,
)
# what CocoIndex's engine (Rust) says when its Postgres writes fail: its errors carry only a message
_CONNECTION_WORDS = ("connection", "closed", "terminat", "shut down", "refused", "pool timed out", "broken pipe")
# (LMDB, CocoIndex's state, reports a write into a full tmpfs as an I/O error)
_FULL_WORDS = ("no space left on device", "could not extend file", "disk quota exceeded", "input/output error")


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    pending = [exc]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)
        for nxt in (current.__cause__, current.__context__):
            if nxt is not None:
                pending.append(nxt)


def looks_like_outage(exc: BaseException) -> bool:
    """Whether an error says that the database or a disk failed (rather than a bug)."""
    for e in _chain(exc):
        if isinstance(e, psycopg.errors.UndefinedFile):
            return False  # no pgvector on the server: waiting will not bring it
        if isinstance(e, OSError) and e.errno in _DISK_FULL:
            return True
        if isinstance(e, FileNotFoundError) and e.filename is None:
            # connecting to the embedded server's Unix socket while it restarts: the socket file
            # is gone (file operations name their file; a socket's connect does not)
            return True
        if isinstance(e, (psycopg.errors.DiskFull, asyncpg.exceptions.DiskFullError, *_CONNECTION_ERRORS)):
            return True
        text = str(e).lower()
        if any(w in text for w in _FULL_WORDS) or ("postgres" in text and any(w in text for w in _CONNECTION_WORDS)):
            return True
    return False


def _full_in(exc: BaseException | None) -> bool:
    return exc is not None and any(
        (isinstance(e, OSError) and e.errno in _DISK_FULL)
        or isinstance(e, (psycopg.errors.DiskFull, asyncpg.exceptions.DiskFullError))
        or any(w in str(e).lower() for w in _FULL_WORDS)
        for e in _chain(exc)
    )


def _no_room(folder: Path) -> bool:
    try:
        return shutil.disk_usage(folder).free < MIN_FREE_BYTES
    except OSError:
        return False


def _data_dir_full(settings: Settings) -> str | None:
    folder = settings.data_dir
    if not folder.is_dir():
        return None
    probe = folder / ".sightline-space-probe"
    try:
        probe.write_bytes(b"\0" * 65536)
    except OSError as exc:
        if exc.errno in _DISK_FULL:
            return f"DATA_DIR {folder} is full ({exc.strerror})"
        return None
    finally:
        probe.unlink(missing_ok=True)
    return f"DATA_DIR {folder} is full (under {MIN_FREE_BYTES >> 10} KiB free)" if _no_room(folder) else None


def check_room(settings: Settings) -> None:
    """Raise ENOSPC when DATA_DIR has no room: CocoIndex's state write would fail next (the
    heartbeat asks, as a failing state write does not always end the engine)."""
    if settings.data_dir.is_dir() and _no_room(settings.data_dir):
        raise OSError(errno.ENOSPC, f"no space left in DATA_DIR {settings.data_dir}")


def problem(settings: Settings, error: BaseException | None = None) -> str | None:
    """What is wrong now, in a few words (a disk full, the database away), or None when the
    database answers and DATA_DIR has room. The embedded server is started again if it stopped."""
    full = _data_dir_full(settings)
    if full is not None:
        return full
    try:
        if settings.embedded_database:
            restart_embedded(settings)
        with connect(database_url(settings), timeout=3) as conn:
            _write_probe(conn)
    except Exception as exc:
        if not settings.embedded_database:
            return f"database unreachable ({first_line(exc)})"
        if _full_in(exc) or _no_room(settings.pg_data_dir):
            return f"the disk under the database ({settings.pg_data_dir}) is full"
        where = settings.pg_data_dir
        return f"database unreachable (the embedded Postgres in {where} is not running; starting it again)"
    if _full_in(error):
        # the server answers, but it could not write: its disk is full (an external server's
        # disk cannot be seen from here, so the only sign is the error)
        server = str(settings.pg_data_dir) if settings.embedded_database else "the database server"
        return f"the disk under the database ({server}) is full"
    return None


def _write_probe(conn: psycopg.Connection[Any]) -> None:
    """A write that needs new pages on the server's disk. A server whose disk is full still answers
    `SELECT 1` (and small writes that fit pages it has): only extending a file tells, and without
    this the indexer would call the database back, fail at its first write, and say so again,
    over and over. The temporary table is dropped with its transaction."""
    with conn.transaction():
        conn.execute("SET LOCAL statement_timeout = '30s'")  # a server that stops answering mid-way
        conn.execute("CREATE TEMP TABLE sightline_space_probe (b text) ON COMMIT DROP")
        conn.execute("INSERT INTO sightline_space_probe SELECT md5(g::text) FROM generate_series(1, 20000) g")


async def problem_now(settings: Settings, error: BaseException | None = None) -> str | None:
    """`problem`, off the event loop and bounded in time."""
    try:
        return await asyncio.wait_for(asyncio.to_thread(problem, settings, error), PROBE_SECONDS)
    except TimeoutError:
        return f"database unreachable (no answer within {PROBE_SECONDS:.0f}s)"


async def wait_until_back(settings: Settings, reason: str, local: LocalIndexer) -> float:
    """Log `reason` once, wait until nothing is wrong, log that once; returns the seconds waited."""
    started = time.monotonic()
    log.warning("%s; indexing resumes by itself when it is back", reason)
    local.waiting = reason
    delay = RETRY_FIRST_SECONDS
    while True:
        now = await problem_now(settings)
        if now is None:
            break
        local.waiting = now
        await asyncio.sleep(delay)
        delay = min(delay * 2, RETRY_MAX_SECONDS)
    waited = time.monotonic() - started
    what = "database" if reason.startswith("database") else "space"  # (a path may say "full" too)
    log.warning("%s back after %.1fs; indexing resumes", what, waited)
    local.waiting = None
    return waited
