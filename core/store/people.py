"""Who each face is: people, the faces in them, and what the user said, which outlasts everything.

The rules:
- `people` rows are never deleted. A name, a hidden flag and a merge (`merged_into`) are the
  user's; a person the faces pass started has no name until the user gives one.
- `face_people` says which person each face is in. It is computed (by the faces pass, one face at
  a time, never re-clustering the library) except where a correction says otherwise.
- `face_corrections` is what the user said about a face: "this is that person" or "this is not a
  face". Each is keyed so that it finds its face again after anything that makes new face rows:
  the same content and box (a re-scan, another face model), the same path and box (the file
  re-saved with new bytes), or the same descriptor (a copy re-encoded elsewhere). Naming a person,
  merging one into another and moving a face record a correction for every face concerned, so a
  named person never depends on computed rows alone.
- The pass never merges two people, and a face never joins a person who already has a face in
  the same picture (the same frame of a video).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import psycopg

MAX_NAME = 100
# how close a box must lie to a corrected one (intersection over union) to be that face again
SAME_BOX = 0.5
# how close a descriptor must be to a corrected one to be that face in another file (a re-encoded
# copy); far below the distance between two photos of one person (0.24 and more)
SAME_DESCRIPTOR = 0.12


@dataclass(frozen=True)
class Said:
    """What a correction says about a face: its person, or that it is not a face."""

    person_id: int | None
    not_a_face: bool


@dataclass(frozen=True)
class FaceKey:
    """What finds a face again: where it is and what it looks like."""

    content_hash: str
    path: str | None
    frame: float
    box: tuple[float, float, float, float]
    descriptor: np.ndarray | None
    model: str | None


def overlap(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two boxes (x0, y0, x1, y1)."""
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def live_person(conn: psycopg.Connection[Any], person_id: int) -> int | None:
    """The person `person_id` is now (following merges), or None if there is no such person."""
    seen: set[int] = set()
    current: int | None = person_id
    while current is not None and current not in seen:
        seen.add(current)
        row = conn.execute("SELECT merged_into FROM people WHERE id = %s", (current,)).fetchone()
        if row is None:
            return None
        if row[0] is None:
            return current
        current = int(row[0])
    return None


def said_about(conn: psycopg.Connection[Any], key: FaceKey) -> Said | None:
    """The newest correction that is about this face, if any."""
    rows = conn.execute(
        "SELECT frame, x0, y0, x1, y1, person_id, not_a_face FROM face_corrections "
        "WHERE content_hash = %s OR (path IS NOT NULL AND path = %s) ORDER BY made_at DESC, id DESC",
        (key.content_hash, key.path),
    ).fetchall()
    for frame, x0, y0, x1, y1, person_id, not_a_face in rows:
        if abs(float(frame) - key.frame) < 0.05 and overlap((x0, y0, x1, y1), key.box) >= SAME_BOX:
            return _said(conn, person_id, not_a_face)
    if key.descriptor is None or key.model is None:
        return None
    row = conn.execute(
        "SELECT person_id, not_a_face FROM face_corrections WHERE model = %s AND descriptor IS NOT NULL "
        "AND descriptor <-> %s < %s ORDER BY descriptor <-> %s, made_at DESC LIMIT 1",
        (key.model, _vector(key.descriptor), SAME_DESCRIPTOR, _vector(key.descriptor)),
    ).fetchone()
    return _said(conn, row[0], row[1]) if row else None


def _said(conn: psycopg.Connection[Any], person_id: int | None, not_a_face: bool) -> Said:
    person = None if person_id is None else live_person(conn, int(person_id))
    return Said(person, bool(not_a_face))


def _vector(descriptor: np.ndarray) -> np.ndarray:
    return np.asarray(descriptor, dtype=np.float32)


