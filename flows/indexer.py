"""The CocoIndex app: every picture or video under IMAGE_DIR declares one row in each model's
table (a video also one row per sampled frame), or one row in `index_errors` saying why it could
not be indexed; a RAW or a Live Photo's motion beside its still declares nothing of its own
(`flows.pairing`).

Files are indexed in buckets (`flows.folders.bucket_of`): each bucket of files is a processing
component, which declares the rows of all its files. The engine diffs what a component declares
against its last run, so added, changed, renamed and deleted files become inserts, updates and
deletes, and a fixed or removed bad file loses its error row by itself.

A bucket remembers the facts of its files (`Remembered`, the component's state): a file whose size
and mtime did not change is never read again. The others are described together
(`flows.describe.describe`): the embedding cache keyed by content hash catches renamed and copied
files, and the model runs in batches off the event loop.

Why buckets, and not a component per file: the engine cost about 0.4 ms of CPU per component and
0.2 ms per memoised call, more than the rest of writing a row; a bucket pays them once for its files
(issue 29, `bench/writes.py`).
"""

import asyncio
import hashlib
import logging
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cocoindex as coco
import numpy as np
from cocoindex.connectors import postgres

from core.errors import first_line
from core.media.library import kind_of
from core.store import folder_survey
from core.store.db import connect
from core.store.text_index import item_words
from flows.cache import DatabaseUnavailable
from flows.describe import (
    FACTS_VERSION,
    FileFacts,
    Wanted,
    describe,
    in_file_worker,
    merge_sidecar,
    place_of,
    read_sidecar,
    read_takeout,
    video_length,
)
from flows.folders import LibraryView, watch_mode
from flows.pairing import Companions, Pairing, companions_of, still_of
from flows.recovery import looks_like_outage
from flows.run import FILES_IN_HAND, PG_POOL, RUN, IndexRun, collect_less
from flows.tables import ErrorRow, FrameRow, ImageRow, Tables, mount_tables
from flows.unchanged import RETRIED_ON_NEXT_RUN
from flows.walk import unreachable_link_reason

log = logging.getLogger("sightline.indexer")


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


@dataclass
class Known:
    """A file version described before, and what describing it found for each model."""

    size: int
    mtime_ns: int
    facts: dict[str, FileFacts]


@dataclass
class Remembered:
    """What a bucket's component keeps from one run to the next (CocoIndex's component state): its
    files, and their facts. One state a bucket in place of a memo entry a file: a memoised call
    cost the engine about 0.2 ms, this one serialisation a bucket."""

    version: int = FACTS_VERSION
    keys: tuple[str, ...] = ()
    files: dict[str, Known] = field(default_factory=dict)


@dataclass
class Look:
    """What a file worker saw of one file: where it is, what it pairs with (`look_at`)."""

    key: str
    path: Path
    stat: os.stat_result | None = None  # None: gone, or an unreachable link (`error` says why)
    error: str | None = None
    pairing: Pairing | None = None
    beside: dict[str, os.stat_result | None] = field(default_factory=dict)  # videos of its group, its sidecars


OUTSIDE = "leads outside IMAGE_DIR through a symlink: not indexed and never served (copy the file in instead)"


def look_at(run: IndexRun, keys: tuple[str, ...]) -> list[Look]:
    """Every file of a bucket looked at in one trip to a file worker: each file system call made
    on the event loop's thread gave the interpreter's lock away, and waited to take it back."""
    return [_look(run, key) for key in keys]


def _look(run: IndexRun, key: str) -> Look:
    full = run.library.path_of(key)
    if full is None:
        return Look(key, Path(key))  # a folder no longer in IMAGE_DIR: its rows go
    look = Look(key, full)
    try:
        look.stat = full.stat()
        real = os.path.realpath(full, strict=True)
    except (OSError, RuntimeError):
        look.stat = None
        look.error = unreachable_link_reason(full)  # or gone since the scan: its delete event follows
        return look
    located = run.library.locate(key)
    assert located is not None
    if not Path(real).is_relative_to(located[0].path):
        look.error = OUTSIDE
        return look
    look.pairing = run.siblings.of(full)
    group = look.pairing.group.names
    names = [n for n in group if kind_of(n) == "video" and len(group) > 1]
    names += [n for n in (look.pairing.sidecar, look.pairing.takeout) if n is not None]
    for name in names:
        try:
            look.beside[name] = full.with_name(name).stat()
        except OSError:
            look.beside[name] = None
    return look


