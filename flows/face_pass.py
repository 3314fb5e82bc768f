"""The faces pass: the faces in every picture and video the index holds, found after the embeddings
and the text, at the lowest priority, into `faces` (`core.store.faces`), and each new face put into
a person (`core.store.people`); how it runs is `flows.second_pass`'s.

A picture is decoded upright (`core.media.pictures`) at `FACE_LONGEST` px at most; a video is read
at the seconds of the frames the indexer sampled for it (its rows in the frames table), so its
faces are those of the frames a search can match. Face regions another app drew in the picture's
XMP (embedded, or in an `.xmp` sidecar) are read too: one that covers a detected face names it,
one that covers none becomes a face of its own, described where it was drawn. A Google Takeout
JSON names people without saying where they are: where one face of the picture is left without a
name and one of the JSON's names is given to no face, that face is that person; otherwise there
is no telling who is who, and the names stay the picture's keywords (`core.media.takeout`).

Grouping, per picture (per frame of a video), never re-clustering the library:
1. a face the user said something about (`core.store.people.said_about`) is what they said;
2. a face named in XMP is that person (made if no one has the name yet);
3. the rest join their nearest person under `MATCH_DISTANCE`, one face per person and picture,
   never a person already in the picture; a usable face nobody is near starts a person
   (`core.models.faces.assign_faces`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass, replace
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from core.errors import first_line
from core.media.codecs import open_picture
from core.media.decoder_log import listening
from core.media.face_regions import FaceRegion, dedupe, face_regions
from core.media.pictures import render_picture_data
from core.media.takeout import MAX_JSON_BYTES, parse_takeout
from core.media.videos import frame_at
from core.media.xmp import MAX_PACKET_BYTES, embedded_xmp
from core.models.faces import FaceModel, assign_faces, face_model_name, open_face_model
from core.settings import Settings
from core.store import faces, people
from core.store.db import connect
from core.store.faces import FoundFace
from core.store.model_state import frames_table, read_choice
from core.store.people import FaceKey, overlap
from flows.pairing import Siblings
from flows.second_pass import SecondPass

log = logging.getLogger("sightline.indexer")

FACE_LONGEST = 1600  # a picture is decoded at most this long for faces: detection works on less
SAME_FACE = 0.3  # an XMP region that overlaps a detected face this much (IoU) is that face


@dataclass(frozen=True)
class Scan:
    found: tuple[FoundFace, ...]
    failed: str | None = None


class FacePass(SecondPass[Scan]):
    """Finds faces and groups them into people, in a thread of its own."""

    name = "sightline-faces"
    doing = "Finding faces"

    def __init__(self, settings: Settings, url: str, busy: Callable[[], bool] = lambda: False) -> None:
        super().__init__(settings, url, busy)
        self.model_name = face_model_name()
        self._model: FaceModel | None = None
        self._siblings = Siblings()

    def model(self) -> FaceModel:
        if self._model is None:
            self._model = open_face_model()
        return self._model

    def waiting(
        self, conn: Any, table: str, limit: int, leave_out: Collection[str], after: str
    ) -> list[tuple[str, str, str]]:
        return faces.waiting(conn, table, self.model_name, limit, leave_out, after)

    def count_waiting(self, conn: Any, table: str) -> int:
        return faces.progress(conn, table, self.model_name).waiting

    def process(self, key: str, kind: str, path: Path, data: bytes) -> Scan:
        max_pixels = self.settings.max_image_pixels
        self.model()  # models that cannot be loaded stop the pass (`Unavailable`), they fail no file
        try:
            if kind == "video":
                frames = [(s, frame_at(path, s, max_pixels=max_pixels)) for s in self._sampled_seconds(key)]
            else:
                frames = [(-1.0, render_picture_data(data, str(path), FACE_LONGEST, max_pixels=max_pixels))]
            found = [self._faces_in(picture, second) for second, picture in frames]
        except Exception as exc:  # a decoder or the model tripping over one file: said once, never retried
            log.warning("could not look for faces in %s: %s", key, first_line(exc))
            return Scan((), failed=f"cannot be read for faces ({first_line(exc)})")
        if kind != "video" and frames:
            found[0] = self._with_regions(found[0], frames[0][1], _regions_of(path, data))
            found[0] = named_by_takeout(found[0], self._takeout_people(path))
        return Scan(tuple(face for faces_of_frame in found for face in faces_of_frame))

    def store(self, conn: Any, content_hash: str, key: str, result: Scan) -> None:
        with conn.transaction():  # faces are never kept without their people
            ids = faces.write(conn, content_hash, self.model_name, result.found, result.failed)
            group_faces(conn, content_hash, key, list(zip(ids, result.found)), self.model_name)

    def _sampled_seconds(self, key: str) -> list[float]:
        with connect(self.url) as conn:
            table = frames_table(read_choice(conn, self.settings.clip_model).serving)
            rows = conn.execute(f'SELECT DISTINCT second FROM "{table}" WHERE path = %s ORDER BY 1', (key,))
            return [float(second) for (second,) in rows]

    def _faces_in(self, picture: Image.Image, second: float) -> list[FoundFace]:
        return [
            FoundFace(f.box, f.score, f.pixels, f.sharpness, f.usable, f.descriptor, frame=second)
            for f in self.model().find(picture)
        ]

    def _with_regions(
        self, found: list[FoundFace], picture: Image.Image, regions: tuple[FaceRegion, ...]
    ) -> list[FoundFace]:
        """The detected faces named by the regions that cover them, and a face for each region that
        covers none."""
        found = list(found)
        for region in regions:
            best = max(range(len(found)), key=lambda i: overlap(found[i].box, region.box), default=None)
            if best is not None and overlap(found[best].box, region.box) >= SAME_FACE:
                if region.name and not found[best].named:
                    found[best] = replace(found[best], named=region.name, source="xmp")
                continue
            face = self.model().describe(picture, region.box)
            if face is not None:
                found.append(
                    FoundFace(
                        region.box,
                        face.score,
                        face.pixels,
                        face.sharpness,
                        face.usable,
                        face.descriptor,
                        source="xmp",
                        named=region.name,
                    )  # fmt: skip
                )
        return found

    def _takeout_people(self, path: Path) -> tuple[str, ...]:
        """The names of the people the picture's Takeout JSON lists, if it has one."""
        name = self._siblings.takeout(path)
        if name is None:
            return ()
        try:
            sidecar = path.with_name(name)
            facts = parse_takeout(sidecar.read_bytes()) if sidecar.stat().st_size <= MAX_JSON_BYTES else None
        except OSError:
            return ()
        return facts.people if facts is not None else ()


