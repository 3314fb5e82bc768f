"""Every picture a library holds is searchable, and what the decoders say about it is logged.

The formats are not listed here: every format Pillow and pillow-heif can write on this machine is
written (in each of its registered extensions), read back with Pillow as any program would, and
the folder indexed; every file that Pillow could read back has a row, and every other file is
accounted for (an error row with its reason, or counted by extension as skipped). A file of several
pictures (an MPO's pair, an animation, an AVIF or HEIF sequence) is its first picture. What
decoders say (Pillow's warnings, libtiff's errors) goes to Sightline's log as one line per file,
never raw to stderr, whichever thread decodes it.
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import shapes
import stills
from conftest import ROOT, query
from PIL import Image, TiffImagePlugin

from core.media import decoder_log
from core.media.codecs import register_decoders
from core.media.library import kind_of
from core.media.pictures import IMAGE_EXTENSIONS, ImageError, Preprocessing, decode_image, render_picture_data
from core.settings import Settings

PREP = Preprocessing(size=64, crop_height=64, crop_width=64, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
LIMIT = 10**8
RED = np.array(shapes.COLORS["red"])
# modes tried in turn until the format takes one: some write only bitmaps (XBM, MSP) or palettes
MODES = ("RGB", "RGBA", "P", "L", "1")
# formats Pillow reads that Sightline leaves alone on purpose, counted as skipped by extension
LEFT_ALONE = {
    "EPS": "PostScript is a program: Pillow reads it by running Ghostscript on it",
    "MPEG": "a video; Pillow reads only the size in its header",
    "IPTC": "IPTC metadata (.iim), not a picture",
    "BUFR": "weather data; Pillow reads it only through a handler an application installs",
    "GRIB": "weather data; Pillow reads it only through a handler an application installs",
    "HDF5": "scientific data; Pillow reads it only through a handler an application installs",
    "WMF": "a vector drawing; Pillow renders it only on Windows",
}


def drawing(color: str = "red", width: int = 96, height: int = 64) -> Image.Image:
    return shapes.draw(shapes.Drawing(color, "square"), width=width, height=height, scale=0.9)


def extensions_of() -> dict[str, list[str]]:
    """Each format's registered extensions (".jpg"), with the plugins of Sightline's registered."""
    register_decoders()
    Image.init()
    found: dict[str, list[str]] = {}
    for ext, fmt in sorted(Image.registered_extensions().items()):
        found.setdefault(fmt, []).append(ext)
    return found


@dataclass
class Written:
    readable: list[str] = field(default_factory=list)  # names Pillow opened and loaded again
    unreadable: dict[str, str] = field(default_factory=dict)  # name → what Pillow said reading it
    unwritten: dict[str, str] = field(default_factory=dict)  # format → why it could not be written here


def write_every_format(folder: Path) -> Written:
    """One small picture per format Pillow (with pillow-heif and the JPEG XL plugin) can save, in
    each extension registered for it; which of them Pillow reads back is found out, not assumed."""
    folder.mkdir(parents=True, exist_ok=True)
    extensions, written = extensions_of(), Written()
    for fmt in sorted(Image.SAVE):
        if not extensions.get(fmt):
            written.unwritten[fmt] = "no file extension is registered for it"
            continue
        for ext in extensions[fmt]:
            path = folder / f"{fmt.lower()}-{ext[1:]}{ext}"
            reason = _save(drawing(), path, fmt)
            if reason is not None:
                written.unwritten[fmt] = reason
                break
            try:
                with Image.open(path) as image:
                    image.load()
                written.readable.append(path.name)
            except Exception as exc:  # noqa: BLE001 (any failure: Pillow cannot read it back)
                written.unreadable[path.name] = f"{type(exc).__name__}: {exc}"
    return written


def _save(picture: Image.Image, path: Path, fmt: str) -> str | None:
    """Save in the first mode the format takes; why not, when none."""
    reasons = []
    for mode in MODES:
        try:
            picture.convert(mode).save(path, fmt)
            return None
        except Exception as exc:  # noqa: BLE001 (a writer that cannot write this mode, or at all)
            path.unlink(missing_ok=True)
            reasons.append(f"{mode}: {type(exc).__name__}: {exc}")
    return "; ".join(reasons)


@pytest.mark.filterwarnings("ignore:IM image format is deprecated:DeprecationWarning")  # still read until Pillow 15
def test_every_picture_pillow_and_pillow_heif_write_here_is_indexed(
    settings: Settings,
    index: Callable[[Settings], Any],
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG, logger="sightline.media")
    folder = settings.image_dir / "formats"
    written = write_every_format(folder)
    # and two files the decoders speak about, decoded on the indexer's threads
    (folder / "said-damaged-exif.jpg").write_bytes(jpeg_with_damaged_exif())
    (folder / "said-damaged-data.tif").write_bytes(tiff_with_damaged_data())
    summary = index(settings)

    rows = {p.removeprefix("formats/"): f for p, f in query(settings, "SELECT path, format FROM images")}
    errors = {p.removeprefix("formats/"): r for p, r in query(settings, "SELECT path, reason FROM index_errors")}
    (skipped,) = query(settings, "SELECT skipped FROM library_folders")[0]
    missing = [name for name in written.readable if name not in rows and _format_of(name) not in LEFT_ALONE]
    assert missing == [], f"Pillow reads these back, Sightline did not index them: {missing}"
    left_alone = [name for name in written.readable if _format_of(name) in LEFT_ALONE]
    assert all(kind_of(name) == "other" for name in left_alone), left_alone

    # nothing is skipped without a word: a file not indexed has an error row or is counted skipped
    not_indexed = [name for name in [*written.readable, *written.unreadable] if name not in rows]
    counted: dict[str, int] = {}
    for name in not_indexed:
        if name not in errors:
            ext = f".{name.rsplit('.', 1)[-1]}"
            counted[ext] = counted.get(ext, 0) + 1
    assert skipped == counted, (skipped, written.unreadable)
    assert all(reason and "\n" not in reason for reason in errors.values()), errors
    assert summary.failed == len(errors) and "said-damaged-data.tif" in errors
    assert "said-damaged-exif.jpg" in rows

    # what the decoders said: one line for each of those two files, in the log, none on stderr (and
    # for any other file, such as Pillow's notice that it will drop a format, a debug line)
    said = {}
    for record in caplog.records:
        if record.name == "sightline.media":
            name = Path(record.getMessage().split(": ", 1)[0]).name
            assert name not in said, f"a second line for {name}"
            said[name] = record.levelname
    assert said.pop("said-damaged-data.tif") == "WARNING" and said.pop("said-damaged-exif.jpg") == "DEBUG"
    assert set(said.values()) <= {"DEBUG"}, said
    stderr = capfd.readouterr().err
    assert "ZIPDecode" not in stderr and "Truncated File Read" not in stderr

    indexed = sorted({_format_of(name) for name in written.readable if name in rows})
    print(
        f"\n{len(Image.SAVE)} formats have a writer here; {len(indexed)} wrote a file Pillow reads back, all "
        f"indexed ({len(written.readable)} files, one per extension): {indexed}; written but not read back: "
        f"{sorted(written.unreadable)}; not written: {sorted(written.unwritten)}"
    )


def test_a_canon_hif_beside_its_cr3_is_one_item_like_a_jpeg(
    settings: Settings, index: Callable[[Settings], Any]
) -> None:
    folder = settings.image_dir / "DCIM"
    folder.mkdir()
    stills.write_heic(folder / "IMG_0001.HIF", drawing("red", 320, 240))
    (folder / "IMG_0001.CR3").write_bytes(b"raw sensor data nobody decodes while the HEIF is beside it")
    assert index(settings).failed == 0
    found = query(settings, "SELECT path, format, original FROM images WHERE starts_with(path, 'DCIM/')")
    assert found == [("DCIM/IMG_0001.HIF", "heif", "DCIM/IMG_0001.CR3")]


def _format_of(name: str) -> str:
    return name.split("-", 1)[0].upper()


def test_every_extension_pillow_reads_is_a_picture_or_left_alone_with_a_reason() -> None:
    """Formats Pillow only reads (PSD, XPM, FITS, ...) are not written by the test above: by name,
    every extension of every format Pillow and the plugins open is a picture to Sightline, but
    those of the formats it leaves alone on purpose, which are counted as skipped."""
    extensions = extensions_of()
    wrong = {}
    for fmt in Image.OPEN:
        for ext in extensions.get(fmt, []):
            expected = ("other",) if fmt in LEFT_ALONE else ("raw", "picture")
            kind = kind_of(f"IMG_0001{ext}")
            if kind not in expected:
                wrong[f"{fmt} {ext}"] = kind
    assert wrong == {}


def test_the_docs_list_every_picture_extension() -> None:
    pictures = (ROOT / "docs" / "formats.md").read_text().split("## Pictures", 1)[1].split("\n## ", 1)[0]
    listed = {word for span in re.findall(r"`([^`]*)`", pictures) for word in span.split()}
    assert sorted(f".{ext}" for ext in IMAGE_EXTENSIONS if f".{ext}" not in listed) == []


def assert_first_picture(picture: Image.Image | np.ndarray, colour: np.ndarray = RED) -> None:
    image = picture if isinstance(picture, Image.Image) else Image.fromarray(picture)
    assert np.abs(stills.mean_colour(image) - colour).max() < 16, stills.mean_colour(image)


@pytest.mark.parametrize(
    ("fmt", "ext"),
    [("MPO", "mpo"), ("PNG", "apng"), ("AVIF", "avifs"), ("HEIF", "heics"), ("GIF", "gif"), ("WEBP", "webp")],
)
def test_a_file_of_several_pictures_is_its_first(fmt: str, ext: str) -> None:
    register_decoders()
    buffer = io.BytesIO()
    frames = [drawing("green", 320, 240), drawing("blue", 320, 240)]
    options = {"duration": 100} if fmt in ("PNG", "GIF", "WEBP", "AVIF") else {}
    drawing("red", 320, 240).save(buffer, fmt, save_all=True, append_images=frames, **options)
    with Image.open(io.BytesIO(buffer.getvalue())) as image:
        assert getattr(image, "n_frames", 1) == 3
    decoded = decode_image(buffer.getvalue(), PREP, max_pixels=LIMIT, name=f"IMG_0001.{ext}")
    assert (decoded.width, decoded.height) == (320, 240) and decoded.pixels is not None
    assert_first_picture(decoded.pixels)
    assert_first_picture(render_picture_data(buffer.getvalue(), f"IMG_0001.{ext}", 320, max_pixels=LIMIT))


def test_an_mpo_is_its_left_picture_upright_with_its_facts_and_decoded_small(tmp_path: Path) -> None:
    facts = stills.Facts(camera="FinePix REAL 3D W3", orientation=6, latitude=38.7139, longitude=-9.1394)
    path = stills.write_mpo(tmp_path / "DSCF0001.MPO", drawing("red", 1600, 1200), facts, second=drawing("green"))
    decoded = decode_image(path.read_bytes(), PREP, max_pixels=LIMIT, name=path.name)
    assert (decoded.format, decoded.width, decoded.height, decoded.camera) == ("mpo", 1600, 1200, facts.camera)
    assert decoded.latitude == pytest.approx(38.7139, abs=1e-6)
    assert decoded.pixels is not None
    assert_first_picture(decoded.pixels)
    # JPEG's DCT scaling: a quarter of the size is decoded where a quarter is enough
    assert render_picture_data(path.read_bytes(), path.name, 300, max_pixels=LIMIT).size == (400, 300)


@pytest.mark.parametrize("ext", ["hif", "jp2", "j2k", "jpf", "jpx", "qoi", "psd"])
def test_the_formats_that_were_skipped_read_as_the_picture_they_hold(tmp_path: Path, ext: str) -> None:
    register_decoders()
    path = tmp_path / f"IMG_0001.{ext}"
    if ext == "psd":
        stills.write_psd(path, drawing("red", 320, 240))
    else:
        fmt = Image.registered_extensions()[f".{ext}"]
        drawing("red", 320, 240).save(path, fmt)
    assert kind_of(path.name) == "picture"
    decoded = decode_image(path.read_bytes(), PREP, max_pixels=LIMIT, name=path.name)
    assert (decoded.width, decoded.height) == (320, 240) and decoded.pixels is not None
    assert_first_picture(decoded.pixels)


def jpeg_with_damaged_exif() -> bytes:
    """A good picture whose EXIF ends early: Pillow warns ("Truncated File Read") and reads it."""
    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = "Canon", "X" * 50
    buffer = io.BytesIO()
    drawing("red", 160, 120).save(buffer, "JPEG", exif=exif.tobytes()[:-20])
    return buffer.getvalue()


def tiff_with_damaged_data() -> bytes:
    """A deflated TIFF whose compressed strip is damaged: libtiff's decoder says so and fails."""
    noise = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, "TIFF", compression="tiff_adobe_deflate")
    data = bytearray(buffer.getvalue())
    with Image.open(io.BytesIO(bytes(data))) as image:
        assert isinstance(image, TiffImagePlugin.TiffImageFile)
        start = image.tag_v2[273][0]  # StripOffsets
    data[start + 40 : start + 200] = bytes(b ^ 0xFF for b in data[start + 40 : start + 200])
    return bytes(data)


