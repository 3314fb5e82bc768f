"""What the server's pgvector can do, from its version: servers of any pgvector from 0.5 work, and
each feature is used where it exists.

- 0.5: HNSW indexes.
- 0.7: `halfvec` (half the memory per vector, in the table or in an index on a cast) and binary
  quantisation.
- 0.8: iterative index scans, so a filtered HNSW search still returns a full page.

Beside pgvector, `pg_trgm` (a contrib module: trigram matching, so parts of words and numbers
match in the text search) is used where the server has it; without it, text matches fall back to
plain substring tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

MINIMUM = (0, 5, 0)


@dataclass(frozen=True)
class VectorFeatures:
    version: tuple[int, int, int]
    trigram: bool = False  # pg_trgm is installed in this database

    @property
    def halfvec(self) -> bool:
        return self.version >= (0, 7, 0)

    @property
    def iterative_scan(self) -> bool:
        return self.version >= (0, 8, 0)

    @property
    def label(self) -> str:
        return ".".join(str(part) for part in self.version)


def parse_version(text: str) -> tuple[int, int, int]:
    parts = [int("".join(c for c in p if c.isdigit()) or 0) for p in text.split(".")[:3]] + [0, 0, 0]
    return parts[0], parts[1], parts[2]


def vector_features(conn: psycopg.Connection[Any]) -> VectorFeatures | None:
    """The installed pgvector's features, or None when the extension is not installed."""
    found = dict(conn.execute("SELECT extname, extversion FROM pg_extension WHERE extname IN ('vector', 'pg_trgm')"))
    if "vector" not in found:
        return None
    return VectorFeatures(parse_version(str(found["vector"])), trigram="pg_trgm" in found)
