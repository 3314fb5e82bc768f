"""Duplicate grouping at scale: synthetic embeddings with planted near and exact copies, grouped by
`api.duplicates.find_duplicate_groups` (every embedding read once, compared in matrix products
within cells, then union-find), timed, with the recall of the planted pairs."""

from __future__ import annotations

import time

import numpy as np
import psycopg
from pgvector.psycopg import register_vector

from api.duplicates import DEFAULT_THRESHOLD, find_duplicate_groups
from bench.common import Report, verdict
from bench.serving import _create_scale_database, synthetic_embeddings

MODEL = "bench-duplicates"


def plant_duplicates(
    vectors: np.ndarray, share: float = 0.01, seed: int = 5
) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Overwrite `share` of the rows with slightly perturbed copies of others (cosine ≈ 0.98, as a
    re-encoded or resized photo scores); returns the vectors and the planted (original, copy) pairs."""
    rng = np.random.default_rng(seed)
    count, dim = vectors.shape
    n = max(2, int(count * share))
    chosen = rng.choice(count, 2 * n, replace=False)
    pairs = [(int(a), int(b)) for a, b in zip(chosen[:n], chosen[n:])]
    out = vectors.copy()
    for a, b in pairs:
        noisy = vectors[a] + 0.2 * rng.standard_normal(dim, dtype=np.float32) / np.sqrt(dim)
        out[b] = noisy / np.linalg.norm(noisy)
    return out, pairs


def bench_duplicates(admin_url: str, report: Report, sizes: list[int], dim: int) -> None:
    for size in sizes:
        vectors, near = plant_duplicates(synthetic_embeddings(size, dim, seed=11, shape="flat"))
        # a tenth as many exact copies: same bytes, so the same hash and the same embedding
        exact = [(a, b) for a, b in near[: max(1, len(near) // 10)]]
        for a, b in exact:
            vectors[b] = vectors[a]
        name = f"bench_dup_{size}"
        url = _create_scale_database(admin_url, name, vectors, MODEL)
        with psycopg.connect(url, autocommit=True) as conn:
            register_vector(conn)
            conn.execute("CREATE TABLE IF NOT EXISTS indexer_status (last_change_at timestamptz)")
            for a, b in exact:
                conn.execute("UPDATE images SET content_hash = %s WHERE id = %s", (f"{a:064x}", b))
            timings = []
            for _ in range(2):  # best of two: the first also pays for reading the index into memory
                started = time.perf_counter()
                groups = find_duplicate_groups(conn, MODEL, DEFAULT_THRESHOLD)
                timings.append(time.perf_counter() - started)
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        group_of = {i: n for n, g in enumerate(groups) for i in g.ids}
        found = sum(1 for a, b in near if a in group_of and group_of.get(a) == group_of.get(b))
        recall = found / len(near)
        exact_groups = sum(1 for g in groups if g.kind == "exact")
        seconds = min(timings)
        report.add(
            "8 duplicates",
            f"group {size:,} images at threshold {DEFAULT_THRESHOLD} (products within cells + union-find): "
            f"time, groups ({exact_groups} exact), recall of {len(near)} planted pairs",
            f"{seconds:.2f} s, {len(groups)} groups, recall {recall:.3f}",
            f"{size * (size - 1) // 2:,} pairs all against all",
            "",
            "recall ≥ 0.98",
            verdict(recall >= 0.98),
        )
        print(f"  duplicates at {size:,}: {seconds:.2f}s, {len(groups)} groups, recall {recall:.3f}", flush=True)
