"""Embeddings by content hash and model, so a renamed or copied file never runs the model again.

CocoIndex memoises per file path; this cache is what makes identical bytes under a new path cheap.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg
import numpy as np

from core.errors import Unavailable

T = TypeVar("T")

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


# Embeddings computed but not yet in the table, by (model, content hash). A database that goes away
# between the model call and the write would otherwise cost that model call again after the
# restart; kept for the process's lifetime, bounded (a few MB), and written out at the next use.
UNSAVED_MAX = 10_000
_unsaved: dict[tuple[str, str], bytes] = {}


class EmbeddingCache:
    def __init__(self, pool: asyncpg.Pool, model: str) -> None:
        self._pool = pool
        self._model = model

    async def get(self, content_hash: str) -> np.ndarray | None:
        pending = _unsaved.get((self._model, content_hash))
        if pending is not None:
            await self._write(content_hash, pending)
            return np.frombuffer(pending, dtype=np.float32).copy()
        raw = await database_call(
            lambda: self._pool.fetchval(
                "SELECT embedding FROM embedding_cache WHERE model = $1 AND content_hash = $2",
                self._model,
                content_hash,
            )
        )
        return None if raw is None else np.frombuffer(raw, dtype=np.float32).copy()

    async def put(self, content_hash: str, embedding: np.ndarray) -> None:
        raw = embedding.astype(np.float32).tobytes()
        if len(_unsaved) >= UNSAVED_MAX:
            del _unsaved[next(iter(_unsaved))]
        _unsaved[(self._model, content_hash)] = raw
        await self._write(content_hash, raw)

    async def _write(self, content_hash: str, raw: bytes) -> None:
        await database_call(
            lambda: self._pool.execute(
                "INSERT INTO embedding_cache (model, content_hash, embedding) VALUES ($1, $2, $3) "
                "ON CONFLICT (model, content_hash) DO NOTHING",
                self._model,
                content_hash,
                raw,
            )
        )
        _unsaved.pop((self._model, content_hash), None)

    async def get_frames(self, content_hash: str, dim: int) -> tuple[np.ndarray, np.ndarray] | None:
        """A video's frames: (seconds, N × dim embeddings), or None when not cached.

        A video's entry holds one row per sampled frame, its second first, then its embedding:
        videos and pictures share the one cache, keyed, pruned and forgotten the same way."""
        flat = await self.get(content_hash)
        if flat is None or flat.size % (dim + 1):
            return None
        rows = flat.reshape(-1, dim + 1)
        return rows[:, 0].astype(np.float64), np.ascontiguousarray(rows[:, 1:])

    async def put_frames(self, content_hash: str, seconds: np.ndarray, embeddings: np.ndarray) -> None:
        rows = np.concatenate([np.asarray(seconds, dtype=np.float32)[:, None], embeddings.astype(np.float32)], axis=1)
        await self.put(content_hash, rows.reshape(-1))
