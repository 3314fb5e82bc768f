"""Serving: live latency of a dropped file, query latency and recall at scale against the usual exact
numpy scan, and a cold command-line search."""

from __future__ import annotations

import io
import subprocess
import sys
import time
import uuid
from datetime import UTC
from pathlib import Path

import httpx
import numpy as np
import psycopg
from pgvector.psycopg import register_vector
from PIL import Image

from bench.common import Report, Server, free_port, main_py, median, percentile, verdict, wait_until
from bench.latency import queries
from core.db import database_url
from core.settings import PROJECT_ROOT, Settings
from flows.model import get_model


def _ready(base: str, images: int | None = None) -> bool:
    try:
        body = httpx.get(f"{base}/api/status", timeout=2).json()
    except (httpx.HTTPError, ValueError):
        return False
    return bool(body.get("live") and not body.get("scanning") and (images is None or body.get("images") == images))


def live_latency(settings: Settings, env: dict[str, str], report: Report, drops: int, work: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    folder = settings.image_dir / "drops"
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(42)
    with (
        Server(main_py("serve"), {**env, "PORT": str(port)}, work / "serve.log"),
        httpx.Client(base_url=base, timeout=60) as client,
    ):
        wait_until(lambda: _ready(base), 300, "the server")
        latencies = []
        for _ in range(drops):
            pixels = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
            buffer = io.BytesIO()
            Image.fromarray(pixels).resize((640, 480)).save(buffer, "JPEG", quality=85)
            name = f"drop-{uuid.uuid4().hex[:8]}.jpg"
            temp = folder / f".{name}.part"  # hidden while being written, like careful copy tools
            temp.write_bytes(buffer.getvalue())
            started = time.perf_counter()
            temp.rename(folder / name)

            def arrived(name: str = name) -> bool:
                found = client.get("/api/search", params={"q": "a photo", "folder": "drops", "limit": 200}).json()
                return any(r["path"] == f"drops/{name}" for r in found["results"])

            wait_until(arrived, 60, f"{name} to be searchable")
            latencies.append(time.perf_counter() - started)
    p50, p95 = median(latencies), percentile(latencies, 95)
    report.add(
        "3 live",
        f"file dropped → found by /api/search ({drops} drops), p50 / p95",
        f"{p50 * 1000:.0f} / {p95 * 1000:.0f} ms",
        "≈ 60 s (poll once a minute)",
        f"{60 / p50:.0f}×",
        "p50 ≤ 0.5 s",
        verdict(p50 <= 0.5),
    )


def _create_scale_database(admin_url: str, name: str, dim: int, count: int, model: str) -> tuple[str, np.ndarray]:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    head, _, query = admin_url.partition("?")
    url = head.rsplit("/", 1)[0] + f"/{name}" + (f"?{query}" if query else "")
    vectors = np.random.default_rng(7).standard_normal((count, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        register_vector(conn)
        conn.execute(
            f"CREATE TABLE images (path text PRIMARY KEY, id bigint, content_hash text, size bigint, "
            f"modified_at timestamptz, width bigint, height bigint, format text, taken_at timestamp, "
            f"camera text, model text, embedding vector({dim}))"
        )
        with conn.cursor().copy(
            "COPY images (path, id, content_hash, size, modified_at, width, height, format, model, embedding) "
            "FROM STDIN WITH (FORMAT BINARY)"
        ) as copy:
            copy.set_types(["text", "int8", "text", "int8", "timestamptz", "int8", "int8", "text", "text", "vector"])
            now = time.time()
            from datetime import datetime

            stamp = datetime.fromtimestamp(now, tz=UTC)
            for i, v in enumerate(vectors):
                copy.write_row((f"synthetic/{i:07d}.jpg", i, f"{i:064x}", 1000, stamp, 640, 480, "jpeg", model, v))
        started = time.perf_counter()
        conn.execute(
            "CREATE INDEX ON images USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64)"
        )
        conn.execute("CREATE UNIQUE INDEX ON images (id)")
        print(f"  HNSW index over {count} vectors built in {time.perf_counter() - started:.1f}s", flush=True)
        conn.execute("ANALYZE images")
    return url, vectors


def query_at_scale(
    settings: Settings, env: dict[str, str], report: Report, sizes: list[int], n_queries: int, work: Path
) -> None:
    model = get_model(settings.clip_model, settings.device, settings.precision)
    texts = queries(n_queries)
    query_vectors = np.stack([model.embed_text(t) for t in texts])
    encode = []
    for t in texts[:50]:
        started = time.perf_counter()
        model.embed_texts([t + " again"])
        encode.append(time.perf_counter() - started)
    admin = database_url(settings)
    for size in sizes:
        url, vectors = _create_scale_database(admin, f"bench_scale_{size}", model.dim, size, model.name)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        cmd = [
            sys.executable,
            "-m",
            "uvicorn",
            "api.app:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ]
        with (
            Server(cmd, {**env, "DATABASE_URL": url}, work / f"api-{size}.log"),
            httpx.Client(base_url=base, timeout=60) as client,
        ):
            wait_until(lambda: client_ok(client), 120, "the API")
            client.get("/api/search", params={"q": "warm up", "limit": 10})
            timings, hits = [], 0
            for text, vector in zip(texts, query_vectors):
                started = time.perf_counter()
                body = client.get("/api/search", params={"q": text, "limit": 10}).json()
                timings.append(time.perf_counter() - started)
                exact = set(np.argpartition(-(vectors @ vector), 10)[:10].tolist())
                hits += len(exact & {r["id"] for r in body["results"]})
        scans = []
        for vector in query_vectors[:50]:
            started = time.perf_counter()
            np.argpartition(-(vectors @ vector), 10)[:10]
            scans.append(time.perf_counter() - started)
        p50, p95 = median(timings), percentile(timings, 95)
        recall = hits / (10 * len(texts))
        usual = median(scans) + median(encode)
        report.add(
            "4 query",
            f"/api/search at {size:,} images, p50 / p95 ({len(texts)} distinct queries)",
            f"{p50 * 1000:.1f} / {p95 * 1000:.1f} ms",
            f"{usual * 1000:.1f} ms (text encode + numpy exact scan)",
            f"{usual / p50:.2f}×",
            "p50 ≤ 15 ms at 100k" if size >= 100_000 else "",
            verdict(p50 <= 0.015) if size >= 100_000 else "",
        )
        report.add(
            "4 query",
            f"recall@10 of HNSW vs exact at {size:,} (ef_search={settings.search_ef})",
            f"{recall:.3f}",
            "1.000 (exact)",
            "",
            "≥ 0.98",
            verdict(recall >= 0.98),
        )
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "bench_scale_{size}" WITH (FORCE)')
    report.notes.append(
        f"Text encoding alone (p50 over 50 new queries, in process): {median(encode) * 1000:.1f} ms of each search."
    )


def client_ok(client: httpx.Client) -> bool:
    try:
        return client.get("/api/status", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def cold_search(settings: Settings, env: dict[str, str], report: Report, work: Path, repeats: int = 3) -> None:
    def timed() -> float:
        started = time.perf_counter()
        subprocess.run(
            main_py("search", "a dog on a beach", "--limit", "5"),
            env=env,
            cwd=PROJECT_ROOT,
            capture_output=True,
            check=True,
        )
        return time.perf_counter() - started

    alone = median([timed() for _ in range(repeats)])
    port = free_port()
    served_env = {**env, "PORT": str(port)}
    with Server(main_py("serve"), served_env, work / "serve-cold.log"):
        wait_until(lambda: _ready(f"http://127.0.0.1:{port}"), 300, "the server")
        env_backup = dict(env)
        env.update(served_env)
        try:
            timed()  # the server's first query
            served = median([timed() for _ in range(repeats)])
        finally:
            env.clear()
            env.update(env_backup)
    report.add(
        "6 cold start",
        "`main.py search` from a cold process, server running",
        f"{served:.2f} s",
        f"{alone:.2f} s without a server",
        f"{alone / served:.1f}×",
        "≤ 2 s",
        verdict(served <= 2),
    )
