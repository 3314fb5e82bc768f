"""People and their faces: the list, one person's pictures, naming, hiding, merging, moving a face,
and a face's crop. The rules of corrections: `core.store.people`."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi import Path as PathParam
from fastapi.responses import FileResponse

from api import people
from api.schemas import (
    FaceChange,
    FaceChanged,
    Merge,
    PeoplePage,
    PersonChange,
    PersonPage,
    answers,
    errors,
    image_bytes,
)
from api.services import ServicesDep
from api.thumbnails import FACE_SIZE, ensure_face, rendition_path
from core.errors import BadRequest, NotFound, first_line
from core.store.db import IMAGES_TABLE

router = APIRouter(tags=["people"], responses=errors(422, 503))

PersonId = Annotated[int, PathParam(ge=0, lt=2**63, description="a person's id from GET /api/people")]
FaceId = Annotated[int, PathParam(ge=0, lt=2**63, description="a face's id, from a result's people")]


@router.get("/api/people", summary="People found in the collection, most pictures first", response_model=None,
            responses=answers(PeoplePage))  # fmt: skip
def list_people(
    services: ServicesDep, hidden: Annotated[bool, Query(description="also the hidden people")] = False
) -> dict[str, Any]:
    with services.connection() as conn:
        return {"people": people.list_people(conn, hidden=hidden)}


@router.get("/api/people/{person_id}", summary="One person, with every picture of theirs (one item per face)",
            response_model=None, responses=answers(PersonPage, 404))  # fmt: skip
def get_person(services: ServicesDep, person_id: PersonId) -> dict[str, Any]:
    with services.connection() as conn:
        return people.get_person(conn, person_id)


@router.patch("/api/people/{person_id}", summary="Name, rename, hide or show a person", response_model=None,
              responses=answers(PersonPage, 400, 404, 409))  # fmt: skip
def change_person(services: ServicesDep, person_id: PersonId, body: PersonChange) -> dict[str, Any]:
    services.refuse_if_read_only("changing a person")
    if body.name is None and body.hidden is None:
        raise BadRequest('nothing to change: send {"name": "..."} and/or {"hidden": true|false}')
    with services.connection() as conn:
        return people.update_person(conn, person_id, name=body.name, hidden=body.hidden)


@router.post("/api/people/{person_id}/merge", summary="Merge a person into another, which keeps its id",
             response_model=None, responses=answers(PersonPage, 400, 404, 409))  # fmt: skip
def merge_person(services: ServicesDep, person_id: PersonId, body: Merge) -> dict[str, Any]:
    services.refuse_if_read_only("merging people")
    with services.connection() as conn:
        return people.merge(conn, person_id, body.into)


@router.patch("/api/faces/{face_id}", summary="Move a face to another person, out into a new one, or say it is no face",
              response_model=None, responses=answers(FaceChanged, 400, 404, 409))  # fmt: skip
def change_face(services: ServicesDep, face_id: FaceId, body: FaceChange) -> dict[str, Any]:
    services.refuse_if_read_only("changing a face")
    fields = body.model_fields_set
    if body.not_a_face:
        if body.person_id is not None:
            raise BadRequest("a face cannot be both someone and not a face: send person_id or not_a_face")
        with services.connection() as conn:
            return people.update_face(conn, face_id, not_a_face=True)
    if "person_id" not in fields:
        raise BadRequest('nothing to change: send {"person_id": ID}, {"person_id": null} or {"not_a_face": true}')
    with services.connection() as conn:
        return people.update_face(conn, face_id, person_id=body.person_id)


@router.get("/api/faces/{face_id}/thumbnail", summary=f"A face's crop, {FACE_SIZE} px", response_class=FileResponse,
            responses={**image_bytes("a JPEG"), **errors(404)})  # fmt: skip
def face_thumbnail(services: ServicesDep, face_id: FaceId) -> FileResponse:
    with services.connection() as conn:
        image_id, box, second = people.face_source(conn, face_id)
        row = conn.execute(f"SELECT path, content_hash, kind FROM {IMAGES_TABLE} WHERE id = %s", (image_id,)).fetchone()
    if row is None:
        raise NotFound(f"No face of the collection has id {face_id}.")
    path, content_hash, kind = row
    real = services.library.file(path)
    if real is None:
        raise NotFound(f"The file of face {face_id} is gone from IMAGE_DIR.")
    target = rendition_path(services.settings.thumbnail_dir, image_id, content_hash, f"face{face_id}")
    try:
        ensure_face(real, box, second, target, services.settings.max_image_pixels, video=kind == "video")
    except Exception as exc:  # whatever a decoder raises, the file cannot be shown now
        raise NotFound(f"The file of face {face_id} can no longer be read ({first_line(exc)}).") from None
    return FileResponse(target, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=86400"})
