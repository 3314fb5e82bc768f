"""The FastAPI app: search, images, status and the web page.

`uvicorn api.app:app` serves an existing database while the indexer runs elsewhere;
`python main.py serve` builds the same app with the live indexer in its lifespan.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Annotated, Any

import psycopg
import psycopg_pool
from fastapi import Depends, FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pgvector.psycopg import register_vector
from pydantic import BaseModel, ConfigDict, Field

from api.answer import UnknownImage, Upload, answer, check_min_match, parse, with_query_filters
from api.duplicates import DEFAULT_THRESHOLD, duplicates_page
from api.models import ModelUnavailable, ServingModels
from api.query import QueryError, Term
from api.search import (
    MAX_LIMIT,
    BadRequest,
    get_image,
    image_file_facts,
    list_folders,
    make_filters,
)
from api.security import TokenAuth, UploadLimit
from api.status import models_status, status_from, unreachable_status
from api.thumbnails import ensure_thumbnail, thumbnail_path
from core.db import DatabaseError, database_url, ensure_schema
from core.model_state import ModelChoice, choose_model, read_choice
from core.settings import PROJECT_ROOT, Settings, get_settings
from flows.images import ImageError, decode_image, one_line
from flows.model import ClipModel, ModelLoadError, load_model

log = logging.getLogger("sightline.api")
# while the database is away the pool logs every failed reconnection; /api/status says it once
logging.getLogger("psycopg.pool").setLevel(logging.CRITICAL)
FRONTEND_DIR = PROJECT_ROOT / "frontend"
MEDIA_TYPES = {
    "jpeg": "image/jpeg",
    "png": "image/png",
    "webp": "image/webp",
    "gif": "image/gif",
    "bmp": "image/bmp",
    "tiff": "image/tiff",
    "mpo": "image/jpeg",
}


Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="results per page")]
Offset = Annotated[int, Query(ge=0, description="results to skip")]
# ids are 53-bit; bounding them turns a huge number into a 422 instead of a numeric the database
# would have to compare against a bigint
ImageId = Annotated[int, PathParam(ge=0, lt=2**63, description="an image id from a search result")]
MinMatch = Annotated[
    str | None,
    Query(description="drop results judged below this level: strong, weak or none (see `match` in results)"),
]
QUERY_HELP = (
    "what to look for, in plain language, or in the query language: terms joined by + and -, "
    "weights (2:sunset), quoted phrases, img:ID, in:FOLDER, dates (2023, July 2023, last summer)"
)


class TextTerm(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(min_length=1, max_length=2000, description="words for the model, taken literally")
    weight: float = Field(1.0, allow_inf_nan=False, description="negative to steer away from it")


class ImageTerm(BaseModel):
    model_config = ConfigDict(extra="forbid")
    image_id: int = Field(ge=0, lt=2**63, description="an indexed image's id")
    weight: float = Field(1.0, allow_inf_nan=False, description="negative for less like this image")


class StructuredSearch(BaseModel):
    """A query as terms instead of `q`: the search vector is the normalised weighted sum of the
    terms' embeddings; filters work as in `GET /api/search` (no dates or folders are read from texts)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "terms": [{"text": "sunset", "weight": 2}, {"text": "people", "weight": -1}],
                    "taken_after": "2023-01-01",
                    "min_match": "weak",
                }
            ]
        },
    )
    terms: list[TextTerm | ImageTerm] = Field(min_length=1, max_length=20)
    limit: int = Field(40, ge=1, le=MAX_LIMIT)
    offset: int = Field(0, ge=0)
    folder: str | None = None
    taken_after: str | None = None
    taken_before: str | None = None
    format: str | None = None
    min_match: str | None = None


def reject_nul_bytes(request: Request) -> None:
    """Postgres text cannot hold NUL; refuse it up front rather than fail inside a query."""
    for name, value in request.query_params.multi_items():
        if "\x00" in value:
            raise BadRequest(f"{name} must not contain NUL (\\x00) characters")


class ModelRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())
    model: str = Field(
        min_length=1, max_length=500, description="a Hugging Face model id, or a folder holding a checkpoint"
    )
    switch_now: bool = Field(
        False, description="switch searches to it as soon as possible, before it covers the collection"
    )


