"""The OpenAPI description tells the truth: a live server, fuzzed from its own `/openapi.json` with
schemathesis, answers only what the description documents (status codes, content types, bodies, the
methods a 405 allows), refuses what the description rules out (a number out of its range, a string
too long, a field of the wrong type) with a 4xx, and never answers with a server error.

The server has something behind every route: pictures, a video, a Live Photo, a RAW original and
faces grouped into people. Every operation is fuzzed, the ones that change things (PATCH a person or
a face, merge people, choose a model) included: they change this server's own database. The ids of
its images, people and faces are added to the description as examples, so that every route answers
a success as well as its errors, and the test checks from the recorded exchanges that it did.

`make test` runs a few examples per operation; `make check` runs many more (OPENAPI_EXAMPLES), and
OPENAPI_SEED picks other cases than the usual ones.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
from camera_roll import write_camera_roll
from conftest import serve_and_wait, wait_for
from faces import SHARED_FACES
from fastapi.testclient import TestClient

from api.app import create_app
from api.routes.files import MEDIA_TYPES
from core.settings import Settings

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
# every check but positive_data_acceptance: the API refuses some values its schema allows, by rules
# a schema cannot say (an empty change, merging a person into themselves, a model that is not there)
CHECKS = ("all", "positive_data_acceptance")
EXAMPLES = int(os.environ.get("OPENAPI_EXAMPLES", "8"))
SEED = os.environ.get("OPENAPI_SEED", "1")  # the same cases every run: a failure is reproducible, never flaky
# a success needs what random data cannot give: an image file to search with (tests/test_query.py
# uploads one), a checkpoint this server can load (tests/test_model_switch.py)
NO_SUCCESS_EXPECTED = {("POST", "/api/search/image"), ("POST", "/api/model")}
SHAPES = 18  # the pictures of the `settings` fixture's folder


def a_library_with_everything(settings: Settings) -> int:
    """Adds a camera roll and three portraits to the fixture's folder; returns how many items it holds."""
    top = settings.image_dirs[0]
    write_camera_roll(top / "roll")  # a video, a RAW beside its JPEG, a Live Photo, a HEIC, an XMP
    (top / "faces").mkdir()
    for name in ("obama.jpg", "obama2.jpg", "biden.jpg"):  # two people, one of them twice
        shutil.copyfile(SHARED_FACES / name, top / "faces" / name)
    return SHAPES + 4 + 3


def ids_of(base: str) -> dict[str, list[int]]:
    """Real ids for each kind of path parameter: an image of each kind, every person and face."""
    results = httpx.get(f"{base}/api/search", params={"q": "x", "limit": 200}, timeout=60).json()["results"]
    images: dict[str, int] = {}
    for r in results:
        kind = "live" if r["motion_url"] else "raw" if r["original_url"] else r["kind"]
        images.setdefault(kind, r["id"])
    assert set(images) == {"picture", "video", "live", "raw"}, images
    people = [p["id"] for p in httpx.get(f"{base}/api/people", timeout=30).json()["people"]]
    faces = [i["face_id"] for p in people for i in httpx.get(f"{base}/api/people/{p}", timeout=30).json()["items"]]
    assert len(people) == 2 and len(faces) == 3, (people, faces)
    return {"image_id": list(images.values()), "person_id": people, "face_id": faces}


def with_examples(schema: dict[str, Any], ids: dict[str, list[int]]) -> dict[str, Any]:
    for operation in (op for path in schema["paths"].values() for op in path.values()):
        for parameter in operation.get("parameters", []):
            if parameter["in"] == "path" and parameter["name"] in ids:
                values = ids[parameter["name"]]
                parameter["examples"] = {f"real{i}": {"value": v} for i, v in enumerate(values)}
    merge = schema["paths"]["/api/people/{person_id}/merge"]["post"]["requestBody"]["content"]["application/json"]
    merge["example"] = {"into": ids["person_id"][0]}  # the other person merges into this one
    return schema


def answered(har: Path, schema: dict[str, Any]) -> dict[tuple[str, str], set[int]]:
    """The status codes each documented operation answered, from schemathesis's record of the run."""
    patterns = [
        (template, re.compile("[^/]+".join(map(re.escape, re.split(r"\{[^}]+\}", template)))))
        for template in schema["paths"]
    ]
    codes: dict[tuple[str, str], set[int]] = defaultdict(set)
    for entry in json.loads(har.read_text())["log"]["entries"]:
        method, path = entry["request"]["method"], urlparse(entry["request"]["url"]).path
        template = next((t for t, pattern in patterns if pattern.fullmatch(path)), None)
        if template is not None and method.lower() in schema["paths"][template]:
            codes[(method, template)].add(entry["response"]["status"])
    return codes


def test_every_answer_matches_the_description(settings: Settings, start_process: Any, tmp_path: Path) -> None:
    items = a_library_with_everything(settings)
    _, base = serve_and_wait(start_process, settings, images=items, FACES="on", OCR="off")
    wait_for(lambda: httpx.get(f"{base}/api/status").json()["faces"]["waiting"] == 0, timeout=120, interval=0.5)
    schema = httpx.get(f"{base}/openapi.json").json()
    described = tmp_path / "openapi.json"
    described.write_text(json.dumps(with_examples(schema, ids_of(base))))
    reports = tmp_path / "schemathesis"
    run = subprocess.run(
        [
            str(SCHEMATHESIS),
            "run",
            str(described),
            "--url",
            base,
            "--checks",
            CHECKS[0],
            "--exclude-checks",
            CHECKS[1],
            "--phases",
            "examples,coverage,fuzzing,stateful",
            "--max-examples",
            str(EXAMPLES),
            "--seed",
            SEED,
            "--report",
            "har",
            "--report-dir",
            str(reports),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert "passed" in run.stdout and "API Operations" in run.stdout, run.stdout[-2000:]
    codes = answered(next(reports.glob("har-*.json")), schema)
    operations = {(method.upper(), path) for path, ops in schema["paths"].items() for method in ops}
    assert set(codes) == operations, operations - set(codes)
    unsuccessful = {op for op in operations - NO_SUCCESS_EXPECTED if not any(200 <= c < 300 for c in codes[op])}
    assert not unsuccessful, {op: codes[op] for op in unsuccessful}
    assert all(c < 500 for c in set().union(*codes.values())), codes


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
    for route in ("/api/images/{image_id}/file", "/api/images/{image_id}/original", "/api/images/{image_id}/motion"):
        responses = paths[route]["get"]["responses"]
        assert set(MEDIA_TYPES.values()) <= set(responses["200"]["content"]), route  # whatever the file is
        assert {"206", "416"} <= set(responses), route  # a player's Range requests
