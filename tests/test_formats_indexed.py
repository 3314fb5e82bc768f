"""Every format, the whole way: written by the test, indexed, found by a search, its facts in the
result, its thumbnail, its file (and for formats browsers cannot show, its preview) served."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import pytest
import stills
from conftest import database_of_its_own, settings_in
from fastapi.testclient import TestClient
from PIL import Image
from shapes import Drawing, draw, write_corpus
from videos import quicktime_metadata, write_video

from api.app import create_app
from core.settings import Settings
from flows.engine import index_once

TAKEN = datetime(2022, 5, 14, 9, 30, 0)
FACTS = stills.Facts(taken_at=TAKEN, camera="Pixel 7", latitude=38.7139, longitude=-9.1394, orientation=6)
VIDEO_FACTS = quicktime_metadata(
    created="2022-05-14T09:30:00+0100", model="iPhone 15", location="+38.7139-009.1394+010.000/"
)
SUBJECT = Drawing("orange", "triangle")


def still(writer: Callable[..., Path]) -> Callable[[Path], Path]:
    return lambda path: writer(path, draw(SUBJECT, width=240, height=180), FACTS)


def video(path: Path) -> Path:
    metadata = VIDEO_FACTS if path.suffix in (".mp4", ".mov", ".m4v") else {}
    return write_video(path, [(Drawing("green", "circle"), 2), (SUBJECT, 3)], size=(240, 180), metadata=metadata)


# extension → (writer, media type of the file route, whether the page needs a JPEG preview)
FORMATS: dict[str, tuple[Callable[[Path], Path], str, bool]] = {
    "heic": (still(stills.write_heic), "image/heic", True),
    "avif": (still(stills.write_avif), "image/avif", True),
    "jxl": (still(stills.write_jxl), "image/jxl", True),
    "dng": (still(stills.write_dng), "image/x-adobe-dng", True),
    "jpg": (still(stills.write_jpeg), "image/jpeg", False),
    "mp4": (video, "video/mp4", False),
    "mov": (video, "video/mp4", False),
    "m4v": (video, "video/mp4", False),
    "mkv": (video, "video/x-matroska", False),
    "webm": (video, "video/webm", False),
    "avi": (video, "video/x-msvideo", False),
    "3gp": (video, "video/3gpp", False),
}


def colour_at_centre(data: bytes) -> tuple[int, ...]:
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "JPEG"
        small = image.convert("RGB").resize((3, 3), Image.Resampling.BOX)
        return tuple(small.getpixel((1, 1)))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def every_format(pg_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """The 18 shapes and one file of every format, each in a folder of its own (camera/EXT/),
    indexed once for the module: its tests only look."""
    top = tmp_path_factory.mktemp("formats")
    write_corpus(top / "img")
    for ext, (writer, _, _) in FORMATS.items():
        writer(_target(top / "img", ext))
    with database_of_its_own(pg_server) as url:
        settings = settings_in(top, url)
        summary = asyncio.run(index_once(settings))
        assert summary.failed == 0, summary
        yield settings


@pytest.fixture(params=sorted(FORMATS))
def one_of_each(request: pytest.FixtureRequest, every_format: Settings) -> tuple[Settings, str]:
    return every_format, request.param


def _target(image_dir: Path, ext: str) -> Path:
    folder = image_dir / "camera" / ext
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"IMG_0001.{ext}"


class TestEveryFormat:
    def test_is_found_with_its_facts_thumbnail_and_file(self, one_of_each: tuple[Settings, str]) -> None:
        settings, ext = one_of_each
        _, media_type, needs_preview = FORMATS[ext]
        is_video = media_type.startswith("video/")
        with TestClient(create_app(settings)) as client:
            # in its folder: the corpus's orange-triangle.png would also match by its name
            found = client.get("/api/search", params={"q": "an orange triangle", "folder": f"camera/{ext}", "limit": 3})
            results = found.json()["results"]
            hit = results[0]
            assert hit["path"] == f"camera/{ext}/IMG_0001.{ext}", [r["path"] for r in results]
            assert hit["kind"] == ("video" if is_video else "picture")
            # stored turned, with EXIF orientation 6 saying how to turn it back: shown upright
            assert (hit["width"], hit["height"]) == (240, 180)
            if not is_video or ext in ("mp4", "mov", "m4v"):
                assert hit["taken_at"].startswith("2022-05-14T09:30")
                assert hit["latitude"] == pytest.approx(38.7139, abs=1e-3)
                assert hit["longitude"] == pytest.approx(-9.1394, abs=1e-3)
                assert hit["camera"] == ("iPhone 15" if is_video else "Pixel 7")
            if is_video:
                assert hit["second"] >= 2 and hit["duration"] == pytest.approx(5, abs=0.3)

            thumbnail = client.get(hit["thumbnail_url"])
            red, green, blue = colour_at_centre(thumbnail.content)[:3]
            assert thumbnail.status_code == 200 and red > 180 and blue < 90, (red, green, blue)

            served = client.get(hit["url"])
            assert served.status_code == 200 and served.headers["content-type"] == media_type
            assert served.content == (settings.image_dir / hit["path"]).read_bytes()
            assert (hit["preview_url"] is not None) == needs_preview
            if needs_preview:
                preview = client.get(hit["preview_url"])
                with Image.open(io.BytesIO(preview.content)) as shown:
                    assert shown.format == "JPEG" and shown.size == (240, 180)
