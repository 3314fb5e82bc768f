"""Where a text search's time goes (issue 29: answers in 10 ms): the same searches as part 4's HTTP
figures, taken apart in this process on the same database.

    the text tower alone              `Embedder.embed_texts`, one query
    the search SQL alone              `api.text_search.search_fused` with that query's vector and words
    the whole answer, no HTTP         `api.answer.answer` (parsing and its lookups, the tower, the SQL,
                                      the relevance judgement, people, the page's objects)
    HTTP                              part 4's figure for the same queries

so that the answer less the tower and the SQL is the plumbing around them, and HTTP less the answer
is the request, the framework and the JSON. Medians of each; on a shared machine every figure
carries the load beside it, so the load average is reported with them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import psutil
import psycopg
from pgvector.psycopg import register_vector

from api.answer import Ask, OneConnection, answer
from api.text_search import plain_words, search_fused
from bench.common import Report, median
from core.models.embedder import Embedder
from core.settings import Settings


class CpuMeter:
    """CPU time spent by the server's process and by the Postgres backends serving a database: on
    a shared machine a search's wall time carries everyone's load, its CPU time much less so."""

    def __init__(self, server_pid: int, url: str) -> None:
        self._server = psutil.Process(server_pid)
        self._url = url
        self._backends: list[psutil.Process] = []
        self.server = self.postgres = 0.0  # seconds, added up by `measure`
        self.count = 0

    def find_backends(self) -> None:
        """The backends now connected to the database (the server's pool opens them as it needs)."""
        with psycopg.connect(self._url, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ).fetchall()
        self._backends = [psutil.Process(int(pid)) for (pid,) in rows]

    def _now(self) -> tuple[float, float]:
        times = self._server.cpu_times()
        backends = 0.0
        for backend in self._backends:
            try:
                used = backend.cpu_times()
                backends += used.user + used.system
            except psutil.Error:
                pass  # gone: the pool let it go
        return times.user + times.system, backends

    def measure(self, run: Callable[[], float]) -> float:
        """`run()` (which returns its wall time), with its CPU time added here."""
        server, postgres = self._now()
        took = run()
        after = self._now()
        self.server += after[0] - server
        self.postgres += after[1] - postgres
        self.count += 1
        return took

    def per_request(self) -> str:
        n = max(1, self.count)
        return f"server {self.server / n * 1000:.1f} + Postgres {self.postgres / n * 1000:.1f} ms"


def query_stages(
    url: str, settings: Settings, model: Embedder, texts: list[str], http_p50_ms: float, size: int, report: Report
) -> None:
    """One row: the median of each stage for `texts`, part 4's own (the server's cache of their
    vectors is another process's: here each goes through the tower). The stages of one text run one
    after the other, so that a changing load weighs on each alike."""
    load = os.getloadavg()[0]
    took: dict[str, list[float]] = {"tower": [], "sql": [], "whole": []}
    with psycopg.connect(url, autocommit=True) as conn:
        register_vector(conn)
        context = OneConnection(conn, model, settings)
        answer(context, Ask(q="warm up", limit=10))  # the relevance judge's captions, once per model
        for text in texts:
            started = time.perf_counter()
            vector = model.embed_texts([text])[0]  # never cached
            took["tower"].append(time.perf_counter() - started)
            started = time.perf_counter()
            search_fused(conn, vector, plain_words([text]), model=model.name, limit=10, with_vectors=True)
            took["sql"].append(time.perf_counter() - started)
            started = time.perf_counter()
            answer(context, Ask(q=text, limit=10))  # the first time for this text in this process
            took["whole"].append(time.perf_counter() - started)
    tower, sql, whole = (median(took[stage]) * 1000 for stage in ("tower", "sql", "whole"))
    report.add(
        "4 query",
        f"where a text search's time goes at {size:,} (medians, this process, same queries): "
        "text tower / search SQL / the whole answer without HTTP → the rest of the answer / HTTP",
        f"{tower:.1f} / {sql:.1f} / {whole:.1f} ms → {max(0.0, whole - tower - sql):.1f} / "
        f"{max(0.0, http_p50_ms - whole):.1f} ms",
        f"load average {load:.1f} on {os.cpu_count()} cores",
    )
