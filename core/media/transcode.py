"""Videos browsers can play: which files play as they are, and H.264/AAC in MP4 made with PyAV
(libx264 and FFmpeg's AAC encoder are inside its wheels) for those that do not.

What plays as it is, in every current browser (Chrome, Edge, Firefox, Safari), decides the list:

- MP4 and QuickTime (and M4V, 3GP: the same ISO media file) holding H.264 in 8-bit 4:2:0, with AAC
  or MP3 sound or none. H.264 is the one video codec every browser decodes on every system; the
  High 10 and 4:2:2 profiles some cameras write are not played by Chrome or Firefox.
- WebM holding VP8 or VP9 (8-bit 4:2:0), with Opus or Vorbis sound or none: Chrome, Edge and
  Firefox decode them in software everywhere, Safari since version 14.1 on macOS.

Everything else is converted: HEVC (what iPhones record; Chrome and Firefox play it only where the
system lends them a hardware decoder, Debian's Chromium never), AV1 (Safari only on chips with an
AV1 decoder), MPEG-4 Part 2 in AVI, Matroska, ProRes, and H.264 beside sound browsers do not take
in MP4 (the PCM of many cameras).

The conversion keeps the timeline: the first frame is at 0 s, as the index counts a video's seconds
(`core.media.videos`), so the second a search matched is the same second in the converted file. It
keeps the display rotation as metadata (no pixel is turned), fits the picture within 1920×1080
(a phone's 4K costs four times the encoding and plays no better in a browser's view), and writes
the index at the front of the file (faststart), so that a player starts and seeks with range
requests without reading the whole file first.
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from core.errors import first_line
from core.media.videos import VideoError, check_size, open_container

# the demuxer names FFmpeg gives the two container families browsers read
_ISO = "mov"  # "mov,mp4,m4a,3gp,3g2,mj2"
_MATROSKA = "matroska"  # "matroska,webm": WebM is Matroska with fewer codecs, told apart by the name
PLAYABLE: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    # container: (video codecs, audio codecs); "" stands for no sound at all
    "mp4": (frozenset({"h264"}), frozenset({"", "aac", "mp3"})),
    "webm": (frozenset({"vp8", "vp9"}), frozenset({"", "opus", "vorbis"})),
}
_PIXEL_FORMATS = frozenset({"yuv420p", "yuvj420p", None})  # None: the header does not say
MEDIA_TYPES = {"mp4": "video/mp4", "webm": "video/webm"}

MAX_WIDTH, MAX_HEIGHT = 1920, 1080  # the box a converted picture fits in (turned for portrait)
PRESET = "veryfast"  # libx264: about twice as fast as its default (medium) for a file ~10% larger
CRF = 23  # libx264's default quality
KEYFRAME_SECONDS = 2  # a seek decodes at most this much ahead of the matched second
AUDIO_RATES = (48000, 44100, 32000, 24000, 22050, 16000)  # what AAC in MP4 carries everywhere
AUDIO_BITRATE = 128_000


@dataclass(frozen=True)
class Streams:
    """What a video file holds, as far as deciding whether a browser plays it goes."""

    container: str  # "mp4" (the ISO family), "webm", or FFmpeg's name for another
    video: str  # codec: "h264", "hevc", ...
    pixel_format: str | None
    audio: str  # codec of the first sound track; "" for none
    duration: float  # seconds; 0.0 when the container does not say

    @property
    def plays_as_is(self) -> bool:
        videos, audios = PLAYABLE.get(self.container, (frozenset(), frozenset()))
        return self.video in videos and self.audio in audios and self.pixel_format in _PIXEL_FORMATS

    @property
    def media_type(self) -> str:
        return MEDIA_TYPES.get(self.container, "application/octet-stream")


def read_streams(path: Path) -> Streams:
    """The streams of a video, from its header (FFmpeg reads a few packets to fill it in), or a
    one-line `VideoError`."""
    with _opened(path) as container:
        video = container.streams.video[0]
        audio = container.streams.audio[0] if container.streams.audio else None
        name = container.format.name.split(",")[0]
        if name == _ISO:
            family = "mp4"
        elif name == _MATROSKA and path.suffix.lower() == ".webm":
            family = "webm"
        else:
            family = "matroska" if name == _MATROSKA else name
        pixels = video.codec_context.format
        return Streams(
            container=family,
            video=video.codec_context.name,
            pixel_format=pixels.name if pixels is not None else None,
            audio=audio.codec_context.name if audio is not None else "",
            duration=round(_duration(container, video), 3),
        )


class Cancelled(Exception):
    """The conversion was stopped by its caller (nobody waits for it, or the server stops)."""


def to_h264(
    source: Path,
    target: Path,
    *,
    max_pixels: int,
    progress: Callable[[float], None] | None = None,
    stop: Callable[[], bool] | None = None,
) -> Path:
    """Write `source` to `target` as H.264 and AAC in MP4 (see the module's docstring). The file
    appears at `target` only when whole. `progress` hears the fraction done (0 to 1) as it goes;
    `stop`, asked as it goes, ends the work with `Cancelled` when it answers true. A file FFmpeg
    cannot read gives a one-line `VideoError`."""
    rotation = _rotation(source)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.stem}-", suffix=".part")
    os.close(fd)
    part = Path(name)
    try:
        with _opened(source) as container:
            _convert(container, part, rotation, max_pixels, progress or (lambda _: None), stop or (lambda: False))
        os.replace(part, target)
    finally:
        part.unlink(missing_ok=True)
    return target


def _convert(
    container: Any,
    part: Path,
    rotation: int,
    max_pixels: int,
    progress: Callable[[float], None],
    stop: Callable[[], bool],
) -> None:
    import av

    video_in = container.streams.video[0]
    audio_in = container.streams.audio[0] if container.streams.audio else None
    video_in.thread_type = "AUTO"  # every frame is decoded in order: frame threads pay here
    if not video_in.codec_context.width or not video_in.codec_context.height:
        raise VideoError("the size of this video's frames is not known (a corrupt header?)")
    check_size(video_in.codec_context.width, video_in.codec_context.height, max_pixels)
    duration = _duration(container, video_in)
    # seconds of the video's first frame: subtracted everywhere, so the converted file starts at 0
    start = float(video_in.start_time * video_in.time_base) if video_in.start_time is not None else 0.0
    with av.open(str(part), "w", format="mp4", options={"movflags": "+faststart"}) as out:
        width, height = _fitted(video_in.codec_context.width, video_in.codec_context.height)
        rate = video_in.average_rate or video_in.guessed_rate or Fraction(30)
        video_out = out.add_stream("libx264", rate=rate)
        video_out.width, video_out.height = width, height
        video_out.pix_fmt = "yuv420p"
        video_out.time_base = video_in.time_base
        video_out.codec_context.time_base = video_in.time_base
        video_out.codec_context.gop_size = max(1, round(float(rate) * KEYFRAME_SECONDS))
        video_out.codec_context.options = {"preset": PRESET, "crf": str(CRF)}
        sar = video_in.sample_aspect_ratio
        if sar and sar != 1:
            video_out.sample_aspect_ratio = sar
        if rotation:
            video_out.set_display_rotation(rotation)
        audio_out = None
        if audio_in is not None:
            audio_out = out.add_stream("aac", rate=_audio_rate(audio_in.codec_context.sample_rate))
            audio_out.layout = "mono" if audio_in.codec_context.layout.nb_channels == 1 else "stereo"
            audio_out.bit_rate = AUDIO_BITRATE
        streams = [video_in] + ([audio_in] if audio_in is not None else [])
        audio_clock = _AudioClock(audio_out, start) if audio_out is not None else None
        last = -1
        for packet in container.demux(streams):
            if stop():
                raise Cancelled()
            if packet.stream is video_in:
                for frame in packet.decode():
                    if frame.pts is None:
                        continue
                    check_size(frame.width, frame.height, max_pixels)
                    shifted = frame.pts - (video_in.start_time or 0)
                    if shifted <= last:
                        # before the first frame a player shows (an edit list cut it), or a frame
                        # stamped like the one before it, which the encoder would refuse
                        continue
                    last = shifted
                    picture = frame.reformat(width=width, height=height, format="yuv420p", interpolation="AREA")
                    picture.pts, picture.time_base = shifted, video_in.time_base
                    out.mux(video_out.encode(picture))
                    if duration:
                        progress(min(1.0, float(shifted * video_in.time_base) / duration))
            elif audio_clock is not None:
                for sound in packet.decode():
                    out.mux(audio_clock.encode(sound))
        out.mux(video_out.encode(None))
        if audio_clock is not None:
            out.mux(audio_clock.encode(None))
    progress(1.0)


class _AudioClock:
    """Sound resampled to the AAC encoder's format and stamped by counting its samples from where it
    starts against the video's first frame: the encoder wants it without gaps, and the sound a
    camera records has none."""

    def __init__(self, stream: Any, start: float) -> None:
        import av

        self.stream = stream
        self.start = start
        self.rate = stream.codec_context.sample_rate
        self.resampler = av.AudioResampler(
            format="fltp", layout=stream.layout, rate=self.rate, frame_size=stream.codec_context.frame_size or 1024
        )
        self.next: int | None = None  # the sample the next frame starts at

    def encode(self, frame: Any) -> list[Any]:
        if frame is None:
            chunks = self.resampler.resample(None)
            return [*self._encoded(chunks), *self.stream.encode(None)]
        if self.next is None and frame.pts is not None and frame.time_base is not None:
            # where the sound starts against the picture; before it, what is cut is not heard
            self.next = round((float(frame.pts * frame.time_base) - self.start) * self.rate)
        frame.pts = None  # the resampler's own count takes over
        return self._encoded(self.resampler.resample(frame))

    def _encoded(self, chunks: list[Any]) -> list[Any]:
        packets = []
        for chunk in chunks:
            begin = self.next or 0
            self.next = begin + chunk.samples
            if begin < 0:
                continue  # before the first frame (at most a frame of sound heard before it is lost)
            chunk.pts, chunk.time_base = begin, Fraction(1, self.rate)
            packets.extend(self.stream.encode(chunk))
        return packets


def _fitted(width: int, height: int) -> tuple[int, int]:
    """The stored size scaled to fit the box (upright for a portrait video), in even numbers, as
    4:2:0 needs."""
    box_w, box_h = (MAX_WIDTH, MAX_HEIGHT) if width >= height else (MAX_HEIGHT, MAX_WIDTH)
    scale = min(1.0, box_w / width, box_h / height)
    return max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)


def _audio_rate(rate: int) -> int:
    return rate if rate in AUDIO_RATES else 48000


def _rotation(path: Path) -> int:
    """The display rotation of the first frame (degrees counter-clockwise), which PyAV gives only
    on a decoded frame: one keyframe decoded in a container of its own."""
    with _opened(path) as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            return round(frame.rotation / 90) * 90 % 360 if frame.rotation else 0
    raise VideoError("no frame of this video can be decoded")


def _duration(container: Any, stream: Any) -> float:
    if stream.duration is not None and stream.duration > 0:
        return float(stream.duration * stream.time_base)
    if container.duration is not None and container.duration > 0:
        return float(container.duration / 1_000_000)
    return 0.0


@contextmanager
def _opened(path: Path) -> Iterator[Any]:
    """The container, with a video stream; whatever FFmpeg raises becomes a one-line `VideoError`."""
    import av

    container = open_container(path)
    try:
        yield container
    except (VideoError, Cancelled):
        raise
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES):
            raise  # writing the converted file failed: nothing wrong with the video
        raise VideoError(f"video data is truncated or corrupt ({first_line(exc)})") from None
    except MemoryError:
        raise VideoError("not enough memory to convert this video") from None
    except (av.error.FFmpegError, ValueError, EOFError) as exc:
        raise VideoError(f"video data is truncated or corrupt ({first_line(exc)})") from None
    finally:
        container.close()
