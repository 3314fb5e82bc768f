"""Indexed images: their facts, the images most like one, the original file, a thumbnail, and the
folders that hold them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter
from fastapi import Path as PathParam
from fastapi.responses import FileResponse

from api.answer import Ask, answer
from api.schemas import Folders, Image, Limit, MinMatch, Offset, SearchPage, answers, errors, image_bytes
from api.search import get_image, image_file_facts, list_folders
from api.services import Services, ServicesDep
from api.thumbnails import ensure_thumbnail, thumbnail_path
from core.errors import NotFound, first_line

router = APIRouter(tags=["images"], responses=errors(422, 503))

# ids are 53-bit; bounding them turns a huge number into a 422 instead of a numeric the database
# would have to compare against a bigint
ImageId = Annotated[int, PathParam(ge=0, lt=2**63, description="an image id from a search result")]
MEDIA_TYPES = {
    "jpeg": "image/jpeg",
    "png": "image/png",
    "webp": "image/webp",
    "gif": "image/gif",
    "bmp": "image/bmp",
    "tiff": "image/tiff",
    "mpo": "image/jpeg",
}


def no_image(image_id: int) -> NotFound:
    return NotFound(f"No indexed image has id {image_id}.")


@router.get("/api/images/{image_id}", summary="One indexed image", response_model=None, responses=answers(Image, 404))
def image_info(services: ServicesDep, image_id: ImageId) -> dict[str, Any]:
    with services.connection() as conn:
        record = get_image(conn, image_id)
    if record is None:
        raise no_image(image_id)
    return record.as_json()


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
) -> dict[str, Any]:
    ask = Ask(similar_to=image_id, limit=limit, offset=offset, min_match=min_match, echo={"similar_to": image_id})
    return answer(services, ask)


def indexed_file(services: Services, image_id: int) -> tuple[Path, str, str]:
    """(the file, its format, its content hash), or NotFound when the image or its file is gone."""
    with services.connection() as conn:
        facts = image_file_facts(conn, image_id)
    if facts is None:
        raise no_image(image_id)
    rel, fmt, digest = facts
    root = services.settings.image_dir.resolve()
    try:
        real = (root / rel).resolve(strict=True)
    except (OSError, RuntimeError):
        raise NotFound(f"The file for image {image_id} is gone from IMAGE_DIR.") from None
    if not real.is_relative_to(root) or not real.is_file():
        raise no_image(image_id)
    return real, fmt, digest


@router.get(
    "/api/images/{image_id}/file",
    summary="The original file",
    response_class=FileResponse,
    responses={**image_bytes("the file as it is in IMAGE_DIR"), **errors(404)},
)
def original(services: ServicesDep, image_id: ImageId) -> FileResponse:
    real, fmt, _ = indexed_file(services, image_id)
    return FileResponse(real, media_type=MEDIA_TYPES.get(fmt, "application/octet-stream"))


@router.get(
    "/api/images/{image_id}/thumbnail",
    summary="A thumbnail, at most 320 px on the long side",
    response_class=FileResponse,
    responses={**image_bytes("a JPEG"), **errors(404)},
)
def thumbnail(services: ServicesDep, image_id: ImageId) -> FileResponse:
    real, _, digest = indexed_file(services, image_id)
    target = thumbnail_path(services.settings.thumbnail_dir, image_id, digest)
    try:
        ensure_thumbnail(real, target, services.settings.max_image_pixels)
    except Exception as exc:  # whatever Pillow raises, the file cannot be shown now
        reason = first_line(exc)
        raise NotFound(f"The file for image {image_id} can no longer be read ({reason}).") from None
    return FileResponse(target, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=86400"})


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
