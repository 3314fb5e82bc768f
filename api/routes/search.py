"""Searching: by text or the query language, by weighted terms, by an example image."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Query, UploadFile
from fastapi.responses import JSONResponse

from api.answer import Ask, Upload, answer, check_weight
from api.bounds import MAX_DATE, MAX_FOLDER, MAX_FORMAT, MAX_PLACE, MAX_QUERY, MAX_WEIGHT
from api.query import Term
from api.schemas import (
    QUERY_HELP,
    WEIGHT_HELP,
    Limit,
    MinMatch,
    Offset,
    Order,
    SearchPage,
    Sort,
    StructuredSearch,
    TextTerm,
    answers,
    errors,
)
from api.search import SearchFilters, make_filters
from api.services import ServicesDep
from core.errors import BadRequest, TooLarge, Unsupported
from core.media.pictures import ImageError, decode_image

router = APIRouter(prefix="/api/search", tags=["search"], responses=errors(400, 422, 503))


async def query_filters(
    folder: Annotated[str | None, Query(max_length=MAX_FOLDER, description="only this subfolder of IMAGE_DIR")] = None,
    taken_after: Annotated[str | None, Query(max_length=MAX_DATE, description="ISO date, inclusive")] = None,
    taken_before: Annotated[str | None, Query(max_length=MAX_DATE, description="ISO date, inclusive")] = None,
    format: Annotated[str | None, Query(max_length=MAX_FORMAT, description="jpeg, png, webp, gif, bmp, tiff")] = None,
    place: Annotated[
        str | None, Query(max_length=MAX_PLACE, description="a place name, as GET /api/places lists them")
    ] = None,
    person: Annotated[
        int | None, Query(ge=0, lt=2**63, description="a person's id, as GET /api/people lists them")
    ] = None,
) -> SearchFilters:
    """The filters of the query string, checked."""
    return make_filters(folder, taken_after, taken_before, format, place, person)


Filters = Annotated[SearchFilters, Depends(query_filters)]


def page_response(page: dict[str, Any]) -> JSONResponse:
    """A page of results as the JSON it already is: FastAPI would first walk it with
    `jsonable_encoder`, which took about a third of the server's Python time per search."""
    return JSONResponse(page)


@router.get("", summary="Search by text or the query language", response_model=None, responses=answers(SearchPage))
def search_text(
    services: ServicesDep,
    filters: Filters,
    q: Annotated[str, Query(max_length=MAX_QUERY, description=QUERY_HELP)] = "",
    limit: Limit = 40,
    offset: Offset = 0,
    min_match: MinMatch = None,
    sort: Sort = None,
    order: Order = None,
) -> JSONResponse:
    if not q.strip() and not (filters.any or filters.place):
        # filters alone browse what meets them, newest first (a place or a folder chosen on the page)
        raise BadRequest(
            "q must not be empty: describe what you are looking for, e.g. q=a dog on a beach, "
            "or give a filter such as place=Lisbon or folder=holidays"
        )
    ask = Ask(q=q, filters=filters, limit=limit, offset=offset, min_match=min_match, sort=sort, order=order, echo=q)
    return page_response(answer(services, ask))


@router.post(
    "",
    summary="Search by weighted terms (the structured form of the query language)",
    response_model=None,
    responses=answers(SearchPage),
)
def search_terms(services: ServicesDep, body: StructuredSearch) -> JSONResponse:
    terms = tuple(
        Term(t.weight, text=t.text) if isinstance(t, TextTerm) else Term(t.weight, image_id=t.image_id)
        for t in body.terms
    )
    ask = Ask(
        terms=terms,
        filters=make_filters(body.folder, body.taken_after, body.taken_before, body.format, body.place),
        limit=body.limit,
        offset=body.offset,
        min_match=body.min_match,
        sort=body.sort,
        order=body.order,
        echo={"terms": [t.model_dump() for t in body.terms]},
    )
    return page_response(answer(services, ask))


@router.post(
    "/image",
    summary="Search by an example image (not stored), optionally with text",
    response_model=None,
    responses=answers(SearchPage, 413, 415),
)
def search_image(
    services: ServicesDep,
    filters: Filters,
    file: Annotated[UploadFile, File(description="an image file")],
    limit: Limit = 40,
    offset: Offset = 0,
    q: Annotated[
        str, Query(max_length=MAX_QUERY, description="text terms to combine with the image (query language)")
    ] = "",
    image_weight: Annotated[
        float,
        Query(ge=-MAX_WEIGHT, le=MAX_WEIGHT, allow_inf_nan=False, description=f"the upload's weight, {WEIGHT_HELP}"),
    ] = 1.0,
    min_match: MinMatch = None,
    sort: Sort = None,
    order: Order = None,
) -> JSONResponse:
    cap = services.settings.upload_max_bytes
    data = file.file.read(cap + 1)
    if len(data) > cap:
        raise TooLarge(f"The upload is larger than {cap // (1024 * 1024)} MB (UPLOAD_MAX_MB).")
    check_weight(image_weight, "image_weight")
    embedder = services.embedder()
    try:
        decoded = decode_image(data, embedder.preprocessing, max_pixels=services.settings.max_image_pixels)
    except ImageError as exc:
        raise Unsupported(f"Not a usable image: {exc}.") from None
    assert decoded.pixels is not None
    name = file.filename or "upload"
    upload = Upload(embedder.embed_pixels(decoded.pixels[None])[0], image_weight, name)
    echo: dict[str, Any] = {"image": name, **({"q": q} if q.strip() else {})}
    ask = Ask(
        q=q,
        uploads=(upload,),
        filters=filters,
        limit=limit,
        offset=offset,
        min_match=min_match,
        sort=sort,
        order=order,
        echo=echo,
    )
    return page_response(answer(services, ask))
