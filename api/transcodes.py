"""Videos for browsers that cannot play them as they are: converted on demand to H.264/AAC in MP4
(`core.media.transcode`), cached under DATA_DIR by content hash with a size cap.

A conversion takes seconds to minutes of CPU, so it never runs in a request: the first request for
a video starts it in a small pool of threads of its own, at a lower priority than the server's
other work (Linux sets niceness per thread, and the encoder's own threads inherit it), and answers
"preparing" with how far along it is; the page asks again until it is ready. Requests for the same
version of a file, however many and from whichever clients, share one conversion. A conversion
nobody has asked about for `ABANDONED_AFTER` seconds (the view was closed) is stopped.

A Live Photo's motion (HEVC too, from an iPhone) goes the same way; its content hash, which the
index does not keep, is computed here once per version of the file.

The cache holds one file per content hash, so a copy or a re-saved identical file reuses it. Past
`TRANSCODE_CACHE_MB` the files played longest ago go first (playing a file marks it as used).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from core.errors import Unsupported, first_line
from core.media.transcode import Cancelled, Streams, read_streams, to_h264
from core.media.videos import VideoError

log = logging.getLogger("sightline.api")
T = TypeVar("T")

WORKERS = max(1, min(2, os.cpu_count() or 1))  # two: a long film does not hold up every short clip
NICENESS = 10
ABANDONED_AFTER = 120.0  # seconds; a hidden tab's timers may slow to one a minute
RETRY_AFTER_FAILURE = 60.0  # seconds a failure that is not the file's (a full disk) is answered as it is
_REMEMBERED = 1024  # streams and failures kept in memory, by content hash
_STALE_PART = 3600.0  # a .part file untouched this long was left by a process that died mid-way


@dataclass(frozen=True)
class Playback:
    """How to play one version of a video now."""

    state: str  # "ready" or "preparing"
    path: Path | None  # ready: the file to send
    media_type: str
    converted: bool  # the file is a conversion, not the original
    codec: str  # the original's video codec
    progress: float | None = None  # preparing: the fraction done


@dataclass
class _Job:
    progress: float = 0.0
    asked: float = field(default_factory=time.monotonic)


class Transcodes:
    """The conversions of one server: its cache folder, its pool and what is under way."""

    def __init__(
        self,
        folder: Path,
        cap_bytes: int,
        max_pixels: int,
        workers: int = WORKERS,
        abandoned_after: float = ABANDONED_AFTER,
    ) -> None:
        self.folder = folder
        self.cap_bytes = cap_bytes
        self.max_pixels = max_pixels
        self.abandoned_after = abandoned_after
        self.converted = 0  # conversions this process has finished
        self._lock = threading.Lock()
        self._jobs: dict[str, _Job] = {}
        self._streams: OrderedDict[str, Streams] = OrderedDict()
        self._failed: OrderedDict[str, tuple[str, float]] = OrderedDict()  # the reason, until when
        self._hashes: OrderedDict[str, str] = OrderedDict()  # a motion file's version -> its content hash
        self._closing = threading.Event()
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="transcode", initializer=_lower_priority)

    def playback(self, source: Path, content_hash: str) -> Playback:
        """The file to send for this version of a video, or how far its conversion is; starts the
        conversion where it is needed and not under way. A video that cannot be read or converted
        raises `Unsupported` with the reason in one line."""
        streams = self._streams_of(source, content_hash)
        if streams.plays_as_is:
            return Playback("ready", source, streams.media_type, False, streams.video)
        target = self.path_for(content_hash)
        with self._lock:
            job = self._jobs.get(content_hash)
            if job is None and target.exists():
                _touch(target)
                return Playback("ready", target, "video/mp4", True, streams.video)
            failure = self._failed.get(content_hash)
            if failure is not None and failure[1] > time.monotonic():
                raise Unsupported(failure[0])
            if job is None:
                job = self._jobs[content_hash] = _Job()
                self._pool.submit(self._convert, source, content_hash, job)
            job.asked = time.monotonic()
            return Playback("preparing", None, "video/mp4", True, streams.video, round(job.progress, 3))

    def file_hash(self, path: Path) -> str:
        """The content hash of a file the index has none for (a Live Photo's motion), kept while its
        size and modification time stay."""
        stat = path.stat()
        version = f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}"
        with self._lock:
            known = self._hashes.get(version)
        if known is not None:
            return known
        with path.open("rb") as file:
            digest = hashlib.file_digest(file, "sha256").hexdigest()
        with self._lock:
            _remember(self._hashes, version, digest)
        return digest

    @property
    def under_way(self) -> int:
        """Conversions started or waiting for a thread."""
        with self._lock:
            return len(self._jobs)

    def path_for(self, content_hash: str) -> Path:
        return self.folder / f"{content_hash}.mp4"

    def close(self) -> None:
        """Stop what is under way (its part files are removed) and the pool."""
        self._closing.set()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _streams_of(self, source: Path, content_hash: str) -> Streams:
        with self._lock:
            known = self._streams.get(content_hash)
            if known is not None:
                self._streams.move_to_end(content_hash)
                return known
        try:
            streams = read_streams(source)
        except VideoError as exc:
            raise Unsupported(f"This video cannot be played: {exc}.") from None
        with self._lock:
            _remember(self._streams, content_hash, streams)
        return streams

    def _convert(self, source: Path, content_hash: str, job: _Job) -> None:
        def progress(done: float) -> None:
            job.progress = done

        def stop() -> bool:
            return self._closing.is_set() or time.monotonic() - job.asked > self.abandoned_after

        started = time.monotonic()
        try:
            target = to_h264(
                source, self.path_for(content_hash), max_pixels=self.max_pixels, progress=progress, stop=stop
            )
        except Cancelled:
            log.info("stopped converting %s for browsers (nobody waits for it, or the server stops)", source.name)
        except VideoError as exc:  # the file's fault: no use trying again while it stays
            self._failed_with(content_hash, f"This video cannot be converted for browsers: {exc}.", math.inf)
        except OSError as exc:  # a full disk, say: tried again a while after
            log.error("converting %s for browsers failed: %s", source, first_line(exc))
            why = f"This video could not be converted for browsers ({first_line(exc)}, under DATA_DIR/transcodes)."
            self._failed_with(content_hash, why, RETRY_AFTER_FAILURE)
        except Exception as exc:  # a bug: the log has the traceback, the page a reason
            log.exception("converting %s for browsers failed", source)
            why = f"This video could not be converted for browsers ({first_line(exc)})."
            self._failed_with(content_hash, why, RETRY_AFTER_FAILURE)
        else:
            log.info("converted %s for browsers in %.1f s", source.name, time.monotonic() - started)
            with self._lock:
                self.converted += 1
            _touch(target)
            self._evict(keep=target)
        finally:
            with self._lock:
                self._jobs.pop(content_hash, None)

    def _failed_with(self, content_hash: str, reason: str, for_seconds: float) -> None:
        with self._lock:
            _remember(self._failed, content_hash, (reason, time.monotonic() + for_seconds))

    def _evict(self, keep: Path) -> None:
        """Files played longest ago go first until the cache is within its cap; the one just made
        stays, even alone over the cap. Part files a dead process left are removed on the way."""
        now = time.time()
        kept: list[tuple[float, int, Path]] = []
        for path in self.folder.iterdir():
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue  # evicted by another server on the same DATA_DIR
            if path.suffix == ".part":
                if now - stat.st_mtime > _STALE_PART:
                    path.unlink(missing_ok=True)
            elif path.suffix == ".mp4":
                kept.append((stat.st_mtime, stat.st_size, path))
        total = sum(size for _, size, _ in kept)
        for _, size, path in sorted(kept):
            if total <= self.cap_bytes:
                break
            if path != keep:
                path.unlink(missing_ok=True)
                total -= size


def _touch(path: Path) -> None:
    """Mark a file as used now, by the precise clock: the kernel stamps writes with a coarser one,
    which would give two files used milliseconds apart the same time."""
    now = time.time_ns()
    with contextlib.suppress(OSError):
        os.utime(path, ns=(now, now))


def _remember(memory: OrderedDict[str, T], key: str, value: T) -> None:
    memory[key] = value
    memory.move_to_end(key)
    while len(memory) > _REMEMBERED:
        memory.popitem(last=False)


def _lower_priority() -> None:
    """Run this pool thread below the server's own threads."""
    with contextlib.suppress(AttributeError, OSError):  # not Linux, or not allowed
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), NICENESS)
