"""People: listing them, one person's pictures, the faces in a result, and the user's corrections
(naming, hiding, merging, moving a face, "not a face"). The HTTP API and `main.py people` both
come here. What the corrections mean and how they last is `core.store.people`'s docstring.

Counts and pictures are of the model in use's table (`images`): a face is in the collection while
a picture or video with its content is; the faces of deleted files are kept (they still let a new
photo find its person), but are not counted.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql

from core.errors import BadRequest, Conflict, NotFound
from core.store import people
from core.store.db import IMAGES_TABLE, lasting_table_exists

# the faces counted: in a picture of the collection, in a person, and not said to be no face
_MEMBERS = (
    f"SELECT fp.person_id, f.id AS face_id, i.id AS image_id, i.path, f.x0, f.y0, f.x1, f.y1, f.frame "
    f"FROM face_people fp JOIN faces f ON f.id = fp.face_id JOIN {IMAGES_TABLE} i ON i.content_hash = f.content_hash "
    "WHERE fp.person_id IS NOT NULL AND NOT fp.not_a_face"
)


def _ready(conn: psycopg.Connection[Any]) -> bool:
    return lasting_table_exists(conn, IMAGES_TABLE) and lasting_table_exists(conn, "face_people")


def _person_json(row: tuple[Any, ...]) -> dict[str, Any]:
    person_id, name, hidden, faces, pictures, cover = row
    return {
        "id": int(person_id),
        "name": name,
        "faces": int(faces),
        "pictures": int(pictures),
        "hidden": bool(hidden),
        "cover_url": f"/api/faces/{cover}/thumbnail",
    }


_PEOPLE = (
    f"WITH m AS ({_MEMBERS}) SELECT p.id, p.name, p.hidden, count(DISTINCT m.face_id), count(DISTINCT m.image_id), "
    # the cover: the largest face of the person, which is the clearest as a rule
    "(array_agg(m.face_id ORDER BY (m.x1 - m.x0) * (m.y1 - m.y0) DESC, m.face_id))[1] "
    "FROM people p JOIN m ON m.person_id = p.id WHERE p.merged_into IS NULL"
)


def list_people(conn: psycopg.Connection[Any], *, hidden: bool = False) -> list[dict[str, Any]]:
    """Every person with a picture in the collection, most pictures first; hidden ones only when asked."""
    if not _ready(conn):
        return []
    where = "" if hidden else " AND NOT p.hidden"
    rows = conn.execute(_PEOPLE + where + " GROUP BY p.id ORDER BY 5 DESC, p.name NULLS LAST, p.id").fetchall()
    return [_person_json(row) for row in rows]


def get_person(conn: psycopg.Connection[Any], person_id: int) -> dict[str, Any]:
    """One person with every picture of theirs, one item per face; `NotFound` for an unknown or
    merged-away id."""
    found = (
        _ready(conn)
        and conn.execute("SELECT 1 FROM people WHERE id = %s AND merged_into IS NULL", (person_id,)).fetchone()
    )
    if not found:
        raise NotFound(f"No person has id {person_id}.")
    row = conn.execute(_PEOPLE + " AND p.id = %s GROUP BY p.id", (person_id,)).fetchone()
    if row is None:  # a person whose pictures have all gone
        named = conn.execute("SELECT name, hidden FROM people WHERE id = %s", (person_id,)).fetchone()
        assert named is not None
        return {"id": person_id, "name": named[0], "faces": 0, "pictures": 0, "hidden": bool(named[1]),
                "cover_url": None, "items": []}  # fmt: skip
    items = conn.execute(
        f"SELECT face_id, image_id, path, x0, y0, x1, y1 FROM ({_MEMBERS}) m WHERE m.person_id = %s "
        "ORDER BY path, face_id",
        (person_id,),
    ).fetchall()
    return _person_json(row) | {
        "items": [
            {"face_id": int(face), "image_id": int(i), "path": path, "box": _box(x0, y0, x1, y1)}
            for face, i, path, x0, y0, x1, y1 in items
        ]
    }


def _box(*edges: float) -> list[float]:
    return [round(float(edge), 4) for edge in edges]


def check_name(name: str) -> str:
    clean = " ".join(name.split())
    if not clean:
        raise BadRequest("name must not be empty")
    if "\x00" in clean:  # Postgres text cannot hold it
        raise BadRequest("name must not contain NUL (\\x00) characters")
    if len(clean) > people.MAX_NAME:
        raise BadRequest(f"name must be at most {people.MAX_NAME} characters")
    return clean


def update_person(
    conn: psycopg.Connection[Any], person_id: int, *, name: str | None = None, hidden: bool | None = None
) -> dict[str, Any]:
    """Name (or rename) a person and/or hide them; their faces are theirs from then on."""
    with conn.transaction():
        _live(conn, person_id)
        if name is not None:
            clean = check_name(name)
            other = people.person_named(conn, clean)
            if other is not None and other != person_id:
                raise Conflict(
                    f'"{clean}" is already the name of person {other}; to make them one, merge them: '
                    f'POST /api/people/{person_id}/merge {{"into": {other}}} (main.py people merge {person_id} {other})'
                )
            conn.execute("UPDATE people SET name = %s WHERE id = %s", (clean, person_id))
            people.confirm_members(conn, person_id, IMAGES_TABLE)
        if hidden is not None:
            conn.execute("UPDATE people SET hidden = %s WHERE id = %s", (hidden, person_id))
    return get_person(conn, person_id)


def merge(conn: psycopg.Connection[Any], person_id: int, into: int) -> dict[str, Any]:
    """Make `person_id` part of `into`, which keeps its id and its name (or takes the other's name if
    it has none); `person_id` is gone from then on."""
    if person_id == into:
        raise BadRequest("a person cannot be merged into themselves: give another person's id as into")
    with conn.transaction():
        name = _live(conn, person_id)
        kept = _live(conn, into)  # two names: the user said they are one person, who keeps this one
        conn.execute("UPDATE people SET merged_into = %s, name = NULL WHERE id = %s", (into, person_id))
        if kept is None and name is not None:
            conn.execute("UPDATE people SET name = %s WHERE id = %s", (name, into))
        conn.execute("UPDATE face_people SET person_id = %s WHERE person_id = %s", (into, person_id))
        conn.execute("UPDATE face_corrections SET person_id = %s WHERE person_id = %s", (into, person_id))
        people.confirm_members(conn, into, IMAGES_TABLE)
    return get_person(conn, into)


def _live(conn: psycopg.Connection[Any], person_id: int) -> str | None:
    """The person's name; `NotFound` when there is no such person (any more)."""
    row = conn.execute("SELECT name FROM people WHERE id = %s AND merged_into IS NULL", (person_id,)).fetchone()
    if row is None:
        raise NotFound(f"No person has id {person_id}.")
    return None if row[0] is None else str(row[0])


