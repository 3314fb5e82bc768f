"""Text in pictures: the real OCR model (PP-OCRv4 through RapidOCR, from its wheel) reads signs
rendered into real JPEG and HEIC files, stored turned with an EXIF orientation as cameras do, with
boxes where the sign is shown; the OCR pass fills `picture_text` after the embeddings, once per
content, never with OCR=off, past files damaged since they were indexed, and the status says how
far it has come."""

from __future__ import annotations

import asyncio
import hashlib
import re
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import stills
from conftest import Process, query, serve_and_wait, wait_for
from PIL import Image, ImageDraw, ImageFont

from api.status import read_status, render_status
from core.media.pictures import render_picture
from core.models.embedder import Embedders
from core.models.ocr import TextReader, read_picture
from core.settings import Settings
from flows.engine import index_once
from flows.ocr_pass import OcrPass
from flows.passes import text_workers

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSerif-Bold.ttf"  # serifs: a sans capital I reads as l
LIMIT = 10**8


def sign(words: str, *, width: int = 480, height: int = 320, at: tuple[int, int] = (24, 30)) -> Image.Image:
    """A picture with `words` on a light plate in its top-left part, over a darker, busy scene."""
    picture = Image.new("RGB", (width, height), (70, 90, 80))
    pen = ImageDraw.Draw(picture)
    for n in range(0, width, 40):  # some structure, as a photo has
        pen.rectangle((n, height // 2, n + 20, height - 10), fill=(110, 60 + n % 120, 50))
    font = ImageFont.truetype(FONT, 34)
    x, y = at
    pen.rectangle((x - 10, y - 8, x + pen.textlength(words, font=font) + 10, y + 48), fill=(240, 236, 220))
    pen.text((x, y), words, fill=(20, 20, 20), font=font)
    return picture


def letters(text: str) -> str:
    """The model often runs English words together: compare letters and digits, case aside."""
    return re.sub(r"[^a-z0-9]", "", text.lower())


@pytest.fixture(scope="module")
def reader() -> TextReader:
    return TextReader()


class TestReading:
    @pytest.mark.parametrize(
        ("kind", "orientation", "words"),
        [("jpeg", 6, "CAFE LUNA"), ("heic", 8, "Invoice 4711 ACME"), ("heic", 3, "CAFE LUNA")],
    )
    def test_a_sign_is_read_from_a_turned_file_with_its_box_where_it_is_shown(
        self, tmp_path: Path, reader: TextReader, kind: str, orientation: int, words: str
    ) -> None:
        facts = stills.Facts(orientation=orientation)
        write = stills.write_jpeg if kind == "jpeg" else stills.write_heic
        path = write(tmp_path / f"sign.{kind}", sign(words), facts)
        upright = render_picture(path, 1280, max_pixels=LIMIT)
        assert upright.size == (480, 320)

        reading = read_picture(reader, upright, "auto")

        assert reading.skipped is None
        assert letters(words) in letters(reading.text), reading.text
        line = next(line for line in reading.lines if letters(words)[:4] in letters(line.text))
        x0, y0, x1, y1 = line.box  # fractions of the picture as displayed: the plate is top left
        assert 0.0 <= x0 < 0.12 and 0.0 <= y0 < 0.2 and 0.35 < x1 <= 1.0 and y1 < 0.35, line.box
        assert 0.5 <= line.confidence <= 1.0

    def test_on_reads_finely_and_auto_skips_a_picture_too_small_for_text(self, reader: TextReader) -> None:
        assert letters("CAFE LUNA") in letters(read_picture(reader, sign("CAFE LUNA"), "on").text)
        tiny = read_picture(reader, Image.new("RGB", (24, 200), "white"), "auto")
        assert tiny.lines == [] and tiny.skipped is not None and "too small" in tiny.skipped


def write_folder(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True)
    files = {
        "cafe": stills.write_jpeg(folder / "cafe.jpg", sign("CAFE LUNA"), stills.Facts(orientation=6)),
        "invoice": stills.write_heic(folder / "invoice.heic", sign("Invoice 4711 ACME")),
        "plain": stills.write_jpeg(folder / "plain.jpg", Image.new("RGB", (320, 240), (30, 120, 200))),
    }
    return files


def text_rows(settings: Settings) -> dict[str, tuple[str, Any, str | None]]:
    rows = query(settings, "SELECT content_hash, text, lines, skipped FROM picture_text")
    return {h: (text, lines, skipped) for h, text, lines, skipped in rows}


def hash_of(settings: Settings, path: str) -> str:
    return str(query(settings, "SELECT content_hash FROM images WHERE path = %s", (path,))[0][0])


class TestThePass:
    def test_pictures_are_searchable_first_and_their_text_follows_once_per_content(
        self, tmp_path: Path, settings: Settings, index: Callable[[Settings], Any]
    ) -> None:
        folder = tmp_path / "signs"
        write_folder(folder)
        off = settings.with_overrides(image_dir=folder, ocr="off")

        summary = index(off)  # OCR=off: the embeddings, and no text at all
        assert summary.added == 3 and summary.text_read == 0
        assert len(query(off, "SELECT path FROM images")) == 3 and text_rows(off) == {}
        assert read_status(off)["text"] == {"mode": "off", "read": 0, "waiting": 3, "skipped": 0}

        auto = off.with_overrides(ocr="auto")
        told: list[tuple[int, int]] = []  # what `main.py index`'s second bar shows
        assert OcrPass(auto, auto.database_url).run_until_done(lambda done, total: told.append((done, total))) == 3
        assert told == [(0, 3), (1, 3), (2, 3), (3, 3)]
        rows = text_rows(auto)
        cafe, invoice, plain = (rows[hash_of(auto, p)] for p in ("cafe.jpg", "invoice.heic", "plain.jpg"))
        assert letters("CAFE LUNA") in letters(cafe[0]) and letters("4711 ACME") in letters(invoice[0])
        assert plain[0] == "" and plain[1] == [] and plain[2] is None  # read, and nothing there
        line = cafe[1][0]
        assert set(line) == {"text", "box", "confidence"} and len(line["box"]) == 4
        assert all(0 <= v <= 1 for v in line["box"]) and cafe[0] == "\n".join(li["text"] for li in cafe[1])
        status = read_status(auto)
        assert status["text"] == {"mode": "auto", "read": 3, "waiting": 0, "skipped": 0}
        assert "text       3 pictures read, 0 waiting, 0 skipped (OCR=auto)" in render_status(status)

        shutil.copy(folder / "cafe.jpg", folder / "cafe copy.jpg")  # the same bytes under a new name
        again = index(auto)
        assert again.added == 1 and again.text_read == 0 and len(text_rows(auto)) == 3

        (folder / "moved").mkdir()  # a move, and the same bytes saved again: nothing new to read
        (folder / "invoice.heic").rename(folder / "moved" / "invoice.heic")
        (folder / "plain.jpg").write_bytes((folder / "plain.jpg").read_bytes())
        moved = index(auto)
        assert moved.added == 1 and moved.deleted == 1 and moved.text_read == 0
        assert text_rows(auto) == rows

    def test_several_workers_share_the_pictures_and_read_each_content_once(
        self, tmp_path: Path, settings: Settings, index: Callable[[Settings], Any]
    ) -> None:
        folder = tmp_path / "signs"
        folder.mkdir()
        words = ["CAFE LUNA", "MAIN STREET", "OPEN DAILY", "BAKERY", "HOTEL", "MUSEUM", "EXIT", "GARDEN"]
        for n, line in enumerate(words):
            stills.write_jpeg(folder / f"sign{n}.jpg", sign(line))
        shutil.copy(folder / "sign0.jpg", folder / "sign0 copy.jpg")  # one content under two names
        off = settings.with_overrides(image_dir=folder, ocr="off")
        index(off)

        read_by: dict[str, list[str]] = {}  # content hash → the threads that read it

        class Counted(OcrPass):
            def process(self, key: str, kind: str, path: Path, data: bytes) -> Any:
                read_by.setdefault(hashlib.sha256(data).hexdigest(), []).append(threading.current_thread().name)
                return super().process(key, kind, path, data)

        told: list[tuple[int, int]] = []
        reading = Counted(off.with_overrides(ocr="auto"), off.database_url)
        assert reading.run_until_done(lambda done, total: told.append((done, total)), workers=2) == len(words)
        assert sorted(len(threads) for threads in read_by.values()) == [1] * len(words)
        assert len({name for threads in read_by.values() for name in threads}) == 2  # both took a share
        assert told[0] == (0, len(words)) and told[-1] == (len(words), len(words))
        assert [done for done, _ in told] == sorted(done for done, _ in told)
        rows = text_rows(off)
        for n, line in enumerate(words):
            assert letters(line) in letters(rows[hash_of(off, f"sign{n}.jpg")][0])
        assert not reading.add_worker()  # the run is over: no worker joins it any more

    def test_a_one_shot_update_lets_go_of_the_model_before_reading_the_text(
        self, tmp_path: Path, settings: Settings
    ) -> None:
        folder = tmp_path / "signs"
        write_folder(folder)
        auto = settings.with_overrides(image_dir=folder, ocr="auto")
        embedders = Embedders()
        loaded_while_reading: list[bool] = []
        reads = OcrPass.process

        def process(self: OcrPass, key: str, kind: str, path: Path, data: bytes) -> Any:
            loaded_while_reading.append(embedders.get(auto.clip_model, auto.device, auto.precision).loaded)
            return reads(self, key, kind, path, data)

        with pytest.MonkeyPatch.context() as patch:  # only to look: the real reading goes on
            patch.setattr(OcrPass, "process", process)
            summary = asyncio.run(index_once(auto, embedders=embedders, release_models=True))

        assert summary.embedded == 3 and summary.text_read == 3
        assert loaded_while_reading == [False, False, False]
        status = read_status(auto)  # what the run settled is still said
        assert status["device"] == "cpu" and status["precision"] in ("float32", "bfloat16")
        again = asyncio.run(index_once(auto, embedders=embedders))  # and the next use loads it again
        assert again.text_read == 0 and embedders.get(auto.clip_model, auto.device, auto.precision).loaded is False
        (folder / "later.jpg").write_bytes((folder / "plain.jpg").read_bytes() + b"later")
        assert asyncio.run(index_once(auto, embedders=embedders)).embedded == 1

    def test_the_text_takes_the_faces_core_once_the_faces_are_done(self) -> None:
        # (text workers beside the faces, text workers after them) for the cores there are
        assert text_workers(1, faces=True) == (1, 1)
        assert text_workers(2, faces=True) == (1, 2)
        assert text_workers(2, faces=False) == (2, 2)
        assert text_workers(8, faces=True) == (2, 2)  # each worker holds an engine's memory

    def test_a_file_damaged_since_it_was_indexed_does_not_stop_the_pass(
        self, tmp_path: Path, settings: Settings, index: Callable[[Settings], Any]
    ) -> None:
        folder = tmp_path / "signs"
        files = write_folder(folder)
        off = settings.with_overrides(image_dir=folder, ocr="off")
        index(off)
        files["cafe"].write_bytes(files["cafe"].read_bytes()[:300])  # cut short after it was indexed
        files["plain"].unlink()

        auto = off.with_overrides(ocr="auto")
        assert OcrPass(auto, auto.database_url).run_until_done() == 1  # the invoice; the others left
        assert [letters("4711 ACME") in letters(t) for t, _, _ in text_rows(auto).values()] == [True]

        index(auto)  # the indexer records the damaged file as failed and forgets the deleted one
        assert read_status(auto)["text"] == {"mode": "auto", "read": 1, "waiting": 0, "skipped": 0}
        assert [f["path"] for f in read_status(auto)["failed"]] == ["cafe.jpg"]

    def test_the_live_indexer_reads_text_after_the_scan_and_the_status_shows_it(
        self, tmp_path: Path, settings: Settings, start_process: Callable[..., Process]
    ) -> None:
        folder = tmp_path / "signs"
        write_folder(folder)
        live = settings.with_overrides(image_dir=folder)
        server, base = serve_and_wait(start_process, live, images=3, OCR="auto")

        def all_read() -> dict[str, Any] | None:
            text: dict[str, Any] = httpx.get(f"{base}/api/status", timeout=5).json()["text"]
            return text if text["waiting"] == 0 else None

        assert wait_for(all_read, timeout=60) == {"mode": "auto", "read": 3, "waiting": 0, "skipped": 0}
        stills.write_jpeg(folder / "later.jpg", sign("MAIN STREET"))  # a new file: embedded, then read
        wait_for(lambda: any(letters("MAIN STREET") in letters(t) for t, _, _ in text_rows(live).values()), 60)
        assert httpx.get(f"{base}/api/status", timeout=5).json()["text"]["read"] == 4
