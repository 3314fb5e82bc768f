"""The web app: the HTTP API and the page, serving what the indexer has put in the database.

`create_app` builds it and does nothing else; `python main.py serve` runs it beside the live
indexer, and `uvicorn --factory api.app:create_app` runs it alone against an existing database.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from api.routes import duplicates, files, images, models, pages, people, search
from api.security import TokenAuth, UploadLimit
from api.services import Services
from core.errors import BadRequest, Conflict, NotFound, ReadOnly, TooLarge, Unavailable, Unsupported, UserError
from core.models.embedder import Embedders
from core.settings import Settings, get_settings
from core.store.indexer_status import LocalIndexer

# while the database is away the pool logs every failed reconnection; /api/status says it once
logging.getLogger("psycopg.pool").setLevel(logging.CRITICAL)

# the HTTP answer for each kind of user error (the first that matches)
STATUS_CODES: tuple[tuple[type[UserError], int], ...] = (
    (NotFound, 404),
    (TooLarge, 413),
    (Unsupported, 415),
    (ReadOnly, 409),
    (Conflict, 409),
    (Unavailable, 503),
    (BadRequest, 422),
)


def create_app(
    settings: Settings | None = None, embedders: Embedders | None = None, indexer: LocalIndexer | None = None
) -> FastAPI:
    """The app for these settings (default: the environment's), embedding queries with these
    embedders (default: its own; `serve` passes the indexer's, so both share one loaded model).
    `indexer`: the indexer running in this process, if any (`serve`), which status reads first."""
    settings = settings or get_settings()
    services = Services(
        settings, embedders or Embedders(settings.compiled_text_dir, settings.compiled_image_dir), indexer
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(services.open)
        loading = asyncio.create_task(asyncio.to_thread(services.load_model))
        try:
            yield
        finally:
            await asyncio.gather(loading, return_exceptions=True)
            await asyncio.to_thread(services.close)

    app = FastAPI(
        title="Sightline",
        summary="Search a folder of images by describing them.",
        version="0.1.0",
        lifespan=lifespan,
        dependencies=[Depends(reject_nul_bytes)],
    )
    app.state.services = services
    app.add_middleware(UploadLimit, path="/api/search/image", max_bytes=settings.upload_max_bytes)
    if settings.api_token:
        app.add_middleware(TokenAuth, token=settings.api_token)
    if settings.cors_origins:
        # Added last, so it is the outermost layer: preflights (which never carry the token) are
        # answered here, and a 401 still carries the CORS headers the calling page needs to read
        # it. Credentials stay off, so no origin, and never "*", can send the image cookie; other
        # sites authenticate with the bearer header, which must then be allowed.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST", "PATCH"],
            allow_headers=["Authorization"],
            allow_credentials=False,
        )
    app.add_exception_handler(UserError, user_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    for resource in (search, images, files, models, duplicates, people, pages):
        app.include_router(resource.router)
    app.mount("/api", unrouted(app))  # before the page's files, which would answer any path
    pages.mount_frontend(app)
    app.openapi = lambda: openapi(app, bearer=bool(settings.api_token))  # type: ignore[method-assign]
    return app


def unrouted(app: FastAPI) -> ASGIApp:
    """What answers a request under /api that no route took: a 405 whose `Allow` names every method
    of that path (Starlette's names one route's only, and FastAPI makes a route per method), else a
    404; both in one line of JSON, as every other error."""

    async def answer(scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        described = app.openapi()["paths"]
        allowed = sorted(
            method.upper()
            for template, methods in described.items()
            if re.fullmatch("[^/]+".join(map(re.escape, re.split(r"\{[^}]+\}", template))), path)
            for method in methods
        )
        if allowed:
            detail = f"{scope['method']} is not a method of {path}: use {' or '.join(allowed)}"
            reply = JSONResponse({"detail": detail}, status_code=405, headers={"Allow": ", ".join(allowed)})
        else:
            reply = JSONResponse({"detail": f"No API route at {path}: see /docs for the routes"}, status_code=404)
        await reply(scope, receive, send)

    return answer


async def reject_nul_bytes(request: Request) -> None:
    """Postgres text cannot hold NUL; refuse it up front rather than fail inside a query."""
    for name, value in request.query_params.multi_items():
        if "\x00" in value:
            raise BadRequest(f"{name} must not contain NUL (\\x00) characters")


async def user_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, UserError)
    code = next((code for kind, code in STATUS_CODES if isinstance(exc, kind)), 422)
    return JSONResponse(status_code=code, content={"detail": str(exc), **exc.details()})


async def validation_error(request: Request, exc: Exception) -> JSONResponse:
    """One line first, as for every other error; FastAPI's list after it, for programs."""
    assert isinstance(exc, RequestValidationError)
    found = exc.errors()
    first = found[0] if found else {}
    where = ".".join(str(p) for p in first.get("loc", ())[1:]) or "request"
    detail = f"{where}: {first.get('msg', 'invalid value')}"
    return JSONResponse(status_code=422, content={"detail": detail, "errors": jsonable(found)})


def jsonable(errors: Any) -> Any:
    return jsonable_encoder(errors, custom_encoder={Exception: str})


def openapi(app: FastAPI, *, bearer: bool) -> dict[str, Any]:
    """The schema as the server answers: FastAPI's own validation-error body is replaced by ours
    (a one-line `detail` with the list in `errors`), and with a token the bearer scheme is declared,
    so /docs offers "Authorize" and sends it."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
        for operation in (op for path in schema.get("paths", {}).values() for op in path.values()):
            invalid = operation.get("responses", {}).get("422")
            if invalid is not None:
                invalid["content"] = {"application/json": {"schema": {"$ref": "#/components/schemas/QueryErrorBody"}}}
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.pop("HTTPValidationError", None)
        components.pop("ValidationError", None)
        if bearer:
            schema["components"]["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer", "description": "the server's API_TOKEN"}
            }
            schema["security"] = [{"bearer": []}]
        app.openapi_schema = schema
    return app.openapi_schema
