"""Test videos made with PyAV: a sequence of drawings, each shown for a number of seconds, with the
metadata and rotation a phone writes.

`write_video(path, [(Drawing("red", "circle"), 4), (Drawing("blue", "square"), 4)])` makes an
8-second video whose first 4 s show a red circle and next 4 s a blue square.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from PIL import Image
from shapes import Drawing, draw

Segment = tuple[Drawing | Image.Image, float]

# what each container can carry from the encoders inside PyAV's wheel
_CODECS = {"webm": "libvpx-vp9", "avi": "mpeg4"}
# QuickTime's keys in the `mdta` metadata box (written with movflags=use_metadata_tags), as an
# iPhone writes them
QT = "com.apple.quicktime."


def quicktime_metadata(
    *,
    created: str | None = None,
    model: str | None = None,
    make: str | None = None,
    location: str | None = None,
    content_id: str | None = None,
    creation_time: datetime | None = None,
) -> dict[str, str]:
    """The metadata an iPhone writes: `created` like "2024-05-06T07:08:09+0100" (local time and its
    offset), `location` in ISO 6709 ("+38.7139-009.1394+010.000/"), `creation_time` in UTC."""
    tags = {
        QT + "creationdate": created,
        QT + "model": model,
        QT + "make": make,
        QT + "location.ISO6709": location,
        QT + "content.identifier": content_id,
        "creation_time": creation_time.strftime("%Y-%m-%dT%H:%M:%S.000000Z") if creation_time else None,
    }
    return {k: v for k, v in tags.items() if v is not None}


def write_video(
    path: Path,
    segments: Sequence[Segment],
    *,
    fps: int = 10,
    size: tuple[int, int] = (160, 120),
    metadata: Mapping[str, str] | None = None,
    rotate: int | None = None,
    gop: int | None = None,
    faststart: bool = False,
    codec: str | None = None,
    codec_options: Mapping[str, str] | None = None,
    apple_keys: bool = True,
    sound: str | None = None,
) -> Path:
    """Encode `segments` (a drawing or a picture, and for how many seconds it shows) into `path`; the
    container is the file's extension (mp4, mov, m4v, mkv, webm, avi, 3gp). `size` is the upright
    size as displayed. `rotate` stores the frames turned and a display matrix that turns them back
    (degrees counter-clockwise, as PyAV's `VideoFrame.rotation` reads it; an iPhone held upright
    writes -90). `gop` is the keyframe interval in frames (default: one a second, as phones do);
    `faststart` puts the index first, so that a file cut short still has its first seconds.
    `apple_keys` writes the metadata as QuickTime `mdta` keys, as an iPhone does; without it FFmpeg
    writes its classic boxes (`location` becomes ©xyz in a MOV, as Android and GoPro write it).
    `sound` adds a 440 Hz tone for the whole length through that audio encoder ("aac", "libopus",
    "pcm_s16le", ...)."""
    import av

    ext = path.suffix.lower().lstrip(".")
    flags = (["use_metadata_tags"] if apple_keys else []) + (["faststart"] if faststart else [])
    options = {"movflags": "+".join(flags)} if flags and ext in ("mp4", "mov", "m4v", "3gp") else {}
    turn = {None: None, 0: None, 90: Image.Transpose.ROTATE_270, -90: Image.Transpose.ROTATE_90}
    turn |= {270: Image.Transpose.ROTATE_90, 180: Image.Transpose.ROTATE_180, -180: Image.Transpose.ROTATE_180}
    if rotate not in turn:
        raise ValueError(f"rotate must be a multiple of 90, not {rotate}")
    stored = (size[1], size[0]) if rotate in (90, -90, 270) else size
    with av.open(str(path), "w", options=options) as out:
        out.metadata.update(metadata or {})
        stream = out.add_stream(codec or _CODECS.get(ext, "h264"), rate=fps)
        assert isinstance(stream, av.VideoStream)
        stream.width, stream.height = stored
        stream.pix_fmt = "yuv420p"
        stream.codec_context.gop_size = gop or fps
        stream.codec_context.options = dict(codec_options or {})
        if rotate:
            stream.set_display_rotation(rotate)
        audio = out.add_stream(sound, rate=48000, layout="stereo") if sound else None
        for picture, seconds in segments:
            image = picture if isinstance(picture, Image.Image) else draw(picture, width=size[0], height=size[1])
            image = image.convert("RGB").resize(size)
            if turn[rotate] is not None:
                image = image.transpose(turn[rotate])  # type: ignore[arg-type]
            frame = av.VideoFrame.from_image(image)
            for _ in range(round(seconds * fps)):
                out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
        if audio is not None:
            assert isinstance(audio, av.AudioStream)
            _tone(out, audio, sum(seconds for _, seconds in segments))
    return path


def _tone(out: Any, stream: Any, seconds: float) -> None:
    import av
    import numpy as np

    rate, chunk = stream.codec_context.sample_rate, 1024
    for start in range(0, round(seconds * rate), chunk):
        t = (start + np.arange(chunk)) / rate
        wave = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        frame = av.AudioFrame.from_ndarray(np.stack([wave, wave]), format="fltp", layout="stereo")
        frame.sample_rate, frame.pts = rate, start
        out.mux(stream.encode(frame))
    out.mux(stream.encode(None))


def gradient(width: int, height: int, shade: int) -> Image.Image:
    """A picture that compresses like a photo rather than like a flat drawing, for speed tests."""
    import numpy as np

    x = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    noise = np.random.default_rng(shade).integers(0, 40, (height, width), dtype=np.uint8)
    rgb = np.stack([(x + shade) % 256 + 0 * y, (y + shade) % 256 + 0 * x, (x + y) / 2], axis=-1)
    return Image.fromarray((rgb.astype(np.uint8) + noise[..., None]).astype(np.uint8), "RGB")
