"""Load: many clients searching a 10,000-image index at once, on loopback, while the live indexer
takes in new files. Reports errors, p50/p99, throughput, the server's memory after warm-up and at
the end, and how fast the dropped files became searchable meanwhile."""

from __future__ import annotations

import io
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import psutil
import psycopg
from pgvector.psycopg import register_vector
from PIL import Image

from bench.common import Report, Server, free_port, main_py, median, percentile, verdict, wait_until
from bench.latency import queries
from bench.serving import copy_synthetic_rows, new_database, synthetic_embeddings
from core.models.embedder import open_embedder
from core.settings import Settings
from core.store.db import database_url
from core.store.model_state import model_table


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, seconds: float, outcome: str | None) -> None:
        with self.lock:
            if outcome is None:
                self.latencies.append(seconds)
            else:
                self.errors[outcome] = self.errors.get(outcome, 0) + 1


def _client(base: str, texts: list[str], popular: list[str], stop: threading.Event, tally: Tally, seed: int) -> None:
    rng = random.Random(seed)
    with httpx.Client(base_url=base, timeout=30) as client:
        while not stop.is_set():
            # half the traffic repeats a few popular queries, half is distinct
            q = rng.choice(popular) if rng.random() < 0.5 else rng.choice(texts)
            started = time.perf_counter()
            try:
                response = client.get("/api/search", params={"q": q, "limit": 20})
                outcome = None if response.status_code == 200 else f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                outcome = type(exc).__name__
            tally.record(time.perf_counter() - started, outcome)


def _photo(rng: np.random.Generator) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).resize((640, 480)).save(buffer, "JPEG")
    return buffer.getvalue()


def _dropper(folder: Path, stop: threading.Event, dropped: dict[str, float], every: float) -> None:
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True, exist_ok=True)
    i = 0
    while not stop.wait(every):
        name = f"load-{i:04d}.jpg"
        temp = folder / f".{name}.part"
        temp.write_bytes(_photo(rng))
        temp.rename(folder / name)
        dropped[f"{folder.name}/{name}"] = time.time()
        i += 1


def _ready(base: str) -> bool:
    try:
        body = httpx.get(f"{base}/api/status", timeout=2).json()
    except (httpx.HTTPError, ValueError):
        return False
    return bool(body.get("live") and not body.get("scanning"))


def load_test(
    settings: Settings, env: dict[str, str], report: Report, work: Path, clients: int, seconds: float, size: int
) -> None:
    model = open_embedder(settings.clip_model, settings.device, settings.precision)
    url = new_database(database_url(settings), "bench_load")
    image_dir = work / "load-img"
    image_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server_env = {**env, "DATABASE_URL": url, "IMAGE_DIR": str(image_dir), "PORT": str(port)}
    server_env["DATA_DIR"] = str(work / "data-load")
    with Server(main_py("serve"), server_env, work / "serve-load.log") as server:
        wait_until(lambda: _ready(base), 300, "the server")
        # the indexer made the table; fill it with synthetic rows, as if a large folder were indexed
        with psycopg.connect(url, autocommit=True) as conn:
            register_vector(conn)
            copy_synthetic_rows(conn, synthetic_embeddings(size, model.dim, shape="flat"), model.name, first_id=1)
            conn.execute(f"ANALYZE {model_table(model.name)}")
        texts, popular = queries(2000), queries(10)
        stop, tally = threading.Event(), Tally()
        dropped: dict[str, float] = {}
        arrived: dict[str, float] = {}
        done_watching = threading.Event()
        watcher = threading.Thread(target=_arrivals, args=(url, dropped, arrived, done_watching), daemon=True)
        watcher.start()
        threads = [
            threading.Thread(target=_client, args=(base, texts, popular, stop, tally, n), daemon=True)
            for n in range(clients)
        ]
        dropper = threading.Thread(target=_dropper, args=(image_dir / "incoming", stop, dropped, 1.0), daemon=True)
        process = psutil.Process(server.proc.pid)
        memory: list[tuple[float, int]] = []
        started = time.monotonic()
        for t in [*threads, dropper]:
            t.start()
        while time.monotonic() - started < seconds:
            memory.append((time.monotonic() - started, process.memory_info().rss))
            time.sleep(min(1.0, seconds / 10))
        stop.set()
        for t in [*threads, dropper]:
            t.join(60)
        elapsed = time.monotonic() - started
        wait_until(lambda: len(arrived) == len(dropped), 60, "the dropped files")
        done_watching.set()
        watcher.join(10)
        delays = [arrived[p] - dropped[p] for p in dropped]

    warm = next((rss for t, rss in memory if t >= seconds / 4), memory[0][1])
    peak_after_warm = max(rss for t, rss in memory if t >= seconds / 4) if len(memory) > 1 else warm
    errors = sum(tally.errors.values())
    total = len(tally.latencies) + errors
    report.add(
        "7 load",
        f"{clients} clients × {seconds:.0f} s of /api/search at {size:,} images (half repeated queries): "
        f"requests, errors",
        f"{total:,} requests ({total / elapsed:.0f}/s), {errors} errors"
        + (f" ({', '.join(f'{k}: {v}' for k, v in tally.errors.items())})" if errors else ""),
        "",
        "",
        "no errors",
        verdict(errors == 0),
    )
    report.add(
        "7 load",
        "latency under that load, p50 / p99",
        f"{median(tally.latencies) * 1000:.0f} / {percentile(tally.latencies, 99) * 1000:.0f} ms",
    )
    growth = (peak_after_warm - warm) / warm
    report.add(
        "7 load",
        "server memory: after warm-up → highest after",
        f"{warm / 2**20:.0f} → {peak_after_warm / 2**20:.0f} MB ({100 * growth:+.0f}%)",
        "",
        "",
        "flat (< +10%)",
        verdict(growth < 0.10),
    )
    report.add(
        "7 load",
        f"indexing during the load: {len(dropped)} files dropped, each until its row exists, p50 / max",
        f"{median(delays) * 1000:.0f} / {max(delays) * 1000:.0f} ms" if delays else "none dropped",
        "",
        "",
        "all indexed",
        verdict(len(delays) == len(dropped) > 0),
    )


def _arrivals(url: str, dropped: dict[str, float], arrived: dict[str, float], stop: threading.Event) -> None:
    """Note when each dropped file first has a row (polled every 100 ms)."""
    with psycopg.connect(url, autocommit=True) as conn:
        while not stop.wait(0.1):
            waiting = [p for p in list(dropped) if p not in arrived]
            if waiting:
                for (path,) in conn.execute("SELECT path FROM images WHERE path = ANY(%s)", (waiting,)):
                    arrived[path] = time.time()
