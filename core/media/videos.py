"""Video decoding with PyAV (FFmpeg inside its wheel): the facts of a video, a bounded sample of its
frames ready for the model, and one upright frame for a thumbnail.

A video is searched through a handful of its frames, so sampling decides both cost and recall. The
plan is made from the duration, before anything is decoded: the video is cut into equal slots (one
every `every` seconds, at most `max_frames` of them) and each slot gets one frame near its middle,
so a 2-hour film is sampled from start to end, never from its first minute only. A slot is served
by the keyframe before its middle when that keyframe lies inside the slot (phones write one a
second, so this is the common case, and a keyframe decodes alone: one seek, one frame); only where
keyframes are sparser than the slots does the decoder run forward from the keyframe to the middle.
Where two neighbouring samples differ (a cut, a pan to something else), the frame halfway between
them is looked at while the budget lasts, and kept if it shows a third thing: a short clip with
several scenes gets more frames than a still shot of the same length.

Only one decoded frame is alive at a time, scaled down by FFmpeg to about twice the model's input
before it becomes a Python object; memory does not grow with the video's length or resolution
beyond FFmpeg's own reference frames.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from core.errors import first_line
from core.media.pictures import ImageError, Preprocessing, prepare_pixels

VIDEO_EXTENSIONS: tuple[str, ...] = ("mp4", "mov", "m4v", "mkv", "webm", "avi", "3gp")

# 16 frames cost the model what 16 photos cost (a quarter of a second in bf16 on this kind of CPU),
# and store 16 vectors: a phone clip of 5 to 60 s, most of what a phone folder holds, gets one frame
# every 5 s, which is about how long a shot holds still; the frames left over go where the picture
# changes. A film gets one frame every few minutes: it is findable by its scenes, not frame by frame.
MAX_FRAMES = 16
EVERY = 5.0
# mean absolute difference (0..255) of two samples' coarse 4×4 colour layouts above which the video
# is taken to show something else between them; a still shot with noise or a slow pan stays far below
_CHANGE = 24.0
# the frame handed to Pillow is scaled by FFmpeg (area averaging) to this many times the model's
# input, so that Pillow's bicubic, the model's own filter, still makes the last step, as it does
# after JPEG draft decoding
_MARGIN = 2
_QUARTER_TURNS = {90: Image.Transpose.ROTATE_90, 180: Image.Transpose.ROTATE_180, 270: Image.Transpose.ROTATE_270}


class VideoError(ImageError):
    """A video that cannot be indexed; the message is the one-line reason shown to users."""


@dataclass(frozen=True)
class VideoFacts:
    width: int  # as displayed: rotation and pixel aspect ratio applied
    height: int
    duration: float  # seconds; 0.0 when the container does not say
    format: str  # "mp4", "mov", ...: the extension when it names a video container, else the demuxer's
    codec: str  # "h264", "hevc", "vp9", ...
    created_at: datetime | None  # local time where the camera recorded it, else UTC; naive either way
    camera: str | None
    latitude: float | None
    longitude: float | None
    content_id: str | None  # Apple's content identifier: pairs a Live Photo's still and its motion


def is_video_name(name: str) -> bool:
    return name.rsplit(".", 1)[-1].lower() in VIDEO_EXTENSIONS if "." in name else False


def probe_video(path: Path, *, max_pixels: int) -> VideoFacts:
    """The facts of a video, or `VideoError`. Reads the header and decodes the first keyframe: the
    display matrix (a phone held upright stores its frames sideways) reaches Python only on a
    decoded frame, and a video none of whose frames decodes is better refused here."""
    with _opened(path, max_pixels) as (container, stream):
        first = _keyframe_before(container, stream, 0.0)
        if first is None:
            raise VideoError("no frame of this video can be decoded")
        width, height = _display_size(first, stream)
        tags = {k.lower(): v for k, v in container.metadata.items()}
        latitude, longitude = _location(tags)
        ext = path.suffix.lower().lstrip(".")
        return VideoFacts(
            width=width,
            height=height,
            duration=round(_duration(container, stream) or 0.0, 3),
            format=ext if ext in VIDEO_EXTENSIONS else container.format.name.split(",")[0],
            codec=stream.codec_context.name,
            created_at=_created_at(tags, stream),
            camera=_camera(tags),
            latitude=latitude,
            longitude=longitude,
            content_id=tags.get("com.apple.quicktime.content.identifier") or None,
        )


def sample_frames(
    path: Path, prep: Preprocessing, *, max_frames: int = MAX_FRAMES, every: float = EVERY, max_pixels: int
) -> Iterator[tuple[float, np.ndarray]]:
    """(second, uint8 H×W×3 model-ready pixels) for at most `max_frames` frames spread over the
    video, at increasing seconds; see the module's docstring for the plan.

    A file damaged part-way (cut short by a failed copy) yields the frames before the damage and
    then raises `VideoError` saying where the data ends: a caller that lists the frames sees a bad
    file, as for a truncated JPEG, and one that streams them has the good part to keep if it wishes."""
    with _opened(path, max_pixels) as (container, stream):
        duration = _duration(container, stream)
        if not duration:
            yield from _every_keyframe(container, stream, prep, max_frames, every, max_pixels)
            return
        slots = max(1, min(max_frames, math.ceil(duration / every)))
        width = duration / slots
        spare = max_frames - slots
        last: tuple[float, np.ndarray] | None = None
        for i in range(slots):
            frame = _frame_for(container, stream, i * width, (i + 0.5) * width)
            if frame is None:
                raise VideoError(
                    f"no video data from {(i + 0.5) * width:.1f} s of {duration:.1f} s on "
                    "(the file is truncated or damaged)"
                )
            second, pixels = _time(frame, stream), _pixels(frame, stream, prep, max_pixels)
            del frame  # the full-size frame goes before the next one is decoded
            if last is not None and second <= last[0]:
                continue  # an imprecise seek landed on a frame already given
            if last is not None and spare > 0 and _differs(last[1], pixels) and second - last[0] > 2 / _rate(stream):
                spare -= 1
                extra = _between(container, stream, prep, max_pixels, last, (second, pixels))
                if extra is not None:
                    yield extra
            last = (second, pixels)
            yield last


def _between(
    container: Any,
    stream: Any,
    prep: Preprocessing,
    max_pixels: int,
    before: tuple[float, np.ndarray],
    after: tuple[float, np.ndarray],
) -> tuple[float, np.ndarray] | None:
    """The frame halfway between two samples that differ, if it shows a third thing: a frame like
    either neighbour would cost the model a frame and find nothing new."""
    frame = _frame_for(container, stream, before[0] + 1 / _rate(stream), (before[0] + after[0]) / 2)
    if frame is None or not before[0] < (second := _time(frame, stream)) < after[0]:
        return None
    pixels = _pixels(frame, stream, prep, max_pixels)
    return (second, pixels) if _differs(before[1], pixels) and _differs(pixels, after[1]) else None


def frame_at(path: Path, second: float, *, max_pixels: int) -> Image.Image:
    """The upright RGB frame nearest `second` (the last one past the end), for thumbnails: seek to
    the keyframe before it and decode forward."""
    with _opened(path, max_pixels) as (container, stream):
        target = max(0.0, second)
        _seek(container, stream, target)
        before: Any = None
        for frame in _frames(container, stream):
            if _time(frame, stream) >= target:
                if before is not None and target - _time(before, stream) < _time(frame, stream) - target:
                    frame = before
                return _upright_image(frame, stream, max_pixels)
            before = frame
        if before is None:
            raise VideoError(f"no frame of this video can be decoded at or before {second:.1f} s")
        return _upright_image(before, stream, max_pixels)


@contextmanager
def _opened(path: Path, max_pixels: int) -> Iterator[tuple[Any, Any]]:
    """The container and its video stream, ready to decode; whatever FFmpeg raises on the way in or
    while decoding becomes a `VideoError` with a one-line reason."""
    import av

    container = open_container(path)
    try:
        stream = container.streams.video[0]
        context = stream.codec_context
        check_size(context.width, context.height, max_pixels)
        # should the size grow mid-stream, FFmpeg refuses to allocate far past the limit itself (it
        # counts padded macroblocks: 160x120 decodes as 160x128, hence the headroom); each decoded
        # frame is then checked exactly
        context.options = {"max_pixels": str(2 * max_pixels)}
        # slice threads split one frame between cores; frame threads (what AUTO picks for H.264)
        # only overlap consecutive frames, which a seek-and-grab-one-keyframe plan does not have:
        # measured on a 1080p H.264 video, a keyframe after a seek took 33 ms with SLICE, 64 with FRAME
        context.thread_type = "SLICE"
        yield container, stream
    except VideoError:
        raise
    except MemoryError:
        raise VideoError("not enough memory to decode this video") from None
    except (av.error.FFmpegError, OSError, ValueError, EOFError) as exc:
        raise VideoError(f"video data is truncated or corrupt ({first_line(exc)})") from None
    finally:
        container.close()


def open_container(path: Path) -> Any:
    """The file opened by FFmpeg, holding a video stream (the caller closes it); else a `VideoError`
    with a one-line reason."""
    import av

    try:
        if path.stat().st_size == 0:
            raise VideoError("empty file (0 bytes)")
        container = av.open(str(path), metadata_errors="replace")
    except VideoError:
        raise
    except av.error.InvalidDataError:
        raise VideoError("not a video FFmpeg can read (unknown format, or a corrupt or truncated file)") from None
    except (av.error.FFmpegError, OSError) as exc:
        raise VideoError(f"cannot open this video ({first_line(exc)})") from None
    if not container.streams.video:
        container.close()
        raise VideoError("no video stream in this file (audio only?)")
    return container


def check_size(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise VideoError(
            f"video frames too large: {width}x{height} pixels is over the limit of {max_pixels:,} "
            "(raise MAX_IMAGE_PIXELS to index it)"
        )


def _frames(container: Any, stream: Any) -> Iterator[Any]:
    """Decoded frames from the current position; frames without a timestamp are of no use to a plan
    in seconds."""
    for frame in container.decode(stream):
        if frame.pts is not None:
            yield frame


def _seek(container: Any, stream: Any, second: float) -> None:
    """To the keyframe at or before `second` (of the video, counted from its first frame)."""
    start = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
    container.seek(max(0, int((second + start) / stream.time_base)), stream=stream, backward=True)


def _frame_for(container: Any, stream: Any, low: float, target: float) -> Any:
    """A frame for the slot from `low` that aims at `target`: the keyframe before `target` if it
    lies at or after `low`, else the frame at `target` decoded forward from it; None past the data."""
    half = 0.5 / _rate(stream)
    key = _keyframe_before(container, stream, target)
    if key is None or _time(key, stream) >= low - half:
        return key
    _seek(container, stream, target)
    found = None
    for frame in _frames(container, stream):
        found = frame
        if _time(frame, stream) >= target - half:
            break
    return found if found is not None and _time(found, stream) >= low - half else None


def _keyframe_before(container: Any, stream: Any, second: float) -> Any:
    """The keyframe at or before `second`, decoded alone: its packet, then end-of-stream, so that the
    decoder hands it out at once instead of waiting for the frames it would reorder it with (with
    B-frames, skip_frame=NONKEY made it decode the next keyframe too: 33 ms a 1080p frame, not 12).
    The next seek resets the decoder."""
    _seek(container, stream, second)
    for packet in container.demux(stream):
        if packet.size == 0:
            break  # the demuxer's end-of-stream packet
        if not packet.is_keyframe or packet.pts is None:
            continue  # an imprecise seek (some AVI, MKV without cues) lands before a keyframe
        frames = [f for f in (*packet.decode(), *stream.decode(None)) if f.pts is not None]
        return frames[0] if frames else None
    return None


def _every_keyframe(
    container: Any, stream: Any, prep: Preprocessing, max_frames: int, every: float, max_pixels: int
) -> Iterator[tuple[float, np.ndarray]]:
    """Without a duration (a stream cut from a live recording) nothing can be planned: keyframes in
    order, one every `every` seconds, until `max_frames`."""
    stream.codec_context.skip_frame = "NONKEY"
    given, last = 0, -math.inf
    for frame in _frames(container, stream):
        second = _time(frame, stream)
        if second >= last + every:
            last, given = second, given + 1
            yield second, _pixels(frame, stream, prep, max_pixels)
            if given >= max_frames:
                return


def _duration(container: Any, stream: Any) -> float | None:
    if stream.duration is not None and stream.duration > 0:
        return float(stream.duration * stream.time_base)
    if container.duration is not None and container.duration > 0:
        return container.duration / 1_000_000  # AV_TIME_BASE
    if stream.frames and stream.average_rate:
        return float(stream.frames / stream.average_rate)
    return None


def _rate(stream: Any) -> float:
    rate = stream.average_rate or stream.guessed_rate
    return float(rate) if rate else 30.0


def _time(frame: Any, stream: Any) -> float:
    """Seconds from the video's first frame, as a player's position counts them."""
    start = stream.start_time if stream.start_time is not None else 0
    return round(max(0.0, float((frame.pts - start) * stream.time_base)), 3)


def _quarter_turns(frame: Any) -> int:
    """The display matrix's rotation (counter-clockwise) as 0, 90, 180 or 270; flips and odd angles,
    which no camera writes, are left out."""
    return (round(frame.rotation / 90) * 90) % 360 if frame.rotation else 0


def _display_size(frame: Any, stream: Any) -> tuple[int, int]:
    """Width and height as a player shows them: anamorphic pixels widened, quarter turns applied."""
    width, height = frame.width, frame.height
    sar = stream.sample_aspect_ratio
    if sar and sar != 1:
        width = max(1, round(width * sar))
    return (height, width) if _quarter_turns(frame) in (90, 270) else (width, height)


def _scaled(frame: Any, width: int, height: int) -> Image.Image:
    """The frame as 8-bit RGB at `width`×`height`, scaled and converted by FFmpeg in one pass."""
    rgb = frame.reformat(
        width=width, height=height, format="rgb24", interpolation="AREA", src_color_range=frame.color_range or None
    )
    return Image.fromarray(rgb.to_ndarray(), "RGB")


def _upright(image: Image.Image, frame: Any) -> Image.Image:
    turn = _quarter_turns(frame)
    return image.transpose(_QUARTER_TURNS[turn]) if turn else image


def _pixels(frame: Any, stream: Any, prep: Preprocessing, max_pixels: int) -> np.ndarray:
    check_size(frame.width, frame.height, max_pixels)
    shown_w, shown_h = _display_size(frame, stream)
    turned = _quarter_turns(frame) in (90, 270)
    width, height = (shown_h, shown_w) if turned else (shown_w, shown_h)  # before turning
    need = _MARGIN * (max(prep.crop_width, prep.crop_height) if prep.squash else prep.size)
    scale = min(1.0, need / min(width, height))
    small = _scaled(frame, max(1, round(width * scale)), max(1, round(height * scale)))
    return prepare_pixels(_upright(small, frame), prep)


def _upright_image(frame: Any, stream: Any, max_pixels: int) -> Image.Image:
    check_size(frame.width, frame.height, max_pixels)
    shown_w, shown_h = _display_size(frame, stream)
    turned = _quarter_turns(frame) in (90, 270)
    return _upright(_scaled(frame, *((shown_h, shown_w) if turned else (shown_w, shown_h))), frame)


def _differs(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two samples show different things, judged on their 4×4 layout of mean colours."""

    def layout(x: np.ndarray) -> np.ndarray:
        h, w = x.shape[0] // 4 * 4, x.shape[1] // 4 * 4
        return x[:h, :w].reshape(4, h // 4, 4, w // 4, 3).mean(axis=(1, 3))

    return float(np.abs(layout(a) - layout(b)).mean()) > _CHANGE


def _created_at(tags: dict[str, str], stream: Any) -> datetime | None:
    """QuickTime's creation date is local time with its offset ("2024-05-06T07:08:09+0100"): kept as
    the local time, like EXIF's date taken. `creation_time` is UTC (and many tools write the time of
    the export there): used only without it."""
    local = tags.get("com.apple.quicktime.creationdate")
    if local:
        parsed = _parse_date(local)
        if parsed is not None:
            return parsed.replace(tzinfo=None)
    for raw in (tags.get("creation_time"), stream.metadata.get("creation_time")):
        parsed = _parse_date(raw) if raw else None
        if parsed is not None:
            utc = parsed.astimezone(UTC) if parsed.tzinfo else parsed
            # muxers write 1904-01-01 or 1970-01-01 (the epochs of their clocks) when they know no date
            return None if utc.year <= 1970 else utc.replace(tzinfo=None)
    return None


def _parse_date(raw: str) -> datetime | None:
    text = raw.strip().replace("Z", "+00:00")
    text = re.sub(r"([+-]\d\d)(\d\d)$", r"\1:\2", text)  # +0100 → +01:00
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def _camera(tags: dict[str, str]) -> str | None:
    model = (tags.get("com.apple.quicktime.model") or tags.get("model") or "").strip()
    make = (tags.get("com.apple.quicktime.make") or tags.get("make") or "").strip()
    return model or make or None


_ISO6709 = re.compile(r"^([+-]\d+(?:\.\d+)?)([+-]\d+(?:\.\d+)?)")


def _location(tags: dict[str, str]) -> tuple[float | None, float | None]:
    """ISO 6709 ("+38.7139-009.1394+010.000/") from Apple's key or QuickTime's ©xyz (which FFmpeg
    reads as `location`); degrees in decimal form, which is what cameras write."""
    for key in ("com.apple.quicktime.location.iso6709", "location", "location-eng"):
        match = _ISO6709.match(tags.get(key, "").strip())
        if match:
            lat, lon = float(match.group(1)), float(match.group(2))
            if -90 <= lat <= 90 and -180 <= lon <= 180 and (lat, lon) != (0.0, 0.0):
                return lat, lon
    return None, None
