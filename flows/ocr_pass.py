"""The OCR pass: the text of every picture the index holds, read after its embedding, at a lower
priority, into `picture_text` (`core.store.picture_text`).

It runs in one thread of its own, niced (Linux sets priority per thread, and the OCR engine is made
in this thread with one onnxruntime thread, so it computes here and nowhere else), and in the live
indexer it also waits while the indexer has files in hand: a new folder is searchable by
appearance first, and its text follows. A picture is read from its file, checked against the
content hash its row was made from, decoded upright (`core.media.pictures`) and read (`core.models.ocr`).

- A picture that cannot be decoded gets a row saying why (`skipped`), so it is not retried
  forever; its content cannot change without its hash changing.
- A file changed or unreadable since it was indexed is left for later (the indexer gives it a new
  row or an error row), and tried again after `RETRY_SECONDS`.
- While the database is away the live pass waits and tries again (the indexer says so); the
  one-shot pass stops with a `DatabaseError`, like `index_once`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable

from core.errors import ImageError, first_line
from core.media.library import library_of
from core.media.pictures import render_picture_data
from core.models.ocr import READ_LONGEST, Reading, TextReader, engine_name, read_picture
from core.settings import Settings
from core.store import picture_text
from core.store.db import DatabaseError, connect
from core.store.model_state import model_table, read_choice
from flows.recovery import looks_like_outage

log = logging.getLogger("sightline.indexer")

NICENESS = 15  # below the file workers (10), far below the model
BATCH = 16  # pictures asked for at once
IDLE_SECONDS = 2.0  # how often an idle live pass looks for new pictures
RETRY_SECONDS = 60.0  # before a changed or unreadable file is tried again
OUTAGE_MAX_SECONDS = 2.0


def _lower_priority() -> None:
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), NICENESS)
    except (AttributeError, OSError):
        pass  # not Linux, or not allowed: plain priority


class OcrPass:
    """Reads pictures' text in a thread of its own; `busy` says when the indexer has work in hand
    (the pass then waits between pictures)."""

    def __init__(self, settings: Settings, url: str, busy: Callable[[], bool] = lambda: False) -> None:
        self.settings = settings
        self.url = url
        self.busy = busy
        self.read = 0  # pictures read or skipped by this pass
        self.reader = TextReader(threads=1)
        self.engine = engine_name()
        self._library = library_of(settings.image_dirs)
        self._later: dict[str, float] = {}  # content hash → when to try its file again
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None
        self._on_read: Callable[[], None] = lambda: None

    # --- running -----------------------------------------------------------------------------

    def run_until_done(self, progress: Callable[[int, int], None] | None = None) -> int:
        """Read every picture waiting now, in the pass's own thread; returns how many, and tells
        `progress` (read so far, waiting at the start) after each. Raises `DatabaseError` when the
        database goes away meanwhile."""
        if progress is not None:
            with connect(self.url) as conn:
                table = model_table(read_choice(conn, self.settings.clip_model).serving)
                total = picture_text.progress(conn, table).waiting
            progress(0, total)
            self._on_read = lambda: progress(min(self.read, total), total)
        thread = threading.Thread(target=self._until_done, name="sightline-ocr", daemon=True)
        thread.start()
        thread.join()
        if self._failure is not None:
            raise self._failure
        return self.read

    def start(self) -> None:
        """Follow the index until `stop`: read what is waiting whenever the indexer is idle."""
        self._thread = threading.Thread(target=self._follow, name="sightline-ocr", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)  # at most one picture's reading

    def _until_done(self) -> None:
        _lower_priority()
        try:
            while not self._stop.is_set() and self._read_batch():
                pass
        except Exception as exc:
            if not looks_like_outage(exc):
                self._failure = exc
            else:
                self._failure = DatabaseError(
                    f"Reading the text in pictures stopped: database unreachable ({first_line(exc)}). "
                    "What was read is kept; run it again once the database is back."
                )

    def _follow(self) -> None:
        _lower_priority()
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
                if not looks_like_outage(exc):
                    log.error("reading the text in pictures failed; trying again: %s", exc, exc_info=exc)
                # the database away: the indexer says so; this waits and tries again
                delay = min(delay * 2, OUTAGE_MAX_SECONDS * 8)
            self._stop.wait(min(delay, IDLE_SECONDS * 8))

    # --- one batch ---------------------------------------------------------------------------

    def _read_batch(self) -> bool:
        """Read the next pictures waiting; False when none is (the database errors propagate)."""
        now = time.monotonic()
        self._later = {h: t for h, t in self._later.items() if t > now}
        with connect(self.url) as conn:
            table = model_table(read_choice(conn, self.settings.clip_model).serving)
            batch = picture_text.waiting(conn, table, BATCH, leave_out=list(self._later))
            for content_hash, key in batch:
                if self._stop.is_set() or self.busy():
                    break
                reading = self._read_one(content_hash, key)
                if reading is None:
                    self._later[content_hash] = time.monotonic() + RETRY_SECONDS
                    continue
                picture_text.write(conn, content_hash, reading, self.engine)
                self.read += 1
                self._on_read()
        return bool(batch)

    def _read_one(self, content_hash: str, key: str) -> Reading | None:
        """What the picture says, or None when its file is not what was indexed (now)."""
        path = self._library.path_of(key)
        if path is None:
            return None
        try:
            data = path.read_bytes()
        except OSError as exc:
            log.debug("text of %s later: %s", key, exc)
            return None
        if hashlib.sha256(data).hexdigest() != content_hash:
            return None  # changed since it was indexed: the indexer gives it a new row
        try:
            picture = render_picture_data(data, path.name, READ_LONGEST, max_pixels=self.settings.max_image_pixels)
        except ImageError as exc:
            return Reading([], skipped=f"cannot be decoded for reading ({exc})")
        try:
            return read_picture(self.reader, picture, self.settings.ocr)
        except Exception as exc:  # the engine tripping over one picture: said once, never retried
            log.warning("could not read the text of %s: %s", key, first_line(exc))
            return Reading([], skipped=f"OCR failed ({first_line(exc)})")
