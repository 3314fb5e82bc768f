"""Image decoding and metadata: bytes in, pixels ready for the model and facts for the table out.

Decoding is tolerant of what real folders contain (EXIF rotation, CMYK, 16-bit, palettes with
transparency, animations) and strict about what it cannot trust (truncated data, files that
are not images, decompression bombs): those raise `ImageError` with a one-line reason.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any, TypeVar

import numpy as np
from PIL import Image, UnidentifiedImageError

from core.errors import Unsupported, first_line

T = TypeVar("T")

IMAGE_EXTENSIONS: tuple[str, ...] = ("jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff")

_EXIF_IFD = 0x8769
_TAG_DATETIME_ORIGINAL = 36867
_TAG_DATETIME_DIGITIZED = 36868
_TAG_DATETIME = 306
_TAG_MODEL = 272
_TAG_ORIENTATION = 274
# EXIF orientation → the transposition that shows the picture upright
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# resizing a picture far longer than wide in full before cropping costs memory and time for pixels
# the crop throws away (an 8000×8 strip at 224 px would be 224,000×224); past this many times the
# crop's area, only the part that survives the crop is resampled
_CROP_FIRST_FACTOR = 4


class ImageError(Unsupported):
    """A file that cannot be indexed; the message is the one-line reason shown to users."""


def open_picture(source: str | Path | IO[bytes]) -> Image.Image:
    """`Image.open` with Sightline's own size limit (MAX_IMAGE_PIXELS, checked by the callers with a
    clearer message) in place of Pillow's lower one."""
    Image.MAX_IMAGE_PIXELS = None
    return Image.open(source)


@dataclass(frozen=True)
class Preprocessing:
    """What the model's image processor does, as plain numbers: resize the shortest side to
    `size` (bicubic), centre-crop to `crop_height`×`crop_width`, scale to 0..1, normalise.
    With `squash` (SigLIP) the whole picture is resized to `crop_width`×`crop_height` instead,
    aspect ratio ignored, and nothing is cropped."""

    size: int
    crop_height: int
    crop_width: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resample: int = Image.Resampling.BICUBIC
    squash: bool = False


@dataclass(frozen=True)
class DecodedImage:
    width: int  # as displayed, after EXIF orientation
    height: int
    format: str
    taken_at: datetime | None
    camera: str | None
    pixels: np.ndarray | None  # uint8, crop_height × crop_width × 3; None when not asked for


def is_image_name(name: str) -> bool:
    return name.rsplit(".", 1)[-1].lower() in IMAGE_EXTENSIONS if "." in name else False


def decode_image(
    data: bytes, prep: Preprocessing, *, max_pixels: int, draft: bool = True, pixels: bool = True
) -> DecodedImage:
    """Decode `data` into model-ready pixels plus metadata, or raise `ImageError`.
    With `pixels=False` only the header is read (for bytes whose embedding is already known)."""
    if not data:
        raise ImageError("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            # Pillow warns about damaged metadata it has worked around; the picture is still good,
            # and a warning per file would bury the indexer's log
            warnings.simplefilter("ignore")
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = open_picture(io.BytesIO(data))
            stored_w, stored_h = image.size
            if stored_w * stored_h > max_pixels:
                raise ImageError(
                    f"image too large: {stored_w}x{stored_h} pixels is over the limit of "
                    f"{max_pixels:,} (raise MAX_IMAGE_PIXELS to index it)"
                )
            fmt = (image.format or "unknown").lower()
            orientation, taken_at, camera = _metadata(image)
            rgb = None
            if pixels:
                if draft and image.format == "JPEG":
                    # DCT-domain downscaling: decode at 1/2, 1/4 or 1/8 size, never below `size`
                    image.draft("RGB", (prep.size, prep.size))
                image.load()
                if orientation in _UPRIGHT:
                    image = image.transpose(_UPRIGHT[orientation])
                rgb = prepare_pixels(to_rgb(image), prep)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError("not an image Pillow can read (unknown format or corrupt header)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"image too large: {exc}") from None
    except MemoryError:
        raise ImageError(f"not enough memory to decode this {stored_w}x{stored_h} image") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(f"image data is truncated or corrupt ({first_line(exc)})") from None
    except Exception as exc:
        # a decoder tripping over data it never expected (struct.error, IndexError, ...) means a
        # bad file, not a bug in the indexer: it gets a reason like any other bad file
        raise ImageError(f"image data is corrupt ({type(exc).__name__}: {first_line(exc)})") from None
    width, height = (stored_h, stored_w) if orientation in (5, 6, 7, 8) else (stored_w, stored_h)
    return DecodedImage(width=width, height=height, format=fmt, taken_at=taken_at, camera=camera, pixels=rgb)


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB; transparency is composited onto white, as a viewer shows it."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        wide = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") or wide.max() > 255 else 255.0
        image = Image.fromarray(np.clip(wide * (255.0 / peak), 0, 255).astype(np.uint8), "L")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, (255, 255, 255))
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return image.convert("RGB") if image.mode != "RGB" else image


def resized_size(width: int, height: int, shortest: int) -> tuple[int, int]:
    """Size after scaling the shortest side to `shortest`, rounded as the model's processor does."""
    if width <= height:
        return shortest, int(shortest * height / width)
    return int(shortest * width / height), shortest


