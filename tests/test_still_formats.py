"""Every still format a phone or a camera writes decodes to the picture it shows, with the same facts.

HEIC, AVIF, JPEG XL, JPEG and DNG files are written here (`stills`) from one drawing, stored turned
with an orientation tag as cameras do, carrying a date, a camera, a GPS position, Apple's Live
Photo identifier and XMP keywords; each decodes upright, in the drawing's colours, with those facts.
Cheap paths (HEIC's thumbnail, a RAW file's preview, a half-size demosaic) are taken when they are
big enough and only then; broken files and decompression bombs get a one-line reason; XMP from
untrusted files never raises and never expands entities.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import shapes
import stills
from conftest import ROOT
from PIL import Image

from api.thumbnails import THUMBNAIL_SIZE, ensure_picture
from core.media.exif import tiff_exif
from core.media.pictures import (
    IMAGE_EXTENSIONS,
    RAW_EXTENSIONS,
    DecodedImage,
    ImageError,
    Preprocessing,
    decode_image,
    is_image_name,
    render_picture,
)
from core.media.raw import cr3_facts
from core.media.xmp import NO_FACTS, XmpFacts, combined, parse_xmp

PREP = Preprocessing(size=64, crop_height=64, crop_width=64, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
LIMIT = 10**8
DARK = (40, 40, 40)
RED, GREEN = np.array(shapes.COLORS["red"]), np.array(shapes.COLORS["green"])
TAKEN = datetime(2023, 7, 14, 9, 30, 5)
LIVE_ID = "1A2B3C4D-0000-4000-8000-123456789ABC"
FACTS = stills.Facts(
    taken_at=TAKEN, camera="iPhone 15 Pro", orientation=6, latitude=38.7139, longitude=-9.1394, content_id=LIVE_ID
)
XMP = stills.xmp_packet(keywords=("beach", "Lisbon"), title="Sunset", description="At the river", rating=4)


def drawing(color: str = "red", width: int = 320, height: int = 240) -> Image.Image:
    """Landscape, the shape left of centre: a picture shown turned or mirrored is told apart."""
    return shapes.draw(
        shapes.Drawing(color, "square"), width=width, height=height, center=(0.3, 0.5), scale=0.5, background=DARK
    )


WRITERS: dict[str, Callable[[Path, Image.Image, stills.Facts], Path]] = {
    "heic": lambda p, im, f: stills.write_heic(p, im, f, xmp=XMP),
    "avif": lambda p, im, f: stills.write_avif(p, im, f, xmp=XMP),
    "jxl": lambda p, im, f: stills.write_jxl(p, im, f, xmp=XMP),
    "jpg": lambda p, im, f: stills.write_jpeg(p, im, f, xmp=XMP),
    "dng": lambda p, im, f: stills.write_dng(p, im, f, xmp=XMP),
}


def write(tmp_path: Path, ext: str, picture: Image.Image | None = None, facts: stills.Facts = FACTS) -> Path:
    return WRITERS[ext](tmp_path / f"IMG_0001.{ext}", picture or drawing(), facts)


def decode(path: Path, prep: Preprocessing = PREP, **kwargs: object) -> DecodedImage:
    return decode_image(path.read_bytes(), prep, max_pixels=LIMIT, name=path.name, **kwargs)  # type: ignore[arg-type]


def assert_shows_the_drawing(picture: Image.Image, shape: np.ndarray = RED) -> None:
    """The shape's colour left of centre and the background right of it: upright, not mirrored."""
    assert np.abs(stills.mean_colour(picture, (0.22, 0.42, 0.38, 0.58)) - shape).max() < 14
    assert np.abs(stills.mean_colour(picture, (0.75, 0.1, 0.95, 0.9)) - DARK).max() < 8


