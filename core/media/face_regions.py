"""Face regions with names that other programs wrote into XMP (embedded packets or `.xmp` sidecars):
the Metadata Working Group's `mwg-rs:Regions` (digiKam, Lightroom, Picasa and others) and
Microsoft's `MP:RegionInfo` (Windows Live Photo Gallery, and digiKam beside MWG's).

Packets come from untrusted files: they are parsed without DTDs or entity expansion (defusedxml),
one larger than `core.media.xmp.MAX_PACKET_BYTES` is not read, at most `MAX_REGIONS` regions come back,
and one that is damaged or hostile reads as no regions; nothing here raises.

Boxes are (x0, y0, x1, y1), fractions of the picture as displayed, clamped to 0..1. The frame they
are written in, and so the EXIF orientation applied to them here:

- MWG: the stored frame. The MWG Guidelines 2.0 (2010, 5.9) say region metadata applies to the
  stored image and that whoever applies the Exif orientation must turn the regions with it;
  `mwg-rs:AppliedToDimensions` records the stored pixel size. Current digiKam (since KDE bugs
  372340 and 395243) writes them so; older digiKam wrote displayed-frame boxes, which nothing in
  the packet tells apart: those come out turned on turned pictures.
- Microsoft: the stored frame as well. Microsoft's schema does not say. digiKam, which writes both
  schemas for every face it saves, writes the same box into both and reads both through one
  orientation transform, so a packet holding both agrees with itself and `dedupe` can merge them;
  reading Microsoft's as displayed would put one of each pair in the wrong place on every turned
  picture.
  (What Windows Live Photo Gallery itself did on a picture with an orientation tag is not
  documented anywhere found; on an upright one both readings are the same box.) `MPReg:Rectangle`
  is read as "x, y, w, h" (top-left corner), as the schema's sample and digiKam have it, although
  the schema's prose calls the last two height and width.

Other decisions: a region typed anything but Face (Pet, Focus, BarCode) is left out, and so is an
untyped one without a name; an unnamed face is kept with name None; `stArea:unit` "pixel" is
converted with `AppliedToDimensions`, no unit reads as "normalized", other units are not read; boxes
with an edge far outside the picture, not finite, or (after clamping) thinner than 0.1% are
dropped, and so is one covering the whole picture (a Windows phone writes that; digiKam ignores it
too, KDE bug 437708); `mwg-rs:Rotation` (a region's own tilt) is ignored.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import chain
from xml.etree.ElementTree import Element

from core.media.xmp import parse_packet

MAX_REGIONS = 200
_MAX_NAME_CHARS = 256
# a raw edge past this margin around the picture is not a face near its border but a broken value
_MARGIN = 0.5
_MIN_SIDE = 0.001
_FULL_FRAME = 0.001

_RDF = "{http://www.w3.org/1999/02/22-rdf-syntax-ns#}"
_MWG_RS = "{http://www.metadataworkinggroup.com/schemas/regions/}"
_ST_AREA = "{http://ns.adobe.com/xmp/sType/Area#}"
_ST_DIM = "{http://ns.adobe.com/xap/1.0/sType/Dimensions#}"
_MP = "{http://ns.microsoft.com/photo/1.2/}"
_MPRI = "{http://ns.microsoft.com/photo/1.2/t/RegionInfo#}"
_MPREG = "{http://ns.microsoft.com/photo/1.2/t/Region#}"

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class FaceRegion:
    name: str | None  # the person's name as written, stripped; None when the region has no name
    box: Box  # x0, y0, x1, y1 as fractions (0..1) of the picture as displayed (after EXIF orientation)
    source: str  # "mwg" or "microsoft"


def face_regions(packet: bytes | str | None, orientation: int = 1) -> tuple[FaceRegion, ...]:
    """The face regions in one XMP packet or sidecar, MWG's first, then Microsoft's (both when a
    packet has both: see `dedupe`), turned into the displayed frame by `orientation` (EXIF 1..8;
    anything else reads as 1)."""
    try:
        root = parse_packet(packet)
        if root is None:
            return ()
        regions: list[FaceRegion] = []
        for name, box, source in chain(_mwg(root), _microsoft(root)):
            if len(regions) >= MAX_REGIONS:
                break
            if (kept := _checked(box)) is not None:
                regions.append(FaceRegion(name=name, box=_oriented(kept, orientation), source=source))
        return tuple(regions)
    except Exception:
        return ()


def dedupe(regions: Iterable[FaceRegion]) -> tuple[FaceRegion, ...]:
    """One region per face: of regions overlapping with an IoU above 0.5, the named one is kept
    (then MWG's, then the first); the ones kept stay in their order."""
    listed = list(regions)
    ranked = sorted(range(len(listed)), key=lambda i: (listed[i].name is None, listed[i].source != "mwg", i))
    kept: list[int] = []
    for i in ranked:
        if all(_iou(listed[i].box, listed[j].box) <= 0.5 for j in kept):
            kept.append(i)
    return tuple(listed[i] for i in sorted(kept))


def _mwg(root: Element) -> Iterable[tuple[str | None, Box, str]]:
    for regions in root.iter(f"{_MWG_RS}Regions"):
        dimensions = _child(regions, f"{_MWG_RS}AppliedToDimensions")
        size = None
        if dimensions is not None and (_text(dimensions, f"{_ST_DIM}unit") or "pixel").casefold() == "pixel":
            width, height = _number(dimensions, f"{_ST_DIM}w"), _number(dimensions, f"{_ST_DIM}h")
            size = (width, height) if width and height and width > 0 and height > 0 else None
        region_list = _child(regions, f"{_MWG_RS}RegionList")
        for item in _items(region_list):
            kind, name = _text(item, f"{_MWG_RS}Type"), _name(_text(item, f"{_MWG_RS}Name"))
            # faces only (not Pet, Focus or BarCode); an untyped region counts when it names someone
            if kind.casefold() != "face" if kind is not None else name is None:
                continue
            area = _child(item, f"{_MWG_RS}Area")
            if area is None:
                continue
            x, y = _number(area, f"{_ST_AREA}x"), _number(area, f"{_ST_AREA}y")
            w, h = _number(area, f"{_ST_AREA}w"), _number(area, f"{_ST_AREA}h")
            if x is None or y is None or w is None or h is None:
                continue
            unit = (_text(area, f"{_ST_AREA}unit") or "normalized").casefold()
            if unit == "pixel" and size is not None:
                x, w, y, h = x / size[0], w / size[0], y / size[1], h / size[1]
            elif unit != "normalized":
                continue
            # stArea:x and y are the centre of the region
            yield name, (x - w / 2, y - h / 2, x + w / 2, y + h / 2), "mwg"


def _microsoft(root: Element) -> Iterable[tuple[str | None, Box, str]]:
    for info in root.iter(f"{_MP}RegionInfo"):
        for item in _items(_child(info, f"{_MPRI}Regions")):
            parts = (_text(item, f"{_MPREG}Rectangle") or "").split(",")
            if len(parts) != 4:
                continue
            try:
                x, y, w, h = (float(part) for part in parts)
            except ValueError:
                continue
            yield _name(_text(item, f"{_MPREG}PersonDisplayName")), (x, y, x + w, y + h), "microsoft"


def _resources(node: Element) -> list[Element]:
    """The elements holding a struct's fields: the struct's own element (fields as its attributes,
    or as children under rdf:parseType="Resource") and any rdf:Description directly inside it."""
    return [node, *node.findall(f"{_RDF}Description")]


def _child(node: Element | None, name: str) -> Element | None:
    for resource in _resources(node) if node is not None else []:
        if (child := resource.find(name)) is not None:
            return child
    return None


def _items(container: Element | None) -> list[Element]:
    """The rdf:li items of the array a property holds."""
    items: list[Element] = []
    for resource in _resources(container) if container is not None else []:
        for kind in ("Bag", "Seq", "Alt"):
            items += resource.findall(f"{_RDF}{kind}/{_RDF}li")
    return items


def _text(node: Element, name: str) -> str | None:
    """A simple field, written as an attribute or as a child element with text."""
    for resource in _resources(node):
        value = resource.get(name)
        if value is None and (child := resource.find(name)) is not None:
            value = child.text
        if value is not None and value.strip():
            return value.strip()
    return None


def _number(node: Element, name: str) -> float | None:
    try:
        value = float(_text(node, name) or "")
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _name(value: str | None) -> str | None:
    return (value[:_MAX_NAME_CHARS].strip() or None) if value else None


def _checked(box: Box) -> Box | None:
    """The box clamped to the picture; None for one that is not finite, is far outside the picture,
    is empty or inverted, is a sliver after clamping, or is the whole picture."""
    if not all(math.isfinite(v) and -_MARGIN <= v <= 1 + _MARGIN for v in box):
        return None
    x0, y0, x1, y1 = (min(max(v, 0.0), 1.0) for v in box)
    if x1 - x0 < _MIN_SIDE or y1 - y0 < _MIN_SIDE:
        return None
    if x0 < _FULL_FRAME and y0 < _FULL_FRAME and x1 > 1 - _FULL_FRAME and y1 > 1 - _FULL_FRAME:
        return None
    return (x0, y0, x1, y1)


def _oriented(box: Box, orientation: int) -> Box:
    """A box in the stored frame moved into the frame shown after EXIF `orientation`."""
    x0, y0, x1, y1 = box
    match orientation:
        case 2:  # mirrored left to right
            return (1 - x1, y0, 1 - x0, y1)
        case 3:  # turned 180°
            return (1 - x1, 1 - y1, 1 - x0, 1 - y0)
        case 4:  # mirrored top to bottom
            return (x0, 1 - y1, x1, 1 - y0)
        case 5:  # transposed
            return (y0, x0, y1, x1)
        case 6:  # shown turned 90° clockwise
            return (1 - y1, x0, 1 - y0, x1)
        case 7:  # transversed
            return (1 - y1, 1 - x1, 1 - y0, 1 - x0)
        case 8:  # shown turned 90° counter-clockwise
            return (y0, 1 - x1, y1, 1 - x0)
        case _:
            return box


def _iou(a: Box, b: Box) -> float:
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    if width <= 0 or height <= 0:
        return 0.0
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
