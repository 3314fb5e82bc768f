"""Test files of every still format a phone or a camera writes, with chosen content and facts.

Each writer takes a picture as it should look (upright) and the facts the file should carry, and
writes a real file: HEIC and AVIF (with EXIF and XMP, pillow-heif and Pillow), JPEG XL, a JPEG with
IPTC and XMP, an MPO (two JPEGs), a Photoshop file (its composite), a DNG through pidng from a Bayer
mosaic of the picture (with or without an embedded preview), and `.xmp` sidecars. Orientation is
written the way cameras do: the pixels are stored turned, and the tag says how to turn them back.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
from PIL import Image

from core.media.codecs import register_decoders

# EXIF orientation → the transposition that turns an upright picture into the stored one
# (the inverse of what a viewer applies)
STORED = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}
_ASCII, _SHORT, _LONG, _RATIONAL, _UNDEFINED, _BYTE = 2, 3, 4, 5, 7, 1
_EXIF_IFD, _GPS_IFD = 0x8769, 0x8825
# linear sRGB → CIE XYZ (D65) inverted: the DNG ColorMatrix1 of a camera that sees linear sRGB
_XYZ_TO_LINEAR_SRGB = (
    (3.2404542, -1.5371385, -0.4985314),
    (-0.9692660, 1.8760108, 0.0415560),
    (0.0556434, -0.2040259, 1.0572252),
)


@dataclass(frozen=True)
class Facts:
    """What a test file says about itself in its EXIF."""

    taken_at: datetime | None = None
    camera: str | None = None
    make: str = "Sightline"
    orientation: int = 1
    latitude: float | None = None
    longitude: float | None = None
    content_id: str | None = None  # Apple's Live Photo identifier, in an Apple maker note


def stored(upright: Image.Image, orientation: int) -> Image.Image:
    """The pixels a camera stores for `upright` under EXIF `orientation`."""
    return upright.transpose(STORED[orientation]) if orientation in STORED else upright


def exif_of(facts: Facts) -> Image.Exif:
    exif = Image.Exif()
    exif[271] = facts.make
    if facts.camera:
        exif[272] = facts.camera
    exif[274] = facts.orientation
    sub = exif.get_ifd(_EXIF_IFD)
    if facts.taken_at:
        exif[306] = facts.taken_at.strftime("%Y:%m:%d %H:%M:%S")
        sub[36867] = facts.taken_at.strftime("%Y:%m:%d %H:%M:%S")
    if facts.content_id:
        sub[0x927C] = apple_maker_note(facts.content_id)
    if facts.latitude is not None and facts.longitude is not None:
        gps = exif.get_ifd(_GPS_IFD)
        gps[0] = b"\x02\x02\x00\x00"
        gps[1], gps[2] = "N" if facts.latitude >= 0 else "S", _dms(facts.latitude)
        gps[3], gps[4] = "E" if facts.longitude >= 0 else "W", _dms(facts.longitude)
    return exif


def _dms(value: float) -> tuple[float, float, float]:
    value = abs(value)
    degrees = int(value)
    minutes = int((value - degrees) * 60)
    seconds = round(((value - degrees) * 60 - minutes) * 60, 4)
    return float(degrees), float(minutes), seconds


def apple_maker_note(content_id: str) -> bytes:
    """An Apple maker note as iPhones write it (big-endian IFD after a 14-byte header, offsets from
    the note's start) holding only tag 0x11, the content identifier."""
    text = content_id.encode("ascii") + b"\x00"
    data_at = 14 + 2 + 12 + 4
    ifd = struct.pack(">H", 1) + struct.pack(">HHII", 0x0011, _ASCII, len(text), data_at) + struct.pack(">I", 0)
    return b"Apple iOS\x00" + b"\x00\x01" + b"MM" + ifd + text


def xmp_packet(
    *,
    keywords: tuple[str, ...] = (),
    hierarchical: tuple[str, ...] = (),
    title: str | None = None,
    description: str | None = None,
    rating: int | None = None,
    created: str | None = None,
    gps: tuple[str, str] | None = None,
) -> bytes:
    """An XMP packet as Lightroom and phones write them (simple properties as attributes,
    structured ones as elements). `created` is photoshop:DateCreated as written (ISO 8601); `gps`
    is (latitude, longitude) in XMP's "DD,MM.mmN" form."""
    attributes = ""
    if rating is not None:
        attributes += f' xmp:Rating="{rating}"'
    if created:
        attributes += f' photoshop:DateCreated="{escape(created)}"'
    if gps:
        attributes += f' exif:GPSLatitude="{gps[0]}" exif:GPSLongitude="{gps[1]}"'
    body = ""
    if keywords:
        body += "<dc:subject><rdf:Bag>" + "".join(f"<rdf:li>{escape(k)}</rdf:li>" for k in keywords)
        body += "</rdf:Bag></dc:subject>"
    if hierarchical:
        body += "<lr:hierarchicalSubject><rdf:Bag>"
        body += "".join(f"<rdf:li>{escape(k)}</rdf:li>" for k in hierarchical) + "</rdf:Bag></lr:hierarchicalSubject>"
    for name, text in (("title", title), ("description", description)):
        if text:
            body += f'<dc:{name}><rdf:Alt><rdf:li xml:lang="x-default">{escape(text)}</rdf:li></rdf:Alt></dc:{name}>'
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/"'
        ' xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmlns:photoshop="http://ns.adobe.com/photoshop/1.0/"'
        ' xmlns:exif="http://ns.adobe.com/exif/1.0/" xmlns:lr="http://ns.adobe.com/lightroom/1.0/"'
        f"{attributes}>{body}</rdf:Description></rdf:RDF></x:xmpmeta>\n"
        '<?xpacket end="w"?>'
    ).encode()


