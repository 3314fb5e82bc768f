"""`python -m bench.scale`: the search SQL at scale, without HTTP or a text encoder: similar-image and
folder-filtered searches (a folder holding 10 %) through `api.search.search_by_vector`, p50 / p95
and recall@10 against an exact float32 numpy scan, with the HNSW build time and index size; and the
hybrid search (vector and text, fused) against the vector-only one (`bench.text`).

    python -m bench.scale --sizes 200000                  # on a temporary embedded server
    python -m bench.scale --sizes 1000000 --url postgresql://...

`python -m bench --scale 10000,100000,1000000` measures the same beside the HTTP figures.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import httpx
import numpy as np
import psycopg
from pgvector.psycopg import register_vector

from api.search import make_filters, search_by_vector
from bench.common import Report, Server, free_port, median, percentile, verdict, wait_until
from bench.latency import queries
from bench.serving import (
    FOLDERS,
    ScaleDatabase,
    build_scale_database,
    client_ok,
    ef_sweep,
    exact_top,
    synthetic_embeddings,
)
from bench.stages import CpuMeter, query_stages
from bench.text import measure_hybrid, text_side_queries
from core.models.embedder import open_embedder
from core.settings import Settings
from core.store.db import database_url
from core.store.vector_index import EF_CONSTRUCTION, M

MODEL = "bench/scale-model"
FOLDER = "synthetic/f3"  # one of FOLDERS, a tenth of the rows


def _timed_searches(
    url: str, vectors: np.ndarray, probes: list[int], ef_search: int, folder: str | None, model: str
) -> tuple[list[float], list[set[int]]]:
    filters = make_filters(folder=folder)
    timings, answers = [], []
    with psycopg.connect(url, autocommit=True) as conn:
        register_vector(conn)
        search_by_vector(conn, vectors[0], model=model, limit=10, filters=filters)  # warm the caches
        for i in probes:
            started = time.perf_counter()
            hits, _ = search_by_vector(
                conn, vectors[i], model=model, limit=10, filters=filters, exclude_ids=[i], ef_search=ef_search
            )
            timings.append(time.perf_counter() - started)
            answers.append({h.id for h in hits})
    return timings, answers


def _timed_search(client: httpx.Client, params: dict[str, str]) -> float:
    started = time.perf_counter()
    client.get("/api/search", params=params).raise_for_status()
    return time.perf_counter() - started


def measure_searches(
    url: str, vectors: np.ndarray, probes: list[int], report: Report, ef_search: int = 100, model: str = MODEL
) -> dict[str, float]:
    """Similar and filtered searches through the server's SQL; their rows in `report`."""
    size = len(vectors)
    in_folder = np.arange(int(FOLDER[-1]), size, FOLDERS)  # copy_synthetic_rows: row i in f{i % FOLDERS}
    figures: dict[str, float] = {}
    for label, folder in (("similar image", None), ("filtered to a folder of 10%", FOLDER)):
        timings, answers = _timed_searches(url, vectors, probes, ef_search, folder, model)
        hits = 0
        for i, got in zip(probes, answers):
            allowed = in_folder[in_folder != i] if folder else np.delete(np.arange(size), i)
            hits += len(exact_top(vectors, vectors[i], 10, allowed) & got)
        recall = hits / (10 * len(probes))
        p50, p95 = median(timings) * 1000, percentile(timings, 95) * 1000
        # issue 29: similar images in 10 ms at recall 0.98 at a million; filtered in 30 ms
        goal, least = (10, 0.98) if folder is None else (30, 0.95)
        million = size >= 1_000_000
        report.add(
            "4 query",
            f"search SQL, {label}, at {size:,}: p50 / p95, recall@10 vs exact float32",
            f"{p50:.1f} / {p95:.1f} ms, recall {recall:.3f}",
            "",
            "",
            f"p50 ≤ {goal} ms at 1M, recall ≥ {least}" if million else f"recall ≥ {least}",
            verdict((p50 <= goal or not million) and recall >= least),
        )
        key = "filtered" if folder else "similar"
        figures.update({f"{key}_p50_ms": p50, f"{key}_p95_ms": p95, f"{key}_recall": recall})
    return figures


def report_build(db: ScaleDatabase, size: int, report: Report) -> None:
    kind = "halfvec" if db.halfvec else "vector"
    report.add(
        "4 query",
        f"HNSW index ({kind}, m={db.graph[0]}, ef_construction={db.graph[1]}) over {size:,}: build time, size",
        f"{db.build_seconds:.1f} s with {db.workers} parallel workers, {db.index_bytes / 1e6:,.0f} MB "
        f"({db.index_bytes / size:,.0f} B/row)",
        f"table {db.table_bytes / 1e6:,.0f} MB",
    )


