"""Videos as Sightline reads them: the facts a phone writes, a bounded sample of frames spread over the
whole video that shows what is on screen at each second, one upright frame for a thumbnail, and a
one-line reason for every file that cannot be read."""

from __future__ import annotations

import gc
import subprocess
import sys
import tracemalloc
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT
from PIL import Image
from shapes import COLORS, Drawing
from videos import quicktime_metadata, write_video

from core.media.pictures import Preprocessing
from core.media.videos import VideoError, frame_at, is_video_name, probe_video, sample_frames

PREP = Preprocessing(size=64, crop_height=64, crop_width=64, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
LIMIT = 100_000_000
RED, GREEN, BLUE = Drawing("red", "circle"), Drawing("green", "triangle"), Drawing("blue", "square")
IPHONE = quicktime_metadata(
    created="2024-05-06T07:08:09+0100",
    model="iPhone 15 Pro",
    make="Apple",
    location="+38.7139-009.1394+010.000/",
    content_id="6A2C1F0E-5D4B-4B8E-9F3A-0C1D2E3F4A5B",
)


def centre(pixels: np.ndarray | Image.Image) -> np.ndarray:
    """Mean colour of the middle of a frame, where every drawing has its shape."""
    a = np.asarray(pixels, dtype=np.float64)
    h, w = a.shape[:2]
    return a[h * 2 // 5 : h * 3 // 5, w * 2 // 5 : w * 3 // 5].reshape(-1, 3).mean(axis=0)


def shows(pixels: np.ndarray | Image.Image, drawing: Drawing) -> bool:
    return bool(np.abs(centre(pixels) - COLORS[drawing.color]).max() < 40)


def drawing_at(second: float, segments: list[tuple[Drawing, float]]) -> Drawing:
    end = 0.0
    for drawing, seconds in segments:
        end += seconds
        if second < end:
            return drawing
    return segments[-1][0]


def halves(top: str, bottom: str, size: tuple[int, int] = (160, 120)) -> Image.Image:
    image = Image.new("RGB", size, COLORS[bottom])
    image.paste(COLORS[top], (0, 0, size[0], size[1] // 2))
    return image


# --- facts ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("ext", ["mp4", "mov", "m4v"])
def test_a_phone_video_s_facts_read_back(tmp_path: Path, ext: str) -> None:
    path = write_video(tmp_path / f"IMG_0001.{ext}", [(RED, 4), (BLUE, 4)], size=(192, 108), metadata=IPHONE)
    facts = probe_video(path, max_pixels=LIMIT)
    assert (facts.width, facts.height, facts.format, facts.codec) == (192, 108, ext, "h264")
    assert facts.duration == pytest.approx(8.0, abs=0.15)
    # QuickTime's creation date is the local time where it was filmed, kept as such (like EXIF)
    assert facts.created_at == datetime(2024, 5, 6, 7, 8, 9)
    assert facts.camera == "iPhone 15 Pro"
    assert (facts.latitude, facts.longitude) == (pytest.approx(38.7139), pytest.approx(-9.1394))
    assert facts.content_id == "6A2C1F0E-5D4B-4B8E-9F3A-0C1D2E3F4A5B"


@pytest.mark.parametrize(("ext", "codec"), [("mkv", "h264"), ("webm", "vp9")])
def test_matroska_and_webm_carry_the_same_facts_as_tags(tmp_path: Path, ext: str, codec: str) -> None:
    facts = probe_video(write_video(tmp_path / f"clip.{ext}", [(RED, 3)], metadata=IPHONE), max_pixels=LIMIT)
    assert (facts.width, facts.height, facts.format, facts.codec) == (160, 120, ext, codec)
    assert facts.duration == pytest.approx(3.0, abs=0.15)
    assert (facts.created_at, facts.camera, facts.content_id) == (
        datetime(2024, 5, 6, 7, 8, 9),
        "iPhone 15 Pro",
        IPHONE["com.apple.quicktime.content.identifier"],
    )


@pytest.mark.parametrize(("ext", "codec"), [("avi", "mpeg4"), ("3gp", "h264")])
def test_older_containers_decode_and_have_no_made_up_facts(tmp_path: Path, ext: str, codec: str) -> None:
    path = write_video(tmp_path / f"clip.{ext}", [(RED, 2), (BLUE, 2)])
    facts = probe_video(path, max_pixels=LIMIT)
    assert (facts.format, facts.codec, facts.duration) == (ext, codec, pytest.approx(4.0, abs=0.15))
    assert (facts.created_at, facts.camera, facts.latitude, facts.content_id) == (None, None, None, None)
    assert [shows(p, drawing_at(t, [(RED, 2), (BLUE, 2)])) for t, p in sample_frames(path, PREP, max_pixels=LIMIT)]


def test_creation_time_in_utc_is_the_date_without_quicktime_s_own(tmp_path: Path) -> None:
    tags = quicktime_metadata(creation_time=datetime(2023, 12, 31, 23, 30, 0))
    facts = probe_video(write_video(tmp_path / "a.mp4", [(RED, 1)], metadata=tags), max_pixels=LIMIT)
    assert facts.created_at == datetime(2023, 12, 31, 23, 30, 0)
    both = tags | quicktime_metadata(created="2024-01-01T00:30:00+0100")
    facts = probe_video(write_video(tmp_path / "b.mp4", [(RED, 1)], metadata=both), max_pixels=LIMIT)
    assert facts.created_at == datetime(2024, 1, 1, 0, 30, 0)


def test_a_classic_xyz_location_is_read(tmp_path: Path) -> None:
    path = write_video(
        tmp_path / "gopro.mov", [(RED, 1)], metadata={"location": "+48.8577+002.2950/"}, apple_keys=False
    )
    assert b"\xa9xyz" in path.read_bytes()  # the box Android phones and action cameras write
    facts = probe_video(path, max_pixels=LIMIT)
    assert (facts.latitude, facts.longitude) == (pytest.approx(48.8577), pytest.approx(2.2950))


def test_video_names_are_recognised_by_extension() -> None:
    assert all(is_video_name(n) for n in ("IMG_0001.MOV", "a.mp4", "b.M4V", "c.mkv", "d.webm", "e.avi", "f.3gp"))
    assert not any(is_video_name(n) for n in ("a.jpg", "mp4", "a.mp3", "a.mov.txt"))


# --- rotation ------------------------------------------------------------------------------------


@pytest.mark.parametrize("rotate", [-90, 90, 180])
def test_a_video_filmed_sideways_is_shown_upright(tmp_path: Path, rotate: int) -> None:
    path = write_video(
        tmp_path / "portrait.mov", [(halves("red", "blue", (120, 160)), 2)], size=(120, 160), rotate=rotate
    )
    facts = probe_video(path, max_pixels=LIMIT)
    assert (facts.width, facts.height) == (120, 160)
    frames = list(sample_frames(path, PREP, max_pixels=LIMIT))
    assert frames
    for _, pixels in frames:
        assert pixels.shape == (64, 64, 3)
        assert pixels[:20].reshape(-1, 3).mean(axis=0)[0] > 150  # red on top
        assert pixels[-20:].reshape(-1, 3).mean(axis=0)[2] > 150  # blue below
    thumb = frame_at(path, 1.0, max_pixels=LIMIT)
    assert thumb.size == (120, 160)
    assert thumb.getpixel((60, 10)) == pytest.approx(COLORS["red"], abs=30)
    assert thumb.getpixel((60, 150)) == pytest.approx(COLORS["blue"], abs=30)


# --- sampling ------------------------------------------------------------------------------------


def test_each_sample_shows_what_is_on_screen_at_its_second(tmp_path: Path) -> None:
    segments = [(RED, 4.0), (BLUE, 4.0)]
    frames = list(sample_frames(write_video(tmp_path / "v.mp4", segments), PREP, max_pixels=LIMIT))
    seconds = [t for t, _ in frames]
    assert seconds == sorted(set(seconds))
    assert {drawing_at(t, segments) for t in seconds} == {RED, BLUE}
    assert all(shows(p, drawing_at(t, segments)) for t, p in frames)
    assert all(p.dtype == np.uint8 and p.shape == (64, 64, 3) for _, p in frames)


def test_a_long_video_is_sampled_from_start_to_end_within_the_budget(tmp_path: Path) -> None:
    colours = [Drawing(c, "circle") for c in COLORS]
    segments = [(colours[i % len(colours)], 30.0) for i in range(20)]  # 10 minutes, a new colour every 30 s
    path = write_video(tmp_path / "long.mp4", segments, fps=2, size=(64, 48), gop=4)
    frames = list(sample_frames(path, PREP, max_frames=16, every=5, max_pixels=LIMIT))
    seconds = [t for t, _ in frames]
    assert len(frames) == 16
    assert seconds == sorted(set(seconds))
    assert seconds[0] < 600 / 16 and seconds[-1] > 600 - 600 / 16
    assert max(b - a for a, b in zip(seconds, seconds[1:])) < 2 * 600 / 16
    assert all(shows(p, drawing_at(t, segments)) for t, p in frames)


def test_a_short_clip_gets_one_frame_every_few_seconds(tmp_path: Path) -> None:
    path = write_video(tmp_path / "still.mp4", [(RED, 20.0)])
    seconds = [t for t, _ in sample_frames(path, PREP, max_frames=16, every=5, max_pixels=LIMIT)]
    assert len(seconds) == 4  # one per 5 s; nothing changes, so nothing more
    assert [int(t // 5) for t in seconds] == [0, 1, 2, 3]


def test_a_third_scene_between_two_samples_is_looked_for(tmp_path: Path) -> None:
    segments = [(RED, 4.0), (GREEN, 2.0), (BLUE, 4.0)]
    path = write_video(tmp_path / "cuts.mp4", segments)
    frames = list(sample_frames(path, PREP, max_frames=16, every=5, max_pixels=LIMIT))
    assert [drawing_at(t, segments) for t, _ in frames] == [RED, GREEN, BLUE]
    assert all(shows(p, drawing_at(t, segments)) for t, p in frames)
    # without budget to spare, one frame per slot and no more
    assert len(list(sample_frames(path, PREP, max_frames=2, every=5, max_pixels=LIMIT))) == 2


def test_many_cuts_never_exceed_max_frames(tmp_path: Path) -> None:
    segments = [((RED, BLUE, GREEN)[i % 3], 1.0) for i in range(30)]
    path = write_video(tmp_path / "cuts.mp4", segments)
    frames = list(sample_frames(path, PREP, max_frames=8, every=5, max_pixels=LIMIT))
    assert 6 <= len(frames) <= 8
    assert all(shows(p, drawing_at(t, segments)) for t, p in frames)


def test_sparse_keyframes_are_decoded_forward_to_the_planned_second(tmp_path: Path) -> None:
    colours = [Drawing(c, "square") for c in COLORS]
    segments = [(d, 4.0) for d in colours]
    # one keyframe for the whole video: every slot but the first lies far from it
    path = write_video(tmp_path / "gop.mp4", segments, gop=1000, codec_options={"x264-params": "scenecut=0"})
    frames = list(sample_frames(path, PREP, max_frames=6, every=4, max_pixels=LIMIT))
    assert [drawing_at(t, segments) for t, _ in frames] == colours
    assert all(shows(p, drawing_at(t, segments)) for t, p in frames)


# --- thumbnails ----------------------------------------------------------------------------------


def test_frame_at_returns_the_frame_nearest_that_second(tmp_path: Path) -> None:
    path = write_video(tmp_path / "v.mp4", [(RED, 4.0), (BLUE, 4.0)], fps=10)
    assert frame_at(path, 1.0, max_pixels=LIMIT).size == (160, 120)
    assert shows(frame_at(path, 1.0, max_pixels=LIMIT), RED)
    assert shows(frame_at(path, 5.5, max_pixels=LIMIT), BLUE)
    # frames at 3.9 s (red) and 4.0 s (blue): the nearer one wins
    assert shows(frame_at(path, 3.94, max_pixels=LIMIT), RED)
    assert shows(frame_at(path, 3.96, max_pixels=LIMIT), BLUE)
    assert shows(frame_at(path, 500.0, max_pixels=LIMIT), BLUE)  # past the end: the last frame
    assert shows(frame_at(path, -3.0, max_pixels=LIMIT), RED)


# --- bad files -----------------------------------------------------------------------------------


def refused(call: object) -> str:
    with pytest.raises(VideoError) as caught:
        call()  # type: ignore[operator]
    message = str(caught.value)
    assert message and "\n" not in message and "Traceback" not in message
    return message


def every_entry_refuses(path: Path, max_pixels: int = LIMIT) -> list[str]:
    return [
        refused(lambda: probe_video(path, max_pixels=max_pixels)),
        refused(lambda: list(sample_frames(path, PREP, max_pixels=max_pixels))),
        refused(lambda: frame_at(path, 1.0, max_pixels=max_pixels)),
    ]


def test_an_empty_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty.mp4").write_bytes(b"")
    assert all("empty file" in m for m in every_entry_refuses(tmp_path / "empty.mp4"))


def test_a_text_file_named_mov_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.mov").write_text("shopping list: eggs, milk\n" * 50)
    assert all("not a video" in m for m in every_entry_refuses(tmp_path / "notes.mov"))


def test_an_audio_only_file_is_refused(tmp_path: Path) -> None:
    import av

    path = tmp_path / "voice.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=16000)
        for i in range(10):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, i * 1024
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    assert all("no video stream" in m for m in every_entry_refuses(path))


def test_a_video_cut_short_before_its_index_is_refused(tmp_path: Path) -> None:
    data = write_video(tmp_path / "v.mp4", [(RED, 4), (BLUE, 4)]).read_bytes()  # index at the end, as phones write
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])
    assert all("truncated" in m for m in every_entry_refuses(tmp_path / "cut.mp4"))


def test_a_video_cut_short_after_its_index_gives_its_first_frames_then_a_reason(tmp_path: Path) -> None:
    segments = [(Drawing(c, "circle"), 4.0) for c in COLORS]
    data = write_video(tmp_path / "v.mp4", segments, faststart=True).read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])
    given: list[tuple[float, np.ndarray]] = []
    with pytest.raises(VideoError, match="truncated") as caught:
        for frame in sample_frames(tmp_path / "cut.mp4", PREP, max_pixels=LIMIT):
            given.append(frame)
    assert "\n" not in str(caught.value)
    assert given and all(shows(p, drawing_at(t, segments)) for t, p in given)
    assert given[-1][0] < 20


def test_frames_over_the_pixel_limit_are_refused_before_decoding(tmp_path: Path) -> None:
    path = write_video(tmp_path / "v.mp4", [(RED, 1)], size=(160, 120))
    assert all("too large" in m and "160x120" in m for m in every_entry_refuses(path, max_pixels=160 * 120 - 1))
    assert probe_video(path, max_pixels=160 * 120).width == 160


# --- resources -----------------------------------------------------------------------------------


def test_sampling_holds_one_decoded_frame_at_a_time(tmp_path: Path) -> None:
    """Decoded frames (FFmpeg's buffers, reachable only through PyAV's frame objects) are counted at
    every sample handed out; Python's own allocations (full-size copies) are traced. FFmpeg's
    reference frames inside the decoder are its own and bounded by the codec."""
    import av

    path = write_video(tmp_path / "v.mp4", [(RED, 30.0), (BLUE, 30.0)], fps=4, size=(640, 360))
    alive: list[int] = []
    peaks: list[int] = []
    samples = sample_frames(path, PREP, max_frames=16, every=1, max_pixels=LIMIT)
    tracemalloc.start()
    while True:
        # the peak of each step of the generator alone: counting objects afterwards allocates a
        # list of everything the process holds, which is not the sampler's
        tracemalloc.reset_peak()
        if next(samples, None) is None:
            break
        peaks.append(tracemalloc.get_traced_memory()[1])
        alive.append(sum(isinstance(o, av.VideoFrame) for o in gc.get_objects()))
    tracemalloc.stop()
    assert len(alive) == 16
    assert max(alive) <= 2
    assert max(peaks) < 2 * 640 * 360 * 3


def test_importing_the_module_loads_no_decoder() -> None:
    probe = (
        "import sys, core.media.videos\nassert 'av' not in sys.modules, 'core.media.videos imports av at import time'"
    )
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert run.returncode == 0, run.stderr
