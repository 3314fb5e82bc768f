"""Descriptive facts people add to their pictures: keywords, title, description, rating, and the
date and place XMP can carry, from XMP packets (embedded or `.xmp` sidecars) and JPEG's IPTC.

Packets come from untrusted files: they are parsed without DTDs or entity expansion (defusedxml),
and one that is damaged, hostile or too large reads as no facts; nothing here raises.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from xml.etree.ElementTree import Element

from PIL import Image, ImageFile

# a sidecar with years of edit history is tens of kilobytes; past this it is not a real packet
MAX_PACKET_BYTES = 4 * 1024 * 1024
_MAX_KEYWORDS = 500

_RDF = "{http://www.w3.org/1999/02/22-rdf-syntax-ns#}"
_DC = "{http://purl.org/dc/elements/1.1/}"
_XMP = "{http://ns.adobe.com/xap/1.0/}"
_PHOTOSHOP = "{http://ns.adobe.com/photoshop/1.0/}"
_EXIF = "{http://ns.adobe.com/exif/1.0/}"
_LR = "{http://ns.adobe.com/lightroom/1.0/}"
_XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
# in the order they are trusted for the date the picture was taken
_DATE_PROPERTIES = (f"{_PHOTOSHOP}DateCreated", f"{_EXIF}DateTimeOriginal", f"{_XMP}CreateDate")
_ISO_DATE = re.compile(r"(\d{4})(?:-(\d{2})(?:-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2}))?)?)?)?")
# XMP's GPSCoordinate: "DDD,MM,SSk" or "DDD,MM.mmk", k one of N S E W
_XMP_COORDINATE = re.compile(r"\s*(\d+(?:\.\d+)?)(?:,(\d+(?:\.\d+)?))?(?:,(\d+(?:\.\d+)?))?\s*([NSEW])\s*$", re.I)

# IPTC-IIM datasets (record 2) and the escape sequence that declares UTF-8 (record 1, dataset 90)
_IPTC_KEYWORDS, _IPTC_OBJECT_NAME, _IPTC_HEADLINE, _IPTC_CAPTION = (2, 25), (2, 5), (2, 105), (2, 120)


@dataclass(frozen=True)
class XmpFacts:
    keywords: tuple[str, ...] = ()
    title: str | None = None
    description: str | None = None
    rating: int | None = None
    taken_at: datetime | None = None
    latitude: float | None = None
    longitude: float | None = None


NO_FACTS = XmpFacts()


def combined(embedded: XmpFacts, override: XmpFacts) -> XmpFacts:
    """`override`'s facts where it has them (a sidecar over the file's own packet, XMP over IPTC),
    the others from `embedded`; keywords from both, each once."""
    has_position = override.latitude is not None and override.longitude is not None
    return XmpFacts(
        keywords=union_keywords(embedded.keywords, override.keywords),
        title=override.title or embedded.title,
        description=override.description or embedded.description,
        rating=override.rating if override.rating is not None else embedded.rating,
        taken_at=override.taken_at or embedded.taken_at,
        latitude=override.latitude if has_position else embedded.latitude,
        longitude=override.longitude if has_position else embedded.longitude,
    )


def union_keywords(*groups: tuple[str, ...]) -> tuple[str, ...]:
    seen: dict[str, str] = {}
    for group in groups:
        for word in group:
            seen.setdefault(word.casefold(), word)
    return tuple(seen.values())[:_MAX_KEYWORDS]


def parse_xmp(data: bytes | str | None) -> XmpFacts:
    """The facts in one XMP packet or sidecar; no facts for anything that is not one."""
    try:
        root = parse_packet(data)
        return _facts(root) if root is not None else NO_FACTS
    except Exception:
        return NO_FACTS


def parse_packet(data: bytes | str | None) -> Element | None:
    """The packet's root element, parsed without DTDs or entities; None for no packet or one too large."""
    from defusedxml import ElementTree

    if not data or len(data) > MAX_PACKET_BYTES:
        return None
    raw = data.encode("utf-8") if isinstance(data, str) else data
    # a packet inside a file is padded and wrapped (xpacket instructions, NUL bytes, the bytes of
    # the container around it): parse only the xmpmeta (or bare RDF) element itself
    for start_tag, end_tag in ((b"<x:xmpmeta", b"</x:xmpmeta>"), (b"<rdf:RDF", b"</rdf:RDF>")):
        start, end = raw.find(start_tag), raw.rfind(end_tag)
        if start >= 0 and end > start:
            root: Element = ElementTree.fromstring(
                raw[start : end + len(end_tag)], forbid_dtd=True, forbid_entities=True, forbid_external=True
            )
            return root
    return None


def _facts(root: Element) -> XmpFacts:
    descriptions = list(root.iter(f"{_RDF}Description"))
    keywords = [*_bag(descriptions, f"{_DC}subject")]
    keywords += [path.split("|")[-1] for path in _bag(descriptions, f"{_LR}hierarchicalSubject")]
    taken_at = None
    for name in _DATE_PROPERTIES:
        if (taken_at := _iso_date(_simple(descriptions, name))) is not None:
            break
    latitude = _coordinate(_simple(descriptions, f"{_EXIF}GPSLatitude"), "NS", 90)
    longitude = _coordinate(_simple(descriptions, f"{_EXIF}GPSLongitude"), "EW", 180)
    if latitude is None or longitude is None:
        latitude = longitude = None
    return XmpFacts(
        keywords=union_keywords(tuple(k.strip() for k in keywords if k.strip())),
        title=_alt(descriptions, f"{_DC}title"),
        description=_alt(descriptions, f"{_DC}description"),
        rating=_rating(_simple(descriptions, f"{_XMP}Rating")),
        taken_at=taken_at,
        latitude=latitude,
        longitude=longitude,
    )


