"""The CocoIndex app: every picture or video under IMAGE_DIR declares one row in each model's
table (a video also one row per sampled frame), or one row in `index_errors` saying why it could
not be indexed; a RAW or a Live Photo's motion beside its still declares nothing of its own
(`flows.pairing`).

Files are indexed in buckets (`flows.folders.bucket_of`): each bucket of files is a processing
component, which declares the rows of all its files. The engine diffs what a component declares
against its last run, so added, changed, renamed and deleted files become inserts, updates and
deletes, and a fixed or removed bad file loses its error row by itself. A component per file cost
the engine about 0.4 ms of CPU per file, more than the rest of writing a row; a bucket pays it once
for its files, and a bucket whose files did not change costs a memo lookup per file.

The expensive part, `flows.describe.describe_file`, is memoised on (path, size, mtime, model): an
unchanged file is never read again. Inside it, the embedding cache keyed by content hash catches
renamed and copied files, and the model runs in batches off the event loop.
"""

import asyncio
import hashlib
import logging
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cocoindex as coco
import numpy as np
from cocoindex.connectors import postgres
from numpy.typing import NDArray

from core.errors import first_line
from core.media.library import kind_of
from core.media.places import place_names_index_sql
from core.store import folder_survey
from core.store.db import ERRORS_TABLE, connect
from core.store.text_index import item_index_sql, item_index_teardown_sql, item_words
from core.store.vector_features import VectorFeatures, parse_version
from core.store.vector_index import EF_CONSTRUCTION, M, halfvec_index_sql, index_name, path_prefix_index_sql
from flows.cache import DatabaseUnavailable
from flows.describe import describe_file, merge_sidecar, place_of, read_sidecar, read_takeout, video_length
from flows.folders import LibraryView, watch_mode
from flows.pairing import companions_of, still_of
from flows.recovery import looks_like_outage
from flows.run import PG_POOL, RUN, IndexRun, collect_less
from flows.unchanged import RETRIED_ON_NEXT_RUN
from flows.vectors import vector_type
from flows.walk import unreachable_link_reason

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


def _is_outage(exc: BaseException) -> bool:
    return isinstance(exc, DatabaseUnavailable) or looks_like_outage(exc)


async def report_failure(exc: BaseException, context: coco.ExceptionContext) -> None:
    """A bucket whose processing raised: one line while the database is away (the rescan after it
    comes back retries its files), a traceback for anything else (a bug worth reporting)."""
    if _is_outage(exc):
        log.debug("%s: %s", context.stable_path, exc)
    else:
        log.error("indexing %s failed: %s", context.stable_path, exc, exc_info=exc)


def image_id(path: str) -> int:
    """A stable id for a relative path: 53 bits, so it survives JavaScript's numbers intact."""
    return int.from_bytes(hashlib.sha256(path.encode()).digest()[:8], "big") >> 11


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return path.lstat()
    except OSError:
        return None


Tables = tuple[tuple[str, postgres.TableTarget[ImageRow], postgres.TableTarget[FrameRow]], ...]


@coco.fn
async def index_bucket(keys: tuple[str, ...], tables: Tables, errors: postgres.TableTarget[ErrorRow]) -> None:
    """Declare the rows of a bucket's files (`index_file`), several at a time.

    A file that raises gets an error row and the others their rows, as when each file was a
    component of its own; only the database going away fails the whole bucket, which is then
    retried whole (its files' previous rows stay until then)."""
    run = coco.use_context(RUN)
    seen = coco.use_state("files", ())  # the bucket's files at its last run: which ones went
    run.files.removed += len(set(seen.value) - set(keys))
    seen.value = keys
    outages: list[Exception] = []

    async def one(key: str) -> None:
        run.files.in_hand += 1
        try:
            await index_file(key, tables, errors)
        except Exception as exc:
            if _is_outage(exc):
                outages.append(exc)
            else:
                run.files.failed += 1
                log.error("indexing %s failed: %s", key, exc, exc_info=exc)
                _declare_failure(key, errors, f"indexing failed ({first_line(exc)}); {RETRIED_ON_NEXT_RUN}")
        finally:
            run.files.in_hand -= 1
            run.files.done += 1
            run.file_slots.release()

    async with asyncio.TaskGroup() as group:
        for key in keys:
            # a slot per file, taken in order: the first buckets finish, and commit, first
            await run.file_slots.acquire()
            group.create_task(one(key))
    if outages:
        raise outages[0]