@coco.fn
async def index_bucket(keys: tuple[str, ...], tables: Tables, errors: postgres.TableTarget[ErrorRow]) -> None:
    """Declare the rows of a bucket's files: of those that did not change, from their remembered
    facts; of the others, from describing them again (together, `flows.describe.describe`).

    A file that raises gets an error row and the others their rows, as when each file was a
    component of its own; only the database going away fails the whole bucket, which is then
    retried whole (its files' previous rows stay until then)."""
    run = coco.use_context(RUN)
    state = coco.use_state("facts", Remembered(), type_hint=Remembered)
    before = _remembered(state)
    run.files.removed += len(set(before.keys) - set(keys))
    hand = min(len(keys), FILES_IN_HAND)
    async with run.taking_slots:  # a bucket at a time: the first buckets finish, and commit, first
        for _ in range(hand):
            await run.file_slots.acquire()
    run.files.in_hand += len(keys)
    try:
        with run.in_flight.file():  # what stopping the engine waits for
            looks = await in_file_worker(look_at, run, keys)
            plans = [await _plan(run, look, before.files.get(look.key)) for look in looks]
            for model, _, _ in tables:
                slot = run.slots[model]
                todo = [p for p in plans if p.ready and p.raised is None and model not in p.facts]
                wanted = [Wanted(p.look.key, p.look.path, next(iter(p.facts.values()), None)) for p in todo]
                for plan, result in zip(todo, await describe(run, slot, wanted)):
                    if isinstance(result, FileFacts):
                        plan.facts[model] = result
                    elif _is_outage(result):
                        raise result
                    else:
                        plan.raised = result
            after = Remembered(keys=keys)
            for plan in plans:
                try:
                    await _declare(run, plan, tables, errors)
                except Exception as exc:
                    if _is_outage(exc):
                        raise
                    plan.raised = exc
                    _declare_raised(run, plan, errors)
                if plan.ready and plan.raised is None:
                    assert plan.look.stat is not None
                    after.files[plan.look.key] = Known(plan.look.stat.st_size, plan.look.stat.st_mtime_ns, plan.facts)
            state.value = after
    finally:
        run.files.in_hand -= len(keys)
        run.files.done += len(keys)
        for _ in range(hand):
            run.file_slots.release()


def _remembered(state: Any) -> Remembered:
    """The bucket's facts from its last run; none where they are another version's, or cannot be
    read back (its files are then described again, their embeddings coming from the cache)."""
    try:
        value = state.value
    except Exception as exc:
        log.warning("the remembered facts of a bucket could not be read back (%s); describing its files again", exc)
        return Remembered()
    return value if isinstance(value, Remembered) and value.version == FACTS_VERSION else Remembered()


@dataclass
class Plan:
    """One file of a bucket on its way to its rows."""

    look: Look
    facts: dict[str, FileFacts] = field(default_factory=dict)  # by model: remembered, or described now
    ready: bool = False  # an item of its own, to describe and declare (not gone, not refused)
    companions: Companions = field(default_factory=Companions)
    sidecar: Any = None
    takeout: Any = None
    raised: BaseException | None = None


async def _plan(run: IndexRun, look: Look, known: Known | None) -> Plan:
    """What a file's rows need besides its facts: whether it is an item of its own, its companions,
    its sidecars; and its remembered facts, where it did not change."""
    plan = Plan(look)
    if look.stat is None or look.error is not None or look.pairing is None:
        return plan
    try:
        key, full, group = look.key, look.path, look.pairing.group

        async def seconds_of(name: str) -> float | None:
            st = look.beside.get(name)
            if st is None:
                return None
            return await video_length(run.library.sibling_key(key, name), st.st_size, st.st_mtime_ns)

        lengths = {n: await seconds_of(n) for n in group.names if kind_of(n) == "video" and len(group.names) > 1}
        if still_of(full.name, group, lambda: lengths.get(full.name)) is not None:
            return plan  # part of the still beside it, which lists it
        plan.companions = companions_of(full.name, group, lengths.get)
        plan.sidecar = await _sidecar_facts(run, look, look.pairing.sidecar, read_sidecar)
        plan.takeout = await _sidecar_facts(run, look, look.pairing.takeout, read_takeout)
    except Exception as exc:
        if _is_outage(exc):
            raise
        plan.raised = exc
    plan.ready = True
    if known is not None and (known.size, known.mtime_ns) == (look.stat.st_size, look.stat.st_mtime_ns):
        plan.facts = {model: facts for model, facts in known.facts.items() if model in run.slots}
    return plan


