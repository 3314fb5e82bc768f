"""Where a search's candidates come from: the HNSW indexes, or every row that passes its filters.

A page is ranked exactly (float32 distance, then id) among a *pool* of candidates the index gives.
The pool's size depends only on how deep the page is, in steps (`candidate_pool`), never on the
page itself, so page 2 ranks the very candidates page 1 ranked and continues it without overlap
or gaps. Pages past the deepest pool, and servers that cannot serve a filter from the index,
rank every row that passes the filters instead ("exact").

Filters on the index need pgvector 0.8's iterative scans: the scan keeps walking the graph until
the pool is full of rows that pass (`relaxed_order`: the exact ranking re-sorts them anyway), up to
`hnsw.max_scan_tuples`. A filter that passes few rows is cheaper to rank in full, read through its
b-tree (folders: `path text_pattern_ops`); the planner's row estimate decides (`plan_search`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from core.store.text_index import bind_words
from core.store.vector_index import IndexShape

MAX_POOL = 1000  # hnsw.ef_search's ceiling; a page deeper than this is ranked exactly
# A filter estimated to pass fewer rows than this many pools' worth is ranked in full: the graph
# would have to be walked through about pool / selectivity tuples to fill the pool, while the
# full ranking reads only the rows that pass (docs/scaling.md has the measurements).
EXACT_POOLS = 10
MIN_SCAN_TUPLES = 20_000  # pgvector's default hnsw.max_scan_tuples
ITERATIVE = "relaxed_order"  # the exact ranking re-sorts the pool; strict_order measured lower recall
SCAN_SLACK = 4  # room for the planner's estimate being that far off before a page comes back short
GENERIC = (("plan_cache_mode", "force_generic_plan"), ("enable_seqscan", "off"))  # `run_planned`


def candidate_pool(wanted: int, ef_search: int) -> int | None:
    """How many candidates the index gathers for a page needing `wanted` rows: ef_search, doubled
    until it holds them, or None past MAX_POOL."""
    pool = max(1, ef_search)
    while pool < wanted:
        pool *= 2
    if pool > MAX_POOL:
        return MAX_POOL if wanted <= MAX_POOL else None
    return pool


@dataclass(frozen=True)
class Plan:
    pool: int | None  # None: rank every row that passes the filters
    settings: tuple[tuple[str, str], ...] = ()  # SET LOCAL for the statement
    generic: bool = False  # planned once per statement shape and connection (`run_planned`)


def estimated_rows(conn: psycopg.Connection[Any], table: str, where: sql.Composable, params: dict[str, Any]) -> float:
    """The planner's estimate of the rows that pass `where`, and nothing run."""
    query = sql.SQL("EXPLAIN (FORMAT JSON) SELECT 1 FROM {} WHERE {}").format(sql.Identifier(table), where)
    row = conn.execute(query, params).fetchone()
    plan = row[0] if row else None
    if isinstance(plan, str):
        plan = json.loads(plan)
    return float(plan[0]["Plan"]["Plan Rows"]) if plan else 0.0


def table_rows(conn: psycopg.Connection[Any], table: str) -> float:
    row = conn.execute("SELECT reltuples FROM pg_class WHERE oid = to_regclass(%s)", (table,)).fetchone()
    return max(0.0, float(row[0])) if row and row[0] is not None else 0.0


def plan_search(
    conn: psycopg.Connection[Any],
    table: str,
    shape: IndexShape,
    where: sql.Composable,
    params: dict[str, Any],
    *,
    wanted: int,
    ef_search: int,
    filtered: bool,
) -> Plan:
    pool = candidate_pool(wanted, ef_search)
    if pool is None:
        return Plan(None)
    if not shape.iterative_scan:
        # pgvector < 0.8 filters after the scan, which returns at most ef_search rows: a filter
        # would leave pages short, so filters rank exactly; frames get twice the pool's places
        # (a video may fill several)
        return Plan(None) if filtered else Plan(pool, (("hnsw.ef_search", str(min(MAX_POOL, 2 * pool))),), True)
    # unfiltered, a walk three times as wide as the pool lifts recall@10 from 0.956 to 0.985 at
    # 200,000 nested-cluster vectors (p50 3.6 → 5.6 ms); wider walks level off at 0.987, the graph's
    # own limit at ef_construction 64. Filtered, the iterative scan walks on past ef_search anyway.
    ef = pool if filtered else min(MAX_POOL, 3 * pool)
    settings = [("hnsw.ef_search", str(ef)), ("hnsw.iterative_scan", ITERATIVE)]
    if filtered:
        passing = estimated_rows(conn, table, where, params)
        if passing < EXACT_POOLS * pool:
            return Plan(None)
        total = max(table_rows(conn, table), passing)
        tuples = SCAN_SLACK * pool * total / max(passing, 1.0)
        settings.append(("hnsw.max_scan_tuples", str(int(min(max(MIN_SCAN_TUPLES, tuples), 2**31 - 1)))))
        return Plan(pool, tuple(settings))
    return Plan(pool, tuple(settings), generic=True)


