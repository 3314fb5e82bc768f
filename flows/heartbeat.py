"""What the indexer tells the world while it runs: the status heartbeat (the `indexer_status` row,
and `LocalIndexer` for a server in the same process). A heartbeat that fails is how the indexer
notices that the database went away (`flows.recovery` takes it from there)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from core.models.checkpoints import cpu_kernels
from core.store import indexer_status
from core.store.db import connect
from core.store.indexer_status import LocalIndexer
from flows.run import IndexRun

log = logging.getLogger("sightline.indexer")

HEARTBEAT_SECONDS = 1.0
# a beat that takes longer counts as the database gone: a connection or a statement can hang where
# a server stops answering without closing its connections (its thread is left to end by itself)
BEAT_DEADLINE_SECONDS = 20.0
RATE_WINDOW_SECONDS = 10.0


class StatusReporter:
    """Keeps the single `indexer_status` row fresh while the indexer runs."""

    def __init__(self, url: str, run: IndexRun, local: LocalIndexer | None = None) -> None:
        self._url = url
        self._run = run
        self._local = local
        self.scanning = True
        self.files_total = 0
        self.files_done = 0
        self.files_pending = 0
        self.errors = 0  # files whose processing raised in this run (the database away, say)
        self._changes_seen = -1
        self._last_change_at: float | None = None
        self._rate_window: list[tuple[float, int]] = []

    def observe(self, stats: Any) -> None:
        """Take in the engine's statistics (`UpdateSnapshot.stats`)."""
        c = stats.by_component.get("index_bucket")  # buckets of files (`flows.indexer`)
        files = self._run.files
        self.files_done = files.done
        self.files_pending = files.in_hand
        self.errors = files.failed + (c.num_errors if c else 0)
        changes = self._run.counters.described + files.removed + (c.num_deletes if c else 0)
        now = time.time()
        if changes != self._changes_seen:
            if self._changes_seen >= 0 or changes > 0:
                self.mark_changed()
            self._changes_seen = changes
        recent = [(t, n) for t, n in self._rate_window if now - t < RATE_WINDOW_SECONDS]
        self._rate_window = [*recent, (now, self.files_done)]
        self.publish()

    def mark_changed(self) -> None:
        self._last_change_at = time.time()

    @property
    def throughput(self) -> float:
        if len(self._rate_window) < 2:
            return 0.0
        (t0, n0), (t1, n1) = self._rate_window[0], self._rate_window[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0

    def publish(self) -> None:
        """Tell a server in this process (no database needed). Whether a scan is under way is the
        engine's to say: a run cut short by an outage has not completed its scan."""
        if self._local is None:
            return
        self._local.files_total = self.files_total
        self._local.files_done = min(self.files_done, self.files_total) if self.scanning else self.files_done
        self._local.files_pending = self.files_pending
        self._local.embedded = self._run.counters.embedded
        self._local.reused = self._run.counters.reused

    def write(self, live: bool) -> None:
        self.publish()
        embedder = self._run.embedder
        beat = indexer_status.Heartbeat(
            model=embedder.name,
            # not known before the model first loads; importing torch just to say it would cost a
            # no-change run seconds
            device=embedder.device if embedder.settled else None,
            precision=embedder.precision if embedder.settled else None,
            cpu=cpu_kernels() if embedder.settled and embedder.device == "cpu" else None,
            live=live,
            scanning=self.scanning,
            last_change=self._last_change_at,
            files_total=self.files_total,
            files_done=self.files_done,
            files_pending=self.files_pending,
            throughput=self.throughput,
        )
        with connect(self._url) as conn:
            indexer_status.write(conn, beat)


async def keep_beating(
    beat_once: Callable[[], str | None], stop: asyncio.Event, changed: asyncio.Future[str], lost: asyncio.Future[None]
) -> None:
    """Beat every HEARTBEAT_SECONDS until `stop`. A step that a beat asks for (a model to switch to)
    goes to `changed`; a beat that fails, or hangs past its deadline, to `lost`: the engine stops
    and the indexer waits for the database, rather than letting every file fail (and be retried)."""
    while not stop.is_set():
        try:
            step = await asyncio.wait_for(asyncio.to_thread(beat_once), BEAT_DEADLINE_SECONDS)
        except TimeoutError:
            if not lost.done():
                lost.set_exception(TimeoutError(f"the database did not answer within {BEAT_DEADLINE_SECONDS:.0f}s"))
            return
        except Exception as exc:
            if not lost.done():
                lost.set_exception(exc)
            return
        if step is not None and not changed.done():
            changed.set_result(step)
        try:
            await asyncio.wait_for(stop.wait(), HEARTBEAT_SECONDS)
        except TimeoutError:
            pass
