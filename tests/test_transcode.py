"""Videos every browser plays: an iPhone's HEVC becomes H.264/AAC in MP4 on the same timeline, made
once however many ask, kept in a cache that drops what was played longest ago, and served with
range requests; what browsers play already is served as it is, and a damaged video is refused in
one line."""

from __future__ import annotations

import hashlib
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import pytest
from conftest import indexed_folder, query, wait_for
from fastapi.testclient import TestClient
from shapes import Drawing, draw
from videos import write_video

from api.app import create_app
from api.transcodes import Transcodes
from core.media.transcode import read_streams, to_h264
from core.media.videos import VideoError
from core.settings import Settings

QUIET = {"x265-params": "log-level=error"}
MAX_PIXELS = 100_000_000
ORANGE_THEN_BLUE = [(Drawing("orange", "triangle"), 1.5), (Drawing("blue", "square"), 1.5)]


def iphone_clip(path: Path, segments: Any = ORANGE_THEN_BLUE, seconds: float | None = None) -> Path:
    """HEVC with AAC sound in a MOV, held upright (stored sideways with a display matrix), as an
    iPhone records; `seconds` cuts the segments to that length."""
    if seconds is not None:
        segments = [(segments[0][0], seconds)]
    return write_video(path, segments, codec="libx265", codec_options=QUIET, size=(96, 128), sound="aac", rotate=-90)