@contextmanager
def _server(url: str | None) -> Iterator[str]:
    if url:
        yield url
        return
    from bench.storage import embedded_server

    with embedded_server() as found:
        yield found


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="200000", help="comma-separated row counts")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--ef", type=int, default=100, help="SEARCH_EF")
    parser.add_argument("--shape", default="nested", choices=["nested", "flat"], help="how the vectors cluster")
    parser.add_argument("--url", help="a Postgres server with pgvector (default: a temporary embedded one)")
    parser.add_argument("--m", type=int, default=M, help="the HNSW graph's m")
    parser.add_argument("--ef-construction", type=int, default=EF_CONSTRUCTION, help="the HNSW graph's ef_construction")
    args = parser.parse_args()
    report = Report()
    with _server(args.url) as admin:
        for size in (int(s) for s in args.sizes.split(",")):
            started = time.perf_counter()
            vectors = synthetic_embeddings(size, args.dim, shape=args.shape)
            print(f"{size:,} vectors made in {time.perf_counter() - started:.0f}s", flush=True)
            db = build_scale_database(admin, f"bench_scale_{size}", vectors, MODEL, (args.m, args.ef_construction))
            report_build(db, size, report)
            probes = np.random.default_rng(3).choice(size, min(args.queries, size), replace=False).tolist()
            measure_searches(db.url, vectors, probes, report, args.ef)
            measure_hybrid(db.url, vectors, probes, report, args.ef, MODEL)
            ef_sweep(db.url, vectors, probes[:100], report, size, MODEL, (40, 100, 150, 200, 300, 400))
            for row in report.rows:
                print(f"| {row.metric} | {row.ours} | {row.usual} | {row.target} | {row.met} |", flush=True)
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "bench_scale_{size}" WITH (FORCE)')


if __name__ == "__main__":
    main()


def _report_text_searches(
    report: Report,
    size: int,
    count: int,
    timings: dict[str, list[float]],
    meters: dict[str, CpuMeter],
    usual_ms: str,
    usual: float,
) -> None:
    """The rows of the three kinds of text search, against issue 29's goal at 100,000 and more."""
    big = size >= 100_000
    labels = {
        "plain": f"/api/search (text) at {size:,} images, p50 / p95, {count} distinct queries",
        "words": f"/api/search, words that names, keywords or picture text hold (the text side finds them) "
        f"at {size:,}, p50 / p95",
        "folder": f"/api/search (text) filtered to a folder of 10% at {size:,}, p50 / p95",
    }
    for kind, label in labels.items():
        p50, p95 = median(timings[kind]), percentile(timings[kind], 95)
        report.add(
            "4 query",
            label,
            f"{p50 * 1000:.1f} / {p95 * 1000:.1f} ms (CPU a search: {meters[kind].per_request()})",
            usual_ms if kind == "plain" else "",
            f"{usual / p50:.2f}×" if kind == "plain" else "",
            "p50 ≤ 10, p95 ≤ 20 ms at 100k (issue 29)" if big else "",
            verdict(p50 <= 0.010 and p95 <= 0.020) if big else "",
        )


def _http_figures(
    env: dict[str, str], url: str, kinds: dict[str, list[tuple[str, dict[str, str]]]], probes: list[int], log: Path
) -> tuple[dict[str, list[float]], dict[str, CpuMeter], list[float], list[float], list[float], list[set[int]]]:
    """A server on the database at `url`, asked the text searches of each kind in turns (so that
    the machine's load weighs on each alike; each text once, a repeated one finds its vector
    cached), one of them again, and the images most like each probe: the timings, the CPU meters,
    the load average before and after, and the similar images' answers."""
    port = free_port()
    cmd = [sys.executable, "-m", "uvicorn", "--factory", "api.app:create_app", "--host", "127.0.0.1"]
    with (
        Server([*cmd, "--port", str(port), "--log-level", "warning"], env, log) as server,
        httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client,
    ):
        wait_until(lambda: client_ok(client), 120, "the API")
        client.get("/api/search", params={"q": "warm up", "limit": 10})
        loads = [os.getloadavg()[0]]
        timings: dict[str, list[float]] = {kind: [] for kind in kinds}
        meters = {kind: CpuMeter(server.proc.pid, url) for kind in kinds}
        for n in range(len(next(iter(kinds.values())))):
            for kind, asked in kinds.items():
                q, extra = asked[n]
                if n % 50 == 0:
                    meters[kind].find_backends()
                search = {"q": q, "limit": "10", **extra}
                timings[kind].append(meters[kind].measure(partial(_timed_search, client, search)))
        first = kinds["plain"][0][0]
        repeated = [_timed_search(client, {"q": first, "limit": "10"}) for _ in range(20)]
        loads.append(os.getloadavg()[0])
        similar_timings, answers = [], []
        for i in probes:
            started = time.perf_counter()
            body = client.get(f"/api/images/{i}/similar", params={"limit": 10}).json()
            similar_timings.append(time.perf_counter() - started)
            answers.append({r["id"] for r in body["results"]})
    return timings, meters, repeated, loads, similar_timings, answers


