"""A database that only reads: a streaming replica (hot standby) of the one the indexer writes to.

Search-only servers (`uvicorn --factory api.app:create_app`) may be given a replica's URL: every
search, image, thumbnail and status reads, and Postgres replays the primary's changes into the
replica a moment after they commit, in commit order. Writes cannot work there, so the server
leaves the schema as the primary made it and refuses the few writes it is asked for (choosing a
model) with one line that names the primary. The same holds for a connection whose user may only
read (`default_transaction_read_only`), which is read-only without being a replica.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

from core.errors import ReadOnly
from core.store.db import connect, ensure_schema

STARTED_READ_ONLY = (
    "The database is read-only (a streaming replica, or a user who may only read): this server leaves "
    "the schema as the primary made it, answers searches, and refuses changes such as a model switch."
)


@dataclass(frozen=True)
class Replication:
    """Where the database stands against its primary, as the database itself says."""

    read_only: bool  # it refuses writes
    replica: bool  # a standby replaying a primary's WAL (pg_is_in_recovery)
    streaming: bool  # its WAL receiver is connected to the primary now
    # seconds its data may trail the primary: 0 while it streams and has replayed all it received,
    # else the age of the last transaction it replayed (an upper bound; None: none replayed yet)
    lag: float | None
    primary: str | None  # the primary's host:port, where this user may see it (pg_read_all_stats)


def is_read_only(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute("SELECT pg_is_in_recovery() OR current_setting('transaction_read_only') = 'on'").fetchone()
    return bool(row and row[0])


def prepare(url: str) -> bool:
    """What a server does with its database at start: create what is missing (`ensure_schema`)
    where it may write; where it only reads, nothing (the primary made it). True: read-only."""
    with connect(url) as conn:
        if is_read_only(conn):
            return True
    ensure_schema(url)
    return False


def replication(conn: psycopg.Connection[Any]) -> Replication:
    row = conn.execute(
        """
        SELECT pg_is_in_recovery(), current_setting('transaction_read_only') = 'on',
            r.pid IS NOT NULL, pg_last_wal_receive_lsn() IS NOT DISTINCT FROM pg_last_wal_replay_lsn(),
            extract(epoch FROM now() - pg_last_xact_replay_timestamp()), r.sender_host, r.sender_port
        FROM (SELECT 1) one LEFT JOIN pg_stat_wal_receiver r ON true
        """
    ).fetchone()
    assert row is not None
    replica, read_only, streaming, caught_up, age, host, port = row
    if not replica:
        return Replication(bool(read_only), False, False, None, None)
    lag = 0.0 if streaming and caught_up else (None if age is None else max(0.0, float(age)))
    primary = f"{host}:{port}" if host else None
    return Replication(True, True, bool(streaming), lag, primary)


def refusal(conn: psycopg.Connection[Any] | None, action: str) -> ReadOnly:
    """The one line that refuses `action`, naming the primary as far as this database tells it."""
    state = None
    if conn is not None:
        try:
            state = replication(conn)
        except psycopg.Error:
            pass  # the plain line then
    if state is not None and not state.replica:
        return ReadOnly(
            f"This server's database user may only read: {action} must be asked of a server whose "
            "user may write (the indexer's DATABASE_URL)."
        )
    primary = "the indexer's DATABASE_URL"
    if state is not None and state.primary is not None and conn is not None:
        primary = f"postgresql://{state.primary}/{conn.info.dbname}, the indexer's DATABASE_URL"
    return ReadOnly(
        f"This server reads a read-only replica of the database: {action} must be asked of a server "
        f"on the primary ({primary})."
    )
