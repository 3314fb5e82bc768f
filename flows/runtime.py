"""Running the indexer: the CocoIndex lifespan (database, model, context), a one-shot update with a
summary, and live mode with a status heartbeat that any process can read from `indexer_status`."""

import asyncio
import logging
import os
import shutil
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass
from typing import Any

import asyncpg
import cocoindex as coco

from core.db import ERRORS_TABLE, IMAGES_TABLE, connect, database_url, ensure_schema, table_exists
from core.errors import UserError
from core.model_state import (
    SWITCH_GRACE_SECONDS,
    ModelChoice,
    coverage,
    forget_others,
    model_table,
    model_tables,
    read_choice,
    settle_choice,
    switch_to,
)
from core.settings import Settings, get_settings
from flows.cache import EmbeddingCache
from flows.indexer import IMAGE_ROOT, PG_POOL, RUN, IndexRun, ModelSlot, app, make_batched_embed
from flows.model import ClipModel, get_model
from flows.walk import count_image_files

log = logging.getLogger("sightline.indexer")

_STATE_ID_FILE = "sightline-state-id"
_active_settings: Settings | None = None
_current_run: IndexRun | None = None


def configure(settings: Settings) -> None:
    """Use these settings (instead of the environment's) the next time the indexer starts."""
    global _active_settings
    _active_settings = settings


def active_settings() -> Settings:
    return _active_settings or get_settings()


def reconcile_state(url: str, settings: Settings) -> None:
    """Keep CocoIndex's local state and the database's tables in step.

    CocoIndex remembers what it wrote in an LMDB folder under DATA_DIR. If that folder is lost while
    the tables survive (or DATABASE_URL now names another server), the two disagree and the engine
    would fail with DuplicateTableError or write into tables it thinks exist. A shared id, kept in
    both places, tells; on a mismatch the CocoIndex-managed tables are dropped and rebuilt, which is
    cheap because the embedding cache survives.
    """
    id_file = settings.state_dir / _STATE_ID_FILE
    local = id_file.read_text().strip() if id_file.exists() else None
    with connect(url) as conn:
        row = conn.execute("SELECT value FROM sightline_meta WHERE key = 'state_id'").fetchone()
        remote = row[0] if row else None
        if local is not None and local == remote:
            return
        old_layout = _relkind(conn, IMAGES_TABLE) == "r"  # before per-model tables, `images` was one
        if old_layout:
            local = None
        stale_tables = table_exists(conn, IMAGES_TABLE) or table_exists(conn, ERRORS_TABLE) or model_tables(conn)
        if stale_tables or (local is not None and remote is None):
            log.warning(
                "The indexer state in %s does not match the database; rebuilding the images table "
                "(cached embeddings are reused, so no image goes through the model again).",
                settings.state_dir,
            )
            conn.execute(f"DROP {'TABLE' if old_layout else 'VIEW'} IF EXISTS {IMAGES_TABLE}")
            for table in [ERRORS_TABLE, *model_tables(conn)]:
                conn.execute(f"DROP TABLE IF EXISTS {table}")
            conn.execute("DELETE FROM sightline_meta WHERE key = 'active_model'")
            shutil.rmtree(settings.state_dir, ignore_errors=True)
        new_id = uuid.uuid4().hex
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        conn.execute(
            "INSERT INTO sightline_meta (key, value) VALUES ('state_id', %s) "
            "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            (new_id,),
        )
        id_file.write_text(new_id + "\n")


def _relkind(conn: Any, name: str) -> str | None:
    row = conn.execute("SELECT relkind FROM pg_class WHERE oid = to_regclass(%s)", (name,)).fetchone()
    return str(row[0]) if row else None


def settle_models(url: str, settings: Settings) -> ModelChoice:
    with connect(url) as conn:
        return settle_choice(conn, settings.clip_model)


def open_models(choice: ModelChoice, settings: Settings, url: str) -> tuple[ModelChoice, list[ClipModel]]:
    """Open the model in use and the one being built. One that cannot be opened is reported in a
    line and left out: a bad new choice never stops the indexing of the old one. When the model in
    use is the one that cannot be opened (its files removed) but the new one can, switch now."""
    opened: list[ClipModel] = []
    for name in dict.fromkeys([choice.serving, choice.building]):
        if name is None:
            continue
        try:
            opened.append(get_model(name, settings.device, settings.precision))
        except UserError as exc:
            if name == choice.serving and choice.building is None:
                raise
            log.error("%s", exc)
    if not opened:
        raise UserError(f"Neither {choice.serving!r} nor {choice.building!r} can be opened; set CLIP_MODEL")
    if opened[0].name != choice.serving:
        log.warning("switching to %s now: the model in use cannot be opened", opened[0].name)
        with connect(url) as conn:
            switch_to(conn, opened[0].name)
            choice = read_choice(conn, settings.clip_model)
    return choice, opened


