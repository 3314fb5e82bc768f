"""The CocoIndex app: every image file under IMAGE_DIR declares one row in `images`, or one row
in `index_errors` saying why it could not be indexed.

Each file is a processing component. The engine diffs what components declare against the last
run, so added, changed, renamed and deleted files become inserts, updates and deletes, and a
fixed or removed bad file loses its error row by itself.

The expensive part, `describe_file`, is memoised on (path, size, mtime, model): an unchanged file
is never read again. Inside it, the embedding cache keyed by content hash catches renamed and
copied files, and the model runs in batches off the event loop.
"""

import asyncio
import functools
import hashlib
import logging
import os
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import cocoindex as coco
import numpy as np
from cocoindex.connectors import localfs, postgres
from cocoindex.resources.schema import VectorSchema
from numpy.typing import NDArray

from core.db import ERRORS_TABLE
from core.embedder import Embedder
from core.errors import first_line
from core.model_state import ModelChoice
from core.pictures import ImageError, decode_image
from core.settings import Settings
from flows.cache import DatabaseUnavailable, EmbeddingCache
from flows.recovery import looks_like_outage
from flows.walk import ImageFileMatcher, unreachable_link_reason, unreachable_links

log = logging.getLogger("sightline.indexer")
T = TypeVar("T")

# files read and decoded at once: enough to keep every core decoding ahead of the model
READ_AHEAD = max(16, 2 * (os.cpu_count() or 1))
AUTO_GATHER = 128  # the most images one gathered batch holds when BATCH_SIZE is auto
PG_POOL = coco.ContextKey[asyncpg.Pool]("sightline_pg_pool")
IMAGE_ROOT = coco.ContextKey[Path]("sightline_image_root")
RUN = coco.ContextKey["IndexRun"]("sightline_index_run")


@dataclass
class ImageRow:
    path: str  # relative to IMAGE_DIR, '/'-separated: the key
    id: int  # stable for a path; what clients use
    content_hash: str  # sha256 of the bytes
    size: int
    modified_at: datetime
    width: int  # as displayed, after EXIF orientation
    height: int
    format: str
    taken_at: datetime | None  # EXIF date taken (camera local time)
    camera: str | None
    model: str
    embedding: NDArray[np.float32]


@dataclass
class ErrorRow:
    path: str
    reason: str
    size: int
    modified_at: datetime


@dataclass
class FileFacts:
    """What `describe_file` learns about one version of one file (memoised)."""

    failure: str | None = None
    content_hash: str = ""
    width: int = 0
    height: int = 0
    format: str = ""
    taken_at: datetime | None = None
    camera: str | None = None
    embedding: bytes = b""


@dataclass
class IndexCounters:
    described: int = 0  # new or changed file versions looked at (memo misses)
    embedded: int = 0  # images that went through the model
    reused: int = 0  # images whose embedding came from the content-hash cache


@dataclass
class ModelSlot:
    """One model the indexer embeds with, and where its rows go."""

    embedder: Embedder
    cache: EmbeddingCache
    embed: Callable[[np.ndarray], Awaitable[np.ndarray]]
    table: str


@dataclass
class IndexRun:
    """Everything a component needs, provided once per process through the CocoIndex context.

    `slots` holds the model that answers searches first and, while a new model is being built
    beside it, that one second: new files go into both, so neither falls behind.
    """

    settings: Settings
    slots: dict[str, ModelSlot]
    image_root: Path  # resolved
    choice: ModelChoice  # as it was when this run started
    counters: IndexCounters = field(default_factory=IndexCounters)
    # files being read and decoded at once: their bytes are in memory until decoded, so this bounds
    # memory on folders of large photos while keeping enough decoded images queued for the model
    reading: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(READ_AHEAD))
    folder: "RescannableFolder | None" = None  # set once the live walk is mounted
    _warming: set[str] = field(default_factory=set)

    @property
    def embedder(self) -> Embedder:
        """The embedder of the model that answers searches."""
        return next(iter(self.slots.values())).embedder

    def request_rescan(self) -> None:
        """Walk the whole folder again soon (safe from any thread)."""
        if self.folder is not None:
            self.folder.request_rescan()

    def warm_up(self, embedder: Embedder) -> None:
        """Load an image tower in the background as soon as there is work for it, so importing
        torch and reading weights overlap with decoding the first files instead of delaying them."""
        if embedder.name not in self._warming:
            self._warming.add(embedder.name)
            threading.Thread(target=embedder.vision_tower, name="load-image-tower", daemon=True).start()