class TestWhatDecodersSay:
    def test_a_warning_about_a_good_file_is_one_debug_line_per_file_and_nothing_on_stderr(
        self, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
    ) -> None:
        caplog.set_level(logging.DEBUG, logger="sightline.media")
        data = jpeg_with_damaged_exif()
        # every file that says it, not once per process as Python shows a warning; a file decoded
        # again (for its text, its faces) that says the same again gets no second line
        for name in ("2023/IMG_0001.JPG", "2023/IMG_0002.JPG", "2024/IMG_0001.JPG", "2023/IMG_0001.JPG"):
            assert decode_image(data, PREP, max_pixels=LIMIT, name=name).pixels is not None
        said = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "sightline.media"]
        assert said == [
            (logging.DEBUG, f"{name}: decoded; the decoder said: Truncated File Read")
            for name in ("2023/IMG_0001.JPG", "2023/IMG_0002.JPG", "2024/IMG_0001.JPG")
        ]
        assert capfd.readouterr().err == ""

    def test_libtiffs_error_about_a_failed_file_is_one_warning_with_the_reason_not_stderr(
        self, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
    ) -> None:
        caplog.set_level(logging.DEBUG, logger="sightline.media")
        with pytest.raises(ImageError) as failed:
            decode_image(tiff_with_damaged_data(), PREP, max_pixels=LIMIT, name="scans/page-1.tif")
        said = [r for r in caplog.records if r.name == "sightline.media"]
        assert len(said) == 1 and said[0].levelno == logging.WARNING
        message = said[0].getMessage()
        assert message.startswith(f"scans/page-1.tif: {failed.value}; the decoder said: libtiff: ZIPDecode:")
        assert "\n" not in message
        assert "ZIPDecode" not in capfd.readouterr().err
        assert decoder_log.hear_libtiff()  # Pillow's libtiff was found and given a handler

    def test_each_file_hears_only_its_own_decoder_on_every_thread(
        self, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
    ) -> None:
        caplog.set_level(logging.DEBUG, logger="sightline.media")
        warned, clean, broken = jpeg_with_damaged_exif(), stills_jpeg(), tiff_with_damaged_data()
        files = {f"warned-{i}.jpg": warned for i in range(24)}
        files |= {f"clean-{i}.jpg": clean for i in range(24)}
        files |= {f"broken-{i}.tif": broken for i in range(8)}

        def decode(name: str) -> None:
            try:
                decode_image(files[name], PREP, max_pixels=LIMIT, name=name)
            except ImageError:
                assert name.startswith("broken-")

        with ThreadPoolExecutor(6) as pool:
            list(pool.map(decode, sorted(files, key=lambda n: n.split("-")[1])))  # the kinds interleaved
        lines: dict[str, list[str]] = {}
        for record in caplog.records:
            if record.name == "sightline.media":
                file, _, line = record.getMessage().partition(": ")
                lines.setdefault(file, []).append(line)
        assert sorted(lines) == sorted(n for n in files if not n.startswith("clean-"))
        for name, said in lines.items():
            assert len(said) == 1, (name, said)
            heard = said[0].split("the decoder said: ", 1)[1]
            assert heard.startswith("Truncated File Read" if name.startswith("warned-") else "libtiff: ZIPDecode")
        assert capfd.readouterr().err == ""


def stills_jpeg() -> bytes:
    buffer = io.BytesIO()
    drawing("green", 160, 120).save(buffer, "JPEG")
    return buffer.getvalue()
