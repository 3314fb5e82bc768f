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

Negative terms steer the text side too: a picture whose words say every word of a negative term
(as whole words, `core.store.text_index.says_any`) is *spoken against*. It comes after every
other candidate, ranked by its looks alone (no text rank), and `api.relevance.judged_level` never
calls it strong. Since "after every other" means every other of the collection, a page that reaches
those pictures while others lie beyond the index's pool asks for a pool twice as deep, up to
ranking every row that passes the filters.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import psycopg
from psycopg import sql

from api.query import Term
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
from core.store.text_index import (
    OCR_TABLE,
    WORDS_COLUMN,
    Word,
    any_word_in,
    holds_all,
    matching_ids,
    says_any,
    word_in,
    words_of,
)
from core.store.vector_index import IndexShape, index_shape

RRF_K = 60
TEXT_WEIGHT = 2.0  # against the vector ranking's 1
FIELDS = ("name", "keywords", "title", "description", "ocr")
# words a plain query carries that say nothing about a picture's text ("a dog on the beach")
STOPWORDS = frozenset("a an and the of on in at to for with by from or is are it its this that these those".split())


def plain_words(texts: Sequence[str]) -> tuple[str, ...]:
    """The words of a plain query the text side looks for: each once, without the little ones."""
    return tuple(dict.fromkeys(w for t in texts for w in words_of(t) if w not in STOPWORDS))


def against_words(terms: Sequence[Term], people: Sequence[str] = ()) -> tuple[tuple[str, ...], ...]:
    """What the query steers away from, as words, a group per negative term: the words of each
    term after `-` (without the little ones: "- a red car" is red and car), and each name after
    `-person:`. A picture that says every word of a group is spoken against (`says_any`)."""
    texts = [t.text for t in terms if t.text is not None and t.weight < 0] + list(people)
    groups = (plain_words([text]) for text in texts)
    return tuple(dict.fromkeys(g for g in groups if g))


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
    against: bool = False  # its own words say what a negative term steers away from


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
    against: Sequence[Sequence[str]] = (),
) -> tuple[list[Found], bool]:
    """The page of the fused ranking of `vector` (None: the text ranking alone) and `words`, and
    whether more follow. `unwanted_ids` (the query's "less like this" examples) are ranked by
    appearance alone: their words do not lift them. `against`: the words of the query's negative
    terms, a group per term; a picture that says every word of a group (`says_any`) comes after
    every picture that says none, ranked by its looks alone."""
    check_page(limit, offset)
    table = model_table(model)
    shape = index_shape(conn, table)
    where, params = search_where(model, filters, exclude_ids, shape.trigram)
    params["unwanted"] = list(unwanted_ids)
    wanted = offset + limit + 1
    params.update(n=limit + 1, skip=offset, text_pool=candidate_pool(wanted, ef_search) or MAX_POOL)
    plan = Plan(None)
    groups = [g for g in against if g]
    visual = vector is not None
    if vector is not None:
        params["q"] = vector.astype(np.float32)
        conditions = sql.SQL(" AND ").join(where)
        kw: dict[str, Any] = {"ef_search": ef_search, "filtered": filters.any}
        plan = plan_search(conn, table, shape, conditions, params, wanted=wanted, **kw)
    rows = run_planned(conn, plan, *_fused_sql(plan, table, shape, where, params, words, groups, filters.any, visual))
    while plan.pool is not None and any(r[-1] for r in rows[:limit]):
        # the page reaches the pictures a negative term speaks against while pictures it does not
        # speak against lie beyond the pool, and those come first: a pool twice as deep, up to
        # ranking every row that passes the filters (the pool's depth does not change the order of
        # the pictures it holds, so pages still continue each other)
        plan = plan_search(conn, table, shape, conditions, params, wanted=min(2 * plan.pool, MAX_POOL + 1), **kw)
        rows = run_planned(conn, plan, *_fused_sql(plan, table, shape, where, params, words, groups, filters.any, True))
    if plan.pool is not None and len(rows) <= limit:
        # a short page: the filters pass fewer rows than the index walk reached (`api.search`)
        rows = run_planned(conn, Plan(None), *_fused_sql(Plan(None), table, shape, where, params, words, groups,
                                                          filters.any, True))  # fmt: skip
    found = [_found(row, words, with_vectors, bool(filters.has_text)) for row in rows[:limit]]
    return found, len(rows) > limit


