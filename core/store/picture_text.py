"""The `picture_text` table (its DDL: `core.store.db.PICTURE_TEXT_SCHEMA`): what the OCR pass writes and
what the status reads. Rows are keyed by content hash, so a renamed or copied picture is never
read twice, and they outlive a model switch (the text does not depend on the model).

Which pictures are waiting is asked of the table of the model that answers searches: its
pictures (kind picture, which includes the still of a Live Photo and a RAW shown through its
preview; videos are not read) whose content hash has no row yet.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from core.models.ocr import Reading
from core.store.db import PICTURE_TEXT_TABLE, table_exists
from core.store.model_state import model_tables


@dataclass(frozen=True)
class TextProgress:
    read: int  # pictures whose text is stored (possibly none)
    waiting: int  # pictures not read yet
    skipped: int  # pictures OCR=auto chose not to read, or that could not be read

    def as_json(self, mode: str) -> dict[str, Any]:
        return {"mode": mode, "read": self.read, "waiting": self.waiting, "skipped": self.skipped}


def waiting(
    conn: psycopg.Connection[Any], table: str, limit: int, leave_out: Collection[str] = (), after: str = ""
) -> list[tuple[str, str]]:
    """Up to `limit` (content hash, path) of pictures in `table` with no text row, in content hash
    order from past `after` (the path is the first of a picture's copies), except `leave_out`.
    Asked from the start, the walk passes every content read already: about 0.4 s at 100,000."""
    if not table_exists(conn, table):
        return []
    query = sql.SQL(
        "SELECT DISTINCT ON (i.content_hash) i.content_hash, i.path FROM {table} i "
        "WHERE i.kind = 'picture' AND i.content_hash > %s AND i.content_hash <> ALL(%s) "
        # the bound again inside: the anti join then starts at it too, instead of at the first row read
        "AND NOT EXISTS (SELECT 1 FROM picture_text t WHERE t.content_hash = i.content_hash AND t.content_hash > %s) "
        "ORDER BY i.content_hash, i.path LIMIT %s"
    ).format(table=sql.Identifier(table))
    return [(str(h), str(p)) for h, p in conn.execute(query, (after, list(leave_out), after, limit))]


def write(conn: psycopg.Connection[Any], content_hash: str, reading: Reading, engine: str) -> None:
    lines = json.dumps([line.as_json() for line in reading.lines])
    conn.execute(
        "INSERT INTO picture_text (content_hash, text, lines, engine, skipped) VALUES (%s, %s, %s, %s, %s) "
        "ON CONFLICT (content_hash) DO NOTHING",
        (content_hash, reading.text, lines, engine, reading.skipped),
    )


def progress(conn: psycopg.Connection[Any], table: str) -> TextProgress:
    """How far the text of `table`'s pictures has come, counted by content (copies count once)."""
    if not table_exists(conn, table) or not table_exists(conn, PICTURE_TEXT_TABLE):
        return TextProgress(0, 0, 0)
    query = sql.SQL(
        "SELECT count(*) FILTER (WHERE t.content_hash IS NOT NULL AND t.skipped IS NULL), "
        "count(*) FILTER (WHERE t.content_hash IS NULL), count(*) FILTER (WHERE t.skipped IS NOT NULL) "
        "FROM (SELECT DISTINCT content_hash FROM {table} WHERE kind = 'picture') p "
        "LEFT JOIN picture_text t USING (content_hash)"
    ).format(table=sql.Identifier(table))
    row = conn.execute(query).fetchone()
    return TextProgress(*(int(n) for n in row)) if row else TextProgress(0, 0, 0)


def prune(conn: psycopg.Connection[Any]) -> int:
    """Forget the text of pictures no model's table holds any more; returns how many."""
    tables = model_tables(conn)
    if not tables:
        return 0
    held = sql.SQL(" AND ").join(
        sql.SQL("NOT EXISTS (SELECT 1 FROM {} i WHERE i.content_hash = t.content_hash)").format(sql.Identifier(name))
        for name in tables
    )
    return conn.execute(sql.SQL("DELETE FROM picture_text t WHERE {}").format(held)).rowcount