def update_face(
    conn: psycopg.Connection[Any], face_id: int, *, person_id: int | None = None, not_a_face: bool = False
) -> dict[str, Any]:
    """Move a face into a person, out into a person of its own (`person_id` None), or say it is no
    face; returns the face as results show it."""
    with conn.transaction():
        key = people.key_of_face(conn, face_id, IMAGES_TABLE) if _ready(conn) else None
        if key is None:
            raise NotFound(f"No face has id {face_id}.")
        if not_a_face:
            target = None
        elif person_id is None:
            target = people.new_person(conn)
        else:
            _live(conn, person_id)
            target = person_id
        people.place_face(conn, face_id, target, not_a_face=not_a_face)
        people.record(conn, key, target, not_a_face=not_a_face)
    return {"face_id": face_id, "person_id": target, "not_a_face": not_a_face, "box": _box(*key.box)}


def face_source(conn: psycopg.Connection[Any], face_id: int) -> tuple[int, tuple[float, ...], float]:
    """(image id, box, frame second or -1) of a face of the collection, for its crop."""
    row = (
        conn.execute(
            f"SELECT i.id, f.x0, f.y0, f.x1, f.y1, f.frame FROM faces f JOIN {IMAGES_TABLE} i "
            "ON i.content_hash = f.content_hash WHERE f.id = %s ORDER BY i.path LIMIT 1",
            (face_id,),
        ).fetchone()
        if _ready(conn)
        else None
    )
    if row is None:
        raise NotFound(f"No face of the collection has id {face_id}.")
    return int(row[0]), tuple(float(v) for v in row[1:5]), float(row[5])