def write_sidecar(path: Path, packet: bytes) -> Path:
    """An `.xmp` sidecar is a bare packet in a file of its own."""
    path.write_bytes(packet)
    return path


def write_heic(
    path: Path, upright: Image.Image, facts: Facts = Facts(), *, xmp: bytes | None = None, thumbnail: int | None = None
) -> Path:
    """A HEIC as an iPhone writes it: HEVC, EXIF (orientation as an irot/imir transform, which
    pillow-heif derives from the EXIF tag), XMP, and optionally a thumbnail of `thumbnail` px."""
    register_decoders()
    extra: dict[str, object] = {"xmp": xmp} if xmp else {}
    if thumbnail:
        extra["thumbnails"] = [thumbnail]
    stored(upright, facts.orientation).save(path, "HEIF", quality=90, exif=exif_of(facts).tobytes(), **extra)
    return path


def write_avif(path: Path, upright: Image.Image, facts: Facts = Facts(), *, xmp: bytes | None = None) -> Path:
    extra = {"xmp": xmp} if xmp else {}
    stored(upright, facts.orientation).save(path, "AVIF", quality=90, exif=exif_of(facts).tobytes(), **extra)
    return path


def write_jxl(path: Path, upright: Image.Image, facts: Facts = Facts(), *, xmp: bytes | None = None) -> Path:
    """A JPEG XL with an Exif box (and an XMP box). The pixels are stored upright: JPEG XL keeps
    orientation in its codestream, which this encoder leaves at 1, and the Exif box's is ignored."""
    register_decoders()
    extra = {"xmp": xmp} if xmp else {}
    upright.save(path, "JXL", quality=95, exif=exif_of(facts).tobytes(), use_container=True, **extra)
    return path


def write_jpeg(
    path: Path,
    upright: Image.Image,
    facts: Facts = Facts(),
    *,
    xmp: bytes | None = None,
    iptc: dict[tuple[int, int], list[str]] | None = None,
) -> Path:
    """A JPEG with EXIF, XMP, and IPTC-IIM datasets ((record, dataset) → values) in a Photoshop
    APP13 segment, as photo managers of the last two decades write them."""
    buffer = io.BytesIO()
    extra = {"xmp": xmp} if xmp else {}
    stored(upright, facts.orientation).save(buffer, "JPEG", quality=92, exif=exif_of(facts).tobytes(), **extra)
    data = buffer.getvalue()
    if iptc:
        data = data[:2] + _app13(iptc) + data[2:]
    path.write_bytes(data)
    return path


def write_mpo(path: Path, upright: Image.Image, facts: Facts = Facts(), *, second: Image.Image | None = None) -> Path:
    """An MPO as a 3D camera writes it: two JPEGs one after the other (the left eye first, with
    the EXIF), indexed by an MP extension in the first."""
    left = stored(upright, facts.orientation)
    right = stored(second or upright, facts.orientation)
    left.save(path, "MPO", save_all=True, append_images=[right], quality=92, exif=exif_of(facts).tobytes())
    return path