def _fused_sql(
    plan: Plan,
    table_name: str,
    shape: IndexShape,
    where: list[sql.Composable],
    params: dict[str, Any],
    words: Sequence[str],
    against: Sequence[Sequence[str]],
    filtered: bool,
    visual: bool,
) -> tuple[sql.Composed, dict[str, Any]]:
    table, ocr = sql.Identifier(table_name), sql.Identifier(OCR_TABLE)
    ctes: list[sql.Composable] = []
    if visual:
        hits, params = vector_hits(plan, shape, table_name, where, params, filtered)
        ctes.append(
            sql.SQL(
                "v AS MATERIALIZED (SELECT id, content_hash, {words}, row_number() OVER (ORDER BY d, id) AS r "
                "FROM ({hits}) hit)"
            ).format(words=sql.Identifier(WORDS_COLUMN), hits=hits)
        )
    ctes += _text_ranking(table_name, shape, where, words, visual, params["text_pool"])
    said_against: sql.Composable = sql.SQL("false")
    beyond: sql.Composable = sql.SQL("false")
    if against:
        ctes.append(_spoken_against(table_name, against, visual))
        said_against = sql.SQL("id IN (SELECT id FROM n)")
    if against and visual and plan.pool is not None:
        # whether a picture no negative term speaks against lies beyond the candidates: asked
        # only once a page reaches those spoken against (an InitPlan runs on its first use), and
        # answered at the first such row
        beyond = sql.SQL(
            "CASE WHEN page.against THEN EXISTS (SELECT 1 FROM {t} WHERE {where} AND id NOT IN (SELECT id FROM v) "
            "AND id NOT IN (SELECT id FROM tr) AND NOT {says}) ELSE false END"
        ).format(
            t=table,
            where=sql.SQL(" AND ").join(where),
            says=says_any(sql.SQL("{}.{}").format(table, sql.Identifier(WORDS_COLUMN)),
                          sql.SQL("{}.content_hash").format(table), against),
        )  # fmt: skip
    if visual:
        # what a negative term speaks against comes last, ranked by its looks: its words lift it not
        fused = sql.SQL(
            "SELECT page_id, against, COALESCE(1.0 / ({k} + vr), 0) "
            "+ CASE WHEN against THEN 0 ELSE COALESCE({w} / ({k} + trr), 0) END AS fused, "
            "CASE WHEN against THEN NULL ELSE trr END AS text_rank "
            "FROM (SELECT id AS page_id, v.r AS vr, tr.r AS trr, {said} AS against FROM v FULL JOIN tr USING (id)) c"
        )
    else:
        fused = sql.SQL(
            "SELECT page_id, against, {w} / ({k} + trr) AS fused, trr AS text_rank "
            "FROM (SELECT id AS page_id, tr.r AS trr, {said} AS against FROM tr) c"
        )
    ctes.append(
        sql.SQL("page AS ({} ORDER BY against, fused DESC, page_id LIMIT %(n)s OFFSET %(skip)s)").format(
            fused.format(k=sql.Literal(RRF_K), w=sql.Literal(TEXT_WEIGHT), said=said_against)
        )
    )
    if visual:
        shown, _ = vector_hits(Plan(None), shape, table_name, [sql.SQL("id IN (SELECT page_id FROM page)")], {}, False)
        source = sql.SQL("({}) hit").format(shown)
        nearness = sql.SQL("1 - hit.d, hit.second, hit.best")
    else:
        source = sql.SQL("{} hit").format(table)
        nearness = sql.SQL("NULL::float8, NULL::float8, NULL::vector")
    fields: sql.Composable = sql.SQL(", ").join([sql.SQL("NULL::text[]")] * len(FIELDS))
    lines: sql.Composable = sql.SQL("NULL::jsonb")
    if words:
        fields, lines = _field_words(words, shape.trigram), _matched_lines(words, shape.trigram)
    query = sql.SQL(
        "WITH {ctes} SELECT {cols}, {nearness}, page.text_rank, {fields}, {lines}, page.against, {beyond} "
        "FROM page JOIN {source} ON hit.id = page.page_id LEFT JOIN {ocr} p ON p.content_hash = hit.content_hash "
        "ORDER BY page.against, page.fused DESC, page.page_id"
    ).format(
        ctes=sql.SQL(", ").join(ctes),
        cols=COLUMNS,
        nearness=nearness,
        source=source,
        ocr=ocr,
        fields=fields,
        lines=lines,
        beyond=beyond,
    )
    return query, params


