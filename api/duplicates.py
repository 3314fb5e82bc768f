"""Duplicates: images with the same bytes (exact) or nearly the same picture (near), in groups.

Exact copies share a `content_hash`, which the indexer already stores. Near-duplicates are found by
asking the HNSW index for each image's few nearest neighbours (a LATERAL join, one statement per
batch of images) and keeping the pairs above the similarity threshold; pairs are then joined into
groups with union-find, so a chain of close pairs is one group even when its ends are further apart.
An all-pairs comparison would be quadratic: 5·10⁹ pairs at 100,000 images.

Nothing here deletes anything: the groups are for a person to look at.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from api.search import COLUMNS, ImageRecord, parse_folder, record_of
from core.db import IMAGES_TABLE
from core.errors import BadRequest
from core.freshness import UntilIndexChanges
from core.model_state import model_table
from core.vector_index import index_shape

DEFAULT_THRESHOLD = 0.95
MIN_THRESHOLD = 0.5
NEIGHBOURS = 6  # per image; larger groups still join through chains of neighbours
EF_SEARCH = 24  # candidates for 6 neighbours; more costs time and finds nothing closer at 0.95
BATCH = 2000  # images per statement: few round trips, and each one still answers in well under a second
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


def _near_pairs(
    conn: psycopg.Connection[Any], model: str, threshold: float, folder: str | None, neighbours: int, batch: int
) -> list[tuple[int, int, float]]:
    """(a, b, similarity) with a < b for every image's nearest neighbours above the threshold."""
    clause, params = _folder_clause(folder, "a")
    ids = [
        r[0]
        for r in conn.execute(
            sql.SQL("SELECT id FROM {table} a WHERE model = %s{folder} ORDER BY id").format(
                table=sql.Identifier(model_table(model)), folder=clause
            ),
            [model, *params],
        )
    ]
    # The inner ORDER BY has nothing but the distance, so the planner uses the HNSW index with the
    # outer row's vector; a filter inside it would be applied after the index scan anyway.
    # ordered by the expression the index is built on (halfvec where pgvector has it), the threshold
    # held against the float32 distance
    table_name = model_table(model)
    order = index_shape(conn, table_name).distance("b.embedding", "a.embedding")
    query = sql.SQL(
        "SELECT a.id, n.id, n.dist FROM {table} a CROSS JOIN LATERAL ("
        "  SELECT b.id, b.model, b.path, b.embedding <=> a.embedding AS dist FROM {table} b"
        "  ORDER BY {order} LIMIT %(k)s) n "
        "WHERE a.id = ANY(%(ids)s) AND n.id <> a.id AND n.dist <= %(cut)s AND n.model = %(model)s{folder}"
    ).format(
        table=sql.Identifier(table_name),
        order=sql.SQL(order),
        folder=sql.SQL(" AND starts_with(n.path, %(folder)s)") if folder else sql.SQL(""),
    )
    # a hair of slack: identical pictures re-encoded can differ by float rounding at threshold 1.0
    values: dict[str, Any] = {"k": neighbours + 1, "cut": 1.0 - threshold + 1e-6, "model": model}
    if folder:
        values["folder"] = folder + "/"
    pairs: list[tuple[int, int, float]] = []
    with conn.transaction():
        conn.execute(sql.SQL("SET LOCAL hnsw.ef_search = {}").format(sql.Literal(max(EF_SEARCH, neighbours + 1))))
        for start in range(0, len(ids), batch):
            values["ids"] = ids[start : start + batch]
            for a, b, dist in conn.execute(query, values):
                pairs.append((min(a, b), max(a, b), 1.0 - float(dist)))
    return pairs


def find_duplicate_groups(
    conn: psycopg.Connection[Any],
    model: str,
    threshold: float = DEFAULT_THRESHOLD,
    *,
    folder: str | None = None,
    neighbours: int = NEIGHBOURS,
    batch: int = BATCH,
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
    pairs = _near_pairs(conn, model, threshold, folder, neighbours, batch)
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
    key = (conn.info.dsn, model, threshold, folder)
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
    out = []
    for g in groups:
        present = [records[i] for i in g.ids if i in records]  # one deleted since grouping is left out
        present.sort(key=lambda r: (-r.width * r.height, -r.size, r.path))
        images = [{**r.as_json(), "similarity": round(g.best[r.id], 4)} for r in present]
        out.append({"kind": g.kind, "count": len(images), "similarity": round(g.similarity, 4), "images": images})
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