def _simple(descriptions: list[Element], name: str) -> str | None:
    """A simple property, written either as an attribute of rdf:Description or as its child."""
    for description in descriptions:
        if (value := description.get(name)) is not None:
            return value.strip()
        child = description.find(name)
        if child is not None and child.text and child.text.strip():
            return child.text.strip()
    return None


def _bag(descriptions: list[Element], name: str) -> list[str]:
    """The items of an rdf:Bag or rdf:Seq property (or a lone value written without one)."""
    items: list[str] = []
    for description in descriptions:
        for prop in description.findall(name):
            found = [li.text for li in prop.iter(f"{_RDF}li") if li.text]
            items += found or ([prop.text] if prop.text and prop.text.strip() else [])
        if (value := description.get(name)) is not None:
            items += value.split(",")
    return items


def _alt(descriptions: list[Element], name: str) -> str | None:
    """A language alternative: the x-default text, else the first one."""
    for description in descriptions:
        prop = description.find(name)
        if prop is None:
            if value := (description.get(name) or "").strip():
                return value
            continue
        texts = [(li.get(_XML_LANG), (li.text or "").strip()) for li in prop.iter(f"{_RDF}li")]
        texts = [(lang, text) for lang, text in texts if text]
        if not texts and prop.text and prop.text.strip():
            return prop.text.strip()
        for lang, text in texts:
            if lang == "x-default":
                return text
        if texts:
            return texts[0][1]
    return None


def _rating(value: str | None) -> int | None:
    """xmp:Rating: -1 (rejected), 0 (unrated) to 5 stars; written as a real by some programs."""
    try:
        rating = round(float(value)) if value is not None else None
    except ValueError:
        return None
    return rating if rating is not None and -1 <= rating <= 5 else None


def _iso_date(value: str | None) -> datetime | None:
    """The wall-clock date and time as written (its zone, if any, dropped like EXIF's has none)."""
    match = _ISO_DATE.match(value or "")
    if not match:
        return None
    year, month, day, hour, minute, second = (int(g) if g else None for g in match.groups())
    try:
        return datetime(year or 1, month or 1, day or 1, hour or 0, minute or 0, second or 0)
    except ValueError:
        return None


def _coordinate(value: str | None, hemispheres: str, limit: float) -> float | None:
    match = _XMP_COORDINATE.match(value or "")
    if not match or match.group(4).upper() not in hemispheres:
        return None
    degrees = sum(float(part) / 60**i for i, part in enumerate(match.groups()[:3]) if part is not None)
    if match.group(4).upper() == hemispheres[1]:
        degrees = -degrees
    return degrees if abs(degrees) <= limit else None


def packet_in(data: bytes) -> bytes | None:
    """The XMP packet stored as plain text somewhere in a file whose decoder does not hand it over
    (JPEG XL's `xml ` box); None if there is none."""
    start = data.find(b"<x:xmpmeta")
    end = data.find(b"</x:xmpmeta>", start) if start >= 0 else -1
    return data[start : end + len(b"</x:xmpmeta>")] if end > start else None


def embedded_xmp(image: Image.Image) -> bytes | str | None:
    """The XMP packet Pillow found in a file, under whichever key its plugin uses."""
    for key in ("xmp", "XML:com.adobe.xmp"):
        if value := image.info.get(key):
            return value if isinstance(value, bytes | str) else None
    tag = getattr(image, "tag_v2", None)  # TIFF keeps it as tag 700
    value = tag.get(700) if tag is not None else None
    return value if isinstance(value, bytes | str) else None


def iptc_facts(image: ImageFile.ImageFile) -> XmpFacts:
    """Keywords, title (object name, else headline) and caption from IPTC-IIM, as JPEG and TIFF
    files written by older programs carry them."""
    try:
        from PIL import IptcImagePlugin

        info = IptcImagePlugin.getiptcinfo(image) or {}
    except Exception:
        return NO_FACTS
    try:
        keywords = info.get(_IPTC_KEYWORDS, [])
        keywords = keywords if isinstance(keywords, list) else [keywords]
        return XmpFacts(
            keywords=union_keywords(tuple(k for k in map(_iptc_text, keywords) if k)),
            title=_iptc_text(info.get(_IPTC_OBJECT_NAME)) or _iptc_text(info.get(_IPTC_HEADLINE)),
            description=_iptc_text(info.get(_IPTC_CAPTION)),
        )
    except Exception:
        return NO_FACTS


def _iptc_text(value: Any) -> str | None:
    if isinstance(value, list):
        value = value[0] if value else None
    if not isinstance(value, bytes):
        return None
    # UTF-8 is what current programs write; older ones wrote Latin-1 without saying so
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        text = value.decode("latin-1")
    return text.strip("\x00 ").strip() or None
