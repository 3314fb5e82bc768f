"""What the indexer tells the world while it runs: the status heartbeat, and how it notices the
database going away and coming back."""

from __future__ import annotations

import logging
import time
from typing import Any

from core import indexer_status
from core.db import connect
from flows.indexer import IndexRun

log = logging.getLogger("sightline.indexer")

HEARTBEAT_SECONDS = 1.0
RETRY_MAX_SECONDS = 30.0
RATE_WINDOW_SECONDS = 10.0


class StatusReporter:
    """Keeps the single `indexer_status` row fresh while the indexer runs."""

    def __init__(self, url: str, run: IndexRun) -> None:
        self._url = url
        self._run = run
        self.scanning = True
        self.files_total = 0
        self.files_done = 0
        self.files_pending = 0
        self._changes_seen = -1
        self._last_change_at: float | None = None
        self._rate_window: list[tuple[float, int]] = []

    def observe(self, stats: Any) -> None:
        """Take in the engine's statistics (`UpdateSnapshot.stats`)."""
        c = stats.by_component.get("index_file")
        self.files_done = c.num_finished if c else 0
        self.files_pending = c.num_in_progress if c else 0
        changes = self._run.counters.described + (c.num_deletes if c else 0)
        now = time.time()
        if changes != self._changes_seen:
            if self._changes_seen >= 0 or changes > 0:
                self.mark_changed()
            self._changes_seen = changes
        recent = [(t, n) for t, n in self._rate_window if now - t < RATE_WINDOW_SECONDS]
        self._rate_window = [*recent, (now, self.files_done)]

    def mark_changed(self) -> None:
        self._last_change_at = time.time()

    @property
    def throughput(self) -> float:
        if len(self._rate_window) < 2:
            return 0.0
        (t0, n0), (t1, n1) = self._rate_window[0], self._rate_window[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0

    def write(self, live: bool) -> None:
        embedder = self._run.embedder
        beat = indexer_status.Heartbeat(
            model=embedder.name,
            # not known before the model first loads; importing torch just to say it would cost a
            # no-change run seconds
            device=embedder.device if embedder.loaded else None,
            precision=embedder.precision if embedder.loaded else None,
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


class DatabaseWatch:
    """Tells when the database goes away and comes back, with exponential backoff in between.

    While it is away, files that change fail (nothing is remembered for them); when it is back, the
    caller rescans the folder so they are indexed without a restart.
    """

    def __init__(self) -> None:
        self.down_since: float | None = None
        self._delay = HEARTBEAT_SECONDS

    def failed(self, exc: BaseException) -> None:
        if self.down_since is None:
            self.down_since = time.monotonic()
            log.warning("database unreachable (%s); indexing resumes when it is back", exc)
        self._delay = min(self._delay * 2, RETRY_MAX_SECONDS)

    def succeeded(self) -> bool:
        """Record a success; True when this ends an outage."""
        self._delay = HEARTBEAT_SECONDS
        if self.down_since is None:
            return False
        log.warning("database back after %.0fs; rescanning the folder", time.monotonic() - self.down_since)
        self.down_since = None
        return True

    @property
    def next_try(self) -> float:
        return self._delay
