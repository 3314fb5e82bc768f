"""A phone's and a camera's folder as it really is: videos found through their best frame, a RAW
beside its JPEG and a Live Photo as one item each, sidecars read or ignored, other files counted,
and several folders, one of them polled."""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest
from camera_roll import SIDECARS, XMP, jpeg, write_camera_roll
from conftest import query, run_main, serve_and_wait, wait_for
from fastapi.testclient import TestClient
from PIL import Image
from shapes import Drawing
from videos import write_video

from api.app import create_app
from core.settings import Settings


def centre_colour(jpeg_bytes: bytes) -> tuple[int, int, int]:
    with Image.open(io.BytesIO(jpeg_bytes)) as image:
        r, g, b = image.convert("RGB").getpixel((image.width // 2, image.height // 2))  # type: ignore[misc]
        return r, g, b


def rows(settings: Settings) -> dict[str, tuple[Any, ...]]:
    found = query(settings, "SELECT path, kind, original, motion, keywords, title, rating, duration FROM images")
    return {r[0]: r[1:] for r in found}


@pytest.fixture
def camera_roll(settings: Settings) -> Settings:
    """A phone's and a camera's folder: a video, a RAW beside its JPEG, a Live Photo, sidecars and
    files that are not pictures at all."""
    write_camera_roll(settings.image_dir / "DCIM")
    return settings


class TestVideos:
    def test_a_video_is_found_through_its_best_frame_at_that_second(self, camera_roll: Settings, index: Any) -> None:
        summary = index(camera_roll)
        assert summary.failed == 0
        with TestClient(create_app(camera_roll)) as client:
            # in DCIM: the corpus beside it has a blue-square.png, which also matches by its name
            found = client.get("/api/search", params={"q": "a blue square", "folder": "DCIM", "limit": 3}).json()[
                "results"
            ]
            video = next(r for r in found if r["path"] == "DCIM/clip.mp4")
            assert found[0]["path"] == "DCIM/clip.mp4", [r["path"] for r in found]
            assert video["kind"] == "video" and 4 <= video["second"] < 8
            assert video["duration"] == pytest.approx(8, abs=0.3)
            assert video["taken_at"].startswith("2023-07-01T10:00") and video["date_source"] == "created"
            assert video["latitude"] == pytest.approx(38.7139) and video["longitude"] == pytest.approx(-9.1394)
            red = client.get("/api/search", params={"q": "a red circle", "folder": "DCIM"}).json()["results"][0]
            assert red["path"] == "DCIM/clip.mp4" and red["second"] < 4

            # its thumbnail is the matched frame: blue at the blue second, red at the red one
            blue = centre_colour(client.get(video["thumbnail_url"]).content)
            red_colour = centre_colour(client.get(red["thumbnail_url"]).content)
            assert blue[2] > 150 > blue[0] and red_colour[0] > 150 > red_colour[2]

            # seconds past the end show the last frame, cached once whatever a client asks for
            base = video["thumbnail_url"].split("?")[0]
            late = [client.get(base, params={"at": at}) for at in (1000, 2000.5, 8.04)]
            assert all(r.status_code == 200 for r in late) and centre_colour(late[0].content)[2] > 150
            cached = list(camera_roll.thumbnail_dir.rglob(f"{video['id']}-*-t8.jpg"))
            assert len(cached) == 1, cached

            # the player seeks with range requests
            part = client.get(video["url"], headers={"Range": "bytes=100-199"})
            assert part.status_code == 206 and len(part.content) == 100
            assert part.headers["content-type"] == "video/mp4"

    def test_the_command_line_says_at_which_second(self, camera_roll: Settings, index: Any) -> None:
        index(camera_roll)
        out = run_main(camera_roll, "search", "a blue square in:DCIM", "--limit", "1")
        assert out.returncode == 0, out.stderr
        path, _, second = out.stdout.split("\t")[1].partition("@")
        assert path == "DCIM/clip.mp4" and 4 <= float(second.rstrip("s")) < 8

    def test_date_filters_use_the_creation_date(self, camera_roll: Settings, index: Any) -> None:
        index(camera_roll)
        with TestClient(create_app(camera_roll)) as client:
            inside = client.get("/api/search", params={"q": "a blue square in july 2023"})
            outside = client.get("/api/search", params={"q": "a blue square", "taken_before": "2023-06-01"})
        assert "DCIM/clip.mp4" in [r["path"] for r in inside.json()["results"]]
        assert "DCIM/clip.mp4" not in [r["path"] for r in outside.json()["results"]]

    def test_frames_are_embedded_once_and_reused_for_a_copy(self, camera_roll: Settings, index: Any) -> None:
        first = index(camera_roll)
        shutil.copy(camera_roll.image_dir / "DCIM" / "clip.mp4", camera_roll.image_dir / "copy.mp4")
        second = index(camera_roll)
        assert first.embedded >= 1 and second.embedded == 0 and second.reused == 1
        frames = query(camera_roll, "SELECT count(*) FROM images i WHERE path = 'copy.mp4' AND kind = 'video'")
        assert frames == [(1,)]


class TestPairs:
    def test_a_raw_beside_its_jpeg_is_one_item_listed_as_its_original(self, camera_roll: Settings, index: Any) -> None:
        index(camera_roll)
        found = rows(camera_roll)
        assert "DCIM/IMG_0001.CR2" not in found
        assert found["DCIM/IMG_0001.JPG"][:2] == ("picture", "DCIM/IMG_0001.CR2")
        with TestClient(create_app(camera_roll)) as client:
            item = next(
                r
                for r in client.get("/api/search", params={"q": "a yellow triangle"}).json()["results"]
                if r["path"] == "DCIM/IMG_0001.JPG"
            )
            raw = client.get(item["original_url"])
        assert raw.status_code == 200 and raw.content.startswith(b"raw sensor data")

    def test_a_live_photo_is_its_still_with_motion_to_play(self, camera_roll: Settings, index: Any) -> None:
        index(camera_roll)
        found = rows(camera_roll)
        assert "DCIM/IMG_0002.MOV" not in found
        assert found["DCIM/IMG_0002.HEIC"][0] == "picture" and found["DCIM/IMG_0002.HEIC"][2] == "DCIM/IMG_0002.MOV"
        with TestClient(create_app(camera_roll)) as client:
            item = next(
                r
                for r in client.get("/api/search", params={"q": "a purple circle"}).json()["results"]
                if r["path"] == "DCIM/IMG_0002.HEIC"
            )
            assert item["kind"] == "live" and item["preview_url"]
            motion = client.get(item["motion_url"], headers={"Range": "bytes=0-99"})
            preview = Image.open(io.BytesIO(client.get(item["preview_url"]).content))
        assert motion.status_code == 206 and motion.headers["content-type"] == "video/mp4"
        assert preview.format == "JPEG" and preview.size == (160, 120)

    def test_removing_the_jpeg_makes_the_raw_an_item_of_its_own(self, camera_roll: Settings, index: Any) -> None:
        index(camera_roll)
        (camera_roll.image_dir / "DCIM" / "IMG_0002.HEIC").unlink()
        index(camera_roll)
        found = rows(camera_roll)
        assert found["DCIM/IMG_0002.MOV"][0] == "video" and "DCIM/IMG_0002.HEIC" not in found

    def test_a_long_video_named_like_a_picture_stays_a_video(self, settings: Settings, index: Any) -> None:
        (settings.image_dir / "party.jpg").write_bytes(jpeg(Drawing("red", "square")))
        write_video(settings.image_dir / "party.mp4", [(Drawing("blue", "circle"), 8)])
        index(settings)
        found = rows(settings)
        assert found["party.mp4"][0] == "video" and found["party.jpg"][2] is None


class TestSidecarsAndOtherFiles:
    def test_an_xmp_sidecar_gives_its_picture_keywords_title_and_rating(
        self, camera_roll: Settings, index: Any
    ) -> None:
        index(camera_roll)
        _, _, _, keywords, title, rating, _ = rows(camera_roll)["DCIM/IMG_0003.JPG"]
        assert keywords == ["holiday", "lisbon"] and title == "Tram 28" and rating == 4

    def test_editing_the_sidecar_updates_the_picture(self, camera_roll: Settings, index: Any) -> None:
        index(camera_roll)
        sidecar = camera_roll.image_dir / "DCIM" / "IMG_0003.JPG.xmp"
        sidecar.write_text(XMP.replace("lisbon", "porto"))
        summary = index(camera_roll)
        assert rows(camera_roll)["DCIM/IMG_0003.JPG"][3] == ["holiday", "porto"] and summary.embedded == 0

    def test_sidecars_are_ignored_and_other_files_counted_by_extension(self, camera_roll: Settings, index: Any) -> None:
        summary = index(camera_roll)
        errors = query(camera_roll, "SELECT path FROM index_errors")
        assert summary.failed == 0 and errors == []
        with TestClient(create_app(camera_roll)) as client:
            status = client.get("/api/status").json()
        [folder] = status["folders"]
        assert folder["watch"] == "live" and folder["skipped"] == {".mp3": 1, ".pdf": 1}
        assert folder["sidecars"] == SIDECARS
        assert status["media"]["videos"] == 1 and status["media"]["live_photos"] == 1
        assert status["media"]["raw_originals"] == 1


class TestSeveralFolders:
    def test_each_folder_is_a_top_folder_and_a_polled_one_stays_in_sync(
        self, settings: Settings, tmp_path: Path, start_process: Any
    ) -> None:
        phone, nas = tmp_path / "Phone", tmp_path / "NAS"
        phone.mkdir()
        nas.mkdir()
        (phone / "a.jpg").write_bytes(jpeg(Drawing("red", "circle")))
        (nas / "b.jpg").write_bytes(jpeg(Drawing("blue", "square")))
        both = settings.with_overrides(image_dirs=(phone, nas))
        _, base = serve_and_wait(start_process, both, WATCH="poll", SCAN_INTERVAL="1")
        status = httpx.get(f"{base}/api/status").json()
        assert {f["label"]: f["watch"] for f in status["folders"]} == {"Phone": "polled", "NAS": "polled"}
        assert sorted(r[0] for r in query(both, "SELECT path FROM images")) == ["NAS/b.jpg", "Phone/a.jpg"]
        # no file events in poll mode: the next poll finds the new file, and the removed one
        (nas / "c.jpg").write_bytes(jpeg(Drawing("green", "triangle")))
        (phone / "a.jpg").unlink()
        wait_for(lambda: sorted(r[0] for r in query(both, "SELECT path FROM images")) == ["NAS/b.jpg", "NAS/c.jpg"])
        folders = httpx.get(f"{base}/api/folders").json()["folders"]
        assert {"path": "NAS", "images": 2} in folders
        served = httpx.get(f"{base}/api/search", params={"q": "a green triangle", "folder": "NAS"}).json()
        assert served["results"][0]["path"] == "NAS/c.jpg"
        assert httpx.get(f"{base}{served['results'][0]['url']}").status_code == 200
        assert os.path.exists(nas / "c.jpg")