def prepare_pixels(image: Image.Image, prep: Preprocessing) -> np.ndarray:
    """Resize the shortest side, centre-crop: uint8 H×W×3, the model's processor before scaling."""
    image = to_rgb(image)
    if prep.squash:
        size = (prep.crop_width, prep.crop_height)
        resized = image.resize(size, resample=prep.resample) if image.size != size else image
        return np.asarray(resized, dtype=np.uint8)
    new_w, new_h = resized_size(image.width, image.height, prep.size)
    crop_w, crop_h = prep.crop_width, prep.crop_height
    if new_w * new_h > _CROP_FIRST_FACTOR * crop_w * crop_h and new_w >= crop_w and new_h >= crop_h:
        # the same pixels as resizing everything and cropping: `box` resamples only the source
        # region that lands in the crop, with the same filter and the same scale
        sx, sy = image.width / new_w, image.height / new_h
        left, top = (new_w - crop_w) // 2, (new_h - crop_h) // 2
        box = (left * sx, top * sy, (left + crop_w) * sx, (top + crop_h) * sy)
        return np.asarray(image.resize((crop_w, crop_h), resample=prep.resample, box=box), dtype=np.uint8)
    if (new_w, new_h) != image.size:
        image = image.resize((new_w, new_h), resample=prep.resample)
    top = (new_h - prep.crop_height) // 2
    left = (new_w - prep.crop_width) // 2
    pixels = np.asarray(image, dtype=np.uint8)
    if top >= 0 and left >= 0:
        return np.ascontiguousarray(pixels[top : top + prep.crop_height, left : left + prep.crop_width])
    # smaller than the crop (only with odd processor configs): pad with zeros like the processor
    out = np.zeros((prep.crop_height, prep.crop_width, 3), dtype=np.uint8)
    src = pixels[max(0, top) : max(0, top) + prep.crop_height, max(0, left) : max(0, left) + prep.crop_width]
    out[max(0, -top) : max(0, -top) + src.shape[0], max(0, -left) : max(0, -left) + src.shape[1]] = src
    return out


def normalize(batch: np.ndarray, prep: Preprocessing) -> np.ndarray:
    """uint8 N×H×W×3 → float32 N×3×H×W, scaled and normalised like the model's processor.

    (x / 255 − mean) / std as one multiply and one subtract, in place on the channels-last copy
    (contiguous, so vectorised), then one transposing copy: five times faster than the textbook
    form over strided arrays, and it runs on the model's thread before every batch."""
    scale, shift = _scale_and_shift(prep)
    x = batch.astype(np.float32)
    x *= scale
    x -= shift
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def _scale_and_shift(prep: Preprocessing) -> tuple[np.ndarray, np.ndarray]:
    """(x / 255 − mean) / std = x · scale − shift, per channel, in float32."""
    mean = np.asarray(prep.mean, dtype=np.float32)
    std = np.asarray(prep.std, dtype=np.float32)
    return 1 / (255 * std), mean / std


def normalize_tensor(batch: np.ndarray, prep: Preprocessing, device: str, dtype: Any) -> Any:
    """`normalize` done where the model runs: on a GPU the pictures cross the bus as bytes (a
    quarter of the float32 size) and the arithmetic costs microseconds instead of CPU time that
    decoding needs. The same float32 arithmetic as `normalize`, then the model's precision."""
    import torch

    scale, shift = (torch.from_numpy(a).to(device).view(1, 3, 1, 1) for a in _scale_and_shift(prep))
    x = torch.from_numpy(batch).to(device).permute(0, 3, 1, 2).to(torch.float32)
    return (x * scale - shift).to(dtype).contiguous()


def _metadata(image: Image.Image) -> tuple[int, datetime | None, str | None]:
    """(EXIF orientation, date taken, camera). Damaged metadata reads as absent: it says nothing
    about whether the picture itself can be shown."""
    try:
        exif = image.getexif()
    except Exception:
        return 1, None, None
    orientation = _or_default(lambda: exif.get(_TAG_ORIENTATION, 1), 1)
    return (
        orientation if isinstance(orientation, int) else 1,
        _or_default(lambda: _taken_at(exif), None),
        _or_default(lambda: _camera(exif), None),
    )


def _or_default(read: Callable[[], T], default: T) -> T:
    try:
        return read()
    except Exception:
        return default


def _taken_at(exif: Image.Exif) -> datetime | None:
    sub = exif.get_ifd(_EXIF_IFD)
    for raw in (sub.get(_TAG_DATETIME_ORIGINAL), sub.get(_TAG_DATETIME_DIGITIZED), exif.get(_TAG_DATETIME)):
        if isinstance(raw, bytes):
            raw = raw.decode("ascii", "ignore")
        if isinstance(raw, str):
            try:
                return datetime.strptime(raw.strip("\x00 ")[:19], "%Y:%m:%d %H:%M:%S")
            except ValueError:
                continue
    return None


def _camera(exif: Image.Exif) -> str | None:
    raw = exif.get(_TAG_MODEL)
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "ignore")
    text = str(raw).strip("\x00 ") if raw else ""
    return text or None