def named_by_takeout(found: list[FoundFace], names: tuple[str, ...]) -> list[FoundFace]:
    """One face left without a name and one name given to no face: that face is that person.
    With more of either, Takeout does not say who is who, and nothing is named."""
    given = {face.named.casefold() for face in found if face.named}
    left = [name for name in names if name.casefold() not in given]
    unnamed = [i for i, face in enumerate(found) if not face.named]
    if len(left) != 1 or len(unnamed) != 1:
        return found
    named = list(found)
    named[unnamed[0]] = replace(found[unnamed[0]], named=left[0], source="takeout")
    return named


def _regions_of(path: Path, data: bytes) -> tuple[FaceRegion, ...]:
    """The face regions in the picture's own XMP and in its `.xmp` sidecar, one per face."""
    regions: list[FaceRegion] = []
    try:
        with listening(str(path)), open_picture(BytesIO(data)) as image:  # what Pillow says goes to the log
            orientation = int(image.getexif().get(0x0112, 1) or 1)
            regions += face_regions(embedded_xmp(image), orientation)
    except Exception:
        orientation = 1  # a RAW or a file Pillow cannot open: its sidecar may still hold regions
    for sidecar in (path.with_suffix(".xmp"), path.with_suffix(".XMP"), path.with_name(path.name + ".xmp")):
        try:
            if sidecar.is_file() and sidecar.stat().st_size <= MAX_PACKET_BYTES:
                regions += face_regions(sidecar.read_bytes(), orientation)
                break
        except OSError:
            continue
    return dedupe(regions)


def group_faces(conn: Any, content_hash: str, path: str | None, new: list[tuple[int, FoundFace]], model: str) -> None:
    """Put one content's new faces (ids and faces) into people; see the module's docstring."""
    for frame in sorted({face.frame for _, face in new}):
        in_frame = [(face_id, face) for face_id, face in new if face.frame == frame]
        present: set[int] = set()
        rest: list[tuple[int, np.ndarray, bool]] = []  # (id, descriptor, usable) of the faces left to group
        for face_id, face in in_frame:
            said = people.said_about(conn, FaceKey(content_hash, path, frame, face.box, face.descriptor, model))
            if said is not None:
                people.place_face(conn, face_id, said.person_id, not_a_face=said.not_a_face)
                present.update([said.person_id] if said.person_id is not None else [])
            elif face.named:
                person = people.person_named(conn, face.named) or people.new_person(conn, face.named)
                people.place_face(conn, face_id, person)
                present.add(person)
            elif face.descriptor is not None:
                rest.append((face_id, face.descriptor, face.usable))
        candidates = [
            [c for c in people.nearest_people(conn, descriptor, model) if c[0] not in present]
            for _, descriptor, _ in rest
        ]
        decisions = assign_faces([d for _, d, _ in rest], [usable for _, _, usable in rest], candidates)
        for (face_id, _, _), decision in zip(rest, decisions):
            if decision is not None:
                people.place_face(conn, face_id, people.new_person(conn) if decision == "new" else decision)
