"""`python main.py serve`: one process, the live indexer and the web server sharing one model."""

from __future__ import annotations

import uvicorn

from api.app import create_app
from api.security import check_bind
from core.settings import Settings


def serve(settings: Settings, host: str | None = None, port: int | None = None) -> None:
    host = host or settings.host
    port = port or settings.port
    check_bind(host, settings)  # before anything starts: the refusal is one line, not a half-started server
    app = create_app(settings, with_indexer=True)
    print(f"Sightline on http://{host}:{port}/  (indexing {settings.image_dir})", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
