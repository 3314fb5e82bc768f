"""Bad input: a folder holding what real folders hold, good pictures mixed with broken files, odd
formats, odd names, symlinks that lead out or nowhere, a file nobody may read, files that vanish
while they are read and files that arrive slowly.

The indexer keeps going through all of it: every good image gets a row and can be found, every bad
file gets a one-line reason that `/api/status`, `python main.py status` and the monitoring page
show, and no request about any of them is answered with a 500.

One corpus is built and indexed once for the module (`main.py index`, then a `main.py serve` over
the same folder and database); the live cases work in a folder of their own inside it, so the
other tests do not depend on the order they run in.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psycopg
import pytest
from conftest import (
    ROOT,
    TINY_MODEL,
    Process,
    _with_database,
    env_for,
    free_port,
    query,
    run_main,
    wait_for,
    write_slowly,
)
from fastapi.testclient import TestClient
from PIL import Image
from shapes import Drawing, draw

from api.app import create_app
from core.settings import Settings, load_settings
from flows.indexer import image_id

# --- running as a user the file modes apply to ------------------------------------------------


def _restricted_prefix() -> list[str] | None:
    """The command prefix that makes a subprocess obey file modes.

    Root reads a mode-000 file through two capabilities (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH).
    Dropped from the bounding set, root stays root for everything it owns (the interpreter under
    /root, the test folders) but the kernel refuses it the locked file like anyone else. None when
    this is root and that cannot be done here.
    """
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return None
    prefix = [setpriv, "--bounding-set=-dac_override,-dac_read_search"]
    probe = Path(f"/tmp/sightline-probe-{uuid.uuid4().hex}")
    probe.write_bytes(b"x")
    probe.chmod(0)
    try:
        done = subprocess.run(
            [*prefix, sys.executable, "-c", f"open({str(probe)!r}, 'rb')"], capture_output=True, text=True, timeout=30
        )
    except OSError:
        return None
    finally:
        probe.unlink()
    return prefix if "PermissionError" in done.stderr else None


RESTRICTED = _restricted_prefix()
CAN_LOCK_FILES = RESTRICTED is not None


class SocketRelay:
    """Relays a unix socket in a folder anyone may enter to the session Postgres's socket.

    The session server keeps its socket in its data folder, which only its own user may enter; a
    process without CAP_DAC_READ_SEARCH cannot reach it, so the restricted subprocesses talk to
    the same real server through this relay.
    """

    def __init__(self, target: str, folder: Path) -> None:
        self.folder = folder
        self._target = target
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(str(folder / ".s.PGSQL.5432"))
        self._listener.listen(64)
        self._closed = False
        threading.Thread(target=self._accept, name="pg-relay", daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                upstream.connect(self._target)
            except OSError:
                client.close()
                continue
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self._closed = True
        self._listener.close()


def _socket_of(url: str) -> str:
    host = url.partition("host=")[2].split("&")[0]
    port = url.partition("port=")[2].split("&")[0] or "5432"
    return f"{host}/.s.PGSQL.{port}"


# --- the corpus ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Good:
    width: int  # as displayed
    height: int
    format: str
    caption: str | None = None  # the query that should rank it first, where the tiny model can tell


@dataclass
class Corpus:
    settings: Settings
    outside: Path  # a folder next to IMAGE_DIR, never to be served
    good: dict[str, Good] = field(default_factory=dict)
    bad: dict[str, tuple[str, ...]] = field(default_factory=dict)  # path → words its reason contains
    restricted_env: dict[str, str] = field(default_factory=dict)

    @property
    def root(self) -> Path:
        return self.settings.image_dir


def saved(image: Image.Image, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def png_chunks(width: int, height: int, bit_depth: int, color_type: int, raw: bytes) -> bytes:
    """A PNG written by hand, for what Pillow will not write (16-bit colour) or should not (a header
    that declares far more pixels than the file holds)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def sixteen_bit_rgb_png(image: Image.Image) -> bytes:
    wide = np.asarray(image, dtype=np.uint16) * 257  # 0..255 → 0..65535
    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in wide)
    return png_chunks(image.width, image.height, 16, 2, rows)


