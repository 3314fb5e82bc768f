"""An item's files: the one indexed (with HTTP range requests, so a player can seek), a video as
every browser plays it, a thumbnail, a preview browsers can show, the RAW it came with, and a Live
Photo's motion."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, JSONResponse, Response

from api.bounds import MAX_SECOND
from api.schemas import VideoPlayback, errors, image_bytes
from api.search import StoredFile, stored_file
from api.services import Services, ServicesDep
from api.thumbnails import PREVIEW_SIZE, THUMBNAIL_SIZE, ensure_picture, ensure_video_frame, rendition_path
from api.transcodes import Playback
from core.errors import NotFound, first_line
from core.media.library import extension

router = APIRouter(tags=["images"], responses=errors(422, 503))

ImageId = Annotated[int, PathParam(ge=0, lt=2**63, description="an image id from a search result")]
MEDIA_TYPES = {
    "jpeg": "image/jpeg",
    "jpg": "image/jpeg",
    "png": "image/png",
    "webp": "image/webp",
    "gif": "image/gif",
    "bmp": "image/bmp",
    "tiff": "image/tiff",
    "tif": "image/tiff",
    "mpo": "image/jpeg",
    "heic": "image/heic",
    "heif": "image/heif",
    "avif": "image/avif",
    "jxl": "image/jxl",
    "dng": "image/x-adobe-dng",
    "mp4": "video/mp4",
    "m4v": "video/mp4",
    # QuickTime files from phones hold H.264 or HEVC like MP4s do; browsers other than Safari
    # refuse to play `video/quicktime`, and play the same bytes announced as MP4
    "mov": "video/mp4",
    "webm": "video/webm",
    "mkv": "video/x-matroska",
    "avi": "video/x-msvideo",
    "3gp": "video/3gpp",
}
CACHED = {"Cache-Control": "private, max-age=86400"}


def _stored(services: Services, image_id: int) -> StoredFile:
    with services.connection() as conn:
        stored = stored_file(conn, image_id)
    if stored is None:
        raise NotFound(f"No indexed image has id {image_id}.")
    return stored


def _file(services: Services, image_id: int, key: str) -> Path:
    real = services.library.file(key)
    if real is None:
        raise NotFound(f"The file for image {image_id} is gone from IMAGE_DIR.")
    return real


def _unreadable(image_id: int, exc: Exception) -> NotFound:
    return NotFound(f"The file for image {image_id} can no longer be read ({first_line(exc)}).")


@router.get(
    "/api/images/{image_id}/file",
    summary="The file as it is in IMAGE_DIR (a picture or a video; range requests supported)",
    response_class=FileResponse,
    responses={**image_bytes("the file as it is in IMAGE_DIR"), **errors(404)},
)
def original_file(services: ServicesDep, image_id: ImageId) -> FileResponse:
    stored = _stored(services, image_id)
    real = _file(services, image_id, stored.path)
    media_type = MEDIA_TYPES.get(extension(real.name)) or MEDIA_TYPES.get(stored.format, "application/octet-stream")
    return FileResponse(real, media_type=media_type)


PREPARING = {
    "model": VideoPlayback,
    "description": "the video is being converted for browsers: ask again in a moment (Retry-After)",
}


def _playback(services: Services, image_id: int) -> Playback:
    """A video's, or a Live Photo's motion's."""
    stored = _stored(services, image_id)
    if stored.kind == "video":
        return services.transcodes.playback(_file(services, image_id, stored.path), stored.content_hash)
    if stored.motion is not None:
        real = _file(services, image_id, stored.motion)
        try:
            content_hash = services.transcodes.file_hash(real)
        except OSError as exc:
            raise _unreadable(image_id, exc) from None
        return services.transcodes.playback(real, content_hash)
    raise NotFound(f"Image {image_id} is neither a video nor a Live Photo.")


def _playback_json(image_id: int, playback: Playback) -> dict[str, object]:
    return {
        "state": playback.state,
        "url": f"/api/images/{image_id}/video",
        "converted": playback.converted,
        "codec": playback.codec,
        "progress": playback.progress,
    }


