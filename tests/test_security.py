"""Security, tested against real servers over a real indexed folder: the loopback-only rule and
the API token, CORS, what files can be read, hostile query strings and uploads. That no run connects
beyond this machine is tests/test_no_network.py.

Most tests share one `uvicorn --factory api.app:create_app` server (API only, no live indexer, so that a file
swapped for a symlink keeps its row and only the serving code stands between it and the client).
"""

from __future__ import annotations

import io
import json
import os
import random
import select
import shutil
import socket
import struct
import subprocess
import sys
import time
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from conftest import MAIN_TIMEOUT, ROOT, TINY_MODEL, env_for, free_port, query, run_main, wait_for
from PIL import Image
from shapes import Drawing, draw, write_corpus

from api.security import IMAGE_COOKIE, check_bind
from core.settings import Settings, SettingsError, is_loopback_host, load_settings

TOKEN = "s3cret-Token_for-tests.42"
SECRET = "TOP-SECRET-OUTSIDE-IMAGE-DIR"


# --- servers -------------------------------------------------------------------------------------


@dataclass
class Server:
    base: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path
    settings: Settings

    def output(self) -> str:
        return self.log.read_text()


def start_api(settings: Settings, log: Path, **env: str) -> Server:
    """`uvicorn --factory api.app:create_app` on a free loopback port with these settings (and extra variables)."""
    port = free_port()
    out = open(log, "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "api.app:create_app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env=env_for(settings, **env),
        stdout=out,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    server = Server(f"http://127.0.0.1:{port}", port, proc, log, settings)
    headers = {"Authorization": f"Bearer {env['API_TOKEN']}"} if env.get("API_TOKEN") else {}

    def up() -> bool:
        assert proc.poll() is None, server.output()
        try:
            return httpx.get(f"{server.base}/api/status", headers=headers, timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    wait_for(up, timeout=90)
    return server


def stop(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory, pg_server: str) -> Iterator[Settings]:
    """The 18 coloured shapes plus a subfolder, indexed into a database of this module's own."""
    root = tmp_path_factory.mktemp("security")
    images = root / "img"
    write_corpus(images)
    (images / "trips").mkdir()
    draw(Drawing("green", "triangle"), width=160, height=120).save(images / "trips" / "green.jpg")
    shutil.copy(images / "red-circle.png", images / "to-be-symlinked.png")
    shutil.copy(images / "blue-square.png", images / "to-be-deleted.png")
    (images / "to-be-linked").mkdir()
    shutil.copy(images / "yellow-circle.png", images / "to-be-linked" / "yellow.png")
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    head, _, params = pg_server.partition("?")
    url = f"{head.rsplit('/', 1)[0]}/{name}" + (f"?{params}" if params else "")
    settings = load_settings(
        {"IMAGE_DIR": str(images), "DATA_DIR": str(root / "data"), "DATABASE_URL": url, **TINY_MODEL}
    )
    result = subprocess.run(
        [sys.executable, str(ROOT / "main.py"), "index"], env=env_for(settings), capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    yield settings
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def api(folder: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The API with a token and a 1 MB upload cap."""
    server = start_api(folder, tmp_path_factory.mktemp("api") / "api.log", API_TOKEN=TOKEN, UPLOAD_MAX_MB="1")
    yield server
    stop(server.proc)
    assert "Traceback" not in server.output(), server.output()


@pytest.fixture
def client(api: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api.base, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as c:
        yield c


def image_id(settings: Settings, path: str) -> int:
    return int(query(settings, "SELECT id FROM images WHERE path = %s", (path,))[0][0])


def raw_request(
    port: int, target: str, *, method: str = "GET", headers: dict[str, str] | None = None
) -> tuple[int, str]:
    """Send the request line exactly as given (httpx would normalise `..` away); (status, body)."""
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode("utf-8", "replace")


# --- binding and the token ---------------------------------------------------------------------


class TestBinding:
    @pytest.mark.parametrize("host", ["127.0.0.1", "127.3.2.1", "localhost", "LOCALHOST", "::1", "[::1]"])
    def test_loopback_addresses_need_no_token(self, host: str) -> None:
        assert is_loopback_host(host)
        check_bind(host, load_settings({}, env_file=Path(os.devnull)))

    @pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.7", "10.0.0.1", "photos.example.org", ""])
    def test_every_other_address_counts_as_remote(self, host: str) -> None:
        assert not is_loopback_host(host)

    @pytest.mark.parametrize(
        ("env", "args"),
        [({"HOST": "0.0.0.0"}, []), ({}, ["--host", "0.0.0.0"]), ({"HOST": "192.0.2.7"}, []), ({"HOST": "::"}, [])],
    )
    def test_serve_refuses_a_remote_address_without_a_token_in_one_line(
        self, settings: Settings, env: dict[str, str], args: list[str]
    ) -> None:
        started = time.monotonic()
        result = run_main(settings, "serve", *args, timeout=MAIN_TIMEOUT, PORT=str(free_port()), API_TOKEN="", **env)
        assert result.returncode == 2
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: refusing to listen on"), result.stderr
        assert "API_TOKEN" in lines[0] and "ALLOW_REMOTE_WITHOUT_TOKEN=1" in lines[0]
        assert time.monotonic() - started < 30  # refused before the model or the indexer start

    def test_a_bad_opt_out_value_is_one_line(self, settings: Settings) -> None:
        result = run_main(settings, "serve", ALLOW_REMOTE_WITHOUT_TOKEN="maybe")
        assert result.returncode == 2 and result.stderr.strip().startswith("error: ALLOW_REMOTE_WITHOUT_TOKEN")

    @pytest.mark.parametrize("env", [{"ALLOW_REMOTE_WITHOUT_TOKEN": "1"}, {"API_TOKEN": TOKEN}])
    def test_serve_listens_on_all_interfaces_when_opted_out_or_with_a_token(
        self, settings: Settings, start_process: Any, env: dict[str, str]
    ) -> None:
        port = free_port()
        server = start_process(settings, "serve", HOST="0.0.0.0", PORT=str(port), **env)
        headers = {"Authorization": f"Bearer {env['API_TOKEN']}"} if "API_TOKEN" in env else {}

        def answered() -> int | None:
            assert server.proc.poll() is None, server.output()
            try:
                return httpx.get(f"http://127.0.0.1:{port}/api/status", timeout=2).status_code
            except httpx.TransportError:
                return None

        assert wait_for(answered, timeout=90) == (401 if headers else 200)
        if headers:
            assert httpx.get(f"http://127.0.0.1:{port}/api/status", headers=headers).status_code == 200


API_ROUTES = [
    ("GET", "/api/search?q=a+red+circle"),
    ("GET", "/api/status"),
    ("GET", "/api/folders"),
    ("GET", "/api/images/{id}"),
    ("GET", "/api/images/{id}/similar"),
    ("GET", "/api/images/{id}/file"),
    ("GET", "/api/images/{id}/thumbnail"),
    ("POST", "/api/search/image"),
    ("GET", "/api/no-such-route"),
]


def png_bytes(drawing: Drawing = Drawing("red", "circle")) -> bytes:
    buffer = io.BytesIO()
    draw(drawing, width=120, height=100).save(buffer, "PNG")
    return buffer.getvalue()


class TestToken:
    @pytest.mark.parametrize(("method", "route"), API_ROUTES)
    @pytest.mark.parametrize("auth", [None, "Bearer wrong-token", f"Basic {TOKEN}", "Bearer", f"Bearer {TOKEN}x"])
    def test_every_api_call_without_the_right_token_is_a_401(
        self, api: Server, folder: Settings, method: str, route: str, auth: str | None
    ) -> None:
        url = api.base + route.format(id=image_id(folder, "red-circle.png"))
        headers = {"Authorization": auth} if auth else {}
        files = {"file": ("x.png", png_bytes(), "image/png")} if method == "POST" else None
        response = httpx.request(method, url, headers=headers, files=files, timeout=30)
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Bearer")
        detail = response.json()["detail"]
        assert "\n" not in detail and "token" in detail
        assert IMAGE_COOKIE not in response.headers.get("set-cookie", "")

    @pytest.mark.parametrize(("method", "route"), API_ROUTES[:-1])
    def test_the_right_token_opens_every_route(
        self, client: httpx.Client, folder: Settings, method: str, route: str
    ) -> None:
        files = {"file": ("x.png", png_bytes(), "image/png")} if method == "POST" else None
        response = client.request(method, route.format(id=image_id(folder, "red-circle.png")), files=files)
        assert response.status_code == 200, response.text

    @pytest.mark.parametrize("path", ["/", "/status", "/search.js", "/api.js", "/status.js", "/style.css", "/docs"])
    def test_the_page_loads_without_a_token_so_it_can_ask_for_one(self, api: Server, path: str) -> None:
        assert httpx.get(api.base + path).status_code == 200

    def test_the_schema_declares_the_bearer_scheme(self, api: Server) -> None:
        schema = httpx.get(api.base + "/openapi.json").json()
        assert schema["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
        assert schema["security"] == [{"bearer": []}]

    def test_the_image_cookie_reads_images_and_nothing_else(
        self, api: Server, client: httpx.Client, folder: Settings
    ) -> None:
        ident = image_id(folder, "red-circle.png")
        set_cookie = client.get("/api/folders", headers={"Cookie": ""}).headers["set-cookie"]
        name_value, *attributes = [part.strip() for part in set_cookie.split(";")]
        name, _, value = name_value.partition("=")
        assert name == IMAGE_COOKIE and TOKEN not in value and len(value) == 64
        assert {"HttpOnly", "SameSite=Strict"} <= set(attributes)
        # a browser sends it only below its path: the page loads pictures and face crops by tag
        path = next(a.partition("=")[2] for a in attributes if a.startswith("Path="))
        assert f"/api/images/{ident}/thumbnail".startswith(path) and "/api/faces/1/thumbnail".startswith(path)
        with httpx.Client(base_url=api.base, cookies={IMAGE_COOKIE: value}) as browser:
            original = browser.get(f"/api/images/{ident}/file")
            assert original.status_code == 200
            assert original.content == (folder.image_dir / "red-circle.png").read_bytes()
            assert browser.get(f"/api/images/{ident}/thumbnail").status_code == 200
            assert browser.get(f"/api/images/{ident}/preview").status_code == 200
            # past the token check to the route, which finds no video in a picture, and no such face
            assert browser.get(f"/api/images/{ident}/video").status_code == 404
            assert browser.get("/api/faces/999999/thumbnail").status_code == 404
            for route in (
                "/api/search?q=a+red+circle",
                f"/api/images/{ident}",
                f"/api/images/{ident}/video/status",
                "/api/status",
                "/api/folders",
                "/api/people",
            ):
                assert browser.get(route).status_code == 401, route
            files = {"file": ("x.png", png_bytes(), "image/png")}
            assert browser.post("/api/search/image", files=files).status_code == 401
        with httpx.Client(base_url=api.base, cookies={IMAGE_COOKIE: "0" * 64}) as forged:
            assert forged.get(f"/api/images/{ident}/file").status_code == 401
        # a cookie already right is not set again on every call
        assert "set-cookie" not in client.get("/api/folders", headers={"Cookie": f"{IMAGE_COOKIE}={value}"}).headers

    def test_cli_search_sends_the_token_to_the_server(self, api: Server, folder: Settings) -> None:
        # the database here is unreachable, so an answer can only have come through the server
        nowhere = "postgresql://nobody@127.0.0.1:9/none?connect_timeout=2"
        env = {"PORT": str(api.port), "DATABASE_URL": nowhere}
        result = run_main(
            folder, "search", "a purple square", "--json", "--limit", "1", timeout=MAIN_TIMEOUT, API_TOKEN=TOKEN, **env
        )
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["results"][0]["path"] == "purple-square.png"
        refused = run_main(
            folder, "search", "a purple square", "--limit", "1", timeout=MAIN_TIMEOUT, API_TOKEN="not-it", **env
        )
        assert refused.returncode != 0 and "purple-square.png" not in refused.stdout


# --- CORS ------------------------------------------------------------------------------------------


def cors_headers(base: str, origin: str, *, preflight: bool = False, token: str | None = None) -> httpx.Headers:
    if preflight:
        headers = {
            "Origin": origin,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        }
        return httpx.options(f"{base}/api/search?q=x", headers=headers).headers
    headers = {"Origin": origin, **({"Authorization": f"Bearer {token}"} if token else {})}
    return httpx.get(f"{base}/api/folders", headers=headers).headers


class TestCors:
    def test_without_cors_origins_no_site_gets_cors_headers(self, api: Server) -> None:
        for preflight in (False, True):
            headers = cors_headers(api.base, "https://photos.example.org", preflight=preflight, token=TOKEN)
            assert "access-control-allow-origin" not in headers

    def test_listed_origins_only_and_never_with_credentials(self, folder: Settings, tmp_path: Path) -> None:
        listed = "https://photos.example.org"
        server = start_api(
            folder, tmp_path / "cors.log", API_TOKEN=TOKEN, CORS_ORIGINS=f"{listed}, http://localhost:5173"
        )
        try:
            ok = cors_headers(server.base, listed, token=TOKEN)
            assert ok["access-control-allow-origin"] == listed
            assert "access-control-allow-credentials" not in ok
            # a preflight never carries the token: it is answered before the token check
            pre = cors_headers(server.base, listed, preflight=True)
            assert pre["access-control-allow-origin"] == listed
            assert "authorization" in pre["access-control-allow-headers"].lower()
            # a 401 still tells the calling page why
            assert cors_headers(server.base, listed)["access-control-allow-origin"] == listed
            for origin in ("https://evil.example", "https://photos.example.org.evil.example", "null"):
                assert "access-control-allow-origin" not in cors_headers(server.base, origin, token=TOKEN)
                assert "access-control-allow-origin" not in cors_headers(server.base, origin, preflight=True)
        finally:
            stop(server.proc)

    def test_a_wildcard_never_echoes_the_origin_or_allows_credentials(self, folder: Settings, tmp_path: Path) -> None:
        server = start_api(folder, tmp_path / "cors.log", CORS_ORIGINS="*")
        try:
            for preflight in (False, True):
                headers = cors_headers(server.base, "https://anyone.example", preflight=preflight)
                assert headers["access-control-allow-origin"] == "*"
                assert headers.get("access-control-allow-credentials") != "true"
            # a request with cookies is where a lax server would echo the origin and allow credentials
            with_cookie = httpx.get(
                f"{server.base}/api/folders",
                headers={"Origin": "https://anyone.example", "Cookie": f"{IMAGE_COOKIE}=x"},
            ).headers
            assert with_cookie["access-control-allow-origin"] == "*"
            assert "access-control-allow-credentials" not in with_cookie
        finally:
            stop(server.proc)

    @pytest.mark.parametrize("value", ["https://photos.example.org/", "photos.example.org", "https://x.org/app"])
    def test_an_origin_with_a_path_or_no_scheme_is_refused_in_one_line(self, settings: Settings, value: str) -> None:
        with pytest.raises(SettingsError, match="CORS_ORIGINS"):
            load_settings({"CORS_ORIGINS": value})
        result = run_main(settings, "serve", CORS_ORIGINS=value)
        assert result.returncode == 2 and result.stderr.strip().startswith("error: CORS_ORIGINS")


# --- files: only indexed files under IMAGE_DIR -----------------------------------------------------

OUTSIDE_MARKERS = ["root:x:0:0", "def load_settings", "IMAGE_DIR=", "COCOINDEX_DISABLE_USAGE_TRACKING", SECRET]


class TestFiles:
    @pytest.mark.parametrize(
        "target",
        [
            "/../core/settings.py",
            "/%2e%2e/%2e%2e/etc/passwd",
            "/%2e%2e/core/settings.py",
            "/frontend/../.env",
            "/..%2f.env",
            "/%2e%2e%2fmain.py",
            "/.env",
            "/main.py",
            "/core/settings.py",
            "//etc/passwd",
            "/%2fetc%2fpasswd",
            "/..\\..\\main.py",
            "/static/../../main.py",
            "/search.js/../../main.py",
            "/api/../main.py",
            "/api/images/..%2f..%2fetc%2fpasswd/file",
            "/api/images/%2fetc%2fpasswd/file",
            "/api/images//etc/passwd/file",
            "/api/images/1/../../../../etc/passwd",
        ],
    )
    def test_nothing_outside_the_page_is_served_whatever_the_path(self, api: Server, target: str) -> None:
        status, body = raw_request(api.port, target, headers={"Authorization": f"Bearer {TOKEN}"})
        assert status in (400, 404, 405, 422), (status, body[:200])
        assert not any(marker in body for marker in OUTSIDE_MARKERS), body[:200]

    @pytest.mark.parametrize("ident", ["-1", "99999999999999999999999", "1e3", "0x10", "%00"])
    @pytest.mark.parametrize("suffix", ["", "/file", "/thumbnail", "/similar"])
    def test_ids_that_are_not_53_bit_numbers_are_a_422(self, client: httpx.Client, ident: str, suffix: str) -> None:
        response = client.get(f"/api/images/{ident}{suffix}")
        assert response.status_code == 422, response.text
        assert "\n" not in response.json()["detail"]

    def test_an_image_swapped_for_a_symlink_out_of_the_folder_is_not_served(
        self, client: httpx.Client, folder: Settings, tmp_path: Path
    ) -> None:
        ident = image_id(folder, "to-be-symlinked.png")
        assert client.get(f"/api/images/{ident}/thumbnail").status_code == 200  # now cached under DATA_DIR
        outside = tmp_path / "outside.png"
        image = Image.new("RGB", (40, 40), (255, 0, 0))
        image.save(outside, pnginfo=_text_chunk(SECRET))
        link = folder.image_dir / "to-be-symlinked.png"
        link.unlink()
        link.symlink_to(outside)
        for suffix in ("/file", "/thumbnail"):
            response = client.get(f"/api/images/{ident}{suffix}")
            assert response.status_code == 404 and SECRET.encode() not in response.content

    def test_a_folder_swapped_for_a_symlink_out_of_the_folder_is_not_served(
        self, client: httpx.Client, folder: Settings, tmp_path: Path
    ) -> None:
        ident = image_id(folder, "to-be-linked/yellow.png")
        assert client.get(f"/api/images/{ident}/file").status_code == 200
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        Image.new("RGB", (40, 40), (255, 255, 0)).save(elsewhere / "yellow.png", pnginfo=_text_chunk(SECRET))
        shutil.rmtree(folder.image_dir / "to-be-linked")
        (folder.image_dir / "to-be-linked").symlink_to(elsewhere, target_is_directory=True)
        for suffix in ("/file", "/thumbnail"):
            response = client.get(f"/api/images/{ident}{suffix}")
            assert response.status_code == 404 and SECRET.encode() not in response.content

    def test_deleted_files_are_a_404_before_and_after_the_index_notices(
        self, client: httpx.Client, folder: Settings
    ) -> None:
        ident = image_id(folder, "to-be-deleted.png")
        assert client.get(f"/api/images/{ident}/file").status_code == 200
        (folder.image_dir / "to-be-deleted.png").unlink()
        for suffix in ("/file", "/thumbnail"):
            assert client.get(f"/api/images/{ident}{suffix}").status_code == 404
        result = run_main(folder, "index")
        assert result.returncode == 0, result.stderr
        for suffix in ("", "/file", "/thumbnail", "/similar"):
            response = client.get(f"/api/images/{ident}{suffix}")
            assert response.status_code == 404 and str(ident) in response.json()["detail"]


def _text_chunk(text: str) -> Any:
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("secret", text)
    return info


# --- SQL: every value is a parameter -------------------------------------------------------------

HOSTILE = [
    "'; DROP TABLE images; --",
    "Robert'); DROP TABLE images;--",
    "a <=> b",
    "embedding <=> '[1,2,3]'",
    "%s %(q)s {} {0}",
    "$1 $2::text",
    "back\\slash \\' \\\" \\\\",
    "1; SELECT pg_sleep(10)",
    "' OR '1'='1",
    "ünïcödé — 🙂",
]


class TestSql:
    def _intact(self, folder: Settings) -> tuple[int, int]:
        return query(folder, "SELECT count(*), count(DISTINCT id) FROM images")[0]

    @pytest.mark.parametrize("q", [*HOSTILE, "a red circle " * 150])  # 1950 characters: q holds 2000
    def test_hostile_text_is_just_text(self, client: httpx.Client, folder: Settings, q: str) -> None:
        before = self._intact(folder)
        started = time.monotonic()
        response = client.get("/api/search", params={"q": q, "limit": 5})
        assert response.status_code == 200, response.text
        assert response.json()["query"] == q and len(response.json()["results"]) == 5
        assert time.monotonic() - started < 8  # no pg_sleep ran
        assert self._intact(folder) == before

    @pytest.mark.parametrize("name", ["q", "folder", "format", "taken_after"])
    def test_a_nul_byte_is_a_clean_422(self, client: httpx.Client, name: str) -> None:
        params = {"q": "a red circle", name: "a\x00b"}
        response = client.get("/api/search", params=params)
        assert response.status_code == 422 and "NUL" in response.json()["detail"]
        assert name in response.json()["detail"]

    @pytest.mark.parametrize("value", HOSTILE)
    @pytest.mark.parametrize("name", ["folder", "format"])
    def test_hostile_filters_match_nothing(self, client: httpx.Client, folder: Settings, name: str, value: str) -> None:
        before = self._intact(folder)
        for response in (
            client.get("/api/search", params={"q": "a red circle", name: value}),
            client.post("/api/search/image", params={name: value}, files={"file": ("x.png", png_bytes(), "image/png")}),
        ):
            assert response.status_code == 200, response.text
            assert response.json()["results"] == []
        assert self._intact(folder) == before

    @pytest.mark.parametrize("value", [*HOSTILE[:4], "2020-01-01'; DROP TABLE images; --", "2024-13-45"])
    @pytest.mark.parametrize("name", ["taken_after", "taken_before"])
    def test_hostile_dates_are_a_422(self, client: httpx.Client, folder: Settings, name: str, value: str) -> None:
        before = self._intact(folder)
        response = client.get("/api/search", params={"q": "a red circle", name: value})
        assert response.status_code == 422 and name in response.json()["detail"]
        assert self._intact(folder) == before

    def test_a_hostile_limit_or_folder_of_dots_is_a_422(self, client: httpx.Client) -> None:
        for params in ({"limit": "1; DROP TABLE images"}, {"offset": "0 OR 1=1"}, {"folder": "../../etc"}):
            response = client.get("/api/search", params={"q": "a red circle", **params})
            assert response.status_code == 422, params

    def test_the_folder_filter_still_works_after_all_that(self, client: httpx.Client) -> None:
        response = client.get("/api/search", params={"q": "a green triangle", "folder": "trips"})
        assert [r["path"] for r in response.json()["results"]] == ["trips/green.jpg"]


# --- uploads ---------------------------------------------------------------------------------------


def listing(folder: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(folder)): (p.lstat().st_size, p.lstat().st_mtime_ns)
        for p in folder.rglob("*")
        if not str(p.relative_to(folder)).startswith("to-be-")  # other tests change those on purpose
    }


def png_declaring(width: int, height: int) -> bytes:
    """A tiny, well-formed PNG whose header claims `width`×`height` pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = zlib.compress(b"\0" * 3 * 64, 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def read_answer(s: socket.socket) -> str:
    data = b""
    try:
        while chunk := s.recv(65536):
            data += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return data.decode("utf-8", "replace")


def peak_memory_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


class TestUploads:
    @pytest.fixture(autouse=True)
    def image_dir_untouched(self, folder: Settings) -> Iterator[None]:
        before = listing(folder.image_dir)
        yield
        assert listing(folder.image_dir) == before

    def test_an_image_under_the_cap_is_searched(self, client: httpx.Client) -> None:
        rng = random.Random(3)
        noise = Image.frombytes("RGB", (520, 520), rng.randbytes(520 * 520 * 3))
        buffer = io.BytesIO()
        noise.save(buffer, "PNG")
        assert 700_000 < len(buffer.getvalue()) < 1024 * 1024  # close to the 1 MB cap, and under it
        response = client.post("/api/search/image", files={"file": ("noise.png", buffer.getvalue(), "image/png")})
        assert response.status_code == 200, response.text

    def test_over_the_cap_is_a_413(self, client: httpx.Client) -> None:
        data = png_bytes() + b"\0" * (1024 * 1024)
        response = client.post("/api/search/image", files={"file": ("big.png", data, "image/png")})
        assert response.status_code == 413 and "UPLOAD_MAX_MB" in response.json()["detail"]

    def test_a_huge_declared_length_is_refused_before_the_body_is_read(self, api: Server) -> None:
        with socket.create_connection(("127.0.0.1", api.port), timeout=10) as s:
            head = (
                "POST /api/search/image HTTP/1.1\r\nHost: x\r\n"
                f"Authorization: Bearer {TOKEN}\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                "Content-Length: 10737418240\r\n\r\n--b\r\n"
            )
            s.sendall(head.encode())
            answer = read_answer(s)  # no body follows: only an early answer can arrive
        assert answer.startswith("HTTP/1.1 413") and "UPLOAD_MAX_MB" in answer

    def test_a_chunked_body_over_the_cap_is_cut_off(self, api: Server) -> None:
        with socket.create_connection(("127.0.0.1", api.port), timeout=20) as s:
            s.sendall(
                (
                    "POST /api/search/image HTTP/1.1\r\nHost: x\r\n"
                    f"Authorization: Bearer {TOKEN}\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                    "Transfer-Encoding: chunked\r\n\r\n"
                ).encode()
            )
            piece = b'--b\r\nContent-Disposition: form-data; name="file"; filename="x.png"\r\n\r\n' + b"\0" * 65536
            sent = 0
            try:
                # far past the cap; stop as soon as the server has answered
                while sent < 64 * 1024 * 1024 and not select.select([s], [], [], 0)[0]:
                    s.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                    sent += len(piece)
            except (BrokenPipeError, ConnectionResetError):
                pass
            answer = read_answer(s)
        # the socket buffers hold a few MB; the server stopped reading long before 64 MB
        assert sent < 24 * 1024 * 1024, sent
        assert answer.startswith("HTTP/1.1 413"), answer[:200]

    @pytest.mark.parametrize(
        ("name", "data"),
        [
            ("notes.jpg", b"hello, I am text wearing a .jpg name\n" * 20),
            ("header.png", b"\x89PNG\r\n\x1a\n" + os.urandom(4000)),
            ("header.jpg", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + os.urandom(4000)),
            ("header.gif", b"GIF89a" + os.urandom(200)),
            ("page.png", b"<html><script>alert(1)</script></html>"),
            ("empty.png", b""),
        ],
    )
    def test_only_what_decodes_as_an_image_is_accepted(self, client: httpx.Client, name: str, data: bytes) -> None:
        response = client.post("/api/search/image", files={"file": (name, data, "image/png")})
        assert response.status_code == 415, response.text
        assert "\n" not in response.json()["detail"]

    def test_a_decompression_bomb_is_refused_without_decoding_it(self, api: Server, client: httpx.Client) -> None:
        bomb = png_declaring(30_000, 30_000)  # 2.7 GB of pixels in a file of about 100 bytes
        assert len(bomb) < 200
        before = peak_memory_kb(api.proc.pid)
        started = time.monotonic()
        response = client.post("/api/search/image", files={"file": ("bomb.png", bomb, "image/png")})
        assert response.status_code == 415 and "too large" in response.json()["detail"]
        assert time.monotonic() - started < 5
        assert peak_memory_kb(api.proc.pid) - before < 200_000  # never allocated the pixels
