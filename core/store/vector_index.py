"""The HNSW index on a model's embeddings, and how a search orders by it.

With pgvector 0.7 or newer the index is built on the embedding cast to `halfvec` (16-bit floats):
half the memory per vector, which is what decides whether a large collection's graph stays in
RAM. The table keeps 32-bit vectors, so results are still ranked by the exact float32 distance
and the half-precision graph only picks the candidates. Older servers get the index on the
`vector` column itself. A query uses the index only when it orders by the very expression the
index was built on, hence one place that writes both.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import psycopg

from core.store.db import database_key
from core.store.vector_features import VectorFeatures, parse_version

M, EF_CONSTRUCTION = 16, 64
CHECK_SECONDS = 30.0  # how long a server trusts what it learnt about a table's index


def index_name(table: str) -> str:
    return f"{table}_embedding_half_idx"


def halfvec_index_sql(table: str, dim: int, m: int = M, ef_construction: int = EF_CONSTRUCTION) -> str:
    """The CREATE INDEX for a halfvec expression index on `table`'s embedding column."""
    return (
        f"CREATE INDEX IF NOT EXISTS {index_name(table)} ON {table} USING hnsw "
        f"((embedding::halfvec({dim})) halfvec_cosine_ops) WITH (m = {m}, ef_construction = {ef_construction})"
    )


def path_prefix_index_sql(table: str) -> str:
    """A b-tree that serves `starts_with(path, folder)`: folder filters that pass few rows read
    their rows through it instead of walking the graph (`api.search_plan`)."""
    return f"CREATE INDEX IF NOT EXISTS {table}_path_prefix_idx ON {table} (path text_pattern_ops)"


def vector_index_sql(table: str) -> str:
    """The plain `vector` HNSW index (pgvector before 0.7)."""
    return (
        f"CREATE INDEX IF NOT EXISTS {table}_embedding_idx ON {table} USING hnsw "
        f"(embedding vector_cosine_ops) WITH (m = {M}, ef_construction = {EF_CONSTRUCTION})"
    )


def distance_sql(column: str, dim: int | None, param: str = "%(q)s") -> str:
    """`column <=> param` in the form the index answers: cast to halfvec(dim) when `dim` is given."""
    if dim is None:
        return f"{column} <=> {param}"
    return f"{column}::halfvec({dim}) <=> {param}::halfvec({dim})"


@dataclass(frozen=True)
class IndexShape:
    """What a search may ask of a table's index."""

    half_dim: int | None  # the index is on embedding::halfvec(half_dim); None: on the vector itself
    iterative_scan: bool  # the server can continue an index scan past a filter (pgvector 0.8)
    trigram: bool = False  # pg_trgm is in the database: text search uses its indexes (`core.store.text_index`)

    @property
    def halfvec(self) -> bool:
        return self.half_dim is not None

    def distance(self, column: str, param: str = "%(q)s") -> str:
        """`column <=> param` as this index answers it."""
        return distance_sql(column, self.half_dim, param)


_known: dict[tuple[str, str], tuple[float, IndexShape]] = {}


def index_shape(conn: psycopg.Connection[Any], table: str) -> IndexShape:
    """The table's index as it is now, not as the server's version would have it: a table made by
    an older release keeps its `vector` index until the indexer declares the new one. Cached
    briefly, since every search asks."""
    key = (database_key(conn), table)
    now = time.monotonic()
    hit = _known.get(key)
    if hit is not None and now - hit[0] < CHECK_SECONDS:
        return hit[1]
    row = conn.execute(
        "SELECT (SELECT extversion FROM pg_extension WHERE extname = 'vector'), "
        "EXISTS (SELECT 1 FROM pg_indexes WHERE schemaname = current_schema() AND tablename = %s "
        "AND indexdef LIKE '%%USING hnsw%%halfvec%%'), "
        "(SELECT atttypmod FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attname = 'embedding'), "
        "EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm')",
        (table, table),
    ).fetchone()
    features = VectorFeatures(parse_version(str(row[0]))) if row and row[0] else None
    halfvec = bool(row and row[1] and row[2] and row[2] > 0) and features is not None and features.halfvec
    shape = IndexShape(
        half_dim=int(row[2]) if row and halfvec else None,
        iterative_scan=features is not None and features.iterative_scan,
        trigram=bool(row and row[3]),
    )
    _known[key] = (now, shape)
    return shape


def forget_shapes() -> None:
    """Drop what was learnt (tests that rebuild a table under the same name)."""
    _known.clear()