@coco.lifespan
async def indexer_lifespan(builder: coco.EnvironmentBuilder) -> AsyncIterator[None]:
    settings = active_settings()
    if not settings.image_dir.is_dir():
        raise FileNotFoundError(f"IMAGE_DIR {settings.image_dir} is not a folder; create it or set IMAGE_DIR")
    url = await asyncio.to_thread(database_url, settings)
    await asyncio.to_thread(ensure_schema, url)
    await asyncio.to_thread(reconcile_state, url, settings)
    builder.settings.db_path = settings.state_dir
    choice = await asyncio.to_thread(settle_models, url, settings)
    choice, models = await asyncio.to_thread(open_models, choice, settings, url)
    # no connection floor: asyncpg would log a traceback a second while the database is away
    pool = await asyncpg.create_pool(url, min_size=0, max_size=8)
    assert pool is not None
    root = settings.image_dir.resolve()
    builder.provide(PG_POOL, pool)
    builder.provide(IMAGE_ROOT, root)
    slots = {
        m.name: ModelSlot(
            model=m,
            cache=EmbeddingCache(pool, m.name),
            embed=make_batched_embed(m, settings.batch_size),
            table=model_table(m.name),
        )
        for m in models
    }
    run = IndexRun(settings=settings, slots=slots, image_root=root, choice=choice)
    builder.provide(RUN, run)
    global _current_run
    _current_run = run
    try:
        yield
    finally:
        _current_run = None
        await pool.close()
        try:  # whoever ran the update (`cocoindex update main.py` included)
            await asyncio.to_thread(adopt_first_model, url, run)
        except Exception as exc:
            log.debug("could not record the model in use: %s", exc)


async def _started_run() -> IndexRun:
    await coco.default_env()
    assert _current_run is not None, "the indexer lifespan did not run"
    return _current_run


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

    def line(self) -> str:
        return (
            f"added {self.added}, updated {self.updated}, deleted {self.deleted}, "
            f"unchanged {self.unchanged}, failed {self.failed} "
            f"(embedded {self.embedded}, reused {self.reused} from cache) in {self.seconds:.1f}s"
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


def _adopt_first_model(conn: Any, run: IndexRun, now: ModelChoice) -> bool:
    """The first model of a new index is in use as soon as its table exists: nothing to wait for."""
    if now.active is None and table_exists(conn, model_table(now.target)):
        switch_to(conn, now.target)
        run.choice = read_choice(conn, run.settings.clip_model)
        return True
    return False


def adopt_first_model(url: str, run: IndexRun) -> None:
    with connect(url) as conn:
        _adopt_first_model(conn, run, read_choice(conn, run.settings.clip_model))


def next_step(url: str, run: IndexRun, scanned: bool) -> str | None:
    """What the model choice asks of the indexer now: "restart" (the wanted model changed, so the
    set of models and tables to keep changes), "switched" (the model being built covers the
    collection, or a switch was asked for, and now answers searches), or nothing."""
    with connect(url) as conn:
        now = read_choice(conn, run.settings.clip_model)
        if now.target != run.choice.target:
            return "restart"
        if _adopt_first_model(conn, run, now):
            return None
        building = run.choice.building
        if building is None or building not in run.slots:
            return None
        covered, total = coverage(conn, now)
        if now.switch_requested or (scanned and covered >= total):
            log.warning("switching searches to %s (%d of %d files embedded)", building, covered, total)
            switch_to(conn, building)
            return "switched"
    return None


ProgressFn = Callable[[int, int], None]  # (files finished, files total)


async def index_once(settings: Settings, progress: ProgressFn | None = None) -> IndexSummary:
    """One incremental update of the whole folder; returns what changed.

    With a new model wanted, it is built beside the one in use and takes over at the end; a second
    pass then lets CocoIndex drop the old model's table.
    """
    configure(settings)
    started = time.monotonic()
    total = await asyncio.to_thread(count_image_files, settings.image_dir)
    url = await asyncio.to_thread(database_url, settings)
    embedded = reused = 0
    before: dict[str, tuple[str, Any]] | None = None
    failed_before: set[str] = set()
    step: str | None = None
    for _ in range(3):  # an update, then at most a switch and the pass that drops the old table
        async with coco.runtime():
            run = await _started_run()
            if before is None:
                before, failed_before = await asyncio.to_thread(_snapshot, url, run.choice.serving)
            handle = app.update()
            async for snap in handle.watch():
                if progress is not None:
                    stats = snap.stats.by_component.get("index_file")
                    if stats is not None:
                        progress(min(stats.num_finished, total), total)
            embedded += run.counters.embedded
            reused += run.counters.reused
            step = await asyncio.to_thread(next_step, url, run, True)
            if step is None:
                break
            if step == "switched":
                await asyncio.sleep(SWITCH_GRACE_SECONDS)  # the next pass drops the old model's table
    after, failed_after = await asyncio.to_thread(_snapshot, url, run.choice.serving)
    await asyncio.to_thread(prune_cache, url)
    added = sum(1 for p in after if p not in before)
    updated = sum(1 for p, v in after.items() if p in before and before[p] != v)
    reporter = StatusReporter(url, settings, run)
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
    )