def write_psd(path: Path, upright: Image.Image) -> Path:
    """A Photoshop file with no layers: the header, empty colour-mode, resource and layer sections,
    and the composite Photoshop saves for other programs (RGB, 8 bits, uncompressed planes)."""
    planes = np.asarray(upright.convert("RGB")).transpose(2, 0, 1)
    header = b"8BPS" + struct.pack(">H6xHIIHH", 1, 3, upright.height, upright.width, 8, 3)
    path.write_bytes(header + struct.pack(">IIIH", 0, 0, 0, 0) + planes.tobytes())
    return path


def _app13(datasets: dict[tuple[int, int], list[str]]) -> bytes:
    iim = b"\x1c\x01\x5a\x00\x03\x1b%G"  # 1:90, the coded character set: UTF-8
    for (record, number), values in datasets.items():
        for value in values:
            raw = value.encode("utf-8")
            iim += struct.pack(">BBBH", 0x1C, record, number, len(raw)) + raw
    if len(iim) % 2:
        iim += b"\x00"
    resource = b"8BIM" + struct.pack(">H", 0x0404) + b"\x00\x00" + struct.pack(">I", len(iim)) + iim
    payload = b"Photoshop 3.0\x00" + resource
    return b"\xff\xed" + struct.pack(">H", len(payload) + 2) + payload


def write_dng(
    path: Path,
    upright: Image.Image,
    facts: Facts = Facts(),
    *,
    preview: Image.Image | None = None,
    xmp: bytes | None = None,
) -> Path:
    """A DNG through pidng: an RGGB Bayer mosaic of `upright` (stored turned for the orientation),
    12-bit, black level 0, with a colour matrix under which LibRaw demosaics it back to the same
    sRGB colours. EXIF and GPS sub-IFDs are appended afterwards (pidng 4.0.9 cannot write sub-IFDs),
    and so is `preview` (upright, as it should look), as a JPEG in a second IFD."""
    from pidng.core import RAW2DNG, DNGTags, Tag
    from pidng.defs import CalibrationIlluminant, CFAPattern, DNGVersion, PhotometricInterpretation

    picture = stored(upright, facts.orientation).convert("RGB")
    mosaic = bayer_mosaic(picture, white=4095)
    height, width = mosaic.shape
    tags = DNGTags()
    for tag, value in (
        (Tag.ImageWidth, width),
        (Tag.ImageLength, height),
        (Tag.TileWidth, width),
        (Tag.TileLength, height),
        (Tag.Orientation, facts.orientation),
        (Tag.PhotometricInterpretation, PhotometricInterpretation.Color_Filter_Array),
        (Tag.SamplesPerPixel, 1),
        (Tag.BitsPerSample, 16),
        (Tag.CFARepeatPatternDim, [2, 2]),
        (Tag.CFAPattern, CFAPattern.RGGB),
        (Tag.BlackLevel, 0),
        (Tag.WhiteLevel, 4095),
        (Tag.ColorMatrix1, [[round(v * 10000), 10000] for row in _XYZ_TO_LINEAR_SRGB for v in row]),
        (Tag.CalibrationIlluminant1, CalibrationIlluminant.D65),
        (Tag.AsShotNeutral, [[1, 1], [1, 1], [1, 1]]),
        (Tag.Make, facts.make),
        (Tag.DNGVersion, DNGVersion.V1_4),
    ):
        tags.set(tag, value)
    if facts.camera:
        tags.set(Tag.Model, facts.camera)
        tags.set(Tag.UniqueCameraModel, facts.camera)
    if facts.taken_at:
        tags.set(Tag.DateTime, facts.taken_at.strftime("%Y:%m:%d %H:%M:%S"))
    if xmp:
        tags.set(Tag.XMP_Metadata, list(xmp))
    # placeholders, pointed at the sub-IFDs once they are appended
    tags.set((_EXIF_IFD, (4, 4)), 0)
    if facts.latitude is not None:
        tags.set((_GPS_IFD, (4, 4)), 0)
    writer = RAW2DNG()
    writer.options(tags, path="", compress=False)
    buf = bytearray(writer.convert(mosaic))
    _append_sub_ifds(buf, facts)
    if preview is not None:
        _append_preview(buf, stored(preview, facts.orientation))
    path.write_bytes(bytes(buf))
    return path


