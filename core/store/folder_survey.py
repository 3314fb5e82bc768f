"""The `library_folders` table: per folder of IMAGE_DIR, how it is kept in sync and what in it is
not indexed, written by the indexer at each full scan and shown on the status page.

Nothing is dropped silently: every file is a picture or video (a row, or an error row with its
reason), a known companion (sidecars, `Thumbs.db`, ...), or counted here by extension.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

SCHEMA = """
CREATE TABLE IF NOT EXISTS library_folders (
    label text PRIMARY KEY,
    path text NOT NULL,
    watch text NOT NULL,
    files integer NOT NULL,
    sidecars integer NOT NULL DEFAULT 0,
    skipped jsonb NOT NULL DEFAULT '{}',
    surveyed_at timestamptz NOT NULL DEFAULT now()
);
"""


@dataclass(frozen=True)
class FolderSurvey:
    label: str  # "" for the only folder
    path: str
    watch: str  # "live" (file events) or "polled" (rescanned every SCAN_INTERVAL)
    files: int  # pictures and videos, companions included
    sidecars: int = 0  # known non-pictures: .xmp, .aae, Thumbs.db, ...
    skipped: dict[str, int] = field(default_factory=dict)  # other files by extension

    def as_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "path": self.path,
            "watch": self.watch,
            "files": self.files,
            "sidecars": self.sidecars,
            "skipped": dict(sorted(self.skipped.items(), key=lambda kv: (-kv[1], kv[0]))),
        }


def write(conn: psycopg.Connection[Any], surveys: list[FolderSurvey]) -> None:
    with conn.transaction():
        conn.execute("DELETE FROM library_folders WHERE label <> ALL(%s)", ([s.label for s in surveys],))
        for s in surveys:
            conn.execute(
                "INSERT INTO library_folders (label, path, watch, files, sidecars, skipped, surveyed_at) "
                "VALUES (%s, %s, %s, %s, %s, %s, now()) ON CONFLICT (label) DO UPDATE SET path = EXCLUDED.path, "
                "watch = EXCLUDED.watch, files = EXCLUDED.files, sidecars = EXCLUDED.sidecars, "
                "skipped = EXCLUDED.skipped, surveyed_at = now()",
                (s.label, s.path, s.watch, s.files, s.sidecars, Jsonb(s.skipped)),
            )


def read(conn: psycopg.Connection[Any]) -> list[FolderSurvey]:
    if conn.execute("SELECT to_regclass('library_folders')").fetchone() == (None,):
        return []
    rows = conn.execute("SELECT label, path, watch, files, sidecars, skipped FROM library_folders ORDER BY label")
    return [FolderSurvey(*row) for row in rows]
