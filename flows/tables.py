"""The tables the indexer fills: a row per picture or video in each model's table, a row per sampled
frame of a video in its frames table, a row per file that could not be indexed in `index_errors`;
their schemas, and the indexes declared over them (built by CocoIndex once the first scan's rows
are in: an HNSW graph built over the rows takes a sixth of the time of one grown a row at a time).
"""

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import cocoindex as coco
import numpy as np
from cocoindex.connectors import postgres
from numpy.typing import NDArray

from core.media.places import place_names_index_sql
from core.store.db import ERRORS_TABLE, keep_rows_inline_sql, rows_kept_inline
from core.store.text_index import item_index_sql, item_index_teardown_sql
from core.store.vector_features import VectorFeatures, parse_version
from core.store.vector_index import M, halfvec_index_sql, index_name, path_prefix_index_sql
from flows.run import PG_POOL, IndexRun
from flows.vectors import vector_type

log = logging.getLogger("sightline.indexer")


@dataclass
class ImageRow:
    path: str  # the library key (`core.media.library`): relative to IMAGE_DIR, '/'-separated
    id: int  # stable for a path; what clients use
    kind: str  # picture | video
    content_hash: str  # sha256 of the bytes
    size: int
    modified_at: datetime
    width: int  # as displayed, after EXIF orientation
    height: int
    format: str
    taken_at: datetime | None  # EXIF date taken, or a video's creation date (camera local time); else Takeout's (UTC)
    camera: str | None
    latitude: float | None
    longitude: float | None
    keywords: list[str]  # XMP/IPTC keywords, embedded or from an .xmp sidecar; the people a Takeout JSON names
    title: str | None
    description: str | None
    search_words: str  # the names, keywords, title and description, as text search reads them
    rating: int | None
    duration: float | None  # videos, seconds
    poster_at: float | None  # videos: the second of the frame shown for it
    original: str | None  # the key of the RAW this still came with
    motion: str | None  # the key of a Live Photo's video
    place_locality: str | None  # where, from the GPS position (`core.media.places`)
    place_city: str | None
    place_region: str | None
    place_country: str | None
    place_code: str | None  # the country's ISO 3166 code
    model: str
    embedding: NDArray[np.float32]


@dataclass
class FrameRow:
    """One sampled frame of a video: a search matches a video through its best frame."""

    path: str
    frame: int  # its place among the sampled frames (a float second cannot be part of a key)
    second: float
    id: int  # the video's id
    model: str
    embedding: NDArray[np.float32]


@dataclass
class ErrorRow:
    path: str
    reason: str
    size: int
    modified_at: datetime


Tables = tuple[tuple[str, postgres.TableTarget[ImageRow], postgres.TableTarget[FrameRow]], ...]


async def images_schema(dim: int) -> postgres.TableSchema[ImageRow]:
    return await postgres.TableSchema.from_class(
        ImageRow,
        primary_key=["path"],
        column_overrides={
            "taken_at": postgres.PgType("timestamp without time zone"),
            "keywords": postgres.PgType("text[]"),
            "embedding": vector_type(dim),
        },
    )


async def frames_schema(dim: int) -> postgres.TableSchema[FrameRow]:
    return await postgres.TableSchema.from_class(
        FrameRow,
        primary_key=["path", "frame"],
        column_overrides={"embedding": vector_type(dim)},
    )


def _index_on(target: Any, table: str, column: str, unique: bool = False) -> None:
    index = f"{table}_{column}_idx"
    target.declare_sql_command_attachment(
        name=f"{column}_index",
        setup_sql=f"CREATE {'UNIQUE ' if unique else ''}INDEX IF NOT EXISTS {index} ON {table} ({column})",
        teardown_sql=f"DROP INDEX IF EXISTS {index}",
    )


def _vector_index(target: Any, table: str, dim: int, halfvec: bool, ef_construction: int) -> None:
    """HNSW on the embedding cast to halfvec where pgvector has it (half the memory; the table keeps
    float32 for exact ranking, `core.store.vector_index`), else on the vector column. Declaring one
    removes the other, so a server upgraded to pgvector 0.7+ gets its index rebuilt as halfvec."""
    if halfvec:
        target.declare_sql_command_attachment(
            name="embedding_halfvec_index",
            setup_sql=halfvec_index_sql(table, dim, M, ef_construction),
            teardown_sql=f"DROP INDEX IF EXISTS {index_name(table)}",
        )
    else:
        target.declare_vector_index(
            column="embedding", metric="cosine", method="hnsw", m=M, ef_construction=ef_construction
        )


async def _keep_rows_inline(table: str) -> None:
    """The table's rows, embedding and all, in their own pages (`core.store.db.INLINE_ROWS`): set
    once the table exists, before its first row; a table made by an older release keeps the rows
    it has where they are and writes its new ones inline."""
    pool = coco.use_context(PG_POOL)
    options = await pool.fetchval("SELECT reloptions FROM pg_class WHERE oid = to_regclass($1)", table)
    if rows_kept_inline(options):
        return
    try:
        await pool.execute(keep_rows_inline_sql(table))
    except asyncpg.InsufficientPrivilegeError as exc:  # only its owner may: another role made it
        log.info("%s keeps its storage: %s", table, exc)


async def mount_tables(run: IndexRun, versions: dict[str, Any]) -> tuple[Tables, postgres.TableTarget[ErrorRow]]:
    """Each model's tables with their indexes, and `index_errors`; `versions`: the server's
    extensions and their versions."""
    version = versions.get("vector")
    halfvec = version is not None and VectorFeatures(parse_version(str(version))).halfvec
    tables = []
    for name, slot in run.slots.items():
        dim = slot.embedder.dim
        images = await postgres.mount_table_target(
            PG_POOL, table_name=slot.table, table_schema=await images_schema(dim)
        )
        await _keep_rows_inline(slot.table)
        _vector_index(images, slot.table, dim, halfvec, run.settings.hnsw_ef_construction)
        _index_on(images, slot.table, "id", unique=True)
        _index_on(images, slot.table, "content_hash")
        images.declare_sql_command_attachment(
            name="path_prefix_index",
            setup_sql=path_prefix_index_sql(slot.table),
            teardown_sql=f"DROP INDEX IF EXISTS {slot.table}_path_prefix_idx",
        )
        images.declare_sql_command_attachment(
            name="places_index",
            setup_sql=place_names_index_sql(slot.table),
            teardown_sql=f"DROP INDEX IF EXISTS {slot.table}_places_idx",
        )
        images.declare_sql_command_attachment(
            name="words_index",
            setup_sql=item_index_sql(slot.table, trigram="pg_trgm" in versions),
            teardown_sql=item_index_teardown_sql(slot.table),
        )
        frames = await postgres.mount_table_target(
            PG_POOL, table_name=slot.frames_table, table_schema=await frames_schema(dim)
        )
        await _keep_rows_inline(slot.frames_table)
        _vector_index(frames, slot.frames_table, dim, halfvec, run.settings.hnsw_ef_construction)
        _index_on(frames, slot.frames_table, "id")
        tables.append((name, images, frames))
    errors = await postgres.mount_table_target(
        PG_POOL,
        table_name=ERRORS_TABLE,
        table_schema=await postgres.TableSchema.from_class(ErrorRow, primary_key=["path"]),
    )
    return tuple(tables), errors