class TestEveryFormat:
    @pytest.mark.parametrize("ext", WRITERS)
    def test_decodes_upright_at_its_displayed_size_in_the_drawn_colours(self, tmp_path: Path, ext: str) -> None:
        decoded = decode(write(tmp_path, ext))
        assert (decoded.width, decoded.height) == (320, 240)
        assert decoded.pixels is not None and decoded.pixels.shape == (64, 64, 3)
        assert_shows_the_drawing(Image.fromarray(decoded.pixels))

    @pytest.mark.parametrize("ext", WRITERS)
    def test_yields_the_same_facts_as_a_jpeg(self, tmp_path: Path, ext: str) -> None:
        decoded = decode(write(tmp_path, ext), pixels=False)
        assert decoded.pixels is None
        assert (decoded.taken_at, decoded.camera) == (TAKEN, "iPhone 15 Pro")
        assert decoded.latitude == pytest.approx(38.7139, abs=1e-6)
        assert decoded.longitude == pytest.approx(-9.1394, abs=1e-6)
        assert decoded.keywords == ("beach", "Lisbon")
        assert (decoded.title, decoded.description, decoded.rating) == ("Sunset", "At the river", 4)
        # the DNG writer puts no maker note in its files: only the others carry the identifier
        assert decoded.content_id == (None if ext == "dng" else LIVE_ID)

    @pytest.mark.parametrize("ext", WRITERS)
    def test_reports_its_format(self, tmp_path: Path, ext: str) -> None:
        expected = {"heic": "heif", "jpg": "jpeg"}.get(ext, ext)
        assert decode(write(tmp_path, ext), pixels=False).format == expected

    @pytest.mark.parametrize("ext", WRITERS)
    def test_renders_upright_for_showing_and_as_a_thumbnail(self, tmp_path: Path, ext: str) -> None:
        path = write(tmp_path, ext)
        shown = render_picture(path, 160, max_pixels=LIMIT)
        assert shown.mode == "RGB" and max(shown.size) >= 160 and shown.width > shown.height
        assert_shows_the_drawing(shown)
        thumbnail = ensure_picture(path, tmp_path / "thumbs" / f"{ext}.jpg", THUMBNAIL_SIZE, LIMIT)
        with Image.open(thumbnail) as image:
            assert image.format == "JPEG" and image.size == (320, 240)
            assert_shows_the_drawing(image)

    @pytest.mark.parametrize("ext", WRITERS)
    def test_over_the_pixel_limit_is_refused_with_the_setting_to_raise(self, tmp_path: Path, ext: str) -> None:
        data = write(tmp_path, ext).read_bytes()
        with pytest.raises(ImageError, match=r"^image too large: .* \(raise MAX_IMAGE_PIXELS to index it\)$"):
            decode_image(data, PREP, max_pixels=320 * 240 - 1, name=f"x.{ext}")

    @pytest.mark.parametrize("ext", ["heic", "avif", "jxl", "dng"])
    @pytest.mark.parametrize("damage", ["truncated", "garbage"])
    def test_a_broken_file_gets_a_one_line_reason(self, tmp_path: Path, ext: str, damage: str) -> None:
        path = write(tmp_path, ext, drawing(width=640, height=480))
        data = path.read_bytes()
        broken = data[: len(data) // 3] if damage == "truncated" else data[:16] + bytes(range(256)) * 64
        path.write_bytes(broken)
        with pytest.raises(ImageError) as caught:
            decode_image(broken, PREP, max_pixels=LIMIT, name=path.name)
        reason = str(caught.value)
        assert reason and "\n" not in reason and "Traceback" not in reason
        with pytest.raises(ImageError):
            render_picture(path, 320, max_pixels=LIMIT)


class TestCheapestPath:
    def test_heic_uses_its_thumbnail_only_when_it_is_big_enough(self, tmp_path: Path) -> None:
        path = stills.write_heic(tmp_path / "big.heic", drawing(width=1600, height=1200), thumbnail=320)
        assert render_picture(path, 200, max_pixels=LIMIT).size == (320, 240)
        assert render_picture(path, 400, max_pixels=LIMIT).size == (1600, 1200)
        fast, full = decode(path), decode(path, draft=False)
        assert fast.pixels is not None and full.pixels is not None
        assert np.abs(fast.pixels.astype(int) - full.pixels.astype(int)).mean() < 4

    def test_a_raw_file_shows_its_preview_when_big_enough_else_a_half_size_demosaic(self, tmp_path: Path) -> None:
        # a preview that differs from the RAW data tells which one was decoded
        path = stills.write_dng(
            tmp_path / "IMG_0002.DNG", drawing("red", 1280, 960), FACTS, preview=drawing("green", 320, 240)
        )
        preview = render_picture(path, 200, max_pixels=LIMIT)
        assert preview.size == (320, 240)
        assert_shows_the_drawing(preview, GREEN)
        half = render_picture(path, 500, max_pixels=LIMIT)
        assert half.size == (640, 480)
        assert_shows_the_drawing(half, RED)
        assert render_picture(path, 1000, max_pixels=LIMIT).size == (1280, 960)
        small, large = decode(path), decode(path, Preprocessing(300, 300, 300, PREP.mean, PREP.std))
        assert small.pixels is not None and large.pixels is not None
        assert_shows_the_drawing(Image.fromarray(small.pixels), GREEN)
        assert_shows_the_drawing(Image.fromarray(large.pixels), RED)
        assert (small.width, small.height, small.taken_at) == (1280, 960, TAKEN)

    def test_a_raw_preview_counts_against_the_pixel_limit(self, tmp_path: Path) -> None:
        path = stills.write_dng(tmp_path / "p.dng", drawing("red", 640, 480), preview=drawing("green", 320, 240))
        with pytest.raises(ImageError, match="^image too large: 320x240 pixels"):
            decode_image(path.read_bytes(), PREP, max_pixels=320 * 240 - 1, name=path.name)

    def test_a_dng_is_decoded_as_raw_even_without_its_name(self, tmp_path: Path) -> None:
        decoded = decode_image(write(tmp_path, "dng").read_bytes(), PREP, max_pixels=LIMIT)
        assert (decoded.format, decoded.width, decoded.height, decoded.camera) == ("dng", 320, 240, "iPhone 15 Pro")
        assert decoded.pixels is not None
        assert_shows_the_drawing(Image.fromarray(decoded.pixels))


class TestRawMetadata:
    def test_tiff_shaped_raws_with_their_own_signature_are_read(self, tmp_path: Path) -> None:
        data = write(tmp_path, "dng").read_bytes()
        for signature in (b"IIRO", b"IIU\x00"):  # Olympus ORF, Panasonic RW2
            exif = tiff_exif(signature + data[4:])
            assert exif is not None and exif.get(272) == "iPhone 15 Pro"

    def test_cr3_facts_come_from_its_metadata_boxes(self) -> None:
        first = gps = stills.exif_of(FACTS)
        blocks = {
            b"CMT1": first.tobytes()[6:],
            b"CMT2": _exif_block({36867: TAKEN.strftime("%Y:%m:%d %H:%M:%S")}),
            b"CMT4": _exif_block(dict(gps.get_ifd(0x8825))),
        }
        canon = bytes.fromhex("85c0b687820f11e08111f4ce462b6a48")
        inner = b"".join(_box(kind, payload) for kind, payload in blocks.items())
        data = _box(b"ftyp", b"crx \x00\x00\x00\x01crx isom") + _box(b"moov", _box(b"uuid", canon + inner))
        facts = cr3_facts(data)
        assert (facts.taken_at, facts.camera) == (TAKEN, "iPhone 15 Pro")
        assert facts.latitude == pytest.approx(38.7139, abs=1e-6)
        assert facts.longitude == pytest.approx(-9.1394, abs=1e-6)


def _box(kind: bytes, payload: bytes) -> bytes:
    return (8 + len(payload)).to_bytes(4, "big") + kind + payload


def _exif_block(tags: dict[int, object]) -> bytes:
    exif = Image.Exif()
    for tag, value in tags.items():
        exif[tag] = value
    return exif.tobytes()[6:]


class TestEmbeddedDescriptions:
    def test_jpeg_iptc_keywords_join_xmp_and_fill_in_title_and_caption(self, tmp_path: Path) -> None:
        iptc = {(2, 25): ["Tejo", "beach"], (2, 120): ["By the river"], (2, 105): ["Evening"]}
        only_iptc = decode(stills.write_jpeg(tmp_path / "a.jpg", drawing(), iptc=iptc), pixels=False)
        assert only_iptc.keywords == ("Tejo", "beach")
        assert (only_iptc.title, only_iptc.description) == ("Evening", "By the river")
        both = decode(stills.write_jpeg(tmp_path / "b.jpg", drawing(), xmp=XMP, iptc=iptc), pixels=False)
        assert both.keywords == ("Tejo", "beach", "Lisbon")  # "beach" once
        assert (both.title, both.description) == ("Sunset", "At the river")  # XMP over IPTC

    def test_a_sidecar_overrides_the_files_own_facts_and_adds_keywords(self, tmp_path: Path) -> None:
        decoded = decode(write(tmp_path, "heic"), pixels=False)
        sidecar = stills.write_sidecar(
            tmp_path / "IMG_0001.xmp",
            stills.xmp_packet(keywords=("sunset", "Beach"), rating=5, created="2024-01-02T03:04:05+01:00"),
        )
        merged = decoded.with_sidecar(parse_xmp(sidecar.read_bytes()))
        assert merged.keywords == ("beach", "Lisbon", "sunset")
        assert (merged.rating, merged.title) == (5, "Sunset")
        assert merged.taken_at == datetime(2024, 1, 2, 3, 4, 5)
        assert merged.latitude == pytest.approx(38.7139, abs=1e-6)


def _billion_laughs() -> bytes:
    """Nine levels of entities, each ten of the one below: 10^9 copies of "a" if expanded."""
    levels = "".join(f'<!ENTITY a{i} "{f"&a{i - 1};" * 10}">' for i in range(1, 10))
    return (
        f'<?xml version="1.0"?><!DOCTYPE x:xmpmeta [<!ENTITY a0 "a">{levels}]>'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:title>&a9;</dc:title>'
        "</rdf:Description></rdf:RDF></x:xmpmeta>"
    ).encode()


class TestXmp:
    def test_reads_what_photo_managers_write(self) -> None:
        packet = stills.xmp_packet(
            keywords=("Paris",),
            hierarchical=("Places|France|Paris", "People|Ana"),
            rating=3,
            created="2021-05-06",
            gps=("48,51.4N", "2,21,3.6E"),
        )
        facts = parse_xmp(packet)
        assert facts.keywords == ("Paris", "Ana")
        assert (facts.rating, facts.taken_at) == (3, datetime(2021, 5, 6))
        assert facts.latitude == pytest.approx(48 + 51.4 / 60)
        assert facts.longitude == pytest.approx(2 + 21 / 60 + 3.6 / 3600)

    def test_south_and_west_are_negative(self) -> None:
        facts = parse_xmp(stills.xmp_packet(gps=("33,52.1S", "151,12.5W")))
        assert facts.latitude == pytest.approx(-(33 + 52.1 / 60))
        assert facts.longitude == pytest.approx(-(151 + 12.5 / 60))

    @pytest.mark.parametrize(
        "packet",
        [
            b"",
            b"\x00\xff" * 1000,
            b"<x:xmpmeta xmlns:x='adobe:ns:meta/'><rdf:RDF",
            b"not xml at all </x:xmpmeta>",
            # the billion laughs: entities that expand to gigabytes if anything expanded them
            _billion_laughs(),
            # an external entity: would read a file of the server's
            b'<!DOCTYPE r [<!ENTITY e SYSTEM "file:///etc/passwd">]><x:xmpmeta xmlns:x="adobe:ns:meta/">'
            b'<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description '
            b'xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:title>&e;</dc:title></rdf:Description></rdf:RDF>'
            b"</x:xmpmeta>",
            stills.xmp_packet(keywords=("x",)) * (5 * 1024 * 1024 // 900),  # over the size a packet can be
        ],
        ids=["empty", "binary", "unclosed", "not-xml", "billion-laughs", "external-entity", "huge"],
    )
    def test_a_bad_packet_reads_as_no_facts(self, packet: bytes) -> None:
        started = time.monotonic()
        assert parse_xmp(packet) == NO_FACTS
        assert time.monotonic() - started < 2

    def test_values_out_of_range_are_dropped(self) -> None:
        facts = parse_xmp(stills.xmp_packet(rating=9, created="yesterday", gps=("95,0N", "10,0E"), title="Kept"))
        assert facts == XmpFacts(title="Kept")

    def test_combined_prefers_the_override_and_unions_keywords(self) -> None:
        embedded = XmpFacts(keywords=("a", "b"), title="old", rating=2, latitude=1.0, longitude=2.0)
        sidecar = XmpFacts(keywords=("B", "c"), rating=0)
        assert combined(embedded, sidecar) == XmpFacts(
            keywords=("a", "b", "c"), title="old", rating=0, latitude=1.0, longitude=2.0
        )


def test_every_format_is_a_picture_name() -> None:
    assert {"heic", "heif", "avif", "jxl", *RAW_EXTENSIONS} <= set(IMAGE_EXTENSIONS)
    assert set(RAW_EXTENSIONS) == {"dng", "cr2", "cr3", "nef", "nrw", "arw", "raf", "orf", "rw2", "pef", "srw"}
    assert all(is_image_name(n) for n in ("IMG_0001.HEIC", "a.avif", "b.JXL", "DSC_0001.NEF", "x.cr3"))
    # the formats a camera, a phone or an editor writes beside those (tests/test_every_format.py has them all)
    written_beside = ("DSCF0001.MPO", "IMG_0001.HIF", "a.psd", "b.jp2", "c.qoi", "d.apng", "e.avifs")
    assert all(is_image_name(n) for n in written_beside)
    assert not is_image_name("IMG_0001.AAE")
    assert not any(is_image_name(n) for n in ("notes.pdf", "poster.eps", "song.mp3"))


def test_importing_registers_no_decoder_until_a_picture_is_opened() -> None:
    probe = (
        "import core.media.pictures, api.thumbnails\n"
        "from PIL import Image\n"
        "Image.init()\n"
        "assert 'HEIF' not in Image.OPEN and 'JXL' not in Image.OPEN, 'registered at import'\n"
        "import sys; assert 'rawpy' not in sys.modules and 'pillow_heif' not in sys.modules\n"
    )
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert run.returncode == 0, run.stderr