def first_blue_second(path: Path) -> float:
    """The time of the first frame whose centre is blue, as a player counts it (from the first frame)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        start = float(stream.start_time * stream.time_base) if stream.start_time and stream.time_base else 0.0
        for frame in container.decode(stream):
            r, _, b = frame.to_ndarray(format="rgb24")[frame.height // 2, frame.width // 2]
            if b > 150 > r and frame.time is not None:
                return frame.time - start
    raise AssertionError(f"no blue frame in {path}")


def content_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class TestConversion:
    def test_hevc_with_sound_becomes_h264_and_aac_in_mp4_on_the_same_timeline(self, tmp_path: Path) -> None:
        source = iphone_clip(tmp_path / "IMG_0100.MOV")
        before = read_streams(source)
        assert (before.container, before.video, before.audio) == ("mp4", "hevc", "aac") and not before.plays_as_is

        seen: list[float] = []
        made = to_h264(source, tmp_path / "cache" / "clip.mp4", max_pixels=MAX_PIXELS, progress=seen.append)
        after = read_streams(made)
        assert (after.container, after.video, after.pixel_format, after.audio) == ("mp4", "h264", "yuv420p", "aac")
        assert after.plays_as_is and after.media_type == "video/mp4"
        assert after.duration == pytest.approx(before.duration, abs=0.05) and before.duration == pytest.approx(
            3, abs=0.05
        )
        # the blue half starts at the same second: a matched second means the same frame in both
        assert first_blue_second(made) == pytest.approx(first_blue_second(source), abs=0.01)
        assert first_blue_second(made) == pytest.approx(1.5, abs=0.11)
        with av.open(str(made)) as container:
            video, sound = container.streams.video[0], container.streams.audio[0]
            frame = next(container.decode(video))
            assert frame.rotation == -90 and (frame.width, frame.height) == (128, 96)  # turned by metadata only
            assert sound.duration is not None and sound.time_base is not None
            assert float(sound.duration * sound.time_base) == pytest.approx(3, abs=0.1)
            assert container.format.name.startswith("mov")
        assert seen and seen[-1] == 1.0 and seen == sorted(seen)
        assert sorted(p.name for p in made.parent.iterdir()) == ["clip.mp4"]  # no part file left behind

    @pytest.mark.parametrize(
        ("name", "codec", "sound", "plays"),
        [
            ("phone.mp4", "h264", "aac", True),
            ("silent.mov", "h264", None, True),
            ("screen.webm", "libvpx-vp9", "libopus", True),
            ("iphone.mov", "libx265", "aac", False),
            ("camera.mov", "h264", "pcm_s16le", False),  # many cameras' sound: Chrome and Firefox refuse it
            ("film.mkv", "h264", "aac", False),  # Matroska: Safari plays none of it
            ("old.avi", "mpeg4", None, False),
        ],
    )
    def test_which_videos_play_as_they_are(
        self, tmp_path: Path, name: str, codec: str, sound: str | None, plays: bool
    ) -> None:
        path = write_video(
            tmp_path / name,
            [(Drawing("red", "circle"), 0.5)],
            codec=codec,
            codec_options=QUIET,
            size=(64, 64),
            sound=sound,
        )
        assert read_streams(path).plays_as_is is plays

    def test_a_damaged_video_is_refused_in_one_line(self, tmp_path: Path) -> None:
        whole = iphone_clip(tmp_path / "whole.MOV").read_bytes()
        for name, data in (("noise.MOV", b"\x00\x01 not a video " * 200), ("half.MOV", whole[: len(whole) // 2])):
            (tmp_path / name).write_bytes(data)
            with pytest.raises(VideoError) as refused:
                to_h264(tmp_path / name, tmp_path / "cache" / f"{name}.mp4", max_pixels=MAX_PIXELS)
            assert "\n" not in str(refused.value) and str(refused.value), name
        assert not list((tmp_path / "cache").glob("*"))  # no part file left behind


class TestCache:
    def test_many_asking_at_once_share_one_conversion(self, tmp_path: Path) -> None:
        source = iphone_clip(tmp_path / "IMG_0100.MOV")
        transcodes = Transcodes(tmp_path / "cache", 1 << 30, MAX_PIXELS)
        start = threading.Barrier(8)
        answers: list[str] = []

        def ask() -> None:
            start.wait()
            answers.append(transcodes.playback(source, content_hash(source)).state)

        try:
            threads = [threading.Thread(target=ask) for _ in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert answers == ["preparing"] * 8
            ready = wait_for(lambda: transcodes.playback(source, content_hash(source)).path)
            assert ready == transcodes.path_for(content_hash(source)) and transcodes.converted == 1
        finally:
            transcodes.close()

    def test_a_conversion_nobody_waits_for_any_more_is_stopped(self, tmp_path: Path) -> None:
        source = iphone_clip(tmp_path / "IMG_0100.MOV")
        # nobody asks again: at once too long for a conversion to go on
        transcodes = Transcodes(tmp_path / "cache", 1 << 30, MAX_PIXELS, abandoned_after=0.0)
        try:
            assert transcodes.playback(source, content_hash(source)).state == "preparing"
            wait_for(lambda: transcodes.under_way == 0)
            assert transcodes.converted == 0 and not list((tmp_path / "cache").iterdir())  # its part file too
            # asked again, it starts again
            assert transcodes.playback(source, content_hash(source)).state == "preparing"
        finally:
            transcodes.close()

    def test_past_the_cap_the_video_played_longest_ago_goes_first(self, tmp_path: Path) -> None:
        # sound makes a converted file's size follow its length: 2 s clips outweigh a 0.5 s one
        a, b = iphone_clip(tmp_path / "a.MOV", seconds=2), iphone_clip(tmp_path / "b.MOV", seconds=2.1)
        short = iphone_clip(tmp_path / "c.MOV", seconds=0.5)
        transcodes = Transcodes(tmp_path / "cache", 1 << 30, MAX_PIXELS)

        def converted(source: Path) -> Path:
            found = wait_for(lambda: transcodes.playback(source, content_hash(source)).path)
            assert isinstance(found, Path)
            return found

        try:
            made_a, made_b = converted(a), converted(b)
            converted(a)  # played again: now b is the one played longest ago
            assert made_a.stat().st_mtime_ns > made_b.stat().st_mtime_ns
            transcodes.cap_bytes = made_a.stat().st_size + made_b.stat().st_size
            made_c = converted(short)
            assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == sorted([made_a.name, made_c.name])
            assert transcodes.converted == 3

            # the one just made stays, even alone over the cap
            transcodes.cap_bytes = 1
            made_b = converted(b)
            assert [p.name for p in (tmp_path / "cache").iterdir()] == [made_b.name]
        finally:
            transcodes.close()


@pytest.fixture(scope="module")
def library(pg_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """An iPhone clip, a byte-identical copy of it in another folder, an H.264 clip, a clip that
    `test_a_damaged_video_is_refused_in_one_line` damages (no other test uses it) and a picture."""
    top = tmp_path_factory.mktemp("transcode")
    folder = top / "img"
    (folder / "copy").mkdir(parents=True)
    iphone_clip(folder / "IMG_0100.MOV")
    shutil.copy(folder / "IMG_0100.MOV", folder / "copy" / "IMG_0100.MOV")
    write_video(folder / "clip.mp4", ORANGE_THEN_BLUE, sound="aac")
    iphone_clip(folder / "damaged.MOV", [(Drawing("green", "circle"), 1)])
    draw(Drawing("red", "square"), width=64, height=64).save(folder / "red-square.png")
    with indexed_folder(pg_server, top) as settings:
        yield settings


@pytest.fixture(scope="module")
def client(library: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(library)) as c:
        yield c


def image_id(settings: Settings, path: str) -> int:
    return int(query(settings, "SELECT id FROM images WHERE path = %s", (path,))[0][0])


class TestHttp:
    def test_an_iphone_video_is_converted_once_and_served_with_range_requests(
        self, client: TestClient, library: Settings
    ) -> None:
        hevc = client.get(f"/api/images/{image_id(library, 'IMG_0100.MOV')}").json()
        play = hevc["play_url"]
        assert play == f"/api/images/{hevc['id']}/video"
        # the first request starts the conversion and says so; a player's request would fail here
        first = client.get(play)
        assert first.status_code == 202 and first.headers["retry-after"] == "1"
        assert first.json()["state"] == "preparing" and first.json()["converted"] is True
        status = wait_for(lambda: (s := client.get(f"{play}/status").json())["state"] == "ready" and s)
        assert status == {"state": "ready", "url": play, "converted": True, "codec": "hevc", "progress": None}

        # the same bytes in another folder: the same conversion, ready at once
        copy = client.get(f"/api/images/{image_id(library, 'copy/IMG_0100.MOV')}").json()
        assert client.get(f"{copy['play_url']}/status").json()["state"] == "ready"
        made = list(library.transcode_dir.glob("*.mp4"))
        assert [p.name for p in made] == [f"{content_hash(library.image_dir / 'IMG_0100.MOV')}.mp4"]

        whole = client.get(play)
        assert whole.status_code == 200 and whole.headers["content-type"] == "video/mp4"
        assert whole.content == made[0].read_bytes()
        part = client.get(play, headers={"Range": "bytes=100-199"})
        assert part.status_code == 206 and part.content == whole.content[100:200]
        assert part.headers["content-range"] == f"bytes 100-199/{len(whole.content)}"
        assert part.headers["content-type"] == "video/mp4"

    def test_a_video_browsers_play_is_served_as_it_is(self, client: TestClient, library: Settings) -> None:
        clip = client.get(f"/api/images/{image_id(library, 'clip.mp4')}").json()
        status = client.get(f"{clip['play_url']}/status").json()
        assert status == {
            "state": "ready",
            "url": clip["play_url"],
            "converted": False,
            "codec": "h264",
            "progress": None,
        }
        part = client.get(clip["play_url"], headers={"Range": "bytes=0-99"})
        assert part.status_code == 206 and part.content == (library.image_dir / "clip.mp4").read_bytes()[:100]
        picture = client.get(f"/api/images/{image_id(library, 'red-square.png')}").json()
        assert picture["play_url"] is None
        refused = client.get(f"/api/images/{picture['id']}/video/status")
        assert (
            refused.status_code == 404
            and refused.json()["detail"] == f"Image {picture['id']} is neither a video nor a Live Photo."
        )

    def test_a_damaged_video_is_refused_in_one_line(self, client: TestClient, library: Settings) -> None:
        damaged = image_id(library, "damaged.MOV")
        (library.image_dir / "damaged.MOV").write_bytes(b"\x00\x01 a copy that went wrong " * 100)
        for url in (f"/api/images/{damaged}/video/status", f"/api/images/{damaged}/video"):
            answer = client.get(url)
            assert answer.status_code == 415, answer.text
            detail = answer.json()["detail"]
            assert detail.startswith("This video cannot be played: not a video FFmpeg can read") and "\n" not in detail
        # the rest keeps working
        assert client.get(f"/api/images/{image_id(library, 'clip.mp4')}/video/status").status_code == 200