def _declare_failure(key: str, errors: postgres.TableTarget[ErrorRow], reason: str) -> None:
    full = coco.use_context(RUN).library.path_of(key)
    link = _lstat(full) if full is not None else None
    if link is not None:
        modified = datetime.fromtimestamp(link.st_mtime_ns / 1e9, tz=UTC)
        errors.declare_row(row=ErrorRow(path=key, reason=reason, size=link.st_size, modified_at=modified))


async def index_file(key: str, tables: Tables, errors: postgres.TableTarget[ErrorRow]) -> None:
    """Declare this file's rows in each model's tables, or its error row, or nothing when it
    belongs to a still beside it."""
    run = coco.use_context(RUN)
    with run.in_flight.file():  # what stopping the engine waits for
        await _declare_rows(run, key, tables, errors)


async def _declare_rows(run: IndexRun, key: str, tables: Tables, errors: postgres.TableTarget[ErrorRow]) -> None:
    full = run.library.path_of(key)
    if full is None:
        return  # a folder no longer in IMAGE_DIR: its rows go
    try:
        stat = full.stat()
        real = full.resolve(strict=True)
    except (OSError, RuntimeError):  # RuntimeError: Python 3.11's resolve() on a symlink loop
        dead_link = unreachable_link_reason(full)
        if dead_link is not None and (link := _lstat(full)) is not None:
            modified = datetime.fromtimestamp(link.st_mtime_ns / 1e9, tz=UTC)
            errors.declare_row(row=ErrorRow(path=key, reason=dead_link, size=link.st_size, modified_at=modified))
        return  # otherwise gone since the scan: its delete event follows
    modified = datetime.fromtimestamp(stat.st_mtime_ns / 1e9, tz=UTC)

    def fail(reason: str) -> None:
        errors.declare_row(row=ErrorRow(path=key, reason=reason, size=stat.st_size, modified_at=modified))

    located = run.library.locate(key)
    assert located is not None
    if not real.is_relative_to(located[0].path):
        fail("leads outside IMAGE_DIR through a symlink: not indexed and never served (copy the file in instead)")
        return
    pairing = run.siblings.of(full)
    group = pairing.group

    async def seconds_of(name: str) -> float | None:
        sibling = full.with_name(name)
        try:
            st = sibling.stat()
        except OSError:
            return None
        return await video_length(run.library.sibling_key(key, name), st.st_size, st.st_mtime_ns)

    lengths = {n: await seconds_of(n) for n in group.names if kind_of(n) == "video" and len(group.names) > 1}
    if still_of(full.name, group, lambda: lengths.get(full.name)) is not None:
        return  # part of the still beside it, which lists it
    companions = companions_of(full.name, group, lengths.get)
    sidecar = await _sidecar_facts(run, key, full, pairing.sidecar, read_sidecar)
    takeout = await _sidecar_facts(run, key, full, pairing.takeout, read_takeout)
    for model, images, frames in tables:
        try:
            facts = await describe_file(key, stat.st_size, stat.st_mtime_ns, model)
        except OSError as exc:
            if isinstance(exc, FileNotFoundError) and not os.path.lexists(full):
                return  # deleted while it was read: nothing to record, its delete event follows
            fail(f"cannot read the file ({exc.strerror or first_line(exc)}); {RETRIED_ON_NEXT_RUN}")
            return
        if facts.failure is not None:
            fail(facts.failure)  # the content is bad for every model: no row in any table
            return
        merged = merge_sidecar(facts, sidecar, takeout)
        place = await place_of(merged)
        item_id = image_id(key)
        images.declare_row(
            row=ImageRow(
                path=key,
                id=item_id,
                kind=facts.kind,
                content_hash=facts.content_hash,
                size=stat.st_size,
                modified_at=modified,
                width=facts.width,
                height=facts.height,
                format=facts.format,
                taken_at=merged.taken_at,
                camera=facts.camera,
                latitude=merged.latitude,
                longitude=merged.longitude,
                keywords=list(merged.keywords),
                title=merged.title,
                description=merged.description,
                search_words=item_words(key, merged.keywords, merged.title, merged.description),
                rating=merged.rating,
                duration=facts.duration,
                poster_at=facts.poster_at,
                original=None if companions.original is None else run.library.sibling_key(key, companions.original),
                motion=None if companions.motion is None else run.library.sibling_key(key, companions.motion),
                place_locality=place.locality if place else None,
                place_city=place.city if place else None,
                place_region=place.region if place else None,
                place_country=place.country if place else None,
                place_code=place.country_code if place else None,
                model=model,
                embedding=np.frombuffer(facts.embedding, dtype=np.float32),
            )
        )
        if facts.frames:
            vectors = np.frombuffer(facts.frames, dtype=np.float32).reshape(len(facts.frame_seconds), -1)
            for n, (second, vector) in enumerate(zip(facts.frame_seconds, vectors)):
                row = FrameRow(path=key, frame=n, second=second, id=item_id, model=model, embedding=vector)
                frames.declare_row(row=row)


