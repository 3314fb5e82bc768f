"""The `indexer_status` table: one row the indexer keeps fresh, so any process (the server,
`python main.py status`, a second machine) can tell what it is doing.

This module owns the table: its definition, the one statement that writes it and the one that
reads it. The indexer writes a heartbeat every second; a row whose heartbeat is older than
`HEARTBEAT_STALE_SECONDS` belongs to an indexer that is no longer running.
"""

from __future__ import annotations

import os
import socket
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import psycopg

HEARTBEAT_STALE_SECONDS = 10

SCHEMA = """
CREATE TABLE IF NOT EXISTS indexer_status (
    id int PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    pid int,
    host text,
    model text,
    device text,
    precision text,
    live boolean NOT NULL DEFAULT false,
    scanning boolean NOT NULL DEFAULT false,
    started_at timestamptz,
    heartbeat_at timestamptz,
    last_change_at timestamptz,
    files_total int,
    files_done int,
    files_pending int,
    throughput double precision
);
ALTER TABLE indexer_status ADD COLUMN IF NOT EXISTS cpu text;
"""


@dataclass(frozen=True)
class Heartbeat:
    """What the indexer says of itself in one heartbeat."""

    model: str
    device: str | None  # None until the model has loaded: the last known value is kept
    precision: str | None
    cpu: str | None  # the instruction sets that chose the precision (`core.models.checkpoints.cpu_kernels`)
    live: bool
    scanning: bool
    last_change: float | None  # epoch seconds of the last change to the index; None: unchanged
    files_total: int
    files_done: int
    files_pending: int
    throughput: float  # files per second, lately


def write(conn: psycopg.Connection[Any], beat: Heartbeat) -> None:
    conn.execute(
        """
        INSERT INTO indexer_status (id, pid, host, model, device, precision, cpu, live, scanning,
            started_at, heartbeat_at, last_change_at, files_total, files_done, files_pending, throughput)
        VALUES (1, %(pid)s, %(host)s, %(model)s, %(device)s, %(precision)s, %(cpu)s, %(live)s, %(scanning)s,
            now(), now(), to_timestamp(%(last_change)s), %(files_total)s, %(files_done)s, %(files_pending)s,
            %(throughput)s)
        ON CONFLICT (id) DO UPDATE SET pid = EXCLUDED.pid, host = EXCLUDED.host,
            model = EXCLUDED.model,
            device = COALESCE(EXCLUDED.device, indexer_status.device),
            precision = COALESCE(EXCLUDED.precision, indexer_status.precision),
            cpu = COALESCE(EXCLUDED.cpu, indexer_status.cpu),
            live = EXCLUDED.live, scanning = EXCLUDED.scanning,
            started_at = CASE WHEN indexer_status.pid = EXCLUDED.pid
                THEN indexer_status.started_at ELSE now() END,
            heartbeat_at = now(),
            last_change_at = COALESCE(EXCLUDED.last_change_at, indexer_status.last_change_at),
            files_total = EXCLUDED.files_total, files_done = EXCLUDED.files_done,
            files_pending = EXCLUDED.files_pending, throughput = EXCLUDED.throughput
        """,
        {"pid": os.getpid(), "host": socket.gethostname(), **asdict(beat)},
    )


@dataclass(frozen=True)
class IndexerRow:
    """The row as any reader sees it."""

    model: str | None
    device: str | None
    precision: str | None
    cpu: str | None
    live: bool
    scanning: bool
    started_at: datetime | None
    heartbeat_at: datetime | None
    last_change_at: datetime | None
    files_total: int
    files_done: int
    files_pending: int
    throughput: float
    heartbeat_age: float | None  # seconds since the last heartbeat

    @property
    def alive(self) -> bool:
        """Whether an indexer is running now (its heartbeat is recent)."""
        return self.heartbeat_age is not None and self.heartbeat_age < HEARTBEAT_STALE_SECONDS


def read(conn: psycopg.Connection[Any]) -> IndexerRow | None:
    """The row, or None when no indexer has ever written one."""
    if not _exists(conn):
        return None
    row = conn.execute(
        "SELECT model, device, precision, cpu, live, scanning, started_at, heartbeat_at, last_change_at, "
        "COALESCE(files_total, 0), COALESCE(files_done, 0), COALESCE(files_pending, 0), "
        "COALESCE(throughput, 0), extract(epoch FROM now() - heartbeat_at) "
        "FROM indexer_status WHERE id = 1"
    ).fetchone()
    if row is None:
        return None
    model, device, precision, cpu, live, scanning, started, beat, changed, total, done, pending, rate, age = row
    return IndexerRow(
        model, device, precision, cpu, bool(live), bool(scanning), started, beat, changed,
        int(total), int(done), int(pending), float(rate), heartbeat_age=None if age is None else float(age),
    )  # fmt: skip


def last_change(conn: psycopg.Connection[Any]) -> datetime | None:
    """When the indexer last reported a change to the index: what caches of the index key on.
    (The table exists wherever the schema was ensured, which every server and command does first.)"""
    row = conn.execute("SELECT max(last_change_at) FROM indexer_status").fetchone()
    return row[0] if row else None


def _exists(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute("SELECT to_regclass('indexer_status') IS NOT NULL").fetchone()
    return bool(row and row[0])


@dataclass
class LocalIndexer:
    """The indexer as the process that runs it knows it, for a server in that same process
    (`python main.py serve`). Unlike the row it is there before the first heartbeat and while the
    database is away, and it never outlives the indexer; so in that process status reads this.

    The indexer writes it, the server reads it; each field changes in one assignment."""

    running: bool = False  # the indexer task is under way (waiting for the database included)
    scanning: bool = False  # from start until a first scan has completed
    files_total: int = 0
    files_done: int = 0
    files_pending: int = 0  # files the engine has in hand now
    embedded: int = 0  # images that went through the model since this process started
    reused: int = 0  # images whose embedding came from the cache since then
    waiting: str | None = None  # why the indexer is waiting (the database away, a disk full)
