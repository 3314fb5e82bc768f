"""Every format, the whole way: written by the test, indexed, found by a search, its facts in the
result, its thumbnail, its file (and for formats browsers cannot show, its preview) served."""

from __future__ import annotations

import io
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import stills
from fastapi.testclient import TestClient
from PIL import Image
from shapes import Drawing, draw
from videos import quicktime_metadata, write_video

from api.app import create_app
from core.settings import Settings

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


@pytest.fixture(params=sorted(FORMATS))
def one_of_each(request: pytest.FixtureRequest, settings: Settings, index: Any) -> tuple[Settings, str]:
    ext = request.param
    FORMATS[ext][0](_target(settings, ext))
    summary = index(settings)
    assert summary.failed == 0, summary
    return settings, ext


def _target(settings: Settings, ext: str) -> Path:
    folder = settings.image_dir / "camera"
    folder.mkdir(exist_ok=True)
    return folder / f"IMG_0001.{ext}"


class TestEveryFormat:
    def test_is_found_with_its_facts_thumbnail_and_file(self, one_of_each: tuple[Settings, str]) -> None:
        settings, ext = one_of_each
        _, media_type, needs_preview = FORMATS[ext]
        is_video = media_type.startswith("video/")
        with TestClient(create_app(settings)) as client:
            # in its folder: the corpus's orange-triangle.png would also match by its name
            found = client.get("/api/search", params={"q": "an orange triangle", "folder": "camera", "limit": 3})
            results = found.json()["results"]
            hit = results[0]
            assert hit["path"] == f"camera/IMG_0001.{ext}", [r["path"] for r in results]
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