@router.get(
    "/api/images/{image_id}/video",
    summary="A video (or a Live Photo's motion) as every browser plays it: the file itself, or H.264/AAC made "
    "from it (range requests supported)",
    response_class=FileResponse,
    responses={**image_bytes("the video"), 202: PREPARING, **errors(404, 415)},
)
def playable_video(services: ServicesDep, image_id: ImageId) -> Response:
    playback = _playback(services, image_id)
    if playback.path is None:
        body = _playback_json(image_id, playback)
        return JSONResponse(body, status_code=202, headers={"Retry-After": "1"})
    return FileResponse(playback.path, media_type=playback.media_type)


@router.get(
    "/api/images/{image_id}/video/status",
    summary="Whether a video plays now or is being converted for browsers (asking starts the conversion)",
    response_model=VideoPlayback,
    responses=errors(404, 415),
)
def video_status(services: ServicesDep, image_id: ImageId) -> dict[str, object]:
    return _playback_json(image_id, _playback(services, image_id))


@router.get(
    "/api/images/{image_id}/thumbnail",
    summary=f"A thumbnail, at most {THUMBNAIL_SIZE} px on the long side",
    response_class=FileResponse,
    responses={**image_bytes("a JPEG"), **errors(404)},
)
def thumbnail(
    services: ServicesDep,
    image_id: ImageId,
    at: Annotated[float | None, Query(ge=0, le=MAX_SECOND, description="a video's second to show")] = None,
) -> FileResponse:
    stored = _stored(services, image_id)
    real = _file(services, image_id, stored.path)
    cache = services.settings.thumbnail_dir
    max_pixels = services.settings.max_image_pixels
    try:
        if stored.kind == "video":
            # a tenth of a second within the video: a cached frame for every value a client might
            # send would fill the disk
            second = at if at is not None else stored.poster_at or 0.0
            second = round(min(second, stored.duration or second), 1)
            target = rendition_path(cache, image_id, stored.content_hash, f"t{second:g}")
            ensure_video_frame(real, second, target, THUMBNAIL_SIZE, max_pixels)
        else:
            target = rendition_path(cache, image_id, stored.content_hash)
            ensure_picture(real, target, THUMBNAIL_SIZE, max_pixels)
    except Exception as exc:  # whatever a decoder raises, the file cannot be shown now
        raise _unreadable(image_id, exc) from None
    return FileResponse(target, media_type="image/jpeg", headers=CACHED)


@router.get(
    "/api/images/{image_id}/preview",
    summary=f"The picture as a JPEG of up to {PREVIEW_SIZE} px, for formats browsers cannot show (HEIC, RAW, ...)",
    response_class=FileResponse,
    responses={**image_bytes("a JPEG"), **errors(404)},
)
def preview(services: ServicesDep, image_id: ImageId) -> FileResponse:
    stored = _stored(services, image_id)
    real = _file(services, image_id, stored.path)
    if stored.kind == "video":
        raise NotFound(f"Image {image_id} is a video: play its file, or ask for its thumbnail at a second.")
    target = rendition_path(services.settings.thumbnail_dir, image_id, stored.content_hash, "preview")
    try:
        ensure_picture(real, target, PREVIEW_SIZE, services.settings.max_image_pixels)
    except Exception as exc:
        raise _unreadable(image_id, exc) from None
    return FileResponse(target, media_type="image/jpeg", headers=CACHED)


@router.get(
    "/api/images/{image_id}/original",
    summary="The RAW file a JPEG or HEIC was written with",
    response_class=FileResponse,
    responses={**image_bytes("the RAW file"), **errors(404)},
)
def raw_original(services: ServicesDep, image_id: ImageId) -> FileResponse:
    stored = _stored(services, image_id)
    if stored.original is None:
        raise NotFound(f"Image {image_id} has no RAW original beside it.")
    real = _file(services, image_id, stored.original)
    media_type = MEDIA_TYPES.get(extension(real.name), "application/octet-stream")
    return FileResponse(real, media_type=media_type, filename=real.name)


@router.get(
    "/api/images/{image_id}/motion",
    summary="A Live Photo's motion (range requests supported)",
    response_class=FileResponse,
    responses={**image_bytes("the video"), **errors(404)},
)
def motion(services: ServicesDep, image_id: ImageId) -> FileResponse:
    stored = _stored(services, image_id)
    if stored.motion is None:
        raise NotFound(f"Image {image_id} is not a Live Photo.")
    real = _file(services, image_id, stored.motion)
    return FileResponse(real, media_type=MEDIA_TYPES.get(extension(real.name), "video/mp4"))