def forget_models_not_in(url: str, run: IndexRun) -> None:
    """Once a run with its models is under way, any other model's cached embeddings are stale:
    a switch made them so, or a build was cancelled."""
    with connect(url) as conn:
        forget_others(conn, list(run.slots))


def prune_cache(url: str) -> int:
    """Forget cached embeddings that no indexed file has any more; returns how many."""
    with connect(url) as conn:
        tables = model_tables(conn)
        referenced = " AND ".join(
            f"NOT EXISTS (SELECT 1 FROM {t} i WHERE i.content_hash = c.content_hash AND i.model = c.model)"
            for t in tables
        )
        cursor = conn.execute(f"DELETE FROM embedding_cache c WHERE {referenced or 'true'}")
        return cursor.rowcount


class StatusReporter:
    """Keeps the single `indexer_status` row fresh while the indexer runs."""

    def __init__(self, url: str, settings: Settings, run: IndexRun) -> None:
        self._url = url
        self._run = run
        self._settings = settings
        self.scanning = True
        self.files_total = 0
        self.files_done = 0
        self.files_pending = 0
        self._changes_seen = -1
        self._last_change_at: float | None = None
        self._rate_window: list[tuple[float, int]] = []

    def observe(self, stats: Any) -> None:
        c = stats.by_component.get("index_file")
        self.files_done = c.num_finished if c else 0
        self.files_pending = c.num_in_progress if c else 0
        changes = self._run.counters.described + (c.num_deletes if c else 0)
        now = time.time()
        if changes != self._changes_seen:
            if self._changes_seen >= 0 or changes > 0:
                self.mark_changed()
            self._changes_seen = changes
        self._rate_window = [(t, n) for t, n in self._rate_window if now - t < 10] + [(now, self.files_done)]

    def mark_changed(self) -> None:
        self._last_change_at = time.time()

    @property
    def throughput(self) -> float:
        if len(self._rate_window) < 2:
            return 0.0
        (t0, n0), (t1, n1) = self._rate_window[0], self._rate_window[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0

    def write(self, live: bool) -> None:
        model = self._run.model
        with connect(self._url) as conn:
            conn.execute(
                """
                INSERT INTO indexer_status (id, pid, host, model, device, precision, live, scanning,
                    started_at, heartbeat_at, last_change_at, files_total, files_done, files_pending, throughput)
                VALUES (1, %(pid)s, %(host)s, %(model)s, %(device)s, %(precision)s, %(live)s, %(scanning)s,
                    now(), now(), to_timestamp(%(last_change)s), %(total)s, %(done)s, %(pending)s, %(rate)s)
                ON CONFLICT (id) DO UPDATE SET pid = EXCLUDED.pid, host = EXCLUDED.host,
                    model = EXCLUDED.model,
                    device = COALESCE(EXCLUDED.device, indexer_status.device),
                    precision = COALESCE(EXCLUDED.precision, indexer_status.precision),
                    live = EXCLUDED.live, scanning = EXCLUDED.scanning,
                    started_at = CASE WHEN indexer_status.pid = EXCLUDED.pid
                        THEN indexer_status.started_at ELSE now() END,
                    heartbeat_at = now(),
                    last_change_at = COALESCE(EXCLUDED.last_change_at, indexer_status.last_change_at),
                    files_total = EXCLUDED.files_total, files_done = EXCLUDED.files_done,
                    files_pending = EXCLUDED.files_pending, throughput = EXCLUDED.throughput
                """,
                {
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                    "model": model.name,
                    # not known before the model first loads; importing torch just to say it would
                    # cost a no-change run seconds
                    "device": model.device if model.loaded else None,
                    "precision": model.precision if model.loaded else None,
                    "live": live,
                    "scanning": self.scanning,
                    "last_change": self._last_change_at,
                    "total": self.files_total,
                    "done": self.files_done,
                    "pending": self.files_pending,
                    "rate": self.throughput,
                },
            )


HEARTBEAT_SECONDS = 1.0
RETRY_MAX_SECONDS = 30.0


class DatabaseWatch:
    """Tells when the database goes away and comes back, with exponential backoff in between.

    While it is away, files that change fail (nothing is remembered for them); when it is back, the
    caller rescans the folder so they are indexed without a restart.
    """

    def __init__(self) -> None:
        self.down_since: float | None = None
        self._delay = HEARTBEAT_SECONDS

    def failed(self, exc: BaseException) -> None:
        if self.down_since is None:
            self.down_since = time.monotonic()
            log.warning("database unreachable (%s); indexing resumes when it is back", exc)
        self._delay = min(self._delay * 2, RETRY_MAX_SECONDS)

    def succeeded(self) -> bool:
        """Record a success; True when this ends an outage."""
        self._delay = HEARTBEAT_SECONDS
        if self.down_since is None:
            return False
        log.warning("database back after %.0fs; rescanning the folder", time.monotonic() - self.down_since)
        self.down_since = None
        return True

    @property
    def next_try(self) -> float:
        return self._delay


async def watch_folder(settings: Settings, on_ready: Callable[[], None] | None = None) -> None:
    """Index the folder, then keep the tables in sync with it until cancelled.

    When the wanted model changes, or the one being built takes over, the engine restarts with the
    new set of models: searches go on meanwhile, and a dropped model's table goes with the restart.
    """
    configure(settings)
    while True:
        step = await _watch_until_models_change(settings, on_ready)
        on_ready = None  # ready once: later restarts are the indexer's own business
        log.info("models changed (%s); restarting the indexer", step)


async def _watch_until_models_change(settings: Settings, on_ready: Callable[[], None] | None) -> str:
    async with coco.runtime():
        run = await _started_run()
        url = await asyncio.to_thread(database_url, settings)
        # a live indexer will need the image tower: load it during the first scan, and call the
        # indexer ready only once it is loaded, so the first new photo does not wait for it
        tower = asyncio.create_task(asyncio.to_thread(run.model.vision_tower))
        reporter = StatusReporter(url, settings, run)
        reporter.files_total = await asyncio.to_thread(count_image_files, settings.image_dir)
        stop = asyncio.Event()
        changed: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        database = DatabaseWatch()

        def beat_once() -> str | None:
            reporter.write(True)
            return next_step(url, run, scanned=not reporter.scanning)

        async def heartbeat() -> None:
            while not stop.is_set():
                try:
                    step = await asyncio.to_thread(beat_once)
                except Exception as exc:  # the database may be away for a while: keep trying
                    database.failed(exc)
                else:
                    if database.succeeded():
                        run.request_rescan()
                    if step is not None and not changed.done():
                        changed.set_result(step)
                try:
                    await asyncio.wait_for(stop.wait(), database.next_try)
                except TimeoutError:
                    pass

        async def follow() -> None:
            async for snap in handle.watch():
                reporter.observe(snap.stats)
                if reporter.scanning and snap.status == coco.UpdateStatus.READY:
                    await tower
                    reporter.scanning = False
                    reporter.files_total = reporter.files_done
                    try:
                        await asyncio.to_thread(reporter.write, True)
                    except Exception as exc:
                        database.failed(exc)
                    try:
                        await asyncio.to_thread(forget_models_not_in, url, run)
                    except Exception as exc:
                        database.failed(exc)
                    if on_ready is not None:
                        on_ready()
                elif not reporter.scanning:
                    reporter.files_total = max(reporter.files_total, reporter.files_done)

        beat = asyncio.create_task(heartbeat())
        handle = app.update(live=True)
        following = asyncio.create_task(follow())
        try:
            await asyncio.wait({following, changed}, return_when=asyncio.FIRST_COMPLETED)
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
            await asyncio.gather(beat, following, return_exceptions=True)
            reporter.scanning = False
            try:
                await asyncio.to_thread(reporter.write, False)
            except Exception:
                pass