def run_planned(
    conn: psycopg.Connection[Any], plan: Plan, query: sql.Composed, params: dict[str, Any]
) -> list[tuple[Any, ...]]:
    """`query`'s rows, with the plan's settings for it alone.

    A generic plan is made once per statement shape on each connection and kept (a prepared
    statement, its words bound as parameters: `core.store.text_index.bind_words`): planning the
    fused statement anew took more of the server's CPU than running it (3.4 ms against 3.7 at
    100,000 rows). Made without the words, it must not bet on a word being common, hence no
    sequential scan where an index serves (one that read the pictures' texts whole to test a word's
    similarity: 26 ms a search instead of 6); and the LIMITs of the index walks are written into
    the statement (`vector_hits`): not knowing one, the planner expects a tenth of the table from
    the walk and reads the whole table to join it. Filtered searches are planned each time: what a
    filter passes decides their plan (a generic one for a folder holding a tenth of 100,000 rows
    took 72 ms against 16)."""
    settings, prepare = plan.settings, None
    statement: sql.Composed | bytes = query
    if plan.generic:
        statement, params = bind_words(query, params, conn)
        settings, prepare = (*settings, *GENERIC), True
    # binary: vectors arrive as floats rather than text to parse (1.5 ms less per page of 10)
    if not settings:
        return conn.execute(statement, params, binary=True).fetchall()
    settings_sql = sql.SQL(", ").join(
        sql.SQL("set_config({}, {}, true)").format(sql.Literal(name), sql.Literal(value)) for name, value in settings
    )
    # pipelined: BEGIN, the settings, the query and COMMIT go out together and wait for the server
    # once, instead of five times (each a wake-up of the server's process, costly on busy cores)
    with conn.pipeline(), conn.transaction():
        conn.execute(sql.SQL("SELECT {}").format(settings_sql))
        return conn.execute(statement, params, binary=True, prepare=prepare).fetchall()


def vector_hits(
    plan: Plan,
    shape: IndexShape,
    table_name: str,
    where: list[sql.Composable],
    params: dict[str, Any],
    filtered: bool,
) -> tuple[sql.Composable, dict[str, Any]]:
    """Every row of the plan's candidates (all that pass `where` without a pool) with `d`, its
    distance to %(q)s (a video's: its nearest frame's), that frame's `second`, and `best`, the
    embedding that distance is to; and the parameters that takes."""
    table, frames = sql.Identifier(table_name), sql.Identifier(table_name + "_frames")
    conditions = sql.SQL(" AND ").join(where)
    candidates: sql.Composable = sql.SQL("")
    if plan.pool is not None:
        # a video may fill several of the frame index's places, hence more frames than items;
        # filtered, a frame counts only if its video passes (the iterative scan walks on past
        # those that do not)
        frame_filter: sql.Composable = sql.SQL("")
        if filtered:
            frame_filter = sql.SQL(" WHERE EXISTS (SELECT 1 FROM {table} WHERE {table}.id = f.id AND {where})").format(
                table=table, where=conditions
            )
        candidates = sql.SQL(
            " AND id IN ((SELECT id FROM {table} WHERE {where} ORDER BY {item_d} LIMIT {pool}) "
            "UNION (SELECT f.id FROM {frames} f{frame_filter} ORDER BY {frame_d} LIMIT {frames_pool}))"
        ).format(
            table=table,
            frames=frames,
            where=conditions,
            item_d=sql.SQL(shape.distance("embedding")),
            frame_d=sql.SQL(shape.distance("f.embedding")),
            frame_filter=frame_filter,
            pool=sql.Literal(plan.pool),
            frames_pool=sql.Literal(2 * plan.pool),
        )
    hits = sql.SQL(
        "SELECT i.*, LEAST(i.embedding <=> %(q)s, f.d) AS d, f.second, "
        "CASE WHEN f.d < (i.embedding <=> %(q)s) THEN f.embedding ELSE i.embedding END AS best "
        "FROM {table} i LEFT JOIN LATERAL (SELECT embedding <=> %(q)s AS d, second, embedding FROM {frames} "
        "WHERE {frames}.id = i.id AND i.kind = 'video' ORDER BY 1 LIMIT 1) f ON true "
        "WHERE {where}{candidates}"
    ).format(table=table, frames=frames, where=conditions, candidates=candidates)
    return hits, params