def nearest_people(
    conn: psycopg.Connection[Any], descriptor: np.ndarray, model: str, *, limit: int = 8
) -> list[tuple[int, float, bool]]:
    """(person id, distance to that person's nearest face, named) of the people nearest to a face,
    nearest first, among faces of the same face model."""
    rows = conn.execute(
        "SELECT fp.person_id, min(n.distance), bool_or(p.name IS NOT NULL) FROM "
        "(SELECT id, descriptor <-> %s AS distance FROM faces WHERE model = %s AND descriptor IS NOT NULL "
        " ORDER BY descriptor <-> %s LIMIT 64) n "
        "JOIN face_people fp ON fp.face_id = n.id JOIN people p ON p.id = fp.person_id "
        "WHERE p.merged_into IS NULL GROUP BY fp.person_id ORDER BY 2 LIMIT %s",
        (_vector(descriptor), model, _vector(descriptor), limit),
    ).fetchall()
    return [(int(person), float(distance), bool(named)) for person, distance, named in rows]


def new_person(conn: psycopg.Connection[Any], name: str | None = None) -> int:
    row = conn.execute("INSERT INTO people (name) VALUES (%s) RETURNING id", (name,)).fetchone()
    assert row is not None
    return int(row[0])


def person_named(conn: psycopg.Connection[Any], name: str) -> int | None:
    row = conn.execute(
        "SELECT id FROM people WHERE lower(name) = lower(%s) AND merged_into IS NULL", (name.strip(),)
    ).fetchone()
    return int(row[0]) if row else None


def place_face(conn: psycopg.Connection[Any], face_id: int, person_id: int | None, not_a_face: bool = False) -> None:
    """Put a face into a person (None: into none), or out of every person as not a face."""
    if person_id is None and not not_a_face:
        conn.execute("DELETE FROM face_people WHERE face_id = %s", (face_id,))
    else:
        conn.execute(
            "INSERT INTO face_people (face_id, person_id, not_a_face) VALUES (%s, %s, %s) "
            "ON CONFLICT (face_id) DO UPDATE SET person_id = excluded.person_id, not_a_face = excluded.not_a_face",
            (face_id, None if not_a_face else person_id, not_a_face),
        )


def key_of_face(conn: psycopg.Connection[Any], face_id: int, table: str) -> FaceKey | None:
    """The key a correction about face `face_id` is stored under; `table` gives its path."""
    row = conn.execute(
        f"SELECT f.content_hash, (SELECT min(i.path) FROM {table} i WHERE i.content_hash = f.content_hash), "
        "f.frame, f.x0, f.y0, f.x1, f.y1, f.descriptor, f.model FROM faces f WHERE f.id = %s",
        (face_id,),
    ).fetchone()
    if row is None:
        return None
    content_hash, path, frame, x0, y0, x1, y1, descriptor, model = row
    vector = None if descriptor is None else np.asarray(descriptor.to_numpy(), dtype=np.float32)
    return FaceKey(content_hash, path, float(frame), (x0, y0, x1, y1), vector, model)


def record(conn: psycopg.Connection[Any], key: FaceKey, person_id: int | None, not_a_face: bool = False) -> None:
    """Remember what the user said about one face (the newest word about a face wins)."""
    conn.execute(
        "INSERT INTO face_corrections (content_hash, path, frame, x0, y0, x1, y1, descriptor, model, person_id, "
        "not_a_face) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (
            key.content_hash,
            key.path,
            key.frame,
            *key.box,
            None if key.descriptor is None else _vector(key.descriptor),
            key.model,
            person_id,
            not_a_face,
        ),
    )


def confirm_members(conn: psycopg.Connection[Any], person_id: int, table: str) -> None:
    """Record a correction for every face of `person_id` that has none saying so yet: what the user
    named or merged is theirs from now on, even where detection made it."""
    faces = [int(f) for (f,) in conn.execute("SELECT face_id FROM face_people WHERE person_id = %s", (person_id,))]
    for face_id in faces:
        key = key_of_face(conn, face_id, table)
        if key is None:
            continue
        said = said_about(conn, key)
        if said is None or said.person_id != person_id or said.not_a_face:
            record(conn, key, person_id)