def palette_png_with_transparency(drawing: Drawing) -> bytes:
    shape = draw(drawing, background=(0, 0, 0))
    mask = np.asarray(shape.convert("L")) > 0
    indices = np.where(mask, 1, 0).astype(np.uint8)
    picture = Image.frombytes("P", shape.size, indices.tobytes())
    colour = shape.getpixel((48, 48))
    assert isinstance(colour, tuple)  # an RGB picture's pixel
    picture.putpalette([0, 0, 0, *colour])
    return saved(picture, "PNG", transparency=0)


def exif_rotated_jpeg(drawing: Drawing) -> bytes:
    exif = Image.Exif()
    exif[274] = 6  # stored landscape, shown rotated 90° clockwise: portrait
    return saved(draw(drawing, width=160, height=96), "JPEG", quality=92, exif=exif)


def animated_gif(first: Drawing, then: Drawing) -> bytes:
    frames = [draw(first), draw(then), draw(first)]
    return saved(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=200, loop=0)


def write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


DEEP = "/".join(f"level-{i:02d}" for i in range(1, 31))
WEIRD_FOLDER = "names/🎉 folder #2 50%?"


def build_corpus(corpus: Corpus) -> None:
    root, good, bad = corpus.root, corpus.good, corpus.bad

    def picture(rel: str, drawing: Drawing, fmt: str = "PNG", **options: Any) -> None:
        write(root / rel, saved(draw(drawing), fmt, **options))
        good[rel] = Good(96, 96, fmt.lower(), drawing.caption)

    # names a shell, a URL or an encoding could trip over
    picture("names/with  two spaces .png", Drawing("red", "circle"))
    picture('names/it\'s "quoted".png', Drawing("green", "square"))
    picture("names/100% sure.png", Drawing("blue", "triangle"))
    picture("names/#1 hash.png", Drawing("yellow", "circle"))
    picture("names/what?.png", Drawing("purple", "square"))
    picture("names/Ελληνικά 東京 Москва.png", Drawing("orange", "triangle"))
    picture("names/🐱 party 🎉.png", Drawing("red", "square"))
    picture("names/a+b&c=d;e\\f.png", Drawing("green", "triangle"))
    picture(f"{WEIRD_FOLDER}/x y.png", Drawing("blue", "circle"))
    picture("CAPS/YELLOW TRIANGLE.JPG", Drawing("yellow", "triangle"), "JPEG", quality=92)
    good["CAPS/YELLOW TRIANGLE.JPG"] = Good(96, 96, "jpeg", "a yellow triangle")
    picture("CAPS/Photo.PNG", Drawing("purple", "circle"))
    picture(f"deep/{DEEP}/orange square.png", Drawing("orange", "square"))
    picture("plain/red triangle.webp", Drawing("red", "triangle"), "WEBP", quality=95)

    # formats and modes that need care to decode the way a viewer shows them
    write(root / "formats/cmyk.jpg", saved(draw(Drawing("yellow", "square")).convert("CMYK"), "JPEG", quality=95))
    good["formats/cmyk.jpg"] = Good(96, 96, "jpeg", "a yellow square")
    write(root / "formats/sixteen-bit.png", sixteen_bit_rgb_png(draw(Drawing("purple", "triangle"))))
    good["formats/sixteen-bit.png"] = Good(96, 96, "png", "a purple triangle")
    write(root / "formats/palette transparent.png", palette_png_with_transparency(Drawing("orange", "circle")))
    good["formats/palette transparent.png"] = Good(96, 96, "png", "a orange circle")
    write(root / "formats/animated.gif", animated_gif(Drawing("blue", "square"), Drawing("red", "circle")))
    good["formats/animated.gif"] = Good(96, 96, "gif", "a blue square")
    write(root / "formats/rotated.jpg", exif_rotated_jpeg(Drawing("green", "circle")))
    good["formats/rotated.jpg"] = Good(96, 160, "jpeg", "a green circle")
    gray16 = np.asarray(draw(Drawing("blue", "circle")).convert("L"), dtype=np.uint16) * 257
    write(
        root / "formats/gray sixteen-bit.png",
        saved(Image.frombytes("I;16", (96, 96), gray16.astype("<u2").tobytes()), "PNG"),
    )
    good["formats/gray sixteen-bit.png"] = Good(96, 96, "png")
    write(root / "formats/gray.jpg", saved(draw(Drawing("red", "circle")).convert("L"), "JPEG"))
    good["formats/gray.jpg"] = Good(96, 96, "jpeg")
    write(root / "formats/one pixel.png", saved(Image.new("RGB", (1, 1), (200, 30, 30)), "PNG"))
    good["formats/one pixel.png"] = Good(1, 1, "png")
    strip = np.tile(np.linspace(0, 255, 8000, dtype=np.uint8)[None, :, None], (8, 1, 3))
    write(root / "formats/strip 8000x8.png", saved(Image.fromarray(strip, "RGB"), "PNG"))
    good["formats/strip 8000x8.png"] = Good(8000, 8, "png")
    broken_exif = b"Exif\x00\x00II*\x00\x08\x00\x00\x00" + bytes(range(256)) * 4
    write(root / "plain/broken exif.jpg", saved(draw(Drawing("green", "circle")), "JPEG", exif=broken_exif))
    good["plain/broken exif.jpg"] = Good(96, 96, "jpeg")

    # a symlink within the folder is a file of the folder like any other
    (root / "links").mkdir()
    (root / "links/inside link.jpg").symlink_to("../formats/gray.jpg")
    good["links/inside link.jpg"] = Good(96, 96, "jpeg")

    # files that cannot be indexed, each for its own reason
    good_jpeg = saved(draw(Drawing("red", "circle"), width=300, height=300), "JPEG", quality=95)
    good_png = saved(draw(Drawing("blue", "square"), width=300, height=300), "PNG")
    bomb_rows = zlib.compress(b"\x00" * (60_000 // 8 + 1) * 16)  # a few rows of a 60,000×60,000 bitmap
    failures: dict[str, tuple[bytes, tuple[str, ...]]] = {
        "bad/empty.jpg": (b"", ("empty",)),
        "formats/truncated.jpg": (good_jpeg[: len(good_jpeg) // 2], ("truncated",)),
        "names/truncated #2.png": (good_png[: len(good_png) // 2], ("truncated",)),
        "bad/random bytes.jpg": (np.random.default_rng(3).bytes(4096), ("not an image",)),
        "bad/notes.png": (b"shopping list: milk, eggs\n", ("not an image",)),
        f"deep/{DEEP[:89]}/bomb.png": (
            png_chunks(60_000, 60_000, 1, 0, zlib.decompress(bomb_rows)),
            ("too large", "60000x60000", "MAX_IMAGE_PIXELS"),
        ),
    }
    for rel, (data, words) in failures.items():
        write(root / rel, data)
        bad[rel] = words

    # symlinks that lead out of the folder or nowhere
    outside = corpus.outside
    # drawn at sizes no file inside uses, so their bytes can be told apart from every indexed file
    write(outside / "secret.jpg", saved(draw(Drawing("purple", "square"), width=90, height=90), "JPEG"))
    write(outside / "album" / "private.png", saved(draw(Drawing("orange", "square"), width=91, height=91), "PNG"))
    (root / "links/outside.jpg").symlink_to(outside / "secret.jpg")
    bad["links/outside.jpg"] = ("outside IMAGE_DIR", "never served")
    (root / "links/album").symlink_to(outside / "album")
    bad["links/album/private.png"] = ("outside IMAGE_DIR", "never served")
    (root / "links/loop-a.jpg").symlink_to("loop-b.jpg")
    (root / "links/loop-b.jpg").symlink_to("loop-a.jpg")
    (root / "links/self.png").symlink_to("self.png")
    for rel in ("links/loop-a.jpg", "links/loop-b.jpg", "links/self.png"):
        bad[rel] = ("symlink loop",)
    (root / "links/dangling.png").symlink_to("no-such-file.png")
    bad["links/dangling.png"] = ("symlink", "does not exist")
    (root / "links/folder loop").symlink_to("..")  # a walk that follows it never ends

    if CAN_LOCK_FILES:
        write(root / "bad/locked.jpg", saved(draw(Drawing("green", "square")), "JPEG"))
        (root / "bad/locked.jpg").chmod(0)
        bad["bad/locked.jpg"] = ("cannot read", "Permission denied")


# --- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus(pg_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Corpus]:
    base = tmp_path_factory.mktemp("bad-input")
    name = f"t_bad_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = _with_database(pg_server, name)
    settings = load_settings(
        {
            "IMAGE_DIR": str(base / "img"),
            "DATA_DIR": str(base / "data"),
            "DATABASE_URL": url,
            **TINY_MODEL,
        }
    )
    corpus = Corpus(settings=settings, outside=base / "outside")
    build_corpus(corpus)
    relay = None
    if RESTRICTED:
        relay_dir = base / "pg-relay"
        relay_dir.mkdir()
        relay = SocketRelay(_socket_of(url), relay_dir)
        corpus.restricted_env["DATABASE_URL"] = _with_database(f"postgresql://postgres:@/x?host={relay_dir}", name)
    yield corpus
    if relay is not None:
        relay.close()
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run_restricted(corpus: Corpus, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*(RESTRICTED or []), sys.executable, str(ROOT / "main.py"), *args],
        env=env_for(corpus.settings, **corpus.restricted_env),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


@dataclass
class OneShot:
    summary: dict[str, Any]
    stderr: str
    seconds: float


@pytest.fixture(scope="module")
def indexed(corpus: Corpus) -> OneShot:
    started = time.monotonic()
    done = run_restricted(corpus, "index", "--json")
    assert done.returncode == 0, done.stderr
    return OneShot(json.loads(done.stdout.strip().splitlines()[-1]), done.stderr, time.monotonic() - started)


def indexed_rows(corpus: Corpus) -> dict[str, tuple[Any, ...]]:
    found = query(corpus.settings, "SELECT path, width, height, format, content_hash, size FROM images")
    return {r[0]: r[1:] for r in found if not r[0].startswith("live/")}


def error_rows(corpus: Corpus) -> dict[str, str]:
    return {
        p: r for p, r in query(corpus.settings, "SELECT path, reason FROM index_errors") if not p.startswith("live/")
    }


# --- one-shot indexing --------------------------------------------------------------------------


class TestOneShotIndex:
    def test_the_run_finishes_and_counts_every_file(self, corpus: Corpus, indexed: OneShot) -> None:
        s = indexed.summary
        assert (s["added"], s["failed"]) == (len(corpus.good), len(corpus.bad)), indexed.stderr
        assert "Traceback" not in indexed.stderr, indexed.stderr

    def test_every_good_image_has_a_row_and_nothing_else_does(self, corpus: Corpus, indexed: OneShot) -> None:
        assert set(indexed_rows(corpus)) == set(corpus.good)

    def test_every_bad_file_has_a_one_line_reason_that_says_why(self, corpus: Corpus, indexed: OneShot) -> None:
        reasons = error_rows(corpus)
        assert set(reasons) == set(corpus.bad)
        for path, words in corpus.bad.items():
            assert all(w in reasons[path] for w in words), (path, reasons[path])
            assert "\n" not in reasons[path] and len(reasons[path]) < 300

    def test_stored_dimensions_and_format_are_what_a_viewer_shows(self, corpus: Corpus, indexed: OneShot) -> None:
        rows = indexed_rows(corpus)
        for path, expected in corpus.good.items():
            assert rows[path][:3] == (expected.width, expected.height, expected.format), path

    def test_content_hash_and_size_are_those_of_the_bytes_on_disk(self, corpus: Corpus, indexed: OneShot) -> None:
        for path, row in indexed_rows(corpus).items():
            data = (corpus.root / path).read_bytes()
            assert row[3:] == (hashlib.sha256(data).hexdigest(), len(data)), path

    def test_nothing_outside_the_folder_was_read_into_the_index(self, corpus: Corpus, indexed: OneShot) -> None:
        secrets = {hashlib.sha256(p.read_bytes()).hexdigest() for p in corpus.outside.rglob("*") if p.is_file()}
        assert secrets.isdisjoint(row[3] for row in indexed_rows(corpus).values())

    @pytest.mark.skipif(not CAN_LOCK_FILES, reason="root here cannot drop CAP_DAC_OVERRIDE, so no file is unreadable")
    def test_a_file_without_read_permission_is_reported_as_such(self, corpus: Corpus, indexed: OneShot) -> None:
        assert "Permission denied" in error_rows(corpus)["bad/locked.jpg"]


# --- a live server over the same corpus ---------------------------------------------------------


class Server(Process):
    """`main.py serve` over the corpus, as the restricted user, with its output in a file."""

    def __init__(self, corpus: Corpus, log: Path) -> None:
        self.url = f"http://127.0.0.1:{free_port()}"
        port = self.url.rsplit(":", 1)[1]
        super().__init__(corpus.settings, ["serve"], log, prefix=RESTRICTED, PORT=port, **corpus.restricted_env)

    def get(self, path: str, **params: Any) -> httpx.Response:
        return httpx.get(self.url + path, params=params, timeout=30)


@pytest.fixture(scope="module")
def server(corpus: Corpus, indexed: OneShot, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = Server(corpus, tmp_path_factory.mktemp("bad-input-server") / "serve.log")

    def ready() -> bool:
        try:
            body = running.get("/api/status").json()
        except (httpx.TransportError, ValueError):
            return False
        return bool(body.get("live") and not body.get("scanning"))

    try:
        wait_for(ready, timeout=120)
        yield running
    finally:
        running.stop()


def image_rows(corpus: Corpus) -> dict[str, int]:
    return {path: ident for path, ident in query(corpus.settings, "SELECT path, id FROM images")}


def search_paths(server: Server, q: str, **params: Any) -> list[str]:
    response = server.get("/api/search", q=q, limit=200, **params)
    assert response.status_code == 200, response.text
    return [r["path"] for r in response.json()["results"]]


class TestServing:
    def test_the_live_indexer_agrees_with_the_one_shot_run(self, corpus: Corpus, server: Server) -> None:
        status = server.get("/api/status").json()
        assert status["images"] >= len(corpus.good)
        assert set(indexed_rows(corpus)) == set(corpus.good)
        assert set(error_rows(corpus)) == set(corpus.bad)

    def test_every_described_image_is_found_first_by_its_description(self, corpus: Corpus, server: Server) -> None:
        firsts = {
            path: search_paths(server, good.caption, folder=path.split("/", 1)[0])[0]
            for path, good in corpus.good.items()
            if good.caption is not None
        }
        assert firsts == {path: path for path in firsts}

    def test_every_good_image_is_among_the_results_and_no_bad_one_is(self, corpus: Corpus, server: Server) -> None:
        found = set(search_paths(server, "a red circle"))
        assert set(corpus.good) <= found
        assert found.isdisjoint(corpus.bad)

    def test_originals_are_served_byte_for_byte_whatever_their_name(self, corpus: Corpus, server: Server) -> None:
        ids = image_rows(corpus)
        for path in corpus.good:
            response = server.get(f"/api/images/{ids[path]}/file")
            assert response.status_code == 200, (path, response.text)
            assert response.content == (corpus.root / path).read_bytes(), path
            assert response.headers["content-type"].startswith("image/"), path

    def test_thumbnails_are_upright_jpegs_of_at_most_320_px(self, corpus: Corpus, server: Server) -> None:
        ids = image_rows(corpus)
        for path, good in corpus.good.items():
            response = server.get(f"/api/images/{ids[path]}/thumbnail")
            assert response.status_code == 200, (path, response.text)
            thumb = Image.open(io.BytesIO(response.content))
            assert thumb.format == "JPEG" and max(thumb.size) <= 320, path
            assert (thumb.width >= thumb.height) == (good.width >= good.height), (path, thumb.size)

    def test_no_request_about_any_file_is_answered_with_a_500(self, corpus: Corpus, server: Server) -> None:
        ids = image_rows(corpus)
        answers: dict[str, int] = {}
        for path in [*corpus.good, *corpus.bad]:
            ident = ids.get(path, image_id(path))
            for tail in ("", "/similar", "/file", "/thumbnail"):
                answers[f"{path}{tail}"] = server.get(f"/api/images/{ident}{tail}").status_code
        for folder in {p.rsplit("/", 1)[0] for p in [*corpus.good, *corpus.bad] if "/" in p}:
            answers[f"search in {folder}"] = server.get("/api/search", q="a red circle", folder=folder).status_code
        answers["folders"] = server.get("/api/folders").status_code
        answers["status"] = server.get("/api/status").status_code
        assert {k: v for k, v in answers.items() if v >= 500} == {}
        assert all(answers[f"{p}{t}"] == 200 for p in corpus.good for t in ("", "/similar", "/file", "/thumbnail"))
        assert all(answers[f"{p}{t}"] == 404 for p in corpus.bad for t in ("", "/similar", "/file", "/thumbnail"))

    def test_files_outside_the_folder_are_never_served(self, corpus: Corpus, server: Server) -> None:
        for path in ("links/outside.jpg", "links/album/private.png"):
            for tail in ("", "/file", "/thumbnail"):
                assert server.get(f"/api/images/{image_id(path)}{tail}").status_code == 404, (path, tail)
        assert not any("outside" in p or "album" in p for p in search_paths(server, "a purple square"))

    def test_an_odd_folder_name_is_listed_and_filters_the_search(self, corpus: Corpus, server: Server) -> None:
        folders = {f["path"]: f["images"] for f in server.get("/api/folders").json()["folders"]}
        assert folders[WEIRD_FOLDER] == 1 and folders[f"deep/{DEEP}"] == 1
        assert search_paths(server, "a blue circle", folder=WEIRD_FOLDER) == [f"{WEIRD_FOLDER}/x y.png"]

    def test_the_status_api_lists_every_bad_file_with_its_reason(self, corpus: Corpus, server: Server) -> None:
        failed = {f["path"]: f["reason"] for f in server.get("/api/status").json()["failed"]}
        failed = {p: r for p, r in failed.items() if not p.startswith("live/")}
        assert failed == error_rows(corpus) and set(failed) == set(corpus.bad)

    def test_the_status_command_lists_every_bad_file_with_its_reason(self, corpus: Corpus, server: Server) -> None:
        text = run_main(corpus.settings, "status")
        as_json = run_main(corpus.settings, "status", "--json")
        assert text.returncode == 0 and as_json.returncode == 0, text.stderr + as_json.stderr
        reasons = error_rows(corpus)
        for path in corpus.bad:
            assert f"  {path}: {reasons[path]}" in text.stdout.splitlines(), path
        listed = {f["path"]: f["reason"] for f in json.loads(as_json.stdout)["failed"]}
        assert {p: listed[p] for p in corpus.bad} == reasons

    @pytest.mark.browser
    def test_the_monitoring_page_shows_every_bad_file_with_its_reason(self, corpus: Corpus, server: Server) -> None:
        from playwright.sync_api import sync_playwright
        from test_browser import CHROMIUM, CHROMIUM_ARGS

        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 860})
                problems: list[str] = []
                page.on("pageerror", lambda e: problems.append(str(e)))
                page.goto(server.url + "/status")
                page.wait_for_selector("#failures tbody tr", state="attached", timeout=15_000)
                cells = page.locator("#failures tbody tr").evaluate_all(
                    "(rows) => rows.map((r) => [...r.cells].map((c) => c.textContent))"
                )
                shown = {path: reason for path, reason in cells}
                assert {p: shown.get(p) for p in corpus.bad} == error_rows(corpus)
                assert page.locator("#failures").is_visible()
                assert problems == []
            finally:
                browser.close()


# --- live: files that vanish, arrive slowly, or turn into links while the server runs -----------


def live_rows(corpus: Corpus, prefix: str) -> dict[str, str]:
    found = query(corpus.settings, "SELECT path, content_hash FROM images WHERE starts_with(path, %s)", (prefix,))
    return dict(found)


def live_errors(corpus: Corpus, prefix: str) -> dict[str, str]:
    found = query(corpus.settings, "SELECT path, reason FROM index_errors WHERE starts_with(path, %s)", (prefix,))
    return dict(found)


class TestLive:
    def test_files_deleted_while_they_are_processed_leave_nothing_behind(self, corpus: Corpus, server: Server) -> None:
        folder = corpus.root / "live" / "burst"
        folder.mkdir(parents=True)
        # one large picture in a small file, made 30 different files by a text chunk: each takes a
        # while to decode and they queue for the decoders, so files deleted soon after they arrive
        # vanish between being listed and being read
        big = saved(draw(Drawing("blue", "circle"), width=2000, height=1800), "PNG")
        names = [f"burst {i:02d}.png" for i in range(30)]
        for i, name in enumerate(names):
            text = b"tEXt" + f"Comment\x00copy {i}".encode()
            chunk = struct.pack(">I", len(text) - 4) + text + struct.pack(">I", zlib.crc32(text))
            (folder / name).write_bytes(big[:33] + chunk + big[33:])  # right after the IHDR chunk
        time.sleep(0.3)
        doomed = names[1::2]
        for name in doomed:
            (folder / name).unlink()
        kept = {f"live/burst/{n}" for n in names[0::2]}
        # a vanished file is no failure: no reason may show up for one, not even for a moment
        reported: set[str] = set()

        def settled() -> bool:
            reported.update(live_errors(corpus, "live/burst/"))
            return set(live_rows(corpus, "live/burst/")) == kept

        wait_for(settled, timeout=60, interval=0.02)
        assert reported == set()
        time.sleep(1.0)  # late events for the deleted files must not bring anything back
        assert set(live_rows(corpus, "live/burst/")) == kept
        assert live_errors(corpus, "live/burst/") == {}
        assert server.proc.poll() is None and "Traceback" not in server.output()

    def test_a_file_written_slowly_ends_as_one_row_of_its_final_content(self, corpus: Corpus, server: Server) -> None:
        target = corpus.root / "live" / "slow copy.jpg"
        target.parent.mkdir(exist_ok=True)
        data = saved(draw(Drawing("purple", "circle"), width=700, height=500), "JPEG", quality=95)
        write_slowly(target, data)
        digest = hashlib.sha256(data).hexdigest()
        rel = "live/slow copy.jpg"
        wait_for(lambda: live_rows(corpus, rel).get(rel) == digest and rel not in live_errors(corpus, rel), timeout=60)
        time.sleep(1.0)
        assert live_rows(corpus, rel) == {rel: digest} and live_errors(corpus, rel) == {}
        assert server.get(f"/api/images/{image_id(rel)}/file").content == data

    def test_a_served_file_replaced_by_a_link_out_is_refused_at_once(self, corpus: Corpus, server: Server) -> None:
        rel = "live/swapped.png"
        target = corpus.root / rel
        target.parent.mkdir(exist_ok=True)
        target.write_bytes(saved(draw(Drawing("yellow", "circle"), width=120, height=110), "PNG"))
        wait_for(lambda: rel in live_rows(corpus, rel), timeout=60)
        target.unlink()
        target.symlink_to(corpus.outside / "album" / "private.png")
        # whatever the indexer has got to, the server checks where the path leads before it serves
        for tail in ("/file", "/thumbnail"):
            assert server.get(f"/api/images/{image_id(rel)}{tail}").status_code == 404
        wait_for(lambda: "outside IMAGE_DIR" in live_errors(corpus, rel).get(rel, ""), timeout=60)
        assert rel not in live_rows(corpus, rel)

    def test_the_watcher_keeps_indexing_after_all_of_it(self, corpus: Corpus, server: Server) -> None:
        rel = "live/later/after everything.png"
        (corpus.root / rel).parent.mkdir(parents=True, exist_ok=True)
        (corpus.root / rel).write_bytes(saved(draw(Drawing("orange", "circle"), width=150, height=130), "PNG"))
        wait_for(lambda: rel in live_rows(corpus, rel), timeout=60)
        assert search_paths(server, "a orange circle", folder="live/later") == [rel]
        status = server.get("/api/status").json()
        assert status["live"] and set(error_rows(corpus)) == set(corpus.bad)


def test_an_offset_deeper_than_any_collection_is_one_line_not_a_server_error(settings: Settings, index: Any) -> None:
    index(settings)
    with TestClient(create_app(settings)) as client:
        for route in ("/api/search?q=red&offset=", "/api/duplicates?offset=", "/api/search?folder=x&offset="):
            response = client.get(route + str(2**63 + 5))
            assert response.status_code == 422, response.text
            assert "offset" in response.text
        ok = client.get("/api/search", params={"q": "red", "offset": 100_000_000})
        assert ok.status_code == 200 and ok.json()["results"] == []


@pytest.fixture(scope="module")
def client(corpus: Corpus, indexed: OneShot) -> Iterator[TestClient]:
    with TestClient(create_app(corpus.settings)) as client:
        yield client


OUT_OF_RANGE = [
    # (method, route, query parameters, JSON body, the parameter the one line names)
    ("GET", "/api/search", {"q": "red", "limit": 201}, None, "limit"),
    ("GET", "/api/search", {"q": "red", "person": 2**63}, None, "person"),
    ("GET", "/api/search", {"q": "red", "taken_after": "2024-06-30" * 5}, None, "taken_after"),
    ("GET", "/api/search", {"q": "red", "folder": "x" * 4097}, None, "folder"),
    ("GET", "/api/search", {"q": "red", "sort": "date" * 6}, None, "sort"),
    ("GET", "/api/search", {"q": "a " * 1001}, None, "q"),
    ("GET", "/api/search", {"q": "2:red + 1e300:blue"}, None, "weight"),
    ("GET", "/api/images/-1", {}, None, "image_id"),
    ("GET", f"/api/images/{2**63}/similar", {}, None, "image_id"),
    ("GET", "/api/images/1/thumbnail", {"at": "nan"}, None, "at"),
    ("GET", "/api/images/1/thumbnail", {"at": 1e8}, None, "at"),
    ("GET", "/api/duplicates", {"threshold": 0.4}, None, "threshold"),
    ("GET", "/api/duplicates", {"threshold": "inf"}, None, "threshold"),
    ("GET", f"/api/people/{2**63}", {}, None, "person_id"),
    ("POST", "/api/search", {}, {"terms": [{"text": "red", "weight": 101}]}, "weight"),
    ("POST", "/api/search", {}, {"terms": [{"text": "red", "weight": 0.001}]}, "weight"),
    ("POST", "/api/search", {}, {"terms": [{"text": "red"}], "offset": True}, "offset"),
    ("POST", "/api/search", {}, {"terms": [{"text": "red"}], "place": "x" * 201}, "place"),
    ("PATCH", "/api/faces/1", {}, {"person_id": -1}, "person_id"),
    ("POST", "/api/people/1/merge", {}, {"into": "2"}, "into"),
]


@pytest.mark.parametrize(("method", "route", "params", "body", "named"), OUT_OF_RANGE)
def test_a_number_or_text_out_of_its_range_is_one_line_never_a_server_error(
    client: TestClient, method: str, route: str, params: dict[str, Any], body: Any, named: str
) -> None:
    response = client.request(method, route, params=params, json=body)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert named in detail and "\n" not in detail and len(detail) < 300, detail


def test_the_edges_of_the_ranges_are_answered(client: TestClient) -> None:
    # the last day Python can name has no day after it: an inclusive bound there was a 500
    for params in ({"taken_before": "9999-12-31"}, {"taken_after": "0001-01-01"}, {"offset": 100_000_000}):
        response = client.get("/api/search", params={"q": "red", **params})
        assert response.status_code == 200, (params, response.text)
    for weight in (0.01, 100, -0.01, -100):
        body = {"terms": [{"text": "red"}, {"text": "circle", "weight": weight}]}
        response = client.post("/api/search", json=body)
        assert response.status_code == 200 and response.json()["results"], (weight, response.text)
    assert client.get("/api/search", params={"q": "100:red + 0.01:circle"}).status_code == 200
    assert client.get("/api/duplicates", params={"threshold": 0.5}).status_code == 200


def test_a_wrong_method_names_the_right_ones_and_an_unknown_route_is_a_json_404(client: TestClient) -> None:
    wrong = client.delete("/api/people/1")
    assert wrong.status_code == 405 and wrong.headers["allow"] == "GET, PATCH", wrong.headers
    assert wrong.json()["detail"] == "DELETE is not a method of /api/people/1: use GET or PATCH"
    assert client.get("/api/faces/1").headers["allow"] == "PATCH"
    unknown = client.get("/api/nothing/here")
    assert unknown.status_code == 404 and "No API route at /api/nothing/here" in unknown.json()["detail"]
    assert client.get("/").status_code == 200  # the page is still served beside them


def test_a_query_may_start_with_a_minus_on_the_command_line(settings: Settings, index: Any) -> None:
    index(settings)
    run = run_main(settings, "search", "-red", "--json", "--limit", "3")
    assert run.returncode == 0, run.stderr
    (term,) = json.loads(run.stdout)["understood"]["terms"]
    assert (term["text"], term["weight"]) == ("red", -1.0)
    wrong = run_main(settings, "search", "-red", "--no-such-option")
    assert wrong.returncode == 2 and "unrecognized arguments: -red --no-such-option" in wrong.stderr