def query_at_scale(
    settings: Settings, env: dict[str, str], report: Report, sizes: list[int], n_queries: int, work: Path
) -> None:
    # the text tower the servers below use: compiled once here where TEXT_TOWER=auto, as a server
    # does in the background after its first start (`core.models.text_onnx`)
    model = open_embedder(settings.clip_model, settings.device, settings.precision, settings.compiled_text_dir)
    started = time.perf_counter()
    compiled = model.compile_text()
    if compiled is not None:
        report.add(
            "4 query",
            "compiling the text tower for queries (once per model)",
            f"{time.perf_counter() - started:.1f} s, {compiled.kind or 'not usable: ' + compiled.why}",
        )
    texts = queries(n_queries)
    encode = []
    for t in texts[:50]:
        started = time.perf_counter()
        model.embed_texts([t + " again"])
        encode.append(time.perf_counter() - started)
    report.add(
        "4 query",
        "one query through the text tower alone, p50",
        f"{median(encode) * 1000:.1f} ms ({model.text_tower_kind})",
    )
    admin = database_url(settings)
    for size in sizes:
        vectors = synthetic_embeddings(size, model.dim)
        db = build_scale_database(admin, f"bench_scale_{size}", vectors, model.name)
        url = db.url
        probes = np.random.default_rng(3).choice(size, min(n_queries, size), replace=False).tolist()
        kinds: dict[str, list[tuple[str, dict[str, str]]]] = {
            "plain": [(text, {}) for text in texts],
            "words": [(words, {}) for words in text_side_queries(len(texts), size)],
            "folder": [(f"{text} at dusk", {"folder": FOLDER}) for text in texts],
        }
        server_env = {**env, "DATABASE_URL": url}
        timings, meters, repeated, loads, similar_timings, answers = _http_figures(
            server_env, url, kinds, probes, work / f"api-{size}.log"
        )
        # the exact answers only now: numpy's threads keep spinning for a while after a product and
        # would take the cores from the server while it answers the next request
        hits = sum(len(exact_top(vectors, vectors[i], 10, exclude=i) & got) for i, got in zip(probes, answers))
        scans = []
        for i in probes[:50]:
            started = time.perf_counter()
            exact_top(vectors, vectors[i], 10, exclude=i)
            scans.append(time.perf_counter() - started)
        scan, enc = median(scans), median(encode)
        t50 = median(timings["plain"])
        s50, s95 = median(similar_timings), percentile(similar_timings, 95)
        big = size >= 100_000
        usual = f"{(enc + scan) * 1000:.1f} ms (text encode {enc * 1000:.1f} + numpy scan {scan * 1000:.1f})"
        _report_text_searches(report, size, len(texts), timings, meters, usual, enc + scan)
        report.add(
            "4 query",
            f"/api/search, one query asked again (its vector cached) at {size:,}, p50",
            f"{median(repeated) * 1000:.1f} ms",
        )
        report.add(
            "4 query",
            f"/api/images/{{id}}/similar at {size:,} (vector search, no text encoder), p50 / p95",
            f"{s50 * 1000:.1f} / {s95 * 1000:.1f} ms",
            f"{scan * 1000:.1f} ms (numpy exact scan)",
            f"{scan / s50:.2f}×",
            "p50 ≤ 15 ms at 100k" if big else "",
            verdict(s50 <= 0.015) if big else "",
        )
        recall = hits / (10 * len(probes))
        report.add(
            "4 query",
            f"recall@10 of the API (HNSW, ef_search={settings.search_ef}) vs exact at {size:,}",
            f"{recall:.3f}",
            "1.000 (exact)",
            "",
            "≥ 0.98",
            verdict(recall >= 0.98),
        )
        report.add(
            "4 query",
            f"load average while the HTTP figures at {size:,} were taken",
            f"{min(loads):.1f} to {max(loads):.1f} on {os.cpu_count()} cores",
        )
        query_stages(url, settings, model, texts[:100], t50 * 1000, size, report)
        report_build(db, size, report)
        measure_searches(url, vectors, probes, report, settings.search_ef, model.name)
        measure_hybrid(url, vectors, probes, report, settings.search_ef, model.name)
        ef_sweep(url, vectors, probes[:100], report, size, model.name)
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "bench_scale_{size}" WITH (FORCE)')
