"""The OpenAPI description tells the truth: a live server, fuzzed from its own `/openapi.json` with
schemathesis, answers only what the description documents (status codes, content types, bodies),
and never with a server error."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from conftest import serve_and_wait
from fastapi.testclient import TestClient

from api.app import create_app
from core.settings import Settings

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"


def test_every_answer_matches_the_description(settings: Settings, start_process: Any, tmp_path: Path) -> None:
    _, base = serve_and_wait(start_process, settings, images=18)
    run = subprocess.run(
        [
            str(SCHEMATHESIS),
            "run",
            f"{base}/openapi.json",
            "--checks",
            CHECKS,
            "--phases",
            "examples,coverage,fuzzing",
            "--max-examples",
            "25",
            "--seed",  # the same cases every run: a failure here is reproducible, never flaky
            "1",
            "--report-dir",
            str(tmp_path / "schemathesis"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert "passed" in run.stdout and "API Operations" in run.stdout, run.stdout[-2000:]


def test_the_description_documents_errors_and_picture_bytes(settings: Settings) -> None:
    with TestClient(create_app(settings)) as client:
        schema = client.get("/openapi.json").json()
    paths = schema["paths"]
    # one-line errors, not FastAPI's validation list
    invalid = paths["/api/search"]["get"]["responses"]["422"]["content"]["application/json"]["schema"]
    assert invalid == {"$ref": "#/components/schemas/QueryErrorBody"}
    assert "detail" in schema["components"]["schemas"]["QueryErrorBody"]["required"]
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    for route in ("/api/images/{image_id}", "/api/images/{image_id}/file", "/api/images/{image_id}/thumbnail"):
        assert "404" in paths[route]["get"]["responses"], route
    for route in ("/api/images/{image_id}/file", "/api/images/{image_id}/thumbnail"):
        content = paths[route]["get"]["responses"]["200"]["content"]
        assert "image/jpeg" in content and "application/json" not in content, (route, content)