async def _declare(run: IndexRun, plan: Plan, tables: Tables, errors: postgres.TableTarget[ErrorRow]) -> None:
    """A file's rows in each model's tables, or its error row, or nothing (gone, or part of another item)."""
    look, key = plan.look, plan.look.key
    if look.stat is None:
        if look.error is not None and (link := _lstat(look.path)) is not None:
            _error_row(errors, key, look.error, link)
        return
    if look.error is not None:
        _error_row(errors, key, look.error, look.stat)
        return
    if not plan.ready:
        return
    if plan.raised is not None:
        _declare_raised(run, plan, errors)
        return
    failure = next((facts.failure for facts in plan.facts.values() if facts.failure is not None), None)
    if failure is not None:
        _error_row(errors, key, failure, look.stat)  # the content is bad for every model: no row in any table
        return
    modified = datetime.fromtimestamp(look.stat.st_mtime_ns / 1e9, tz=UTC)
    item_id = image_id(key)
    for model, images, frames in tables:
        facts = plan.facts[model]
        merged = merge_sidecar(facts, plan.sidecar, plan.takeout)
        place = await place_of(merged)
        original, motion = plan.companions.original, plan.companions.motion
        images.declare_row(
            row=ImageRow(
                path=key,
                id=item_id,
                kind=facts.kind,
                content_hash=facts.content_hash,
                size=look.stat.st_size,
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
                original=None if original is None else run.library.sibling_key(key, original),
                motion=None if motion is None else run.library.sibling_key(key, motion),
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


def _declare_raised(run: IndexRun, plan: Plan, errors: postgres.TableTarget[ErrorRow]) -> None:
    """The error row of a file whose describing raised: unreadable now, or a bug (logged)."""
    exc, look = plan.raised, plan.look
    assert exc is not None and look.stat is not None
    if isinstance(exc, OSError):
        if isinstance(exc, FileNotFoundError) and not os.path.lexists(look.path):
            return  # deleted while it was read: nothing to record, its delete event follows
        reason = f"cannot read the file ({exc.strerror or first_line(exc)}); {RETRIED_ON_NEXT_RUN}"
    else:
        run.files.failed += 1
        log.error("indexing %s failed: %s", look.key, exc, exc_info=exc)
        reason = f"indexing failed ({first_line(exc)}); {RETRIED_ON_NEXT_RUN}"
    _error_row(errors, look.key, reason, look.stat)


def _error_row(errors: postgres.TableTarget[ErrorRow], key: str, reason: str, stat: os.stat_result) -> None:
    modified = datetime.fromtimestamp(stat.st_mtime_ns / 1e9, tz=UTC)
    errors.declare_row(row=ErrorRow(path=key, reason=reason, size=stat.st_size, modified_at=modified))


async def _sidecar_facts(run: IndexRun, look: Look, name: str | None, read: Any) -> Any:
    """What the sidecar `name` beside the file says (an `.xmp` or a Takeout JSON), through its `read`
    (memoised on the sidecar's own size and mtime, so editing it updates the row)."""
    st = look.beside.get(name) if name is not None else None
    if name is None or st is None:
        return None
    return await read(run.library.sibling_key(look.key, name), st.st_size, st.st_mtime_ns)


@coco.fn
async def index_folder() -> None:
    collect_less()
    run = coco.use_context(RUN)
    versions = dict(await coco.use_context(PG_POOL).fetch("SELECT extname, extversion FROM pg_extension"))
    tables, errors = await mount_tables(run, versions)
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
        await coco.mount_each(index_bucket, run.folder, tables, errors)


app = coco.App(coco.AppConfig(name="sightline"), index_folder)
