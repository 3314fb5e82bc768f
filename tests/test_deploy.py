"""The Docker deployment, checked without a Docker engine: the compose files' wiring after compose's
own `${...}` interpolation from `.env`, the app's health check run for real, and the Dockerfile's
install step, which must be the Makefile target that `make run` and `make test` (so CI) run too."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import ROOT, free_port
from dotenv import dotenv_values

COMPOSE = ROOT / "docker-compose.yml"
GPU_OVERRIDE = ROOT / "docker-compose.gpu.yml"
DOCKERFILE = ROOT / "Dockerfile"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


class ComposeError(Exception):
    """What `docker compose` would refuse with."""


_VARIABLE = re.compile(r"\$(?:(\$)|\{(?P<braced>[^}]*)\}|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))")


def interpolate(text: str, env: Mapping[str, str | None]) -> str:
    """Compose's interpolation: $$, $VAR, ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error}."""

    def one(match: re.Match[str]) -> str:
        if match.group(1):
            return "$"
        if match.group("plain"):
            return env.get(match.group("plain")) or ""
        expression = match.group("braced")
        found = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)(?:(:?)([-?])(.*))?", expression, re.S)
        if found is None:
            raise ComposeError(f"invalid interpolation ${{{expression}}}")
        name, colon, kind, rest = found.groups()
        value = env.get(name)
        missing = value is None or (colon == ":" and value == "")
        if kind == "-":
            return rest if missing else str(value)
        if kind == "?":
            if missing:
                raise ComposeError(f"required variable {name} is missing a value: {rest}")
            return str(value)
        return value or ""

    return _VARIABLE.sub(one, text)


