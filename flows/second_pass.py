"""A pass after the embeddings, at a lower priority: what reading text (`flows.ocr_pass`) and finding
faces (`flows.face_pass`) share.

A pass runs in one thread of its own, niced (Linux sets priority per thread, and its engine is made
in this thread with one compute thread, so it computes here and nowhere else), and in the live
indexer it also waits while the indexer has files in hand: a new folder is searchable by
appearance first, and the rest follows. Work is asked of the model table of the model that answers
searches, by content hash, so a renamed or copied file is never read twice. A file is read,
checked against the content hash its row was made from, and handed to the pass.

- A file changed or unreadable since it was indexed is left for later (the indexer gives it a new
  row or an error row), and tried again after `RETRY_SECONDS`.
- What a pass cannot read in a file it stores as such, so the file is not retried forever; its
  content cannot change without its hash changing.
- While the database is away the live pass waits and tries again (the indexer says so); the
  one-shot pass stops with a `DatabaseError`, like `index_once`.

The one-shot pass (`run_until_done`) can read with several workers, each a thread of its own with
its own engine (`add_worker` adds one while it runs: `flows.passes` gives the text pass the core
the faces pass leaves). The workers share what is in hand: each asks for contents no other worker
holds, a few at a time, so none is read twice and none waits long for another at the end.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any, Generic, TypeVar

from core.errors import Unavailable, first_line
from core.media.library import library_of
from core.settings import Settings
from core.store.db import DatabaseError, connect
from core.store.model_state import model_table, read_choice
from flows.recovery import looks_like_outage

log = logging.getLogger("sightline.indexer")

NICENESS = 15  # below the file workers (10), far below the model
BATCH = 16  # pictures asked for at once
SHARED_BATCH = 4  # by each of several workers: what one holds at the end is what another cannot read
IDLE_SECONDS = 2.0  # how often an idle live pass looks for new pictures
RETRY_SECONDS = 60.0  # before a changed or unreadable file is tried again
OUTAGE_MAX_SECONDS = 2.0

Result = TypeVar("Result")


def lower_priority() -> None:
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), NICENESS)
    except (AttributeError, OSError):
        pass  # not Linux, or not allowed: plain priority


class SecondPass(ABC, Generic[Result]):
    """Reads what waits in a thread of its own; `busy` says when the indexer has work in hand
    (the pass then waits between files)."""

    name = "sightline-pass"  # the thread's
    doing = "A pass"  # what it does, to start a sentence

    def __init__(self, settings: Settings, url: str, busy: Callable[[], bool] = lambda: False) -> None:
        self.settings = settings
        self.url = url
        self.busy = busy
        self.read = 0  # contents read (or found unreadable) by this pass
        self._library = library_of(settings.image_dirs)
        self._later: dict[str, float] = {}  # content hash → when to try its file again
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None
        self._on_read: Callable[[], None] = lambda: None
        self._lock = threading.Lock()  # what the workers of `run_until_done` share: all below, and `read`
        self._in_hand: set[str] = set()  # content hashes a worker is reading
        self._workers: list[threading.Thread] | None = None  # while `run_until_done` runs
        self._batch = BATCH
        self._after = ""  # where the walk through the waiting contents goes on (see `_take`)

    # --- what a pass does ----------------------------------------------------------------------

    @abstractmethod
    def waiting(
        self, conn: Any, table: str, limit: int, leave_out: Collection[str], after: str
    ) -> list[tuple[str, str, str]]:
        """Up to `limit` (content hash, path, kind) in `table` that wait for this pass, in content hash
        order from past `after`, except `leave_out`."""

    @abstractmethod
    def count_waiting(self, conn: Any, table: str) -> int:
        """How many contents of `table` wait for this pass."""

    @abstractmethod
    def process(self, key: str, kind: str, path: Path, data: bytes) -> Result:
        """What the pass makes of one file, whose bytes (a picture's; b"" for a video, read from `path`)
        are what was indexed. Runs in the pass's thread."""

    @abstractmethod
    def store(self, conn: Any, content_hash: str, key: str, result: Result) -> None:
        """Keep what `process` made."""

    # --- running -----------------------------------------------------------------------------

    def run_until_done(self, progress: Callable[[int, int], None] | None = None, workers: int = 1) -> int:
        """Read everything waiting now, in `workers` threads of the pass's own; returns how many, and
        tells `progress` (read so far, waiting at the start) after each. Raises `DatabaseError` when
        the database goes away meanwhile."""
        if progress is not None:
            with connect(self.url) as conn:
                total = self.count_waiting(conn, self._table(conn))
            progress(0, total)
            self._on_read = lambda: progress(min(self.read, total), total)
        with self._lock:
            self._workers = []
            for _ in range(max(1, workers)):
                self._start_worker()
        while True:
            with self._lock:
                alive = [thread for thread in self._workers if thread.is_alive()]
                if not alive:
                    self._workers = None
                    break
            alive[0].join()
        if self._failure is not None:
            raise self._failure
        return self.read

    def add_worker(self) -> bool:
        """One more worker for the `run_until_done` under way; False when none is (any more)."""
        with self._lock:
            if self._workers is None or self._stop.is_set():
                return False
            self._start_worker()
            return True

    def _start_worker(self) -> None:
        assert self._workers is not None
        if self._workers:  # several share the work: smaller batches, so none holds much at the end
            self._batch = SHARED_BATCH
        thread = threading.Thread(target=self._until_done, name=f"{self.name}-{len(self._workers)}", daemon=True)
        self._workers.append(thread)
        thread.start()

    def start(self) -> None:
        """Follow the index until `stop`: read what is waiting whenever the indexer is idle."""
        self._thread = threading.Thread(target=self._follow, name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)  # at most one file's reading

    def _until_done(self) -> None:
        lower_priority()
        try:
            with connect(self.url) as conn:  # one connection for the whole run: batches are small
                while not self._stop.is_set() and self._read_batch(conn):
                    pass
        except Exception as exc:
            if _missing_part(exc):
                self._give_up(exc)
                return
            self._stop.set()  # the other workers stop too
            with self._lock:
                if self._failure is not None:
                    return  # said by the first worker that failed
                if not looks_like_outage(exc):
                    self._failure = exc
                else:
                    self._failure = DatabaseError(
                        f"{self.doing} stopped: database unreachable ({first_line(exc)}). "
                        "What was read is kept; run it again once the database is back."
                    )

    def _follow(self) -> None:
        lower_priority()
        delay = IDLE_SECONDS
        while not self._stop.is_set():
            if self.busy():
                self._stop.wait(IDLE_SECONDS / 4)
                continue
            try:
                if self._read_batch():
                    delay = IDLE_SECONDS
                    continue
            except Exception as exc:
                if _missing_part(exc):
                    self._give_up(exc)
                    return
                if not looks_like_outage(exc):
                    log.error("%s failed; trying again: %s", self.doing, exc, exc_info=exc)
                # the database away: the indexer says so; this waits and tries again
                delay = min(delay * 2, OUTAGE_MAX_SECONDS * 8)
            self._stop.wait(min(delay, IDLE_SECONDS * 8))

    def _give_up(self, exc: Exception) -> None:
        """What the pass needs cannot be had (its models are not installed): said once; every file
        stays waiting, and the rest of Sightline goes on."""
        if not self._stop.is_set():  # once, whichever worker finds it
            log.warning("%s is not possible: %s", self.doing, first_line(exc))
        self._stop.set()

    # --- one batch ---------------------------------------------------------------------------

    def _table(self, conn: Any) -> str:
        return model_table(read_choice(conn, self.settings.clip_model).serving)

    def _read_batch(self, conn: Any = None) -> bool:
        """Read the next files waiting, through `conn` or a connection of its own; False when none is
        (the database errors propagate)."""
        if conn is None:
            with connect(self.url) as own:
                return self._read_batch(own)
        batch = self._take(conn, self._table(conn))
        try:
            for content_hash, key, kind in batch:
                if self._stop.is_set() or self.busy():
                    break
                found = self._read_one(content_hash, key, kind)
                if found is None:
                    with self._lock:
                        self._later[content_hash] = time.monotonic() + RETRY_SECONDS
                    continue
                self.store(conn, content_hash, key, found[0])
                with self._lock:
                    self.read += 1
                    self._on_read()
        finally:
            with self._lock:
                self._in_hand.difference_update(content_hash for content_hash, _, _ in batch)
        return bool(batch)

    def _take(self, conn: Any, table: str) -> list[tuple[str, str, str]]:
        """The next contents waiting, taken in hand (asked and taken at once: no two workers get the
        same). The walk goes on past the last one taken, through the content hash index, instead of
        passing every content read already again; at its end it starts once more from the first, for
        what came in behind it and what is to be tried again."""
        with self._lock:
            now = time.monotonic()
            self._later = {h: t for h, t in self._later.items() if t > now}
            leave_out = [*self._later, *self._in_hand]
            batch = self.waiting(conn, table, self._batch, leave_out, self._after)
            if not batch and self._after:
                batch = self.waiting(conn, table, self._batch, leave_out, "")
            self._after = batch[-1][0] if batch else ""
            self._in_hand.update(content_hash for content_hash, _, _ in batch)
            return batch

    def _read_one(self, content_hash: str, key: str, kind: str) -> tuple[Result] | None:
        """What the pass makes of the file, or None when its file is not what was indexed (now)."""
        path = self._library.path_of(key)
        if path is None:
            return None
        try:
            # a video is hashed as it is read, and its frames decoded from the file: never all in memory
            data = b"" if kind == "video" else path.read_bytes()
            digest = _file_digest(path) if kind == "video" else hashlib.sha256(data).hexdigest()
        except OSError as exc:
            log.debug("%s: %s later: %s", self.name, key, exc)
            return None
        if digest != content_hash:
            return None  # changed since it was indexed: the indexer gives it a new row
        return (self.process(key, kind, path, data),)


def _missing_part(exc: Exception) -> bool:
    """A part the pass needs and cannot have (models not installed), as opposed to the database
    being away, which comes back."""
    return isinstance(exc, Unavailable) and not isinstance(exc, DatabaseError)


def _file_digest(path: Path) -> str:
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()
