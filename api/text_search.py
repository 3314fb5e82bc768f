"""One ranked query over pictures and their text: the vector ranking and the text ranking, fused.

The text side finds the pictures whose names, keywords, title, description or OCR text hold every
query word (`core.store.text_index`, through its GIN indexes) and ranks them by

    ts_rank_cd(their words, any query word)  +  word_similarity(the query, their words)

(the second only with pg_trgm): whole words and words close together rank above parts of words.
The two rankings are fused by reciprocal rank fusion in the same SQL statement:

    fused(p) = 1 / (60 + vector rank of p)  +  2 / (60 + text rank of p)

a missing rank adding nothing. The text side counts double, so a picture whose sign says the query
comes before every picture that merely looks like it, as long as fewer than about sixty pictures
say it. Pictures whose texts rank the same share a text rank, so among them the visual ranking
decides; remaining ties go by id. The visual candidates that say the words count as text matches
even when the text side's first finds did not reach them. Both candidate lists have sizes that
depend only on how deep the page is (`api.search_plan.candidate_pool`), so pages continue each
other. Each page row that was found
through text says which words matched, where (`name`, `keywords`, `title`, `description`, `ocr`),
and which OCR lines hold them, with their boxes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import psycopg
from psycopg import sql

from api.search import (
    COLUMN_COUNT,
    COLUMNS,
    ImageRecord,
    SearchFilters,
    check_page,
    record_of,
    search_where,
)
from api.search_plan import MAX_POOL, Plan, candidate_pool, plan_search, run_planned, vector_hits
from core.store.model_state import model_table
from core.store.text_index import OCR_TABLE, WORDS_COLUMN, any_word_in, holds_all, matching_ids, word_in, words_of
from core.store.vector_index import IndexShape, index_shape

RRF_K = 60
TEXT_WEIGHT = 2.0  # against the vector ranking's 1
FIELDS = ("name", "keywords", "title", "description", "ocr")
# words a plain query carries that say nothing about a picture's text ("a dog on the beach")
STOPWORDS = frozenset("a an and the of on in at to for with by from or is are it its this that these those".split())


def plain_words(texts: Sequence[str]) -> tuple[str, ...]:
    """The words of a plain query the text side looks for: each once, without the little ones."""
    return tuple(dict.fromkeys(w for t in texts for w in words_of(t) if w not in STOPWORDS))


def filter_words(text: str) -> tuple[str, ...]:
    """The words of a `text:` filter: every one, as typed (it asks for exactly these)."""
    return tuple(dict.fromkeys(words_of(text)))


@dataclass(frozen=True)
class TextMatch:
    words: tuple[str, ...]
    where: tuple[str, ...]  # of FIELDS
    lines: tuple[dict[str, Any], ...]  # OCR lines holding a word: {"text", "box"}

    def as_json(self) -> dict[str, Any]:
        return {"words": list(self.words), "where": list(self.where), "lines": list(self.lines)}


@dataclass(frozen=True)
class Found:
    record: ImageRecord
    text_match: TextMatch | None


def search_fused(
    conn: psycopg.Connection[Any],
    vector: np.ndarray | None,
    words: Sequence[str],
    *,
    model: str,
    limit: int,
    offset: int = 0,
    filters: SearchFilters = SearchFilters(),
    exclude_ids: Sequence[int] = (),
    ef_search: int = 100,
    with_vectors: bool = False,
    unwanted_ids: Sequence[int] = (),
) -> tuple[list[Found], bool]:
    """The page of the fused ranking of `vector` (None: the text ranking alone) and `words`
    (non-empty), and whether more follow. `unwanted_ids` (the query's "less like this" examples)
    are ranked by appearance alone: their words do not lift them."""
    check_page(limit, offset)
    table = model_table(model)
    shape = index_shape(conn, table)
    where, params = search_where(model, filters, exclude_ids, shape.trigram)
    params["unwanted"] = list(unwanted_ids)
    wanted = offset + limit + 1
    params.update(n=limit + 1, skip=offset, text_pool=candidate_pool(wanted, ef_search) or MAX_POOL)
    plan = Plan(None)
    if vector is not None:
        params["q"] = vector.astype(np.float32)
        conditions = sql.SQL(" AND ").join(where)
        kw: dict[str, Any] = {"wanted": wanted, "ef_search": ef_search, "filtered": filters.any}
        plan = plan_search(conn, table, shape, conditions, params, **kw)
    query, params = _fused_sql(plan, table, shape, where, params, words, filters.any, vector is not None)
    rows = run_planned(conn, plan, query, params)
    if vector is not None and plan.pool is not None and len(rows) <= limit:
        # a short page: the filters pass fewer rows than the index walk reached (`api.search`)
        query, params = _fused_sql(Plan(None), table, shape, where, params, words, filters.any, True)
        rows = run_planned(conn, Plan(None), query, params)
    found = [_found(row, words, with_vectors, bool(filters.has_text)) for row in rows[:limit]]
    return found, len(rows) > limit


def _fused_sql(
    plan: Plan,
    table_name: str,
    shape: IndexShape,
    where: list[sql.Composable],
    params: dict[str, Any],
    words: Sequence[str],
    filtered: bool,
    visual: bool,
) -> tuple[sql.Composed, dict[str, Any]]:
    table, ocr = sql.Identifier(table_name), sql.Identifier(OCR_TABLE)
    conditions = sql.SQL(" AND ").join(where)
    both = sql.SQL("concat_ws(' ', i.{}, p.text)").format(sql.Identifier(WORDS_COLUMN))
    rank = sql.SQL("ts_rank_cd(to_tsvector('simple', {both}), to_tsquery('simple', {any}))").format(
        both=both, any=sql.Literal(" | ".join(words))
    )
    if shape.trigram:
        rank = sql.SQL("{} + word_similarity({}, {})").format(rank, sql.Literal(" ".join(words)), both)
    ids = matching_ids(table_name, words, shape.trigram, conditions, sql.SQL("%(text_pool)s"))
    ctes: list[sql.Composable] = []
    if visual:
        hits, params = vector_hits(plan, shape, table_name, where, params, filtered)
        ctes.append(
            sql.SQL(
                "v AS MATERIALIZED (SELECT id, content_hash, {words}, row_number() OVER (ORDER BY d, id) AS r "
                "FROM ({hits}) hit)"
            ).format(words=sql.Identifier(WORDS_COLUMN), hits=hits)
        )
        # the visual candidates that say the words are text matches too, whether or not the
        # text side's first finds reached them
        # (its text looked up row by row: joined, the planner read the whole table of texts)
        ids = sql.SQL(
            "{} UNION SELECT v.id FROM v LEFT JOIN LATERAL "
            "(SELECT text FROM {} WHERE content_hash = v.content_hash OFFSET 0) p ON true WHERE {}"
        ).format(ids, ocr, holds_all(words, shape.trigram, row="v"))
    ctes += [
        sql.SQL(
            "t AS MATERIALIZED (SELECT i.id, {rank} AS rank FROM {table} i LEFT JOIN {ocr} p "
            "ON p.content_hash = i.content_hash WHERE i.id IN ({ids}) AND i.id <> ALL(%(unwanted)s::bigint[]))"
        ).format(rank=rank, table=table, ocr=ocr, ids=ids),
        # equal texts share a rank, so the visual ranking orders them
        sql.SQL("tr AS (SELECT id, rank() OVER (ORDER BY rank DESC) AS r FROM t)"),
    ]
    if visual:
        fused = sql.SQL(
            "SELECT id AS page_id, COALESCE(1.0 / ({k} + v.r), 0) + COALESCE({w} / ({k} + tr.r), 0) AS fused, "
            "tr.r AS text_rank FROM v FULL JOIN tr USING (id)"
        )
    else:
        fused = sql.SQL("SELECT id AS page_id, {w} / ({k} + tr.r) AS fused, tr.r AS text_rank FROM tr")
    ctes.append(
        sql.SQL("page AS ({} ORDER BY fused DESC, page_id LIMIT %(n)s OFFSET %(skip)s)").format(
            fused.format(k=sql.Literal(RRF_K), w=sql.Literal(TEXT_WEIGHT))
        )
    )
    if visual:
        shown, _ = vector_hits(Plan(None), shape, table_name, [sql.SQL("id IN (SELECT page_id FROM page)")], {}, False)
        source = sql.SQL("({}) hit").format(shown)
        nearness = sql.SQL("1 - hit.d, hit.second, hit.best")
    else:
        source = sql.SQL("{} hit").format(table)
        nearness = sql.SQL("NULL::float8, NULL::float8, NULL::vector")
    query = sql.SQL(
        "WITH {ctes} SELECT {cols}, {nearness}, page.text_rank, {fields}, {lines} "
        "FROM page JOIN {source} ON hit.id = page.page_id LEFT JOIN {ocr} p ON p.content_hash = hit.content_hash "
        "ORDER BY page.fused DESC, page.page_id"
    ).format(
        ctes=sql.SQL(", ").join(ctes),
        cols=COLUMNS,
        nearness=nearness,
        source=source,
        ocr=ocr,
        fields=_field_words(words, shape.trigram),
        lines=_matched_lines(words, shape.trigram),
    )
    return query, params


def _field_words(words: Sequence[str], trigram: bool) -> sql.Composable:
    """For each of FIELDS, the words found in it, as text[]."""
    bodies = {
        "name": sql.SQL("regexp_replace(hit.path, '[^[:alnum:]]+', ' ', 'g')"),
        "keywords": sql.SQL("array_to_string(hit.keywords, ' ')"),
        "title": sql.SQL("hit.title"),
        "description": sql.SQL("hit.description"),
        "ocr": sql.SQL("p.text"),
    }
    arrays = []
    for field in FIELDS:
        fuzzy = field == "ocr"
        cases = sql.SQL(", ").join(
            sql.SQL("CASE WHEN {} THEN {} END").format(word_in(bodies[field], w, trigram, fuzzy=fuzzy), sql.Literal(w))
            for w in words
        )
        arrays.append(sql.SQL("array_remove(ARRAY[{}]::text[], NULL)").format(cases))
    return sql.SQL(", ").join(arrays)


def _matched_lines(words: Sequence[str], trigram: bool) -> sql.Composable:
    line = sql.SQL("(l->>'text')")
    return sql.SQL(
        "(SELECT jsonb_agg(jsonb_build_object('text', l->'text', 'box', l->'box')) "
        "FROM jsonb_array_elements(p.lines) l WHERE {})"
    ).format(any_word_in(line, words, trigram, fuzzy=True))


def _found(row: tuple[Any, ...], words: Sequence[str], with_vectors: bool, required: bool) -> Found:
    n = COLUMN_COUNT
    score, second, best, text_rank = row[n : n + 4]
    per_field = dict(zip(FIELDS, row[n + 4 : n + 4 + len(FIELDS)]))
    lines = row[n + 4 + len(FIELDS)]
    record = record_of(
        row[:n],
        None if score is None else float(score),
        best if with_vectors else None,
        None if second is None else float(second),
    )
    if text_rank is None and not required:
        return Found(record, None)
    matched = {w for found in per_field.values() for w in found or ()}
    match = TextMatch(
        words=tuple(w for w in words if w in matched),
        where=tuple(f for f in FIELDS if per_field[f]),
        lines=tuple(lines or ()),
    )
    return Found(record, match)
