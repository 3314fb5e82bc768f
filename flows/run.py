"""One indexing run's shared state, provided once per process through the CocoIndex context: the
models it embeds with and where their rows go, the library, the counters, and the limits on how many
files are read and how many crops wait for the model at once.

It sits below `flows.describe` (one file) and `flows.indexer` (the app), which both use it.
"""

import asyncio
import gc
import os
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import asyncpg
import cocoindex as coco
import numpy as np

from core.media.library import Library
from core.memory import give_back
from core.models.embedder import Embedder
from core.settings import Settings
from core.store.model_state import ModelChoice
from flows.cache import EmbeddingCache
from flows.folders import LibraryView
from flows.pairing import Siblings

# files in hand at once, across the buckets being indexed (`flows.indexer`): what CocoIndex's own limit
# on components in flight held when each file was a component
FILES_IN_HAND = 1024
# files read and decoded at once: enough to keep every core decoding ahead of the model
READ_AHEAD = max(16, 2 * (os.cpu_count() or 1))
AUTO_GATHER = 128  # the most images one gathered batch holds when BATCH_SIZE is auto
# decoded pictures (and video frames) waiting for the model or in it: two of the largest gathered
# batches, so one fills while the other runs; model-sized crops, about 40 MB at 224 px
MODEL_QUEUE = 2 * AUTO_GATHER
PG_POOL = coco.ContextKey[asyncpg.Pool]("sightline_pg_pool")
RUN = coco.ContextKey["IndexRun"]("sightline_index_run")
T = TypeVar("T")


@dataclass
class IndexCounters:
    described: int = 0  # new or changed file versions looked at (memo misses)
    embedded: int = 0  # images that went through the model
    reused: int = 0  # images whose embedding came from the content-hash cache


class InFlight:
    """The files an engine has in hand and the model calls it started: what stopping it waits for
    (`flows.stopping`), so that the next engine never starts on a file this one still holds, and
    a model call once made is never made again."""

    def __init__(self) -> None:
        self.files = 0
        self._calls: set[asyncio.Task[Any]] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    @contextmanager
    def file(self) -> Iterator[None]:
        self.files += 1
        self._idle.clear()
        try:
            yield
        finally:
            self.files -= 1
            self._settle()

    async def finish(self, call: Coroutine[Any, Any, T]) -> T:
        """`call` run to its end even when the file waiting for it is cancelled (its engine
        stopping): a model call started delivers its embedding to the cache all the same."""
        task = asyncio.ensure_future(call)
        self._calls.add(task)
        self._idle.clear()
        task.add_done_callback(self._done)
        return await asyncio.shield(task)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._calls.discard(task)
        if not task.cancelled():
            task.exception()  # raised to the file waiting for it, if any is left: not unhandled
        self._settle()

    def _settle(self) -> None:
        if self.files == 0 and not self._calls:
            self._idle.set()

    async def idle(self) -> None:
        await self._idle.wait()


@dataclass
class FileCounts:
    """Files seen by this engine start (CocoIndex's statistics count buckets, not files)."""

    done: int = 0  # files whose rows, or error row, this start declared
    in_hand: int = 0
    failed: int = 0  # files whose indexing raised (an error row says why)
    removed: int = 0  # files whose rows went with the file


@dataclass
class ModelSlot:
    """One model the indexer embeds with, and where its rows go."""

    embedder: Embedder
    cache: EmbeddingCache
    embed: Callable[[np.ndarray], Awaitable[np.ndarray]]
    table: str

    @property
    def frames_table(self) -> str:
        return f"{self.table}_frames"


@dataclass
class IndexRun:
    """Everything a component needs, provided once per process through the CocoIndex context.

    `slots` holds the model that answers searches first and, while a new model is being built
    beside it, that one second: new files go into both, so neither falls behind.
    """

    settings: Settings
    slots: dict[str, ModelSlot]
    library: Library
    choice: ModelChoice  # as it was when this run started
    database_url: str = ""
    live: bool = False  # following the folder (else one update, which arms no file watcher)
    counters: IndexCounters = field(default_factory=IndexCounters)
    files: FileCounts = field(default_factory=FileCounts)
    # files in hand across buckets (`FILES_IN_HAND`); taken in a bucket's order, so buckets finish,
    # and their rows commit, one after another rather than all at the end
    file_slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(FILES_IN_HAND))
    taking_slots: asyncio.Lock = field(default_factory=asyncio.Lock)  # a bucket takes its slots at once
    # files being read and decoded at once: their bytes are in memory until decoded, so this bounds
    # memory on folders of large photos
    reading: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(READ_AHEAD))
    # crops queued for the model, apart from `reading`: a file waiting for its batch holds no bytes,
    # and while it held a reading place the model saw batches of half of READ_AHEAD at most
    queued: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(MODEL_QUEUE))
    folder: LibraryView | None = None  # set once the live walk is mounted
    in_flight: InFlight = field(default_factory=InFlight)
    siblings: Siblings = field(default_factory=Siblings)
    _warming: set[str] = field(default_factory=set)

    @property
    def embedder(self) -> Embedder:
        """The embedder of the model that answers searches."""
        return next(iter(self.slots.values())).embedder

    def let_go_of_models(self) -> None:
        """Unload the models' weights (a one-shot update, done embedding) and give their memory back:
        the passes after it need it more (at most 1.5 GB for the whole, issue 29)."""
        for slot in self.slots.values():
            slot.embedder.unload()
        give_back()

    async def embed(self, slot: ModelSlot, pixels: np.ndarray) -> np.ndarray:
        """One crop through `slot`'s model, in whichever batch it lands in."""
        async with self.queued:
            return await slot.embed(pixels)

    def warm_up(self, embedder: Embedder) -> None:
        """Load an image tower in the background as soon as there is work for it, so importing
        torch and reading weights overlap with decoding the first files instead of delaying them."""
        if embedder.name not in self._warming:
            self._warming.add(embedder.name)
            threading.Thread(target=embedder.vision_tower, name="load-image-tower", daemon=True).start()


def collect_less() -> None:
    """Python's cycle collector, tuned for an indexer: what start-up made (the engine, the models'
    libraries) is frozen out of its walks, and the youngest objects are collected after 20,000
    allocations instead of 700. A scan allocates a few objects per row in flight, most of them
    freed by their reference counts; with the defaults the collector took a tenth of the event
    loop's time walking the same live objects. Process-wide, and idempotent."""
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)


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