def _resolve(node: Any, env: Mapping[str, str | None]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [_resolve(item, env) for item in node]
    if isinstance(node, dict):
        return {key: _resolve(value, env) for key, value in node.items()}
    return node


def _merge(base: Any, override: Any) -> Any:
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for key, value in override.items():
            merged[key] = _merge(base[key], value) if key in base else value
        return merged
    return override


def dot_env() -> dict[str, str | None]:
    return dict(dotenv_values(ROOT / ".env"))


def compose(*files: Path, **env: str) -> dict[str, Any]:
    """The compose model after merging `files` and interpolating from `.env` overlaid with `env`,
    with a password set unless `env` says otherwise."""
    values = {**dot_env(), "POSTGRES_PASSWORD": "pw/with:odd@chars", **env}
    model: dict[str, Any] = {}
    for path in files or (COMPOSE,):
        model = _merge(model, yaml.safe_load(path.read_text()))
    return _resolve(model, values)


def mounts(service: Mapping[str, Any]) -> dict[str, tuple[str, str]]:
    """Short-syntax volumes as target → (source, mode)."""
    found: dict[str, tuple[str, str]] = {}
    for entry in service.get("volumes", []):
        source, target, *mode = entry.split(":")
        found[target] = (source, mode[0] if mode else "rw")
    return found


def published(service: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """Short-syntax ports as (host address, host port, container port)."""
    ports = []
    for entry in service.get("ports", []):
        parts = str(entry).split(":")
        assert len(parts) == 3, f"{entry!r}: a port without a host address listens on every interface"
        ports.append((parts[0], parts[1], parts[2]))
    return ports


class TestCompose:
    def test_two_services_and_named_volumes(self) -> None:
        model = compose()
        assert set(model["services"]) == {"db", "app"}
        db, app = model["services"]["db"], model["services"]["app"]
        assert db["image"] == "pgvector/pgvector:pg18"
        assert app["build"]["context"] == "."
        assert set(model["volumes"]) >= {"pgdata", "appdata", "models"}
        assert mounts(db)["/var/lib/postgresql"][0] == "pgdata"  # Postgres 18 images: the parent of PGDATA
        app_mounts = mounts(app)
        assert app_mounts["/images"] == ("./img", "ro")
        assert app_mounts["/data"][0] == "appdata"
        assert app_mounts["/models"][0] == "models"

    def test_the_app_writes_where_the_volumes_are(self) -> None:
        app = compose()["services"]["app"]
        env, app_mounts = app["environment"], mounts(app)
        assert env["IMAGE_DIR"] == "/images" and app_mounts[env["IMAGE_DIR"]][1] == "ro"
        assert app_mounts[env["DATA_DIR"]][0] == "appdata"
        # the model downloads once: the Hugging Face cache lives in the named volume
        assert app_mounts[env["HF_HOME"]][0] == "models"

    def test_credentials_come_from_env_and_reach_the_app(self) -> None:
        declared = dot_env()
        assert {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"} <= set(declared)
        model = compose(POSTGRES_USER="alice", POSTGRES_DB="photos", POSTGRES_PASSWORD="p@ss:w/rd")
        db, app = model["services"]["db"]["environment"], model["services"]["app"]["environment"]
        assert (db["POSTGRES_USER"], db["POSTGRES_DB"], db["POSTGRES_PASSWORD"]) == ("alice", "photos", "p@ss:w/rd")
        assert app["DATABASE_URL"] == "postgresql://alice@db:5432/photos"
        assert app["PGPASSWORD"] == "p@ss:w/rd"

    def test_no_start_without_a_password(self) -> None:
        assert not dot_env().get("POSTGRES_PASSWORD"), ".env must not ship a password"
        with pytest.raises(ComposeError, match="POSTGRES_PASSWORD"):
            compose(POSTGRES_PASSWORD="")

    def test_health_checks_and_start_order(self) -> None:
        services = compose()["services"]
        db_check = services["db"]["healthcheck"]["test"]
        assert db_check[0] == "CMD-SHELL" and "pg_isready" in db_check[1]
        assert services["app"]["depends_on"]["db"]["condition"] == "service_healthy"
        app_check = services["app"]["healthcheck"]["test"]
        assert app_check[:2] == ["CMD", "python"] and "/api/status" in app_check[-1]

    def test_ports_are_published_on_loopback_only(self) -> None:
        services = compose(PORT="9123")["services"]
        assert "ports" not in services["db"]
        for name, service in services.items():
            for address, _, _ in published(service):
                assert address == "127.0.0.1", f"{name} publishes on {address}"
        app = services["app"]
        assert published(app) == [("127.0.0.1", "9123", app["environment"]["PORT"])]

    def test_the_app_listens_inside_the_container_and_passes_the_token_on(self) -> None:
        env = compose(API_TOKEN="tok-123")["services"]["app"]["environment"]
        assert env["HOST"] == "0.0.0.0" and env["ALLOW_REMOTE_WITHOUT_TOKEN"] == "1"
        assert env["API_TOKEN"] == "tok-123"
        assert compose(API_TOKEN="")["services"]["app"]["environment"]["API_TOKEN"] == ""

    def test_the_gpu_variant_takes_the_cuda_build_and_reserves_a_gpu(self) -> None:
        cpu = compose()["services"]["app"]
        gpu = compose(COMPOSE, GPU_OVERRIDE)["services"]["app"]
        assert CPU_INDEX in cpu["build"]["args"]["TORCH_PIP_ARGS"]
        assert gpu["build"]["args"]["TORCH_PIP_ARGS"] == ""
        assert gpu["build"]["context"] == "." and gpu["image"] != cpu["image"]
        assert gpu["environment"]["DEVICE"] == "cuda"
        assert gpu["environment"]["DATABASE_URL"] == cpu["environment"]["DATABASE_URL"]
        devices = gpu["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]


class _Status(BaseHTTPRequestHandler):
    token: str | None = None
    code = 200

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        if self.path != "/api/status":
            self.send_response(404)
        elif self.token and self.headers.get("Authorization") != f"Bearer {self.token}":
            self.send_response(401)
        else:
            self.send_response(self.code)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def status_server() -> Iterator[tuple[type[_Status], int]]:
    """A stand-in for /api/status whose token rule and answer the test sets."""
    handler = type("Handler", (_Status,), {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield handler, int(server.server_address[1])
    server.shutdown()
    server.server_close()


def app_health_check(port: int, api_token: str | None = None) -> int:
    """Run the compose file's health check for the app, as the container would; its exit code."""
    test = compose()["services"]["app"]["healthcheck"]["test"]
    assert test[:2] == ["CMD", "python"]
    env = {"PORT": str(port), "PATH": "/usr/bin:/bin"}
    if api_token is not None:
        env["API_TOKEN"] = api_token
    return subprocess.run([sys.executable, *test[2:]], env=env, capture_output=True, timeout=30).returncode


class TestAppHealthCheck:
    def test_healthy_when_the_status_answers(self, status_server: tuple[type[_Status], int]) -> None:
        _, port = status_server
        assert app_health_check(port) == 0

    def test_sends_the_token_when_one_is_set(self, status_server: tuple[type[_Status], int]) -> None:
        handler, port = status_server
        handler.token = "tok-123"
        assert app_health_check(port, api_token="tok-123") == 0
        assert app_health_check(port) != 0
        assert app_health_check(port, api_token="wrong") != 0

    def test_unhealthy_on_an_error_answer_or_no_server(self, status_server: tuple[type[_Status], int]) -> None:
        handler, port = status_server
        handler.code = 503  # what /api/status answers when the database is unreachable
        assert app_health_check(port) != 0
        assert app_health_check(free_port()) != 0


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


def make_dry_run(*args: str) -> list[str]:
    """The commands `make` would run (none are run), every target considered out of date."""
    result = subprocess.run(["make", "-n", "-B", *args], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return [" ".join(line.split()) for line in result.stdout.splitlines()]


class TestDockerfile:
    def test_slim_python_non_root_serving(self) -> None:
        instructions = dockerfile_instructions()
        args = {rest.split("=", 1)[0]: rest.split("=", 1)[1].strip('"') for kw, rest in instructions if kw == "ARG"}
        base = next(rest for kw, rest in instructions if kw == "FROM")
        assert base == "python:${PYTHON_VERSION}-slim"
        # the embedded server's wheels and the project support these; the image needs only the client
        assert args["PYTHON_VERSION"] in ("3.11", "3.12")
        user = [rest for kw, rest in instructions if kw == "USER"]
        assert user and user[-1] not in ("root", "0")
        cmd = [rest for kw, rest in instructions if kw == "CMD"][-1]
        assert yaml.safe_load(cmd) == ["python", "main.py", "serve"]

    def test_installs_with_the_makefile_target_and_nothing_else(self) -> None:
        runs = [rest for kw, rest in dockerfile_instructions() if kw == "RUN"]
        installs = [r for r in runs if re.search(r"\bmake\s+\.venv/\.installed\b", r)]
        assert len(installs) == 1, runs
        # a pip step of its own would let the image drift from what CI installs
        assert not any("pip install" in r or "pip3 install" in r for r in runs), runs
        assert 'TORCH_PIP_ARGS="$TORCH_PIP_ARGS"' in installs[0]

    def test_build_args_and_paths_match_the_compose_file(self) -> None:
        instructions = dockerfile_instructions()
        declared = {rest.split("=", 1)[0] for kw, rest in instructions if kw == "ARG"}
        app = compose()["services"]["app"]
        assert set(app["build"]["args"]) <= declared
        env_lines = " ".join(rest for kw, rest in instructions if kw == "ENV")
        image_env = dict(shlex.split(pair)[0].split("=", 1) for pair in env_lines.split() if "=" in pair)
        for name in ("IMAGE_DIR", "DATA_DIR", "HF_HOME", "HOST", "PORT"):
            assert image_env[name] == app["environment"][name], name
        assert "/app/.venv/bin" in image_env["PATH"]

    def test_ci_runs_the_same_install_commands(self) -> None:
        # what the image runs, with the compose file's build argument
        cpu_args = compose()["services"]["app"]["build"]["args"]["TORCH_PIP_ARGS"]
        image = make_dry_run(".venv/.installed", f"TORCH_PIP_ARGS={cpu_args}")
        torch_line = next(line for line in image if '"torch==' in line)
        assert f"--index-url {CPU_INDEX}" in torch_line
        # what `make test` (CI) runs: the same steps, and here torch from the default index
        ci = make_dry_run("test")
        plain = [line.replace(f" --index-url {CPU_INDEX}", "") for line in image]
        assert all(line in ci for line in plain), (plain, ci)
        assert any(line.endswith('pip install -q "torch==2.13.0"') for line in ci), ci

    def test_secrets_and_local_state_stay_out_of_the_image(self) -> None:
        patterns = [
            line.strip()
            for line in (ROOT / ".dockerignore").read_text().splitlines()
            if line.strip() and not line.startswith("#")
        ]
        assert {".env", ".venv", ".data", "img", ".git"} <= set(patterns)
        # the install step needs these
        for needed in ("Makefile", "pyproject.toml", "README.md", "main.py", "core", "flows", "api", "frontend"):
            assert needed not in patterns and f"/{needed}" not in patterns
        assert "*" not in patterns
