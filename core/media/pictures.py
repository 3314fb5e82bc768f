"""Image decoding and metadata: bytes in, pixels ready for the model and facts for the table out.

Every still format a phone or a camera writes goes through here: what Pillow reads itself (JPEG
and MPO, PNG and APNG, WebP, GIF, BMP, TIFF, AVIF, JPEG 2000, PSD, QOI and the rest of its formats),
HEIC/HEIF and JPEG XL through their plugins (`core.media.codecs`) and camera RAW through LibRaw
(`core.media.raw`); each yields the same facts (EXIF in `core.media.exif`, XMP and IPTC in
`core.media.xmp`) and is decoded along its cheapest faithful path: JPEG's DCT scaling, HEIC's
embedded thumbnail, a RAW file's preview, whenever they are at least as big as what is asked for.
A file of several pictures (an animation, an MPO's pair, an AVIF sequence) is its first picture.
What a decoder says about a file goes to the log, one line per file (`core.media.decoder_log`).

Decoding is tolerant of what real folders contain (EXIF rotation, CMYK, 16-bit, palettes with
transparency, animations) and strict about what it cannot trust (truncated data, files that
are not images, decompression bombs): those raise `ImageError` with a one-line reason.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path, PurePath
from typing import Any

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from core.errors import ImageError, first_line
from core.media.codecs import is_jxl, jxl_size, open_picture
from core.media.decoder_log import listening
from core.media.exif import SIDEWAYS, UPRIGHT, exif_facts, image_exif, tiff_exif
from core.media.raw import RAW_EXTENSIONS, RawFile, is_raw_name
from core.media.xmp import NO_FACTS, XmpFacts, combined, embedded_xmp, iptc_facts, packet_in, parse_xmp

IMAGE_EXTENSIONS: tuple[str, ...] = (
    *("jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff"),
    *("heic", "heif", "avif", "jxl"),
    *RAW_EXTENSIONS,
    # every other still picture format the decoders read (docs/formats.md): JPEG's other names and
    # MPO (3D cameras, some phones), animated PNG, Canon's and Fujifilm's HEIF, HEIF and AVIF
    # sequences, JPEG 2000, Photoshop, QOI, and Pillow's older and rarer formats
    *("jfif", "jpe", "mpo", "apng", "hif", "heics", "heifs", "avifs", "psd", "qoi"),
    *("jp2", "j2k", "j2c", "jpc", "jpf", "jpx"),
    *("dib", "ico", "cur", "icns", "dds", "blp", "pcx", "dcx", "pbm", "pgm", "ppm", "pnm", "pfm"),
    *("sgi", "rgb", "rgba", "bw", "tga", "icb", "vda", "vst", "im", "msp", "xbm", "xpm", "ras", "pxr"),
    *("pcd", "fli", "flc", "ftc", "ftu", "gbr", "fits", "fit"),
)
_DNG_VERSION = 50706
_TAG_XMP = 700
# Pillow's formats whose `draft` decodes a smaller picture: JPEG (and MPO, JPEGs one after the
# other) scales in the DCT domain, HEIF picks the embedded thumbnail
_DRAFTABLE = ("JPEG", "MPO", "HEIF")
# resizing a picture far longer than wide in full before cropping costs memory and time for pixels
# the crop throws away (an 8000×8 strip at 224 px would be 224,000×224); past this many times the
# crop's area, only the part that survives the crop is resampled
_CROP_FIRST_FACTOR = 4


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
    latitude: float | None = None  # decimal degrees, south and west negative
    longitude: float | None = None
    keywords: tuple[str, ...] = ()
    title: str | None = None
    description: str | None = None
    rating: int | None = None  # xmp:Rating, -1 (rejected) to 5
    content_id: str | None = None  # Apple's Live Photo identifier, shared by the still and its movie

    def with_sidecar(self, sidecar: XmpFacts) -> DecodedImage:
        """These facts with an `.xmp` sidecar's over them (a sidecar is where a photo manager keeps
        its edits); keywords from both."""
        merged = combined(self._xmp_facts(), sidecar)
        return replace(
            self,
            taken_at=merged.taken_at,
            latitude=merged.latitude,
            longitude=merged.longitude,
            keywords=merged.keywords,
            title=merged.title,
            description=merged.description,
            rating=merged.rating,
        )

    def _xmp_facts(self) -> XmpFacts:
        return XmpFacts(
            keywords=self.keywords,
            title=self.title,
            description=self.description,
            rating=self.rating,
            taken_at=self.taken_at,
            latitude=self.latitude,
            longitude=self.longitude,
        )


def is_image_name(name: str) -> bool:
    return name.rsplit(".", 1)[-1].lower() in IMAGE_EXTENSIONS if "." in name else False


class _Still:
    """One opened picture file of any format: its size as displayed, its facts, and a way to get
    its pixels upright at (at least) a wanted size along the cheapest path."""

    def __init__(self, image: ImageFile.ImageFile | None, raw: RawFile | None, data: bytes) -> None:
        self.image, self.raw = image, raw
        if raw is not None:
            self.format, self.size, self.exif = raw.format, raw.size, raw.facts()
            self.stored_size = raw.stored_size
            raw_packet = raw.xmp_packet()
            self.xmp = parse_xmp(raw_packet) if raw_packet else NO_FACTS
            return
        assert image is not None
        self.format = (image.format or "unknown").lower()
        self.exif = exif_facts(image_exif(image))
        if self.format == "jxl" and not getattr(image, "jpeg", False):
            # JPEG XL keeps orientation in its codestream, and libjxl applies it; an Exif box's
            # orientation is to be ignored (unless the file is a recompressed JPEG, decoded as one)
            self.exif = replace(self.exif, orientation=1)
        self.stored_size = image.size
        self.size = image.size[::-1] if self.exif.orientation in SIDEWAYS else image.size
        packet = embedded_xmp(image) or (packet_in(data) if self.format == "jxl" else None)
        # XMP is the current form of what IPTC-IIM holds: where both say something, XMP wins
        self.xmp = combined(iptc_facts(image), parse_xmp(packet)) if packet else iptc_facts(image)

    def check_size(self, max_pixels: int) -> None:
        width, height = self.stored_size
        if self.raw is None and width * height > max_pixels:
            raise ImageError.too_large(width, height, max_pixels)

    def picture(self, need: tuple[int, int], max_pixels: int, *, draft: bool = True) -> Image.Image:
        """Upright, at least `need` (width, height as displayed) where the original is that big."""
        if self.raw is not None:
            return self.raw.picture(need if draft else self.size, max_pixels)
        opened = self.image
        assert opened is not None
        if draft and opened.format in _DRAFTABLE:
            opened.draft("RGB", need[::-1] if self.exif.orientation in SIDEWAYS else need)
        opened.load()
        if self.exif.orientation in UPRIGHT:
            return opened.transpose(UPRIGHT[self.exif.orientation])
        return opened

    def decoded(self, pixels: np.ndarray | None) -> DecodedImage:
        exif, xmp = self.exif, self.xmp
        has_position = exif.latitude is not None and exif.longitude is not None
        return DecodedImage(
            width=self.size[0],
            height=self.size[1],
            format=self.format,
            # EXIF is what the camera wrote; XMP fills in for files that have no EXIF of their own
            taken_at=exif.taken_at or xmp.taken_at,
            camera=exif.camera,
            pixels=pixels,
            latitude=exif.latitude if has_position else xmp.latitude,
            longitude=exif.longitude if has_position else xmp.longitude,
            keywords=xmp.keywords,
            title=xmp.title,
            description=xmp.description,
            rating=xmp.rating,
            content_id=exif.content_id,
        )


@contextmanager
def _opened(data: bytes, name: str, max_pixels: int) -> Iterator[_Still]:
    """The file opened along its format's path, inside the guards every decoder runs under; any
    failure leaves as an `ImageError` with a one-line reason. `name` is the file's name, or its
    path: what the decoders say about it is logged under it."""
    if not data:
        raise ImageError("empty file (0 bytes)")
    base = PurePath(name).name
    kind = f" as .{base.rsplit('.', 1)[-1].lower()}" if "." in base else ""
    size = "this"
    with listening(name):
        try:
            if is_raw_name(base):
                with RawFile(data, base.rsplit(".", 1)[-1].lower()) as raw:
                    size = "x".join(map(str, raw.stored_size))
                    yield _Still(None, raw, data)
                return
            if data[:4] in (b"II*\x00", b"MM\x00*") and _DNG_VERSION in (tiff_exif(data) or {}):
                # a DNG under another name: Pillow would read its first IFD, a thumbnail at best
                with RawFile(data, "dng") as raw:
                    yield _Still(None, raw, data)
                return
            if is_jxl(data) and (jxl := jxl_size(data)) and jxl[0] * jxl[1] > max_pixels:
                raise ImageError.too_large(*jxl, max_pixels)  # libjxl decodes the whole picture at open
            image = open_picture(io.BytesIO(data))
            size = f"{image.width}x{image.height}"
            yield _Still(image, None, data)
        except ImageError:
            raise
        except UnidentifiedImageError:
            raise ImageError(_unreadable(data, kind)) from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageError(f"image too large: {exc}") from None
        except MemoryError:
            raise ImageError(f"not enough memory to decode this {size} image") from None
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise ImageError(f"image data is truncated or corrupt ({first_line(exc)})") from None
        except RuntimeError as exc:
            if is_jxl(data):  # pillow-jxl-plugin turns every libjxl failure into one generic error
                raise ImageError("JPEG XL data is truncated or corrupt (libjxl cannot decode it)") from None
            raise ImageError(f"image data is corrupt ({type(exc).__name__}: {first_line(exc)})") from None
        except Exception as exc:
            # a decoder tripping over data it never expected (struct.error, IndexError, ...) means a
            # bad file, not a bug in the indexer: it gets a reason like any other bad file
            raise ImageError(f"image data is corrupt ({type(exc).__name__}: {first_line(exc)})") from None


def _unreadable(data: bytes, kind: str) -> str:
    """Why no decoder took the file. Pillow hides what a plugin said when it refused a file; for a
    HEIF (where the header is often fine and the data truncated) libheif is asked again."""
    if data[4:8] == b"ftyp" and data[8:12] in (b"heic", b"heix", b"mif1", b"msf1", b"heim", b"heis", b"hevc"):
        try:
            import pillow_heif

            pillow_heif.open_heif(io.BytesIO(data))
        except Exception as exc:
            return f"HEIF data is truncated or corrupt ({first_line(exc)})"
    return f"not an image that can be read{kind} (unknown format or corrupt header)"


def decode_image(
    data: bytes,
    prep: Preprocessing,
    *,
    max_pixels: int,
    draft: bool = True,
    pixels: bool = True,
    name: str = "",
) -> DecodedImage:
    """Decode `data` into model-ready pixels plus metadata, or raise `ImageError`. `name` (the
    file's name or path) picks RAW decoding by its extension, and names the file in the log. With
    `pixels=False` only the header is read (for bytes whose embedding is already known). With
    `draft`, a smaller stored copy of the picture is decoded instead when it is still at least the
    model's input size."""
    with _opened(data, name, max_pixels) as still:
        still.check_size(max_pixels)
        rgb = None
        if pixels:
            need = (prep.crop_width, prep.crop_height) if prep.squash else (prep.size, prep.size)
            rgb = prepare_pixels(to_rgb(still.picture(need, max_pixels, draft=draft)), prep)
        return still.decoded(rgb)


def render_picture(source: Path, longest: int, *, max_pixels: int) -> Image.Image:
    """The picture in `source`, upright RGB, at least `longest` px on its long side when the
    original is that big (smaller copies stored in the file are used when they are big enough);
    for showing a still of any format. Raises `ImageError`, or OSError if the file is unreadable."""
    return render_picture_data(source.read_bytes(), str(source), longest, max_pixels=max_pixels)


def render_picture_data(data: bytes, name: str, longest: int, *, max_pixels: int) -> Image.Image:
    """`render_picture` of bytes already read (`name`, the file's name or path, picks RAW decoding by
    its extension and names the file in the log)."""
    with _opened(data, name, max_pixels) as still:
        still.check_size(max_pixels)
        width, height = still.size
        scale = min(1.0, longest / max(width, height))
        need = (min(width, math.ceil(width * scale)), min(height, math.ceil(height * scale)))
        return to_rgb(still.picture(need, max_pixels))


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB; transparency is composited onto white, as a viewer shows it."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        wide = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") or wide.max() > 255 else 255.0
        if image.mode == "F" and 0 < wide.max() <= 1:
            peak = 1.0  # a floating-point picture (PFM, FITS) from 0 to 1
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
