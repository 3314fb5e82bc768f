"""Groups of exact and near-duplicate images, for a person to look at (nothing is deleted)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from api.bounds import MAX_FOLDER
from api.duplicates import DEFAULT_THRESHOLD, MIN_THRESHOLD, duplicates_page
from api.schemas import DuplicatesPage, answers, errors
from api.search import MAX_LIMIT, MAX_OFFSET
from api.services import ServicesDep

router = APIRouter(tags=["duplicates"], responses=errors(422, 503))


@router.get(
    "/api/duplicates",
    summary="Groups of exact and near-duplicate images (nothing is deleted)",
    response_model=None,
    responses=answers(DuplicatesPage),
)
def duplicates(
    services: ServicesDep,
    threshold: Annotated[
        float,
        Query(
            ge=MIN_THRESHOLD,
            le=1.0,
            allow_inf_nan=False,
            description=f"cosine similarity above which two images are near-duplicates, {MIN_THRESHOLD} to 1.0",
        ),
    ] = DEFAULT_THRESHOLD,
    folder: Annotated[str | None, Query(max_length=MAX_FOLDER, description="only this subfolder of IMAGE_DIR")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="groups per page")] = 20,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET, description="groups to skip")] = 0,
) -> dict[str, Any]:
    model = services.model_choice().serving
    with services.connection() as conn:
        return duplicates_page(
            conn, model, services.duplicates, threshold=threshold, folder=folder, limit=limit, offset=offset
        )