class RescannableFolder:
    """The live folder view, plus the symlinks that lead nowhere, plus a full rescan on request.

    Every scan (the first, the hourly ones, and those on request) lists the folder through
    `__aiter__`, so unreachable links (see `flows.walk`) get their error rows at each of them.

    Files that change while the database is away fail and are not remembered, but the watcher
    only sees a file again when it changes. When the database comes back the runtime asks for a
    rescan, which picks them up at once instead of at the next hourly rescan; unchanged files
    cost a stat each.
    """

    def __init__(self, inner: coco.LiveMapView[str, localfs.File], root: Path) -> None:
        self._inner = inner
        self._root = root
        self._wanted: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._watching: asyncio.Task[Any] | None = None

    async def __aiter__(self) -> AsyncIterator[tuple[str, localfs.File]]:
        async for item in self._inner:
            yield item
        base = localfs.FilePath(base_dir=IMAGE_ROOT)
        for rel in await asyncio.to_thread(lambda: list(unreachable_links(self._root, ImageFileMatcher()))):
            yield rel.as_posix(), localfs.File(base / rel.as_posix())

    async def watch(self, subscriber: coco.LiveMapSubscriber[str, localfs.File]) -> None:
        self._loop = asyncio.get_running_loop()
        self._watching = asyncio.current_task()
        self._wanted = asyncio.Event()
        wanted = self._wanted

        async def rescans() -> None:
            while True:
                await wanted.wait()
                wanted.clear()
                await subscriber.update_all()

        task = asyncio.create_task(rescans())
        try:
            await self._inner.watch(subscriber)
        finally:
            task.cancel()

    def request_rescan(self) -> None:
        if self._loop is not None and self._wanted is not None:
            self._loop.call_soon_threadsafe(self._wanted.set)

    def stop_watching(self) -> None:
        """End the live watch. Leaving the runtime does not end it, and a watcher that outlives its
        environment would keep reacting to files with errors."""
        if self._loop is not None and self._watching is not None:
            self._loop.call_soon_threadsafe(self._watching.cancel)


async def report_failure(exc: BaseException, context: coco.ExceptionContext) -> None:
    """A file whose processing raised: one line while the database is away (the rescan after it
    comes back retries the file), a traceback for anything else (a bug worth reporting)."""
    if isinstance(exc, DatabaseUnavailable) or looks_like_outage(exc):
        log.debug("%s: %s", context.stable_path, exc)
    else:
        log.error("indexing %s failed: %s", context.stable_path, exc, exc_info=exc)


def image_id(path: str) -> int:
    """A stable id for a relative path: 53 bits, so it survives JavaScript's numbers intact."""
    return int.from_bytes(hashlib.sha256(path.encode()).digest()[:8], "big") >> 11


def make_batched_embed(embedder: Embedder, batch_size: int) -> Callable[[np.ndarray], Awaitable[np.ndarray]]:
    """`await embed(pixels)` one image at a time; CocoIndex gathers concurrent calls into batches.

    The runner makes batches run one after another (on CPU as on GPU): without it the engine
    starts a batch in a new thread whenever one fills up, and a dozen concurrent forward passes
    fight over the cores, multiply activation memory and hold back every row until all finish.

    With `batch_size` 0 (auto), up to the GPU's batch size is gathered, and each forward pass takes
    the model's own size (`Embedder.batch_size`): the device is known only once torch is imported,
    which a run with nothing to embed never does.
    """
    gather = batch_size or AUTO_GATHER

    def embed_batch(pixels: list[np.ndarray]) -> list[np.ndarray]:
        step = batch_size or embedder.batch_size
        out: list[np.ndarray] = []
        for start in range(0, len(pixels), step):
            out.extend(embedder.embed_pixels(np.stack(pixels[start : start + step])))
        return out

    return coco.fn.as_async(batching=True, max_batch_size=gather, runner=coco.GPU)(embed_batch)