def bayer_mosaic(picture: Image.Image, *, white: int) -> np.ndarray:
    """What an RGGB sensor records of an sRGB picture: linear light, one colour per photosite."""
    srgb = np.asarray(picture.convert("RGB"), dtype=np.float64) / 255
    linear = np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)
    mosaic = np.empty(linear.shape[:2], dtype=np.float64)
    mosaic[0::2, 0::2] = linear[0::2, 0::2, 0]
    mosaic[0::2, 1::2] = linear[0::2, 1::2, 1]
    mosaic[1::2, 0::2] = linear[1::2, 0::2, 1]
    mosaic[1::2, 1::2] = linear[1::2, 1::2, 2]
    return np.round(mosaic * white).astype(np.uint16)


def _append_sub_ifds(buf: bytearray, facts: Facts) -> None:
    date = facts.taken_at.strftime("%Y:%m:%d %H:%M:%S").encode() + b"\x00" if facts.taken_at else None
    exif_entries = [(36867, _ASCII, date, len(date))] if date else []
    _patch_pointer(buf, _EXIF_IFD, _append_ifd(buf, exif_entries))
    if facts.latitude is not None and facts.longitude is not None:
        gps_entries = [(0, _BYTE, b"\x02\x02\x00\x00", 4)]
        for tag, value, signs in ((1, facts.latitude, "NS"), (3, facts.longitude, "EW")):
            ref = (signs[0] if value >= 0 else signs[1]).encode() + b"\x00"
            rationals = b"".join(struct.pack("<II", round(part * 10000), 10000) for part in _dms(value))
            gps_entries += [(tag, _ASCII, ref, 2), (tag + 1, _RATIONAL, rationals, 3)]
        _patch_pointer(buf, _GPS_IFD, _append_ifd(buf, gps_entries))


def _append_preview(buf: bytearray, picture: Image.Image) -> None:
    jpeg = io.BytesIO()
    picture.convert("RGB").save(jpeg, "JPEG", quality=90)
    _align(buf)
    offset = len(buf)
    buf += jpeg.getvalue()
    width, height = picture.size
    entries = [
        (254, _LONG, struct.pack("<I", 1), 1),  # NewSubfileType: a reduced-resolution copy
        (256, _LONG, struct.pack("<I", width), 1),
        (257, _LONG, struct.pack("<I", height), 1),
        (258, _SHORT, struct.pack("<HHH", 8, 8, 8), 3),
        (259, _SHORT, struct.pack("<H", 7), 1),  # JPEG
        (262, _SHORT, struct.pack("<H", 6), 1),  # YCbCr
        (273, _LONG, struct.pack("<I", offset), 1),
        (277, _SHORT, struct.pack("<H", 3), 1),
        (278, _LONG, struct.pack("<I", height), 1),
        (279, _LONG, struct.pack("<I", len(jpeg.getvalue())), 1),
    ]
    ifd = _append_ifd(buf, entries)
    (count,) = struct.unpack_from("<H", buf, 8)
    struct.pack_into("<I", buf, 8 + 2 + 12 * count, ifd)  # the first IFD's next-IFD link


def _align(buf: bytearray) -> None:
    while len(buf) % 4:
        buf.append(0)


def _append_ifd(buf: bytearray, entries: list[tuple[int, int, bytes, int]]) -> int:
    """Append a little-endian TIFF IFD of (tag, type, packed value, count); returns its offset."""
    _align(buf)
    at = len(buf)
    data_at = at + 2 + 12 * len(entries) + 4
    head, tail = struct.pack("<H", len(entries)), b""
    for tag, kind, value, count in sorted(entries):
        if len(value) <= 4:
            head += struct.pack("<HHI", tag, kind, count) + value.ljust(4, b"\x00")
        else:
            head += struct.pack("<HHII", tag, kind, count, data_at + len(tail))
            tail += value + b"\x00" * (len(value) % 2)
    buf += head + struct.pack("<I", 0) + tail
    return at


def _patch_pointer(buf: bytearray, tag: int, offset: int) -> None:
    (count,) = struct.unpack_from("<H", buf, 8)
    for i in range(count):
        entry = 8 + 2 + 12 * i
        if struct.unpack_from("<H", buf, entry)[0] == tag:
            struct.pack_into("<I", buf, entry + 8, offset)
            return
    raise AssertionError(f"no tag {tag} in the first IFD")


def mean_colour(image: Image.Image, box: tuple[float, float, float, float] = (0.4, 0.4, 0.6, 0.6)) -> np.ndarray:
    """The mean RGB of a region given as fractions of the width and height."""
    width, height = image.size
    region = image.convert("RGB").crop(
        (int(box[0] * width), int(box[1] * height), int(box[2] * width), int(box[3] * height))
    )
    return np.asarray(region, dtype=np.float64).reshape(-1, 3).mean(axis=0)
