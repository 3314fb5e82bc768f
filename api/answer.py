"""Answering a query, the same way for the API and the CLI: terms → one vector, the search, a
relevance judgement for each result, and the page with how the query was understood."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

import numpy as np
import psycopg

from api.query import ParsedQuery, QueryError, Term, parse_query
from api.relevance import LEVELS, STRONG, at_least, judge_for, level_of
from api.search import (
    MAX_LIMIT,
    BadRequest,
    SearchFilters,
    browse_newest,
    embeddings_of,
    list_folders,
    parse_folder,
    search_by_vector,
)

# With min_match, results are judged in ranking order, in chunks, up to this many; a level is not
# monotonic in the score, but past the best thousand by score a strong match is very unlikely.
MIN_MATCH_SCAN = 1000


class UnknownImage(BadRequest):
    def __init__(self, index: int, term: Term) -> None:
        self.index = index
        self.term = term
        super().__init__(f"unknown image id {term.image_id}")


@dataclass(frozen=True)
class Upload:
    vector: np.ndarray
    weight: float
    name: str


def check_min_match(value: str | None) -> str | None:
    if value is None or not value.strip():
        return None
    level = value.strip().lower()
    if level not in LEVELS:
        raise BadRequest(f"min_match={value!r} is not a level: expected one of strong, weak, none")
    return level


def folder_lookup(conn: psycopg.Connection[Any], model: str) -> Callable[[str], str | None]:
    """Which subfolder a bare word names exactly (ignoring case); the folder list is read once,
    on the first word that asks, and only for this query."""
    names: dict[str, str] | None = None

    def named(word: str) -> str | None:
        nonlocal names
        if names is None:
            names = {f["path"].lower(): f["path"] for f in list_folders(conn, model)}
        return names.get(word.strip("/").lower())

    return named


def parse(q: str, conn: psycopg.Connection[Any], model: str, today: date | None = None) -> ParsedQuery:
    parsed = parse_query(q, today=today or date.today(), folder_named=folder_lookup(conn, model))
    for f in parsed.folders:
        try:
            parse_folder(f.folder)
        except BadRequest:
            raise QueryError(f"folder {f.words!r}", f.start, "a subfolder of IMAGE_DIR, without '..'") from None
    return parsed


def with_query_filters(filters: SearchFilters, parsed: ParsedQuery) -> SearchFilters:
    span = parsed.date_span
    after = datetime.combine(span[0], time()) if span else None
    before = datetime.combine(span[1] + timedelta(days=1), time()) if span else None  # exclusive
    folders = [parse_folder(f.folder) or "" for f in parsed.folders]
    return filters.narrowed(after, before, [f for f in folders if f])


def query_vector(parts: Sequence[tuple[np.ndarray, float, bool]]) -> np.ndarray:
    """The normalised weighted sum of the terms' unit vectors. A single term keeps its embedding
    as it is, so a plain query searches exactly as it always did."""
    if len(parts) == 1 and parts[0][1] > 0:
        return parts[0][0]
    total = np.sum([w * v.astype(np.float64) for v, w, _ in parts], axis=0)
    norm = float(np.linalg.norm(total))
    if norm < 1e-6:
        raise BadRequest("q: the terms cancel each other out: expected terms that leave something to look for")
    return (total / norm).astype(np.float32)


def answer(
    conn: psycopg.Connection[Any],
    model: Any,
    terms: Sequence[Term],
    filters: SearchFilters,
    *,
    limit: int,
    offset: int,
    min_match: str | None = None,
    ef_search: int = 100,
    uploads: Sequence[Upload] = (),
    exclude_ids: Sequence[int] = (),
) -> tuple[list[dict[str, Any]], bool]:
    """The page of results (API objects with `match` and `relevance`) and whether more follow."""
    if not 1 <= limit <= MAX_LIMIT:
        raise BadRequest(f"limit must be between 1 and {MAX_LIMIT}")
    stored = embeddings_of(conn, [t.image_id for t in terms if t.image_id is not None], model.name)
    parts: list[tuple[np.ndarray, float, bool]] = []
    for i, term in enumerate(terms):
        if term.image_id is not None:
            if term.image_id not in stored:
                raise UnknownImage(i, term)
            parts.append((stored[term.image_id], term.weight, True))
        else:
            assert term.text is not None
            parts.append((model.embed_text(term.text), term.weight, False))
    parts += [(u.vector, u.weight, True) for u in uploads]
    # an image asked for by example would otherwise be its own best match
    excluded = [*exclude_ids, *(t.image_id for t in terms if t.image_id is not None and t.weight > 0)]

    if not parts:  # only dates and folders: every image that meets them, newest first
        hits, more = browse_newest(
            conn, model=model.name, limit=limit, offset=offset, filters=filters, exclude_ids=excluded
        )
        return [{**h.as_json(), "match": STRONG, "relevance": None} for h in hits], more

    vector = query_vector(parts)
    judge = judge_for(model)
    judging = judge.judging_vector(parts)

    def judged(at: int, n: int) -> tuple[list[dict[str, Any]], bool]:
        hits, more = search_by_vector(
            conn,
            vector,
            model=model.name,
            limit=n,
            offset=at,
            filters=filters,
            exclude_ids=excluded,
            ef_search=ef_search,
            with_vectors=True,
        )
        vectors = np.stack([h.vector for h in hits]) if hits else np.zeros((0, len(vector)), np.float32)
        margins = judge.margins(judging, vectors)
        out = [
            {**h.as_json(), "match": level_of(float(m)), "relevance": round(float(m), 3)} for h, m in zip(hits, margins)
        ]
        return out, more

    if min_match is None:
        return judged(offset, limit)
    passing: list[dict[str, Any]] = []
    scanned, more = 0, True
    while more and len(passing) <= offset + limit and scanned < MIN_MATCH_SCAN:
        chunk, more = judged(scanned, MAX_LIMIT)
        scanned += len(chunk)
        passing += [r for r in chunk if at_least(r["match"], min_match)]
    return passing[offset : offset + limit], len(passing) > offset + limit