def _spoken_against(table_name: str, against: Sequence[Sequence[str]], visual: bool) -> sql.Composable:
    """`n`: the candidates (visual and text) whose words say every word of a negative term."""
    own = sql.Identifier(WORDS_COLUMN)
    found = sql.SQL("SELECT i.id FROM tr JOIN {} i ON i.id = tr.id WHERE {}").format(
        sql.Identifier(table_name), says_any(sql.SQL("i.{}").format(own), sql.SQL("i.content_hash"), against)
    )
    if visual:
        in_view = says_any(sql.SQL("v.{}").format(own), sql.SQL("v.content_hash"), against)
        found = sql.SQL("SELECT v.id FROM v WHERE {} UNION {}").format(in_view, found)
    return sql.SQL("n AS MATERIALIZED ({})").format(found)


def _text_ranking(
    table_name: str, shape: IndexShape, where: list[sql.Composable], words: Sequence[str], visual: bool, text_pool: int
) -> list[sql.Composable]:
    """`tr`: the text matches (id) and their text ranks (r); none without words."""
    if not words:  # a query whose only words are those to steer away from
        return [sql.SQL("tr AS (SELECT NULL::bigint AS id, NULL::bigint AS r WHERE false)")]
    table, ocr = sql.Identifier(table_name), sql.Identifier(OCR_TABLE)
    both = sql.SQL("concat_ws(' ', i.{}, p.text)").format(sql.Identifier(WORDS_COLUMN))
    rank = sql.SQL("ts_rank_cd(to_tsvector('simple', {both}), to_tsquery('simple', {any}))").format(
        both=both, any=Word(" | ".join(words))
    )
    if shape.trigram:
        rank = sql.SQL("{} + word_similarity({}, {})").format(rank, Word(" ".join(words)), both)
    conditions = sql.SQL(" AND ").join(where)
    # the LIMIT written in, as the pools' are (`api.search_plan.run_planned`)
    ids = matching_ids(table_name, words, shape.trigram, conditions, sql.Literal(text_pool))
    if visual:
        # the visual candidates that say the words are text matches too, whether or not the
        # text side's first finds reached them
        # (its text looked up row by row: joined, the planner read the whole table of texts)
        ids = sql.SQL(
            "{} UNION SELECT v.id FROM v LEFT JOIN LATERAL "
            "(SELECT text FROM {} WHERE content_hash = v.content_hash OFFSET 0) p ON true WHERE {}"
        ).format(ids, ocr, holds_all(words, shape.trigram, row="v"))
    return [
        sql.SQL(
            "t AS MATERIALIZED (SELECT i.id, {rank} AS rank FROM {table} i LEFT JOIN {ocr} p "
            "ON p.content_hash = i.content_hash WHERE i.id IN ({ids}) AND i.id <> ALL(%(unwanted)s::bigint[]))"
        ).format(rank=rank, table=table, ocr=ocr, ids=ids),
        # equal texts share a rank, so the visual ranking orders them
        sql.SQL("tr AS (SELECT id, rank() OVER (ORDER BY rank DESC) AS r FROM t)"),
    ]


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
            sql.SQL("CASE WHEN {} THEN {} END").format(word_in(bodies[field], w, trigram, fuzzy=fuzzy), Word(w))
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
    lines, against = row[n + 4 + len(FIELDS)], bool(row[n + 5 + len(FIELDS)])
    record = record_of(
        row[:n],
        None if score is None else float(score),
        best if with_vectors else None,
        None if second is None else float(second),
    )
    if text_rank is None and not required:
        return Found(record, None, against)
    matched = {w for found in per_field.values() for w in found or ()}
    match = TextMatch(
        words=tuple(w for w in words if w in matched),
        where=tuple(f for f in FIELDS if per_field[f]),
        lines=tuple(lines or ()),
    )
    return Found(record, match, against)
