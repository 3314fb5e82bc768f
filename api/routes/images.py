"""Indexed images: their facts, the images most like one, the folders that hold them and the
places they were taken. Their files, thumbnails and previews: `api.routes.files`."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse

from api.answer import Ask, answer
from api.people import with_people
from api.places import places_of
from api.routes.search import page_response
from api.schemas import Folders, Image, Limit, MinMatch, Offset, Order, Places, SearchPage, Sort, answers, errors
from api.search import get_image, list_folders
from api.services import ServicesDep
from core.errors import NotFound

router = APIRouter(tags=["images"], responses=errors(422, 503))

# ids are 53-bit; bounding them turns a huge number into a 422 instead of a numeric the database
# would have to compare against a bigint
ImageId = Annotated[int, PathParam(ge=0, lt=2**63, description="an image id from a search result")]


def no_image(image_id: int) -> NotFound:
    return NotFound(f"No indexed image has id {image_id}.")


@router.get("/api/images/{image_id}", summary="One indexed image", response_model=None, responses=answers(Image, 404))
def image_info(services: ServicesDep, image_id: ImageId) -> dict[str, Any]:
    with services.connection() as conn:
        record = get_image(conn, image_id)
        if record is None:
            raise no_image(image_id)
        found = record.as_json()
        with_people(conn, [found])
    return found


@router.get(
    "/api/images/{image_id}/similar",
    summary="Images most like an indexed image",
    response_model=None,
    responses=answers(SearchPage, 404),
)
def similar(
    services: ServicesDep,
    image_id: ImageId,
    limit: Limit = 40,
    offset: Offset = 0,
    min_match: MinMatch = None,
    sort: Sort = None,
    order: Order = None,
) -> JSONResponse:
    echo = {"similar_to": image_id}
    ask = Ask(similar_to=image_id, limit=limit, offset=offset, min_match=min_match, sort=sort, order=order, echo=echo)
    return page_response(answer(services, ask))


@router.get(
    "/api/folders",
    summary="Folders that hold indexed images, with counts",
    response_model=None,
    responses=answers(Folders),
)
def folders(services: ServicesDep) -> dict[str, Any]:
    model = services.model_choice().serving
    with services.connection() as conn:
        return {"folders": list_folders(conn, model, services.folders)}


@router.get(
    "/api/places",
    summary="Places where indexed images were taken, with counts",
    response_model=None,
    responses=answers(Places),
)
def places(services: ServicesDep) -> dict[str, Any]:
    model = services.model_choice().serving
    with services.connection() as conn:
        return {"places": [e.as_json() for e in places_of(conn, model, services.places).entries]}