def _yield_to_the_model() -> None:
    """Run this worker thread at a lower priority than the model's threads (Linux sets niceness per
    thread). Reading and decoding then fill the gaps the model leaves instead of preempting its
    threads mid-operation, which stalls every other thread of the forward pass at its next
    barrier; with nothing else to do, the workers run at full speed all the same."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
    except (AttributeError, OSError):
        pass  # not Linux, or not allowed: plain priority


# file reading, hashing and decoding; the model has its own thread (CocoIndex's runner)
FILE_WORKERS = ThreadPoolExecutor(
    max_workers=max(2, os.cpu_count() or 2), thread_name_prefix="sightline-files", initializer=_yield_to_the_model
)


async def in_file_worker(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    return await asyncio.get_running_loop().run_in_executor(FILE_WORKERS, functools.partial(fn, *args, **kwargs))


def _read_and_hash(path: Path) -> tuple[bytes, str]:
    data = path.read_bytes()
    return data, hashlib.sha256(data).hexdigest()


@coco.fn(memo=True, version=1)
async def describe_file(rel: str, size: int, mtime_ns: int, model: str) -> FileFacts:
    """Read, hash, decode and embed one version of a file. Bad content is a memoised failure;
    an OSError (unreadable right now) propagates so nothing is remembered and it is retried."""
    run = coco.use_context(RUN)
    slot = run.slots[model]
    run.counters.described += 1
    run.warm_up(slot.embedder)
    async with run.reading:
        data, digest = await in_file_worker(_read_and_hash, run.image_root / rel)
        cached = await slot.cache.get(digest)
        try:
            decoded = await in_file_worker(
                decode_image,
                data,
                slot.embedder.preprocessing,
                max_pixels=run.settings.max_image_pixels,
                pixels=cached is None,
            )
        except ImageError as exc:
            return FileFacts(failure=str(exc))
        del data
    if cached is None:
        assert decoded.pixels is not None
        cached = await slot.embed(decoded.pixels)
        run.counters.embedded += 1  # before the write, which may fail: the call was made
        await slot.cache.put(digest, cached)
    else:
        run.counters.reused += 1
    return FileFacts(
        content_hash=digest,
        width=decoded.width,
        height=decoded.height,
        format=decoded.format,
        taken_at=decoded.taken_at,
        camera=decoded.camera,
        embedding=cached.astype(np.float32).tobytes(),
    )


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return path.lstat()
    except OSError:
        return None


@coco.fn
async def index_file(
    file: localfs.File,
    tables: tuple[tuple[str, postgres.TableTarget[ImageRow]], ...],
    errors: postgres.TableTarget[ErrorRow],
) -> None:
    """Declare this file's row in each model's table, or its error row."""
    run = coco.use_context(RUN)
    rel = file.file_path.path.as_posix()
    full = run.image_root / rel
    try:
        stat = full.stat()
        real = full.resolve(strict=True)
    except (OSError, RuntimeError):  # RuntimeError: Python 3.11's resolve() on a symlink loop
        dead_link = unreachable_link_reason(full)
        if dead_link is not None and (link := _lstat(full)) is not None:
            modified = datetime.fromtimestamp(link.st_mtime_ns / 1e9, tz=UTC)
            errors.declare_row(row=ErrorRow(path=rel, reason=dead_link, size=link.st_size, modified_at=modified))
        return  # otherwise gone since the scan: its delete event follows
    modified = datetime.fromtimestamp(stat.st_mtime_ns / 1e9, tz=UTC)

    def fail(reason: str) -> None:
        errors.declare_row(row=ErrorRow(path=rel, reason=reason, size=stat.st_size, modified_at=modified))

    if not real.is_relative_to(run.image_root):
        fail("leads outside IMAGE_DIR through a symlink: not indexed and never served (copy the file in instead)")
        return
    for model, images in tables:
        try:
            facts = await describe_file(rel, stat.st_size, stat.st_mtime_ns, model)
        except OSError as exc:
            if isinstance(exc, FileNotFoundError) and not os.path.lexists(full):
                return  # deleted while it was read: nothing to record, its delete event follows
            fail(f"cannot read the file ({exc.strerror or first_line(exc)}); it is retried on the next change or run")
            return
        if facts.failure is not None:
            fail(facts.failure)  # the content is bad for every model: no row in any table
            return
        images.declare_row(
            row=ImageRow(
                path=rel,
                id=image_id(rel),
                content_hash=facts.content_hash,
                size=stat.st_size,
                modified_at=modified,
                width=facts.width,
                height=facts.height,
                format=facts.format,
                taken_at=facts.taken_at,
                camera=facts.camera,
                model=model,
                embedding=np.frombuffer(facts.embedding, dtype=np.float32),
            )
        )


async def images_schema(dim: int) -> postgres.TableSchema[ImageRow]:
    return await postgres.TableSchema.from_class(
        ImageRow,
        primary_key=["path"],
        column_overrides={
            "taken_at": postgres.PgType("timestamp without time zone"),
            "embedding": VectorSchema(dtype=np.dtype(np.float32), size=dim),
        },
    )


@coco.fn
async def index_folder() -> None:
    run = coco.use_context(RUN)
    tables = []
    for name, slot in run.slots.items():
        images = await postgres.mount_table_target(
            PG_POOL, table_name=slot.table, table_schema=await images_schema(slot.embedder.dim)
        )
        images.declare_vector_index(column="embedding", metric="cosine", method="hnsw", m=16, ef_construction=64)
        for column in ("id", "content_hash"):
            unique = "UNIQUE " if column == "id" else ""
            index = f"{slot.table}_{column}_idx"
            images.declare_sql_command_attachment(
                name=f"{column}_index",
                setup_sql=f"CREATE {unique}INDEX IF NOT EXISTS {index} ON {slot.table} ({column})",
                teardown_sql=f"DROP INDEX IF EXISTS {index}",
            )
        tables.append((name, images))
    errors = await postgres.mount_table_target(
        PG_POOL,
        table_name=ERRORS_TABLE,
        table_schema=await postgres.TableSchema.from_class(ErrorRow, primary_key=["path"]),
    )
    walk = localfs.walk_dir(IMAGE_ROOT, recursive=True, path_matcher=ImageFileMatcher(), live=True)
    run.folder = RescannableFolder(walk.items(), run.image_root)  # type: ignore[arg-type]
    async with coco.exception_handler(report_failure):
        await coco.mount_each(index_file, run.folder, tuple(tables), errors)


app = coco.App(coco.AppConfig(name="sightline"), index_folder)
