"""`/api/search` latency against a running server: p50 and p95 over N distinct queries.

python -m bench.latency http://127.0.0.1:8000 [N]
"""

from __future__ import annotations

import statistics
import sys
import time

import httpx

COLORS = ("red", "green", "blue", "yellow", "purple", "orange", "black", "white", "brown", "grey")
THINGS = (
    "dog",
    "cat",
    "car",
    "tree",
    "beach",
    "house",
    "person",
    "bicycle",
    "pizza",
    "boat",
    "train",
    "bird",
    "circle",
    "square",
    "triangle",
    "mountain",
    "street",
    "kitchen",
    "table",
    "flower",
)


def queries(n: int) -> list[str]:
    out = [f"a {c} {t}" for t in THINGS for c in COLORS]
    while len(out) < n:
        out += [f"{q} at night" for q in out[: n - len(out)]]
    return out[:n]


def measure(base: str, n: int = 200) -> dict[str, float]:
    timings: list[float] = []
    with httpx.Client(base_url=base, timeout=30) as client:
        client.get("/api/search", params={"q": "warm up", "limit": 20}).raise_for_status()
        for q in queries(n):
            started = time.perf_counter()
            client.get("/api/search", params={"q": q, "limit": 20}).raise_for_status()
            timings.append((time.perf_counter() - started) * 1000)
    timings.sort()
    return {
        "n": len(timings),
        "p50_ms": statistics.median(timings),
        "p95_ms": timings[int(0.95 * len(timings)) - 1],
        "max_ms": timings[-1],
    }


if __name__ == "__main__":
    print(measure(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 200))
