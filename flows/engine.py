"""Running the indexer: the CocoIndex lifespan (database, models, context), a one-shot update with
a summary, and live mode, which follows the folder until cancelled.

CocoIndex calls its lifespan itself, with no arguments, so what a run needs (the settings, the
embedders to share) is handed over by `configure` just before the engine starts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass
from typing import Any

import asyncpg
import cocoindex as coco

from core.errors import first_line
from core.media.library import Library, library_of
from core.models.embedder import Embedders
from core.settings import Settings, get_settings
from core.store import pg_sizing
from core.store.db import ERRORS_TABLE, DatabaseError, connect, database_url, ensure_schema, table_exists
from core.store.indexer_status import LocalIndexer
from core.store.model_state import SWITCH_GRACE_SECONDS, model_table
from flows import passes, unchanged
from flows.cache import EmbeddingCache
from flows.heartbeat import BEAT_DEADLINE_SECONDS, StatusReporter, keep_beating
from flows.indexer import app
from flows.recovery import check_room, looks_like_outage, problem_now, wait_until_back
from flows.run import PG_POOL, RUN, IndexCounters, IndexRun, ModelSlot, make_batched_embed
from flows.second_pass import SecondPass
from flows.stopping import stop_update
from flows.switching import adopt_first_model, next_step, open_models, settle_models
from flows.upkeep import forget_models_not_in, prune_cache, reconcile_state, refresh_images_view
from flows.vectors import register_vector_codec
from flows.walk import scan_folder

log = logging.getLogger("sightline.indexer")

UNCONFIRMED_TRIES = 3
RECOVERY_SECONDS = 10.0


@dataclass
class _Launch:
    """What the next engine start uses; `cocoindex update main.py` starts it with the defaults."""

    settings: Settings | None = None
    embedders: Embedders | None = None
    run: IndexRun | None = None  # the run the lifespan built, while it lasts
    counters: IndexCounters | None = None  # kept across engine restarts by the live indexer


_launch = _Launch()


def configure(settings: Settings, embedders: Embedders | None = None) -> None:
    """Use these settings (instead of the environment's), and these embedders (shared with the rest
    of the process), the next time the indexer starts."""
    _launch.settings = settings
    _launch.embedders = embedders or _launch.embedders or _embedders_for(settings)


def _embedders_for(settings: Settings) -> Embedders:
    return Embedders(settings.compiled_text_dir, settings.compiled_image_dir)


@coco.lifespan
async def indexer_lifespan(builder: coco.EnvironmentBuilder) -> AsyncIterator[None]:
    settings = _launch.settings or get_settings()
    embedders = _launch.embedders = _launch.embedders or _embedders_for(settings)
    for folder in settings.image_dirs:
        if not folder.is_dir():
            raise FileNotFoundError(f"IMAGE_DIR {folder} is not a folder; create it or set IMAGE_DIR")
    url = await asyncio.to_thread(database_url, settings)
    await asyncio.to_thread(ensure_schema, url)
    await asyncio.to_thread(unchanged.forget, url)  # whatever this run does, it is not that
    await asyncio.to_thread(reconcile_state, url, settings)
    builder.settings.db_path = settings.state_dir
    choice = await asyncio.to_thread(settle_models, url, settings)
    choice, models = await asyncio.to_thread(open_models, choice, settings, url, embedders)
    # no connection floor: asyncpg would log a traceback a second while the database is away
    pool = await asyncpg.create_pool(
        url, min_size=0, max_size=8, server_settings=pg_sizing.indexer_session(settings), init=register_vector_codec
    )
    assert pool is not None
    builder.provide(PG_POOL, pool)
    slots = {
        m.name: ModelSlot(
            embedder=m,
            cache=EmbeddingCache(pool, m.name),
            embed=make_batched_embed(m, settings.batch_size),
            table=model_table(m.name),
        )
        for m in models
    }
    run = IndexRun(
        settings=settings, slots=slots, library=library_of(settings.image_dirs), choice=choice, database_url=url
    )
    if _launch.counters is not None:
        run.counters = _launch.counters
    builder.provide(RUN, run)
    _launch.run = run
    try:
        yield
    finally:
        _launch.run = None
        await pool.close()
        try:  # whoever ran the update (`cocoindex update main.py` included)
            await asyncio.to_thread(adopt_first_model, url, run)
        except Exception as exc:
            log.debug("could not record the model in use: %s", exc)


async def _started_run() -> IndexRun:
    await coco.default_env()
    assert _launch.run is not None, "the indexer lifespan did not run"
    return _launch.run


def count_media_files(library: Library) -> int:
    """How many files a scan will visit (for the progress bar's total)."""
    return sum(len(scan_folder(root.path).files) for root in library.roots)


@dataclass
class IndexSummary:
    added: int
    updated: int
    deleted: int
    unchanged: int
    failed: int
    embedded: int
    reused: int
    seconds: float
    text_read: int = 0  # pictures whose text the OCR pass read (or skipped) in this run
    faces_read: int = 0  # pictures and videos the faces pass looked at in this run
    from_listing: bool = False  # nothing changed since the last complete update: the engine never started

    def line(self) -> str:
        text = f", text of {self.text_read} pictures read" if self.text_read else ""
        text += f", faces looked for in {self.faces_read}" if self.faces_read else ""
        how = "; no file changed since the last complete update" if self.from_listing else ""
        return (
            f"added {self.added}, updated {self.updated}, deleted {self.deleted}, "
            f"unchanged {self.unchanged}, failed {self.failed} "
            f"(embedded {self.embedded}, reused {self.reused} from cache{text}{how}) in {self.seconds:.1f}s"
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _snapshot(url: str, model: str) -> tuple[dict[str, tuple[str, Any]], set[str]]:
    with connect(url) as conn:
        rows: dict[str, tuple[str, Any]] = {}
        failed: set[str] = set()
        table = model_table(model)
        if table_exists(conn, table):
            for path, digest, mtime in conn.execute(f"SELECT path, content_hash, modified_at FROM {table}"):
                rows[path] = (digest, mtime)
        if table_exists(conn, ERRORS_TABLE):
            failed = {r[0] for r in conn.execute(f"SELECT path FROM {ERRORS_TABLE}")}
        return rows, failed


ProgressFn = Callable[[int, int], None]  # (files finished, files total); for the text: (read, waiting)


async def index_once(
    settings: Settings,
    progress: ProgressFn | None = None,
    embedders: Embedders | None = None,
    text_progress: ProgressFn | None = None,
    release_models: bool = False,
) -> IndexSummary:
    """One incremental update of the whole folder; returns what changed. With `release_models` (a
    process that embeds nothing after it), the models are let go of before the text and faces.

    With a new model wanted, it is built beside the one in use and takes over at the end; a second
    pass then lets CocoIndex drop the old model's table. A database or disk that fails during the
    update ends it with one line (`DatabaseError`): a one-shot command does not wait, and the next
    run finds everything this one committed (nothing is pruned from a run cut short).
    """
    try:
        return await _index_once(settings, progress, embedders, text_progress, release_models)
    except DatabaseError:
        raise
    except Exception as exc:
        if not looks_like_outage(exc):
            raise
        reason = await problem_now(settings, exc) or f"database unreachable ({first_line(exc)})"
        raise DatabaseError(
            f"The update stopped: {reason}. Nothing indexed is lost; run it again once that is fixed."
        ) from exc


async def _index_once(
    settings: Settings,
    progress: ProgressFn | None,
    embedders: Embedders | None,
    text_progress: ProgressFn | None,
    release_models: bool,
) -> IndexSummary:
    configure(settings, embedders)
    started = time.monotonic()
    listing = await asyncio.to_thread(unchanged.take_listing, library_of(settings.image_dirs))
    total = listing.files
    url = await asyncio.to_thread(database_url, settings)
    quick = await _if_unchanged(settings, url, listing, progress, text_progress, started)
    if quick is not None:
        return quick
    _launch.counters = None
    embedded = reused = errors = 0
    before: dict[str, tuple[str, Any]] | None = None
    failed_before: set[str] = set()
    step: str | None = None
    for _ in range(3):  # an update, then at most a switch and the pass that drops the old table
        async with coco.runtime():
            run = await _started_run()
            if before is None:
                before, failed_before = await asyncio.to_thread(_snapshot, url, run.choice.serving)
            handle = app.update()
            try:
                async for snap in handle.watch():
                    buckets = snap.stats.by_component.get("index_bucket")
                    # of this pass (an earlier one's are retried in it): buckets that raised, files that did
                    errors = (buckets.num_errors if buckets is not None else 0) + run.files.failed
                    if progress is not None:
                        progress(min(run.files.done, total), total)
            except BaseException:
                await stop_update(handle, run, started=True)  # nothing of it left running at exit
                raise
            embedded += run.counters.embedded
            reused += run.counters.reused
            step = await asyncio.to_thread(next_step, url, run, True)
            if step is None:
                break
            if step == "switched":
                await asyncio.sleep(SWITCH_GRACE_SECONDS)  # the next pass drops the old model's table
    assert before is not None
    after, failed_after = await asyncio.to_thread(_snapshot, url, run.choice.serving)
    if errors == 0 and len(after) + len(failed_after) == total:
        # only from a complete view: an embedding no row refers to after an interrupted or partial
        # run may be one the next run needs (a file not reached yet, a folder briefly unreadable)
        await asyncio.to_thread(prune_cache, url)
        if step is None:
            await asyncio.to_thread(unchanged.record, url, settings, listing)
    await asyncio.to_thread(refresh_images_view, url, run.choice.serving)
    if release_models:  # nothing more to embed: the passes get the model's memory
        await asyncio.to_thread(run.let_go_of_models)
    # the text and the faces after the embeddings: what was indexed is searchable by appearance already
    text_read, faces_read = await passes.run_once(settings, url, text_progress)
    added = sum(1 for p in after if p not in before)
    updated = sum(1 for p, v in after.items() if p in before and before[p] != v)
    reporter = StatusReporter(url, run)
    reporter.scanning = False
    reporter.files_total = reporter.files_done = total
    if added or updated or len(after) != len(before) or failed_after != failed_before or step is not None:
        reporter.mark_changed()
    await asyncio.to_thread(reporter.write, False)
    return IndexSummary(
        added=added,
        updated=updated,
        deleted=sum(1 for p in before if p not in after),
        unchanged=len(after) - added - updated,
        failed=len(failed_after),
        embedded=embedded,
        reused=reused,
        seconds=time.monotonic() - started,
        text_read=text_read,
        faces_read=faces_read,
    )


async def _if_unchanged(
    settings: Settings,
    url: str,
    listing: unchanged.Listing,
    progress: ProgressFn | None,
    text_progress: ProgressFn | None,
    started: float,
) -> IndexSummary | None:
    """The summary of an update with nothing to do, found without starting the engine
    (`flows.unchanged`); None where the engine has to look."""
    held = await asyncio.to_thread(unchanged.held, url, settings, listing)
    if held is None:
        return None
    await asyncio.to_thread(unchanged.report, url, held)
    if progress is not None:
        progress(listing.files, listing.files)
    text_read, faces_read = await passes.run_once(settings, url, text_progress)  # a pass cut short goes on
    return IndexSummary(
        added=0,
        updated=0,
        deleted=0,
        unchanged=held.rows,
        failed=held.failed,
        embedded=0,
        reused=0,
        seconds=time.monotonic() - started,
        text_read=text_read,
        faces_read=faces_read,
        from_listing=True,
    )


async def watch_folder(
    settings: Settings,
    on_ready: Callable[[], None] | None = None,
    embedders: Embedders | None = None,
    local: LocalIndexer | None = None,
) -> None:
    """Index the folder, then keep the tables in sync with it until cancelled.

    When the wanted model changes, or the one being built takes over, the engine restarts with the
    new set of models: searches go on meanwhile, and a dropped model's table goes with the restart.
    When the database goes away or a disk fills up, at any moment, the engine stops, the indexer
    waits until the part is back (`flows.recovery`) and starts it again. `local` is where a server
    in this process reads what the indexer is doing.
    """
    configure(settings, embedders)
    local = local if local is not None else LocalIndexer()
    _launch.counters = IndexCounters()  # model calls since this process started, across restarts
    local.running = local.scanning = True
    local.files_total = await asyncio.to_thread(count_media_files, library_of(settings.image_dirs))
    ready = [on_ready] if on_ready is not None else []  # called once, after the first complete scan
    unconfirmed = 0  # failures in a row that looked like an outage when nothing was found wrong
    recovered_at = -RECOVERY_SECONDS
    # the text and faces passes, started once the database is known; they outlive restarts
    reading: list[SecondPass[Any]] = []
    try:
        while True:
            try:
                step = await _watch_until_models_change(settings, ready, local, reading)
            except (asyncio.CancelledError, KeyboardInterrupt, SystemExit):
                raise
            except BaseException as exc:  # (a panic in CocoIndex's engine is no Exception)
                reason = await problem_now(settings, exc)
                if reason is None:
                    # a blip over by now, the tail of an outage just over (a server restarting
                    # rewrites its files), or an error that only looks like one (no pgvector on
                    # the server, say): a few tries, then it is reported like any other error
                    unconfirmed += 1
                    tail = time.monotonic() - recovered_at < RECOVERY_SECONDS
                    if not (looks_like_outage(exc) or tail) or unconfirmed > UNCONFIRMED_TRIES:
                        raise
                    reason = f"database unreachable ({first_line(exc)})"
                else:
                    unconfirmed = 0
                await wait_until_back(settings, reason, local)
                recovered_at = time.monotonic()
                continue
            unconfirmed = 0
            log.info("models changed (%s); restarting the indexer", step)
    finally:
        _launch.counters = None
        local.running = local.scanning = False
        for second_pass in reading:
            await asyncio.to_thread(second_pass.stop)


async def _watch_until_models_change(
    settings: Settings, ready: list[Callable[[], None]], local: LocalIndexer, reading: list[SecondPass[Any]]
) -> str:
    local.scanning = True  # a restart scans the folder again
    async with coco.runtime():
        run = await _started_run()
        run.live = True
        url = await asyncio.to_thread(database_url, settings)
        if not reading:  # they read only while the indexer has no file in hand and no outage to wait out
            reading += passes.start_following(
                settings, url, busy=lambda: local.scanning or bool(local.files_pending or local.waiting)
            )
        # a live indexer will need the image tower: load it during the first scan, and call the
        # indexer ready only once it is loaded, so the first new photo does not wait for it
        tower = asyncio.create_task(asyncio.to_thread(run.embedder.vision_tower))
        reporter = StatusReporter(url, run, local)
        reporter.files_total = await asyncio.to_thread(count_media_files, run.library)
        stop = asyncio.Event()
        changed: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def beat_once() -> str | None:
            check_room(settings)
            reporter.write(True)
            return next_step(url, run, scanned=not reporter.scanning)

        started: list[bool] = []  # the update starts when `follow` first runs

        async def follow() -> None:
            started.append(True)
            async for snap in handle.watch():
                reporter.observe(snap.stats)
                if reporter.scanning and snap.status == coco.UpdateStatus.READY:
                    await tower
                    errors = reporter.errors
                    reporter.scanning = local.scanning = False
                    reporter.files_total = reporter.files_done
                    await asyncio.to_thread(reporter.write, True)
                    if errors == 0:  # never from a partial view: a file that failed may need them
                        await asyncio.to_thread(forget_models_not_in, url, list(run.slots))
                    for callback in ready:
                        callback()
                    ready.clear()
                elif not reporter.scanning:
                    reporter.files_total = max(reporter.files_total, reporter.files_done)

        beat = asyncio.create_task(keep_beating(beat_once, stop, changed, lost))
        handle = app.update(live=True)
        following = asyncio.create_task(follow())
        try:
            either: list[asyncio.Future[Any]] = [following, changed, lost]
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
            if lost.done():
                lost.result()  # the database went away: raise why
            if following.done():
                following.result()  # an engine error: raise it
                return "the engine stopped"
            step = changed.result()
            if step == "switched":
                await asyncio.sleep(SWITCH_GRACE_SECONDS)  # the restart drops the old model's table
            return step
        finally:
            following.cancel()
            if run.folder is not None:
                run.folder.stop_watching()
            stop.set()
            beat.cancel()  # a beat hanging on the database is not waited for
            await asyncio.gather(beat, following, return_exceptions=True)
            if lost.done():
                lost.exception()  # a beat that failed as the run ended for another reason: seen
            # the engine ends here, wholly, before the runtime closes and another starts
            await stop_update(handle, run, started=bool(started))
            reporter.scanning = False
            try:
                await asyncio.wait_for(asyncio.to_thread(reporter.write, False), BEAT_DEADLINE_SECONDS)
            except Exception:
                pass