async def _sidecar_facts(run: IndexRun, key: str, full: Path, name: str | None, read: Any) -> Any:
    """What the sidecar `name` beside the file says (an `.xmp` or a Takeout JSON), through its `read`
    (memoised on the sidecar's own size and mtime, so editing it updates the row)."""
    if name is None:
        return None
    try:
        st = full.with_name(name).stat()
    except OSError:
        return None
    return await read(run.library.sibling_key(key, name), st.st_size, st.st_mtime_ns)


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


def _vector_index(target: Any, table: str, dim: int, halfvec: bool) -> None:
    """HNSW on the embedding cast to halfvec where pgvector has it (half the memory; the table keeps
    float32 for exact ranking, `core.store.vector_index`), else on the vector column. Declaring one
    removes the other, so a server upgraded to pgvector 0.7+ gets its index rebuilt as halfvec."""
    if halfvec:
        target.declare_sql_command_attachment(
            name="embedding_halfvec_index",
            setup_sql=halfvec_index_sql(table, dim),
            teardown_sql=f"DROP INDEX IF EXISTS {index_name(table)}",
        )
    else:
        target.declare_vector_index(
            column="embedding", metric="cosine", method="hnsw", m=M, ef_construction=EF_CONSTRUCTION
        )


@coco.fn
async def index_folder() -> None:
    collect_less()
    run = coco.use_context(RUN)
    versions = dict(await coco.use_context(PG_POOL).fetch("SELECT extname, extversion FROM pg_extension"))
    version = versions.get("vector")
    halfvec = version is not None and VectorFeatures(parse_version(str(version))).halfvec
    tables = []
    for name, slot in run.slots.items():
        dim = slot.embedder.dim
        images = await postgres.mount_table_target(
            PG_POOL, table_name=slot.table, table_schema=await images_schema(dim)
        )
        _vector_index(images, slot.table, dim, halfvec)
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
        _vector_index(frames, slot.frames_table, dim, halfvec)
        _index_on(frames, slot.frames_table, "id")
        tables.append((name, images, frames))
    errors = await postgres.mount_table_target(
        PG_POOL,
        table_name=ERRORS_TABLE,
        table_schema=await postgres.TableSchema.from_class(ErrorRow, primary_key=["path"]),
    )
    modes = {root.label: watch_mode(root.path, run.settings) for root in run.library.roots}

    async def record(surveys: list[folder_survey.FolderSurvey]) -> None:
        def write() -> None:
            with connect(run.database_url) as conn:
                folder_survey.write(conn, surveys)

        try:
            await asyncio.to_thread(write)
        except Exception as exc:  # the database may be away: the next scan writes it again
            log.debug("could not record the folder survey: %s", exc)

    run.folder = LibraryView(run.library, modes, run.settings.scan_interval, record, live=run.live)
    async with coco.exception_handler(report_failure):
        await coco.mount_each(index_bucket, run.folder, tuple(tables), errors)


app = coco.App(coco.AppConfig(name="sightline"), index_folder)
