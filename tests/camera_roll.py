"""A phone's and a camera's folder as the tests write it: a video, a RAW beside its JPEG, a Live
Photo, a picture with an XMP sidecar, the sidecars and system files such folders hold, and files
that are no pictures at all."""

from __future__ import annotations

import io
from pathlib import Path

from shapes import Drawing, draw
from videos import quicktime_metadata, write_video

XMP = """<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
<rdf:Description xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmp:Rating="4">
<dc:subject><rdf:Bag><rdf:li>holiday</rdf:li><rdf:li>lisbon</rdf:li></rdf:Bag></dc:subject>
<dc:title><rdf:Alt><rdf:li xml:lang="x-default">Tram 28</rdf:li></rdf:Alt></dc:title>
<dc:description><rdf:Alt><rdf:li xml:lang="x-default">Up the hill to the castle</rdf:li></rdf:Alt></dc:description>
</rdf:Description></rdf:RDF></x:xmpmeta>"""
SIDECARS = 4  # IMG_0001.AAE, IMG_0003.JPG.xmp, Thumbs.db, desktop.ini


def jpeg(drawing: Drawing) -> bytes:
    buffer = io.BytesIO()
    draw(drawing, width=160, height=120).save(buffer, "JPEG", quality=92)
    return buffer.getvalue()


def heic(drawing: Drawing) -> bytes:
    from core.media.codecs import register_decoders

    register_decoders()
    buffer = io.BytesIO()
    draw(drawing, width=160, height=120).save(buffer, "HEIF", quality=90)
    return buffer.getvalue()


def write_camera_roll(roll: Path) -> None:
    """`clip.mp4` (a red circle for 4 s, then a blue square; dated and placed in Lisbon),
    `IMG_0001.JPG` + `.CR2` + `.AAE`, `IMG_0002.HEIC` + a 2 s HEVC `.MOV` (a Live Photo, as an
    iPhone writes it),
    `IMG_0003.JPG` + `IMG_0003.JPG.xmp`, `Thumbs.db`, `desktop.ini`, `notes.pdf`, `song.mp3`."""
    roll.mkdir(parents=True, exist_ok=True)
    write_video(
        roll / "clip.mp4",
        [(Drawing("red", "circle"), 4), (Drawing("blue", "square"), 4)],
        metadata=quicktime_metadata(created="2023-07-01T10:00:00+0100", location="+38.7139-009.1394+010.000/"),
    )
    (roll / "IMG_0001.JPG").write_bytes(jpeg(Drawing("yellow", "triangle")))
    (roll / "IMG_0001.CR2").write_bytes(b"raw sensor data nobody decodes while the JPEG is beside it")
    (roll / "IMG_0001.AAE").write_text("<plist/>")
    (roll / "IMG_0002.HEIC").write_bytes(heic(Drawing("purple", "circle")))
    write_video(
        roll / "IMG_0002.MOV",
        [(Drawing("purple", "circle"), 2)],
        codec="libx265",
        codec_options={"x265-params": "log-level=error"},
    )
    (roll / "IMG_0003.JPG").write_bytes(jpeg(Drawing("green", "square")))
    (roll / "IMG_0003.JPG.xmp").write_text(XMP)
    (roll / "Thumbs.db").write_bytes(b"\0" * 64)
    (roll / "desktop.ini").write_text("[.ShellClassInfo]")
    (roll / "notes.pdf").write_bytes(b"%PDF-1.7")
    (roll / "song.mp3").write_bytes(b"ID3")
