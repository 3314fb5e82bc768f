"""The web page's own routes: its views, and the static files of `frontend/`."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from core.settings import PROJECT_ROOT

FRONTEND_DIR = PROJECT_ROOT / "frontend"

router = APIRouter(include_in_schema=False)


@router.get("/duplicates")
def duplicates_view() -> FileResponse:
    return FileResponse(FRONTEND_DIR / "duplicates.html")


@router.get("/people")
def people_view() -> FileResponse:
    return FileResponse(FRONTEND_DIR / "people.html")


@router.get("/status")
def status_view() -> FileResponse:
    return FileResponse(FRONTEND_DIR / "status.html")


def mount_frontend(app: FastAPI) -> None:
    """Everything else under / is the page's files (index.html for /)."""
    app.mount("/", StaticFiles(directory=FRONTEND_DIR, html=True), name="frontend")
