"""Duplicates: images with the same bytes (exact) or nearly the same picture (near), in groups.

Exact copies share a `content_hash`, which the indexer already stores. Near-duplicates are every
pair at or above the similarity threshold, found by `api.near_pairs` from the embeddings read in
one binary COPY (matrix products within cells of similar images, not one HNSW walk per image, which
took minutes at 100,000); pairs are then joined into groups with union-find, so a chain of close
pairs is one group even when its ends are further apart.

Nothing here deletes anything: the groups are for a person to look at.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import psycopg
from psycopg import sql

from api.near_pairs import near_pairs
from api.people import with_people
from api.search import COLUMNS, ImageRecord, parse_folder, record_of
from core.errors import BadRequest
from core.store.db import IMAGES_TABLE, database_key
from core.store.freshness import UntilIndexChanges
from core.store.model_state import model_table

DEFAULT_THRESHOLD = 0.95
MIN_THRESHOLD = 0.5
CACHE_SECONDS = 600.0  # an upper bound on staleness when something other than the indexer writes


def check_threshold(threshold: float) -> float:
    if not MIN_THRESHOLD <= threshold <= 1.0:
        raise BadRequest(f"threshold must be between {MIN_THRESHOLD} and 1.0 (cosine similarity), not {threshold}")
    return float(threshold)


@dataclass(frozen=True)
class Group:
    kind: str  # "exact": every image has the same bytes; "near": at least one differs
    ids: tuple[int, ...]
    similarity: float  # the lowest of the members' best similarities: how loose the group is
    best: dict[int, float]  # each image's highest similarity to another image of the group


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[int, int] = {}

    def find(self, x: int) -> int:
        parent = self.parent
        root = parent.setdefault(x, x)
        while root != parent[root]:
            root = parent[root]
        while x != root:  # path compression keeps later finds near constant time
            parent[x], x = root, parent[x]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def _folder_clause(folder: str | None, alias: str) -> tuple[sql.Composable, list[Any]]:
    if not folder:
        return sql.SQL(""), []
    return sql.SQL(" AND starts_with({}.path, %s)").format(sql.Identifier(alias)), [folder + "/"]


def _exact_sets(conn: psycopg.Connection[Any], model: str, folder: str | None) -> list[list[int]]:
    clause, params = _folder_clause(folder, "i")
    query = sql.SQL(
        "SELECT array_agg(id ORDER BY id) FROM {table} i WHERE model = %s{folder} "
        "GROUP BY content_hash HAVING count(*) > 1"
    ).format(table=sql.Identifier(model_table(model)), folder=clause)
    return [list(r[0]) for r in conn.execute(query, [model, *params])]


def _vectors(conn: psycopg.Connection[Any], model: str, folder: str | None) -> tuple[np.ndarray, np.ndarray]:
    """Every (id, embedding) of `model`'s images, through one binary COPY: its records have a fixed
    size, so numpy reads them in place (a second or two at a million, where one Python object per
    row would take tens of seconds)."""
    table = model_table(model)
    dim = conn.execute(
        sql.SQL("SELECT vector_dims(embedding) FROM {} WHERE embedding IS NOT NULL LIMIT 1").format(
            sql.Identifier(table)
        )
    ).fetchone()
    if dim is None:
        return np.empty(0, dtype=np.int64), np.empty((0, 0), dtype=np.float32)
    query = sql.SQL(
        "COPY (SELECT id, embedding FROM {table} a WHERE model = {model} AND embedding IS NOT NULL{folder}) "
        "TO STDOUT (FORMAT BINARY)"
    ).format(
        table=sql.Identifier(table),
        model=sql.Literal(model),
        folder=sql.SQL(" AND starts_with(a.path, {})").format(sql.Literal(folder + "/")) if folder else sql.SQL(""),
    )
    with conn.cursor().copy(query) as copy:
        data = b"".join(bytes(block) for block in copy)
    # a row: field count, then each field's length and value (a vector: dims, unused, floats)
    record = np.dtype(
        [
            ("fields", ">i2"),
            ("id_len", ">i4"),
            ("id", ">i8"),
            ("vec_len", ">i4"),
            ("dim", ">i2"),
            ("unused", ">i2"),
            ("vec", ">f4", (dim[0],)),
        ]
    )
    header = 19  # signature (11), flags (4), extension length (4, zero)
    rows = np.frombuffer(data, dtype=record, count=(len(data) - header - 2) // record.itemsize, offset=header)
    return rows["id"].astype(np.int64), rows["vec"].astype(np.float32)


def _near_pairs(
    conn: psycopg.Connection[Any], model: str, threshold: float, folder: str | None
) -> list[tuple[int, int, float]]:
    """(a, b, similarity) with a < b for every pair of images at or above the threshold."""
    ids, vectors = _vectors(conn, model, folder)
    order = np.argsort(ids)  # row numbers in id order, so a < b holds for the ids too
    ids, vectors = ids[order], vectors[order]
    a, b, sims = near_pairs(vectors, threshold)
    return list(zip(ids[a].tolist(), ids[b].tolist(), sims.tolist()))


def find_duplicate_groups(
    conn: psycopg.Connection[Any],
    model: str,
    threshold: float = DEFAULT_THRESHOLD,
    *,
    folder: str | None = None,
) -> list[Group]:
    """Every group of duplicates among `model`'s images (in `folder`, if given), largest first,
    then the most alike."""
    threshold = check_threshold(threshold)
    folder = parse_folder(folder)
    uf = _UnionFind()
    best: dict[int, float] = {}
    exact_sets = _exact_sets(conn, model, folder)
    for ids in exact_sets:
        for other in ids[1:]:
            uf.union(ids[0], other)
        for i in ids:
            best[i] = 1.0
    pairs = _near_pairs(conn, model, threshold, folder)
    for a, b, similarity in pairs:
        uf.union(a, b)
        best[a] = max(best.get(a, 0.0), similarity)
        best[b] = max(best.get(b, 0.0), similarity)
    members: dict[int, list[int]] = {}
    for i in best:
        members.setdefault(uf.find(i), []).append(i)
    exact_groups = {uf.find(ids[0]) for ids in exact_sets if len(ids) == len(members[uf.find(ids[0])])}
    groups = [
        Group(
            kind="exact" if root in exact_groups else "near",
            ids=tuple(sorted(ids)),
            # the member least like any other says how loose the group is
            similarity=min(best[i] for i in ids),
            best={i: best[i] for i in ids},
        )
        for root, ids in members.items()
    ]
    groups.sort(key=lambda g: (-len(g.ids), -g.similarity, g.ids[0]))
    return groups


DuplicateCache = UntilIndexChanges[list[Group]]


def duplicate_cache() -> DuplicateCache:
    return UntilIndexChanges(CACHE_SECONDS, one_at_a_time=True)


def cached_duplicate_groups(
    conn: psycopg.Connection[Any], model: str, threshold: float, folder: str | None, cache: DuplicateCache
) -> list[Group]:
    """`find_duplicate_groups`, kept until the indexer reports a change: grouping 100,000 images
    takes seconds, and the page asks again for every page of groups."""
    threshold = check_threshold(threshold)
    folder = parse_folder(folder)
    key = (database_key(conn), model, threshold, folder)
    return cache.get(conn, key, lambda: find_duplicate_groups(conn, model, threshold, folder=folder))


def records_of(conn: psycopg.Connection[Any], ids: Sequence[int]) -> dict[int, ImageRecord]:
    if not ids:
        return {}
    query = sql.SQL("SELECT {cols} FROM {table} WHERE id = ANY(%s)").format(
        cols=COLUMNS, table=sql.Identifier(IMAGES_TABLE)
    )
    return {int(r[0]): record_of(r, None) for r in conn.execute(query, (list(ids),))}


def groups_json(conn: psycopg.Connection[Any], groups: Sequence[Group]) -> list[dict[str, Any]]:
    """The groups with each image's facts, the most pixels first (a resized copy is rarely the one
    to keep), then the largest file."""
    records = records_of(conn, [i for g in groups for i in g.ids])
    out, shown = [], []
    for g in groups:
        present = [records[i] for i in g.ids if i in records]  # one deleted since grouping is left out
        present.sort(key=lambda r: (-r.width * r.height, -r.size, r.path))
        images = [{**r.as_json(), "similarity": round(g.best[r.id], 4)} for r in present]
        out.append({"kind": g.kind, "count": len(images), "similarity": round(g.similarity, 4), "images": images})
        shown += images
    with_people(conn, shown)  # as every image the API gives
    return out


def duplicates_page(
    conn: psycopg.Connection[Any],
    model: str,
    cache: DuplicateCache,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    folder: str | None = None,
    limit: int = 20,
    offset: int = 0,
) -> dict[str, Any]:
    """One page of groups, as `GET /api/duplicates` answers it."""
    if limit < 1 or offset < 0:
        raise BadRequest("limit must be 1 or more and offset 0 or more")
    groups = cached_duplicate_groups(conn, model, threshold, folder, cache)
    chosen = groups[offset : offset + limit]
    return {
        "threshold": check_threshold(threshold),
        "folder": parse_folder(folder),
        "total_groups": len(groups),
        "images_in_groups": sum(len(g.ids) for g in groups),
        "groups": groups_json(conn, chosen),
        "limit": limit,
        "offset": offset,
        "has_more": offset + limit < len(groups),
    }
