"""Embeddings by content hash and model, so a renamed or copied file never runs the model again.

CocoIndex memoises per file path; this cache is what makes identical bytes under a new path cheap.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

import asyncpg
import numpy as np

from core.errors import Unavailable

T = TypeVar("T")
K = TypeVar("K")
A = TypeVar("A")
V = TypeVar("V")

# What asyncpg raises when the server is away (refused, socket gone, shutting down, pool closed).
# Several are OSError subclasses, which the indexer would otherwise take for an unreadable file.
_CONNECTION_ERRORS = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,
)


class DatabaseUnavailable(Unavailable):
    """The database could not be reached; the file is retried once it is back."""


async def database_call(call: Callable[[], Awaitable[T]]) -> T:
    try:
        return await call()
    except _CONNECTION_ERRORS as exc:
        raise DatabaseUnavailable(f"database unreachable ({type(exc).__name__}: {exc})") from exc
    except asyncpg.exceptions.DiskFullError as exc:
        raise DatabaseUnavailable(f"the database's disk is full ({exc})") from exc


class Coalesced(Generic[K, A, V]):
    """`await call(key, arg)` one file at a time; the calls that arrive while one query is in flight
    go together in the next, so a scan makes one round trip for many files instead of one each
    (each also resets its pooled connection). A lone call still goes at once. `many` gets the
    waiting keys with their arguments and returns a value for each (a missing key reads as None);
    what it raises, every waiter raises. Callers of one key share its answer."""

    def __init__(self, many: Callable[[dict[K, A]], Awaitable[dict[K, V]]]) -> None:
        self._many = many
        self._waiting: dict[K, tuple[A, asyncio.Future[V | None]]] = {}
        self._drain: asyncio.Task[None] | None = None

    async def __call__(self, key: K, arg: A) -> V | None:
        entry = self._waiting.get(key)
        if entry is None:
            future: asyncio.Future[V | None] = asyncio.get_running_loop().create_future()
            future.add_done_callback(_retrieved)
            entry = self._waiting[key] = (arg, future)
            if self._drain is None:
                self._drain = asyncio.get_running_loop().create_task(self._run())
        # a caller given up on (its component cancelled) leaves the others their answer
        return await asyncio.shield(entry[1])

    async def _run(self) -> None:
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, {}
                try:
                    values = await self._many({k: arg for k, (arg, _) in batch.items()})
                except BaseException as exc:
                    for _, future in batch.values():
                        if not future.done():
                            future.set_exception(exc)
                    if not isinstance(exc, Exception):
                        raise
                    continue
                for k, (_, future) in batch.items():
                    if not future.done():
                        future.set_result(values.get(k))
        finally:
            self._drain = None


def _retrieved(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()  # an answer nobody waits for any more is not an unhandled error


# Embeddings computed but not yet in the table, by (model, content hash). A database that goes away
# between the model call and the write would otherwise cost that model call again after the
# restart; kept for the process's lifetime, bounded (a few MB), and written out at the next use.
UNSAVED_MAX = 10_000
_unsaved: dict[tuple[str, str], bytes] = {}


class EmbeddingCache:
    """Lookups and writes one file at a time, made in batches (`Coalesced`)."""

    def __init__(self, pool: asyncpg.Pool, model: str) -> None:
        self._pool = pool
        self._model = model
        self._lookups: Coalesced[str, None, bytes] = Coalesced(self._fetch_many)
        self._writes: Coalesced[str, bytes, None] = Coalesced(self._write_many)
        self._hit_rate = 0.0  # of the recent lookups, decaying

    @property
    def mostly_hits(self) -> bool:
        """Whether most recent lookups found their embedding (a rebuild, a model whose embeddings
        a GPU computed): then reading a file's header before the lookup saves a trip."""
        return self._hit_rate > 0.5

    async def get(self, content_hash: str) -> np.ndarray | None:
        pending = _unsaved.get((self._model, content_hash))
        if pending is not None:
            await self._writes(content_hash, pending)
            return np.frombuffer(pending, dtype=np.float32).copy()
        raw = await self._lookups(content_hash, None)
        self._hit_rate = 0.9 * self._hit_rate + (0.1 if raw is not None else 0.0)
        return None if raw is None else np.frombuffer(raw, dtype=np.float32).copy()

    def keep(self, content_hash: str, embedding: np.ndarray) -> bytes:
        """Hold an embedding in memory until it is written (at once: nothing can stop this)."""
        raw = embedding.astype(np.float32).tobytes()
        if len(_unsaved) >= UNSAVED_MAX:
            del _unsaved[next(iter(_unsaved))]
        _unsaved[(self._model, content_hash)] = raw
        return raw

    async def put(self, content_hash: str, embedding: np.ndarray) -> None:
        await self._writes(content_hash, self.keep(content_hash, embedding))

    async def _fetch_many(self, wanted: dict[str, None]) -> dict[str, bytes]:
        rows = await database_call(
            lambda: self._pool.fetch(
                "SELECT content_hash, embedding FROM embedding_cache "
                "WHERE model = $1 AND content_hash = ANY($2::text[])",
                self._model,
                list(wanted),
            )
        )
        return {r["content_hash"]: r["embedding"] for r in rows}

    async def _write_many(self, rows: dict[str, bytes]) -> dict[str, None]:
        await database_call(
            lambda: self._pool.execute(
                "INSERT INTO embedding_cache (model, content_hash, embedding) "
                "SELECT $1, h, e FROM unnest($2::text[], $3::bytea[]) AS r(h, e) "
                "ON CONFLICT (model, content_hash) DO NOTHING",
                self._model,
                list(rows),
                list(rows.values()),
            )
        )
        for content_hash in rows:
            _unsaved.pop((self._model, content_hash), None)
        return {}

    async def get_frames(self, content_hash: str, dim: int) -> tuple[np.ndarray, np.ndarray] | None:
        """A video's frames: (seconds, N × dim embeddings), or None when not cached.

        A video's entry holds one row per sampled frame, its second first, then its embedding:
        videos and pictures share the one cache, keyed, pruned and forgotten the same way."""
        flat = await self.get(content_hash)
        if flat is None or flat.size % (dim + 1):
            return None
        rows = flat.reshape(-1, dim + 1)
        return rows[:, 0].astype(np.float64), np.ascontiguousarray(rows[:, 1:])

    def keep_frames(self, content_hash: str, seconds: np.ndarray, embeddings: np.ndarray) -> np.ndarray:
        rows = np.concatenate([np.asarray(seconds, dtype=np.float32)[:, None], embeddings.astype(np.float32)], axis=1)
        flat = rows.reshape(-1)
        self.keep(content_hash, flat)
        return flat

    async def put_frames(self, content_hash: str, seconds: np.ndarray, embeddings: np.ndarray) -> None:
        await self.put(content_hash, self.keep_frames(content_hash, seconds, embeddings))
