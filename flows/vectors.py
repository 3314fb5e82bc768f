"""How the indexer's embeddings travel to Postgres: in pgvector's binary form.

CocoIndex's Postgres target sends a vector column as text (`[0.0123...,...]`, about 10 KB for 512
numbers, formatted one float at a time in Python) and keeps that text as the row's value, which it
fingerprints on every declaration. Half the indexer's time per row went there. Declared with
`vector_type`, a column's value is the 2 KB binary form instead, made by one numpy call, and the
connections of the indexer's pool (`register_vector_codec`) pass it through as it is.
"""

from __future__ import annotations

import struct
from typing import Any

import asyncpg
import numpy as np
from cocoindex.connectors import postgres

_VECTOR_TYPE_SCHEMA = (
    "SELECT n.nspname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace "
    "WHERE t.typname = 'vector' ORDER BY n.nspname = current_schema() DESC LIMIT 1"
)


def vector_binary(value: Any) -> bytes:
    """pgvector's binary input: dimensions and a zero (two big-endian 16-bit numbers), then the
    numbers as big-endian float32."""
    array = np.asarray(value, dtype=">f4").reshape(-1)
    return struct.pack(">HH", array.shape[0], 0) + array.tobytes()


def vector_type(dim: int) -> postgres.PgType:
    """The column override for an embedding of `dim` numbers."""
    return postgres.PgType(f"vector({dim})", encoder=vector_binary)


def _encode(value: Any) -> bytes:
    return value if isinstance(value, bytes) else vector_binary(value)


def _decode(data: bytes) -> np.ndarray:
    dim = struct.unpack_from(">HH", data)[0]
    return np.frombuffer(data, dtype=">f4", count=dim, offset=4).astype(np.float32)


async def register_vector_codec(conn: asyncpg.Connection) -> None:
    """Send and receive `vector` values in binary on this connection (the pool's `init`). A server
    without pgvector yet keeps the default; the schema check creates the extension first."""
    schema = await conn.fetchval(_VECTOR_TYPE_SCHEMA)
    if schema is not None:
        await conn.set_type_codec("vector", schema=schema, encoder=_encode, decoder=_decode, format="binary")