class Services:
    """What the endpoints share: settings, a connection pool and the model (loaded once)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.pool: psycopg_pool.ConnectionPool | None = None
        self.database_error: str | None = None
        self.url = ""
        self.database_down: str | None = None  # why the database was last unreachable, while it is
        self._last_probe = 0.0
        self.models = ServingModels(settings)

    def open(self) -> None:
        try:
            url = self.url = database_url(self.settings)
            ensure_schema(url)
        except DatabaseError as exc:
            self.database_error = str(exc)
            log.error("%s", exc)
            return
        ef = int(self.settings.search_ef)

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
        except ModelUnavailable:
            pass  # logged; searches answer 503 with the reason

    def model_choice(self) -> ModelChoice:
        """Which model searches use, as the database says (asked at most once a second); the
        last known answer while the database is away."""
        if self.models.due() and self.pool is not None:
            try:
                # through `connection`, so a database found away is remembered as away, and the
                # request's own query answers 503 at once instead of waiting for the pool
                with self.connection() as conn:
                    self.models.observe(read_choice(conn, self.settings.clip_model))
            except HTTPException:
                pass
        elif self.models.due():
            self.models.observe(self.models.choice)
        return self.models.choice

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()

    def require_model(self) -> ClipModel:
        self.model_choice()
        try:
            return self.models.current()
        except ModelUnavailable as exc:
            raise HTTPException(503, str(exc)) from None

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        if self.pool is None:
            raise HTTPException(503, f"Database unavailable: {self.database_error or 'not configured'}")
        if self._still_down():
            raise HTTPException(503, self._unreachable(self.database_down or "no answer"))
        try:
            with self.pool.connection() as conn:
                yield conn
        except psycopg_pool.PoolTimeout as exc:
            # every connection busy for `timeout` seconds: heavy load, or a database that is away
            if self._reachable():
                raise HTTPException(503, "The server is busy; try again in a moment.") from exc
            self._mark_down(exc)
            raise HTTPException(503, self._unreachable(self.database_down or "")) from exc
        except psycopg.OperationalError as exc:
            self._mark_down(exc)
            raise HTTPException(503, self._unreachable(self.database_down or "")) from exc
        except psycopg.errors.UndefinedTable as exc:
            if self.models.choice.active is not None:
                # the model in use changed in the second since this server last asked
                self.models.recheck_soon()
                raise HTTPException(503, "Searches just switched to another model; try again.") from exc
            raise HTTPException(503, NOTHING_INDEXED) from exc

    def _mark_down(self, exc: BaseException) -> None:
        self.database_down = _first_line(exc)
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


PROBE_SECONDS = 1.0
NOTHING_INDEXED = "Nothing is indexed yet: the indexer has not created its table (python main.py serve, or index)."


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def create_app(settings: Settings | None = None, *, with_indexer: bool = False) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        s = settings or get_settings()
        services = Services(s)
        app.state.services = services
        await asyncio.to_thread(services.open)
        loading = asyncio.create_task(asyncio.to_thread(services.load_model))
        indexer: asyncio.Task[None] | None = None
        if with_indexer:
            from flows.runtime import watch_folder

            indexer = asyncio.create_task(watch_folder(s))
            app.state.indexer = indexer
        try:
            yield
        finally:
            if indexer is not None:
                indexer.cancel()
                await asyncio.gather(indexer, return_exceptions=True)
            await asyncio.gather(loading, return_exceptions=True)
            await asyncio.to_thread(services.close)

    app = FastAPI(
        title="Sightline",
        summary="Search a folder of images by describing them.",
        version="0.1.0",
        lifespan=lifespan,
        dependencies=[Depends(reject_nul_bytes)],
    )
    configured = settings or get_settings()
    app.add_middleware(UploadLimit, path="/api/search/image", max_bytes=configured.upload_max_bytes)
    if configured.api_token:
        app.add_middleware(TokenAuth, token=configured.api_token)
        app.openapi = lambda: _openapi_with_bearer(app)  # type: ignore[method-assign]
    if configured.cors_origins:
        # Added last, so it is the outermost layer: preflights (which never carry the token) are
        # answered here, and a 401 still carries the CORS headers the calling page needs to read
        # it. Credentials stay off, so no origin, and never "*", can send the image cookie; other
        # sites authenticate with the bearer header, which must then be allowed.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(configured.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization"],
            allow_credentials=False,
        )

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ())[1:]) or "request"
        return JSONResponse(
            status_code=422,
            content={"detail": f"{where}: {first.get('msg', 'invalid value')}", "errors": jsonable(exc.errors())},
        )

    @app.exception_handler(BadRequest)
    async def bad_request(request: Request, exc: BadRequest) -> JSONResponse:
        return JSONResponse(status_code=422, content={"detail": str(exc)})

    @app.exception_handler(QueryError)
    async def query_error(request: Request, exc: QueryError) -> JSONResponse:
        body = {"detail": str(exc), "position": exc.position, "expected": exc.expected}
        return JSONResponse(status_code=422, content=body)

    def services(request: Request) -> Services:
        return request.app.state.services  # type: ignore[no-any-return]

    def page(query: Any, results: list[Any], limit: int, offset: int, more: bool, **extra: Any) -> dict[str, Any]:
        return {"query": query, **extra, "results": results, "limit": limit, "offset": offset, "has_more": more}

    def unknown_image_in(q: str, exc: UnknownImage) -> QueryError:
        at = q.lower().find("img:", exc.term.start)
        return QueryError(f"unknown image id {exc.term.image_id}", max(at, 0), "the id of an indexed image")

    def parsed_and_answered(
        svc: Services,
        q: str,
        base: Any,
        *,
        limit: int,
        offset: int,
        min_match: str | None,
        uploads: list[Upload] | None = None,
    ) -> tuple[dict[str, Any], list[dict[str, Any]], bool]:
        level = check_min_match(min_match)
        model = svc.require_model()
        with svc.connection() as conn:
            parsed = parse(q, conn, model.name) if q.strip() else None
        terms = parsed.terms if parsed else []
        filters = with_query_filters(base, parsed) if parsed else base
        # the text tower runs while no database connection is held: under load, requests would
        # otherwise hold every pooled connection while they wait for the model
        for term in terms:
            if term.text is not None:
                model.embed_text(term.text)
        with svc.connection() as conn:
            try:
                results, more = answer(
                    conn,
                    model,
                    terms,
                    filters,
                    limit=limit,
                    offset=offset,
                    min_match=level,
                    ef_search=svc.settings.search_ef,
                    uploads=uploads or [],
                )
            except UnknownImage as exc:
                raise unknown_image_in(q, exc) from None
        understood = parsed.understood() if parsed else {"text": "", "terms": [], "filters": {}}
        for u in uploads or []:
            understood["terms"].append({"upload": u.name, "weight": u.weight})
        return understood, results, more

    @app.get("/api/search", summary="Search by text or the query language")
    def search_text(
        request: Request,
        q: Annotated[str, Query(description=QUERY_HELP)] = "",
        limit: Limit = 40,
        offset: Offset = 0,
        folder: Annotated[str | None, Query(description="only this subfolder of IMAGE_DIR")] = None,
        taken_after: Annotated[str | None, Query(description="ISO date, inclusive")] = None,
        taken_before: Annotated[str | None, Query(description="ISO date, inclusive")] = None,
        format: Annotated[str | None, Query(description="jpeg, png, webp, gif, bmp, tiff")] = None,
        min_match: MinMatch = None,
    ) -> dict[str, Any]:
        if not q.strip():
            raise BadRequest("q must not be empty: describe what you are looking for, e.g. q=a dog on a beach")
        base = make_filters(folder, taken_after, taken_before, format)
        understood, results, more = parsed_and_answered(
            services(request), q, base, limit=limit, offset=offset, min_match=min_match
        )
        return page(q, results, limit, offset, more, understood=understood)

    @app.post("/api/search", summary="Search by weighted terms (the structured form of the query language)")
    def search_terms(request: Request, body: StructuredSearch) -> dict[str, Any]:
        base = make_filters(body.folder, body.taken_after, body.taken_before, body.format)
        level = check_min_match(body.min_match)
        terms = [
            Term(t.weight, text=t.text) if isinstance(t, TextTerm) else Term(t.weight, image_id=t.image_id)
            for t in body.terms
        ]
        if any(t.weight == 0 for t in terms):
            raise BadRequest("terms: a weight of 0: expected a weight other than 0")
        svc = services(request)
        model = svc.require_model()
        with svc.connection() as conn:
            try:
                results, more = answer(
                    conn,
                    model,
                    terms,
                    base,
                    limit=body.limit,
                    offset=body.offset,
                    min_match=level,
                    ef_search=svc.settings.search_ef,
                )
            except UnknownImage as exc:
                raise BadRequest(
                    f"terms.{exc.index}: unknown image id {exc.term.image_id}: expected the id of an indexed image"
                ) from None
        understood = {"text": " ".join(t.text for t in terms if t.text), "terms": [t.as_json() for t in terms]}
        query = {"terms": [t.model_dump() for t in body.terms]}
        return page(query, results, body.limit, body.offset, more, understood={**understood, "filters": {}})

    @app.post("/api/search/image", summary="Search by an example image (not stored), optionally with text")
    def search_image(
        request: Request,
        file: Annotated[UploadFile, File(description="an image file")],
        limit: Limit = 40,
        offset: Offset = 0,
        folder: str | None = None,
        taken_after: str | None = None,
        taken_before: str | None = None,
        format: str | None = None,
        q: Annotated[str, Query(description="text terms to combine with the image (query language)")] = "",
        image_weight: Annotated[float, Query(allow_inf_nan=False, description="the upload's weight")] = 1.0,
        min_match: MinMatch = None,
    ) -> dict[str, Any]:
        svc = services(request)
        cap = svc.settings.upload_max_bytes
        data = file.file.read(cap + 1)
        if len(data) > cap:
            raise HTTPException(413, f"The upload is larger than {cap // (1024 * 1024)} MB (UPLOAD_MAX_MB).")
        base = make_filters(folder, taken_after, taken_before, format)
        if image_weight == 0:
            raise BadRequest("image_weight: 0: expected a weight other than 0")
        model = svc.require_model()
        try:
            decoded = decode_image(data, model.preprocessing, max_pixels=svc.settings.max_image_pixels)
        except ImageError as exc:
            raise HTTPException(415, f"Not a usable image: {exc}.") from None
        assert decoded.pixels is not None
        upload = Upload(model.embed_pixels(decoded.pixels[None])[0], image_weight, file.filename or "upload")
        understood, results, more = parsed_and_answered(
            svc, q, base, limit=limit, offset=offset, min_match=min_match, uploads=[upload]
        )
        query: dict[str, Any] = {"image": upload.name, **({"q": q} if q.strip() else {})}
        return page(query, results, limit, offset, more, understood=understood)

    @app.get("/api/images/{image_id}", summary="One indexed image")
    def image_info(request: Request, image_id: ImageId) -> dict[str, Any]:
        with services(request).connection() as conn:
            record = get_image(conn, image_id)
        if record is None:
            raise HTTPException(404, f"No indexed image has id {image_id}.")
        return record.as_json()

    @app.get("/api/images/{image_id}/similar", summary="Images most like an indexed image")
    def similar(
        request: Request, image_id: ImageId, limit: Limit = 40, offset: Offset = 0, min_match: MinMatch = None
    ) -> dict[str, Any]:
        svc = services(request)
        level = check_min_match(min_match)
        model = svc.require_model()
        with svc.connection() as conn:
            try:
                results, more = answer(
                    conn,
                    model,
                    [Term(1.0, image_id=image_id)],
                    make_filters(),
                    limit=limit,
                    offset=offset,
                    min_match=level,
                    ef_search=svc.settings.search_ef,
                )
            except UnknownImage:
                raise HTTPException(404, f"No indexed image has id {image_id}.") from None
        return page({"similar_to": image_id}, results, limit, offset, more)

    def indexed_file(svc: Services, image_id: int) -> tuple[Path, str, str]:
        with svc.connection() as conn:
            facts = image_file_facts(conn, image_id)
        if facts is None:
            raise HTTPException(404, f"No indexed image has id {image_id}.")
        rel, fmt, digest = facts
        root = svc.settings.image_dir.resolve()
        try:
            real = (root / rel).resolve(strict=True)
        except (OSError, RuntimeError):
            raise HTTPException(404, f"The file for image {image_id} is gone from IMAGE_DIR.") from None
        if not real.is_relative_to(root) or not real.is_file():
            raise HTTPException(404, f"No indexed image has id {image_id}.")
        return real, fmt, digest

    @app.get("/api/images/{image_id}/file", summary="The original file")
    def original(request: Request, image_id: ImageId) -> FileResponse:
        real, fmt, _ = indexed_file(services(request), image_id)
        return FileResponse(real, media_type=MEDIA_TYPES.get(fmt, "application/octet-stream"))

    @app.get("/api/images/{image_id}/thumbnail", summary="A thumbnail, at most 320 px on the long side")
    def thumbnail(request: Request, image_id: ImageId) -> FileResponse:
        svc = services(request)
        real, _, digest = indexed_file(svc, image_id)
        target = thumbnail_path(svc.settings.thumbnail_dir, image_id, digest)
        try:
            ensure_thumbnail(real, target, svc.settings.max_image_pixels)
        except Exception as exc:  # whatever Pillow raises, the file cannot be shown now
            reason = one_line(exc)
            raise HTTPException(404, f"The file for image {image_id} can no longer be read ({reason}).") from None
        return FileResponse(target, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=86400"})

    @app.get("/api/status", summary="What is indexed, what failed, what the indexer is doing")
    def status(request: Request) -> JSONResponse:
        svc = services(request)
        svc.model_choice()
        try:
            with svc.connection() as conn:
                body = status_from(conn, svc.settings)
        except HTTPException as exc:
            return JSONResponse(status_code=503, content=unreachable_status(svc.settings, str(exc.detail)))
        loaded = svc.models.loaded
        if loaded is not None and body["device"] is None:
            body["device"], body["precision"] = loaded.device, loaded.precision
        if svc.models.error:
            body["model_error"] = svc.models.error
        svc.models.note_build_error(body["models"])
        return JSONResponse(body)

    def models_now(svc: Services) -> dict[str, Any]:
        with svc.connection() as conn:
            body = models_status(conn, svc.settings)
        svc.models.note_build_error(body)
        return body

    @app.get("/api/model", summary="The model in use and the one being built beside it")
    def model_info(request: Request) -> dict[str, Any]:
        return models_now(services(request))

    @app.post(
        "/api/model",
        summary="Choose the model: it is built beside the one in use, which keeps answering until the new "
        "one has every image (or at once, with switch_now); choosing the model in use cancels a build",
    )
    def model_choose(request: Request, body: ModelRequest) -> dict[str, Any]:
        svc = services(request)
        name = body.model.strip()
        if "\x00" in name or not name:
            raise BadRequest("model: expected a Hugging Face model id or a checkpoint folder")
        try:
            # reads the configuration only (no weights); a hub id not yet downloaded is fetched here,
            # which is the download the person asked for
            load_model(name, svc.settings.device, svc.settings.precision)
        except ModelLoadError as exc:
            raise BadRequest(f"model: {exc}") from None
        with svc.connection() as conn:
            choose_model(conn, name, switch_now=body.switch_now)
        svc.models.recheck_soon()
        return models_now(svc)

    @app.get("/api/folders", summary="Folders that hold indexed images, with counts")
    def folders(request: Request) -> dict[str, Any]:
        svc = services(request)
        model = svc.model_choice().serving
        with svc.connection() as conn:
            return {"folders": list_folders(conn, model)}

    @app.get("/api/duplicates", summary="Groups of exact and near-duplicate images (nothing is deleted)")
    def duplicates(
        request: Request,
        threshold: Annotated[
            float,
            Query(
                allow_inf_nan=False,
                description="cosine similarity above which two images are near-duplicates, 0.5 to 1.0",
            ),
        ] = DEFAULT_THRESHOLD,
        folder: Annotated[str | None, Query(description="only this subfolder of IMAGE_DIR")] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="groups per page")] = 20,
        offset: Annotated[int, Query(ge=0, description="groups to skip")] = 0,
    ) -> dict[str, Any]:
        svc = services(request)
        model = svc.model_choice().serving
        with svc.connection() as conn:
            return duplicates_page(conn, model, threshold=threshold, folder=folder, limit=limit, offset=offset)

    @app.get("/duplicates", include_in_schema=False)
    def duplicates_view() -> FileResponse:
        return FileResponse(FRONTEND_DIR / "duplicates.html")

    @app.get("/status", include_in_schema=False)
    def status_page() -> FileResponse:
        return FileResponse(FRONTEND_DIR / "status.html")

    app.mount("/", StaticFiles(directory=FRONTEND_DIR, html=True), name="frontend")
    return app


def _openapi_with_bearer(app: FastAPI) -> dict[str, Any]:
    """The schema with the bearer scheme declared, so /docs offers "Authorize" and sends the token."""
    if app.openapi_schema is None:
        from fastapi.openapi.utils import get_openapi

        schema = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
        schema.setdefault("components", {})["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer", "description": "the server's API_TOKEN"}
        }
        schema["security"] = [{"bearer": []}]
        app.openapi_schema = schema
    return app.openapi_schema


def jsonable(errors: Any) -> Any:
    from fastapi.encoders import jsonable_encoder

    return jsonable_encoder(errors, custom_encoder={Exception: str})


app = create_app()
