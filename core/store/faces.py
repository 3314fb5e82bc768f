"""The faces pass's tables: what detection computed, by content hash, whatever the embedding model.

- `face_scans`: one row per picture or video content the faces pass looked at (with which face
  model, how many faces, or why it could not), so a renamed or copied file is never read again;
- `faces`: one row per face found (or drawn by another app in XMP), its box as fractions of the
  picture as displayed, its descriptor and how usable it is to start a person.

Who each face is (`people`, `face_people`) and what the user said (`face_corrections`) are in
`core.store.people`. A face model change leaves every content waiting again (`waiting` asks for
scans by the current model), and its new faces find their people through the corrections.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import psycopg
from psycopg import sql

from core.store.db import table_exists


@dataclass(frozen=True)
class FoundFace:
    """A face as the faces pass stores it: detected, or drawn by another app (`source` "xmp",
    with the name written there in `named`), or detected and named by a Takeout JSON ("takeout")."""

    box: tuple[float, float, float, float]  # x0, y0, x1, y1, fractions of the picture as displayed
    score: float
    pixels: int
    sharpness: float
    usable: bool
    descriptor: np.ndarray | None
    frame: float = -1.0  # a video's second; -1 for a still
    source: str = "detected"
    named: str | None = None


@dataclass(frozen=True)
class FaceProgress:
    read: int  # contents whose faces are stored (possibly none)
    waiting: int  # contents not looked at yet by the current face model
    failed: int  # contents that could not be read

    def as_json(self, mode: str) -> dict[str, Any]:
        return {"mode": mode, "read": self.read, "waiting": self.waiting, "failed": self.failed}


def waiting(
    conn: psycopg.Connection[Any],
    table: str,
    model: str,
    limit: int,
    leave_out: Collection[str] = (),
    after: str = "",
) -> list[tuple[str, str, str]]:
    """Up to `limit` (content hash, path, kind) of `table`'s pictures and videos not scanned by
    `model` yet, in content hash order from past `after`, except `leave_out`."""
    if not table_exists(conn, table):
        return []
    query = sql.SQL(
        "SELECT DISTINCT ON (i.content_hash) i.content_hash, i.path, i.kind FROM {table} i "
        "WHERE i.content_hash > %s AND i.content_hash <> ALL(%s) AND NOT EXISTS "
        "(SELECT 1 FROM face_scans s WHERE s.content_hash = i.content_hash AND s.content_hash > %s AND s.model = %s) "
        "ORDER BY i.content_hash, i.path LIMIT %s"
    ).format(table=sql.Identifier(table))
    return [(str(h), str(p), str(k)) for h, p, k in conn.execute(query, (after, list(leave_out), after, model, limit))]


def write(
    conn: psycopg.Connection[Any], content_hash: str, model: str, found: Sequence[FoundFace], failed: str | None = None
) -> list[int]:
    """Store one content's faces in place of what an earlier face model found; returns their ids."""
    with conn.transaction():
        conn.execute("DELETE FROM faces WHERE content_hash = %s", (content_hash,))
        ids: list[int] = []
        for face in found:
            row = conn.execute(
                "INSERT INTO faces (content_hash, frame, x0, y0, x1, y1, score, pixels, sharpness, usable, "
                "descriptor, model, source, named) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
                "RETURNING id",
                (
                    content_hash,
                    face.frame,
                    *face.box,
                    face.score,
                    face.pixels,
                    face.sharpness,
                    face.usable,
                    None if face.descriptor is None else np.asarray(face.descriptor, dtype=np.float32),
                    model,
                    face.source,
                    face.named,
                ),
            ).fetchone()
            assert row is not None
            ids.append(int(row[0]))
        conn.execute(
            "INSERT INTO face_scans (content_hash, model, faces, failed) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (content_hash) DO UPDATE SET model = excluded.model, faces = excluded.faces, "
            "failed = excluded.failed, scanned_at = now()",
            (content_hash, model, len(found), failed),
        )
    return ids


def progress(conn: psycopg.Connection[Any], table: str, model: str) -> FaceProgress:
    """How far the faces of `table`'s pictures and videos have come, counted by content."""
    if not table_exists(conn, table) or not table_exists(conn, "face_scans"):
        return FaceProgress(0, 0, 0)
    query = sql.SQL(
        "SELECT count(*) FILTER (WHERE s.content_hash IS NOT NULL AND s.failed IS NULL), "
        "count(*) FILTER (WHERE s.content_hash IS NULL), count(*) FILTER (WHERE s.failed IS NOT NULL) "
        "FROM (SELECT DISTINCT content_hash FROM {table}) p "
        "LEFT JOIN face_scans s ON s.content_hash = p.content_hash AND s.model = %s"
    ).format(table=sql.Identifier(table))
    row = conn.execute(query, (model,)).fetchone()
    return FaceProgress(*(int(n) for n in row)) if row else FaceProgress(0, 0, 0)
