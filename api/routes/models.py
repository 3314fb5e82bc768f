"""The model in use, the one being built beside it, and the status of the whole index."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.schemas import ModelRequest, answers
from api.services import Services, ServicesDep
from api.status import models_status, status_from, unreachable_status
from api.status_schemas import Models, Status
from core.errors import BadRequest, Unavailable
from core.models.checkpoints import ModelLoadError, find_checkpoint
from core.store.model_state import choose_model

router = APIRouter(tags=["models and status"])


@router.get(
    "/api/status",
    summary="What is indexed, what failed, what the indexer is doing",
    response_class=JSONResponse,
    responses={**answers(Status), 503: {"model": Status, "description": "the database is unreachable"}},
)
def status(services: ServicesDep) -> JSONResponse:
    services.model_choice()
    try:
        with services.connection() as conn:
            body = status_from(conn, services.settings, services.indexer)
    except Unavailable as exc:
        return JSONResponse(status_code=503, content=unreachable_status(services.settings, str(exc), services.indexer))
    loaded = services.models.loaded
    if loaded is not None:
        body["text_tower"] = loaded.text_tower_kind
        if body["device"] is None:
            body["device"], body["precision"] = loaded.device, loaded.precision
    if services.models.error:
        body["model_error"] = services.models.error
    services.models.note_build_error(body["models"])
    return JSONResponse(body)


def models_now(services: Services) -> dict[str, Any]:
    with services.connection() as conn:
        body = models_status(conn, services.settings)
    services.models.note_build_error(body)
    return body


@router.get(
    "/api/model",
    summary="The model in use and the one being built beside it",
    response_model=None,
    responses=answers(Models, 503),
)
def model_info(services: ServicesDep) -> dict[str, Any]:
    return models_now(services)


@router.post(
    "/api/model",
    summary="Choose the model: it is built beside the one in use, which keeps answering until the new "
    "one has every image (or at once, with switch_now); choosing the model in use cancels a build",
    response_model=None,
    responses=answers(Models, 400, 409, 422, 503),
)
def model_choose(services: ServicesDep, body: ModelRequest) -> dict[str, Any]:
    services.refuse_if_read_only("choosing a model")
    name = body.model.strip()
    if "\x00" in name or not name:
        raise BadRequest("model: expected a Hugging Face model id or a checkpoint folder")
    try:
        # reads the configuration only (no weights); a hub id not yet downloaded is fetched here,
        # which is the download the person asked for
        find_checkpoint(name)
    except ModelLoadError as exc:
        raise BadRequest(f"model: {exc}") from None
    with services.connection() as conn:
        choose_model(conn, name, switch_now=body.switch_now)
    services.models.recheck_soon()
    return models_now(services)
