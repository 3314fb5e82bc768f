"""What the routes share, made once per app: the settings, the connection pool (and what it knows
of an outage), the model searches use, and the caches of answers. Routes receive it as a FastAPI
dependency (`ServicesDep`); it is also the `SearchContext` the one search path asks for.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import psycopg
import psycopg_pool
from fastapi import Depends, Request
from pgvector.psycopg import register_vector

from api.duplicates import DuplicateCache, duplicate_cache
from api.places import PlaceCache, place_cache
from api.relevance import Judges
from api.search import FolderCache, folder_cache
from api.serving_models import ServingModels
from api.transcodes import Transcodes
from core.errors import ReadOnly, Unavailable, first_line
from core.media.library import library_of
from core.models.embedder import Embedder, Embedders
from core.settings import Settings
from core.store import replicas
from core.store.db import DatabaseError, database_url
from core.store.indexer_status import LocalIndexer
from core.store.model_state import ModelChoice, read_choice

log = logging.getLogger("sightline.api")

PROBE_SECONDS = 1.0
NOTHING_INDEXED = "Nothing is indexed yet: the indexer has not created its table (python main.py serve, or index)."


class Services:
    def __init__(self, settings: Settings, embedders: Embedders, indexer: LocalIndexer | None = None) -> None:
        self.settings = settings
        self.indexer = indexer  # the indexer in this process (`serve`), if any
        self._last_open = 0.0
        self._opening = threading.Lock()
        self.pool: psycopg_pool.ConnectionPool | None = None
        self.database_error: str | None = None
        self.url = ""
        self.database_down: str | None = None  # why the database was last unreachable, while it is
        self.read_only = False  # the database only reads (a streaming replica), as found at start
        self._last_probe = 0.0
        self.models = ServingModels(settings, embedders)
        self.folders: FolderCache = folder_cache()
        self.places: PlaceCache = place_cache()
        self.duplicates: DuplicateCache = duplicate_cache()
        self.judges = Judges()
        self.library = library_of(settings.image_dirs)
        self.transcodes = Transcodes(settings.transcode_dir, settings.transcode_cache_bytes, settings.max_image_pixels)

    def open(self) -> None:
        self._last_open = time.monotonic()
        try:
            url = self.url = database_url(self.settings)
            read_only = replicas.prepare(url)  # creates the schema where it may write
        except DatabaseError as exc:
            if self.database_error is None and self.indexer is None:
                # once (it is retried at most once a second while asked), and not at all beside
                # an indexer, which says it too
                log.error("%s", exc)
            self.database_error = str(exc)
            return
        self.database_error = None
        if read_only and not self.read_only:
            # a warning only so that it shows: the project logs warnings and up (under uvicorn too)
            log.warning("%s", replicas.STARTED_READ_ONLY)
        self.read_only = read_only
        ef = self.settings.search_ef

        def configure(conn: psycopg.Connection[Any]) -> None:
            register_vector(conn)
            conn.execute(f"SET hnsw.ef_search = {ef}")

        self.pool = psycopg_pool.ConnectionPool(
            url,
            min_size=1,
            max_size=8,
            kwargs={"autocommit": True, "connect_timeout": 5},
            configure=configure,
            open=False,
            timeout=5.0,
            reconnect_timeout=0,
        )
        self.pool.open(wait=False)

    def load_model(self) -> None:
        """At start-up: learn which model is in use and load it (and the one being built)."""
        self.model_choice()
        try:
            self.models.current()
        except Unavailable:
            pass  # logged; searches answer 503 with the reason

    def close(self) -> None:
        self.transcodes.close()
        if self.pool is not None:
            self.pool.close()

    def model_choice(self) -> ModelChoice:
        """Which model searches use, as the database says (asked at most once a second); the
        last known answer while the database is away."""
        if self.models.due() and self.pool is not None:
            try:
                # through `connection`, so a database found away is remembered as away, and the
                # request's own query answers 503 at once instead of waiting for the pool
                with self.connection() as conn:
                    self.models.observe(read_choice(conn, self.settings.clip_model))
            except Unavailable:
                pass
        elif self.models.due():
            self.models.observe(self.models.choice)
        return self.models.choice

    def embedder(self) -> Embedder:
        """The loaded model searches use now."""
        self.model_choice()
        return self.models.current()

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection, or `Unavailable` at once while the database is known to be away."""
        if self.pool is None and time.monotonic() - self._last_open >= PROBE_SECONDS and self._opening.acquire(False):
            try:  # the database was away when this server started: it may be back
                if self.pool is None:
                    self.open()
            finally:
                self._opening.release()
        if self.pool is None:
            raise Unavailable(f"Database unavailable: {self.database_error or 'not configured'}")
        if self._still_down():
            raise Unavailable(self._unreachable(self.database_down or "no answer"))
        try:
            with self.pool.connection() as conn:
                yield conn
        except psycopg_pool.PoolTimeout as exc:
            # every connection busy for `timeout` seconds: heavy load, or a database that is away
            if self._reachable():
                raise Unavailable("The server is busy; try again in a moment.") from exc
            self._mark_down(exc)
            raise Unavailable(self._unreachable(self.database_down or "")) from exc
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            # InterfaceError: a connection the server closed half-way through a restart
            self._mark_down(exc)
            raise Unavailable(self._unreachable(self.database_down or "")) from exc
        except psycopg.errors.UndefinedTable as exc:
            if self.models.choice.active is not None:
                # the model in use changed in the second since this server last asked
                self.models.recheck_soon()
                raise Unavailable("Searches just switched to another model; try again.") from exc
            raise Unavailable(NOTHING_INDEXED) from exc
        except psycopg.errors.UndefinedColumn as exc:
            # an index made by an older release, before the indexer's first scan adds the columns
            raise Unavailable("The index is being upgraded to a new layout; searches resume in a moment.") from exc
        except psycopg.errors.ReadOnlySqlTransaction as exc:
            raise self._refusal("this change") from exc
        except psycopg.errors.SerializationFailure as exc:
            # on a replica: a query cancelled so that replay could go on (hot_standby_feedback avoids it)
            cancelled = f"The replica cancelled this query to apply the primary's changes ({first_line(exc)})"
            raise Unavailable(f"{cancelled}; try again.") from exc

    def refuse_if_read_only(self, action: str) -> None:
        """Refuse `action` up front where the database only reads (a replica), before any work for it."""
        with self.connection() as conn:
            if replicas.is_read_only(conn):
                raise replicas.refusal(conn, action)

    def _refusal(self, action: str) -> ReadOnly:
        assert self.pool is not None
        try:
            with self.pool.connection(timeout=2) as conn:
                return replicas.refusal(conn, action)
        except (psycopg.Error, psycopg_pool.PoolTimeout):
            return replicas.refusal(None, action)

    def _mark_down(self, exc: BaseException) -> None:
        self.database_down = first_line(exc)
        self._last_probe = time.monotonic()

    def _reachable(self) -> bool:
        try:
            psycopg.connect(self.url, connect_timeout=2).close()
        except psycopg.Error:
            return False
        return True

    def _still_down(self) -> bool:
        """While the database is known to be away, answer at once instead of waiting for the pool's
        timeout; one direct connection attempt a second tells when it is back."""
        if self.database_down is None:
            return False
        now = time.monotonic()
        if now - self._last_probe < PROBE_SECONDS:
            return True
        self._last_probe = now
        if not self._reachable():
            return True
        self.database_down = None
        assert self.pool is not None
        self.pool.check()  # drop the connections the outage broke
        return False

    @staticmethod
    def _unreachable(reason: str) -> str:
        return f"Database unreachable ({reason}); searches resume by themselves when it is back."


async def get_services(request: Request) -> Services:
    # async, like the other dependencies every request resolves (`api.app.reject_nul_bytes`, the
    # search filters): FastAPI runs a plain function in its thread pool, a hand-over to another
    # thread and back for a lookup
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]