def people_in(
    conn: psycopg.Connection[Any], images: Sequence[tuple[int, float | None]]
) -> dict[int, list[dict[str, Any]]]:
    """The faces shown on each result, by image id: every face of a picture (for a video, of its
    frame nearest to `second`), with its person where it has one; hidden people and what the user
    said is no face are left out."""
    if not images or not _ready(conn):
        return {}
    rows = conn.execute(
        f"SELECT i.id, f.id, fp.person_id, p.name, f.x0, f.y0, f.x1, f.y1, f.frame FROM {IMAGES_TABLE} i "
        "JOIN faces f ON f.content_hash = i.content_hash LEFT JOIN face_people fp ON fp.face_id = f.id "
        "LEFT JOIN people p ON p.id = fp.person_id WHERE i.id = ANY(%s) "
        "AND NOT COALESCE(fp.not_a_face, false) AND NOT COALESCE(p.hidden, false) ORDER BY i.id, f.x0",
        ([image_id for image_id, _ in images],),
    ).fetchall()
    at = dict(images)
    frames: dict[int, set[float]] = defaultdict(set)
    for image_id, *_, frame in rows:
        frames[image_id].add(float(frame))
    shown: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for image_id, face_id, person_id, name, x0, y0, x1, y1, frame in rows:
        second = at.get(image_id)
        nearest = min(frames[image_id], key=lambda f: abs(f - (second or 0.0)))
        if float(frame) != nearest:
            continue
        person = None if person_id is None else int(person_id)
        shown[image_id].append({"face_id": int(face_id), "person_id": person, "name": name,
                                "box": _box(x0, y0, x1, y1)})  # fmt: skip
    return shown


# the contents in which a person's face is (unqualified `content_hash` is the searched table's)
_WITH_PERSON = (
    "content_hash {} (SELECT f.content_hash FROM faces f JOIN face_people fp ON fp.face_id = f.id "
    "WHERE fp.person_id = %({})s AND NOT fp.not_a_face)"
)


def people_conditions(
    people_in: Sequence[int], people_out: Sequence[int], params: dict[str, Any]
) -> list[sql.Composable]:
    """A search's conditions for people: each of `people_in` in the picture, none of `people_out`."""
    where: list[sql.Composable] = []
    for n, (person_id, present) in enumerate([(p, True) for p in people_in] + [(p, False) for p in people_out]):
        params[f"person_{n}"] = person_id
        where.append(sql.SQL(_WITH_PERSON.format("IN" if present else "NOT IN", f"person_{n}")))
    return where


def named_people(conn: psycopg.Connection[Any]) -> dict[str, tuple[int, str]]:
    """Every name the user gave, lower-cased, to its person (id, name): the names a query may hold."""
    if not lasting_table_exists(conn, "people"):
        return {}
    rows = conn.execute("SELECT id, name FROM people WHERE name IS NOT NULL AND merged_into IS NULL")
    return {" ".join(str(name).split()).lower(): (int(person_id), str(name)) for person_id, name in rows}


def with_people(conn: psycopg.Connection[Any], results: list[dict[str, Any]]) -> None:
    """Add `people` to each result (API objects with `id` and, for a video, `second`)."""
    found = people_in(conn, [(int(r["id"]), r.get("second")) for r in results])
    for result in results:
        result["people"] = found.get(int(result["id"]), [])
