"""The one path from a search to its answer, for the HTTP API and the command line alike.

    parse the query → resolve image terms → embed → query the index (and the text side,
    fused: `api.text_search`) → judge relevance → page        (→ sort by date, `api.by_date`)

Every form of search (`GET /api/search?q=`, the structured `POST /api/search`, an uploaded example,
"similar to this image", `python main.py search`) becomes one `Ask` and goes through `answer`.
Along the path `model` is always a model's name and `embedder` the loaded model that embeds with it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta
from typing import Any, Protocol

import numpy as np
import psycopg

from api.bounds import MAX_WEIGHT, MIN_WEIGHT
from api.by_date import DateOrder, by_date, check_sort
from api.people import named_people, with_people
from api.places import PlaceCache, PlaceIndex, lazy_places, match_places, place_cache
from api.query import ParsedQuery, QueryError, Term, parse_query
from api.relevance import LEVELS, STRONG, Judges, at_least, judged_level
from api.search import (
    MAX_LIMIT,
    FolderCache,
    ImageRecord,
    SearchFilters,
    browse_newest,
    check_page,
    embeddings_of,
    folder_cache,
    list_folders,
    parse_folder,
    search_by_vector,
)
from api.text_search import Found, against_words, filter_words, plain_words, search_fused
from core.errors import BadRequest, NotFound, UserError
from core.models.embedder import Embedder
from core.settings import Settings
from core.store.freshness import stamp_once

# With min_match, results are judged in ranking order, in chunks, up to this many; a level is not
# monotonic in the score, but past the best thousand by score a strong match is very unlikely.
MIN_MATCH_SCAN = 1000


@dataclass(frozen=True)
class Upload:
    """An example picture that is not in the index, already embedded."""

    vector: np.ndarray
    weight: float
    name: str


@dataclass(frozen=True)
class Ask:
    """One search, however it was asked. `q` is read with the query language; `terms` are taken
    as they are (the structured form); `similar_to` asks for the images most like an indexed one."""

    q: str = ""
    terms: tuple[Term, ...] = ()
    similar_to: int | None = None
    uploads: tuple[Upload, ...] = ()
    filters: SearchFilters = field(default_factory=SearchFilters)
    limit: int = 40
    offset: int = 0
    min_match: str | None = None
    sort: str | None = None  # "date", or relevance (the default)
    order: str | None = None  # with sort=date: newest (the default) or oldest
    echo: Any = None  # how the answer's `query` field repeats the question


class SearchContext(Protocol):
    """What answering needs from whoever asks: the server's pool, or the CLI's one connection."""

    settings: Settings
    folders: FolderCache
    places: PlaceCache
    judges: Judges

    def connection(self) -> AbstractContextManager[psycopg.Connection[Any]]: ...

    def embedder(self) -> Embedder: ...


class OneConnection:
    """A `SearchContext` over one open connection and one embedder (the command line's)."""

    def __init__(self, conn: psycopg.Connection[Any], embedder: Embedder, settings: Settings) -> None:
        self._conn = conn
        self._embedder = embedder
        self.settings = settings
        self.folders = folder_cache()
        self.places = place_cache()
        self.judges = Judges()

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        yield self._conn

    def embedder(self) -> Embedder:
        return self._embedder


class UnknownImage(BadRequest):
    def __init__(self, index: int, term: Term) -> None:
        self.index = index
        self.term = term
        super().__init__(f"unknown image id {term.image_id}")


def check_min_match(value: str | None) -> str | None:
    if value is None or not value.strip():
        return None
    level = value.strip().lower()
    if level not in LEVELS:
        raise BadRequest(f"min_match={value!r} is not a level: expected one of strong, weak, none")
    return level


def check_weight(weight: float, name: str) -> None:
    if not MIN_WEIGHT <= abs(weight) <= MAX_WEIGHT:  # NaN too
        expected = f"{MIN_WEIGHT:g} to {MAX_WEIGHT:g}, or -{MAX_WEIGHT:g} to -{MIN_WEIGHT:g}"
        raise BadRequest(f"{name}: a weight of {weight:g}: expected {expected}")


def answer(ctx: SearchContext, ask: Ask) -> dict[str, Any]:
    """The page of results for `ask`, with how it was understood."""
    level = check_min_match(ask.min_match)
    order = check_sort(ask.sort, ask.order)
    check_page(ask.limit)
    for i, term in enumerate(ask.terms):
        check_weight(term.weight, f"terms.{i}")
    for upload in ask.uploads:
        check_weight(upload.weight, "image_weight")
    embedder = ctx.embedder()
    parsed = None
    filters = ask.filters
    if ask.q.strip() or filters.place:
        with ctx.connection() as conn:
            stamp = stamp_once(conn)
            places = lazy_places(conn, embedder.name, ctx.places, stamp)
            parsed = (
                parse(ask.q, conn, embedder.name, ctx.folders, places=places, stamp_of=stamp) if ask.q.strip() else None
            )
            filters = with_places(filters, parsed, places)
    terms = list(parsed.terms) if parsed else [*ask.terms]
    if ask.similar_to is not None:
        terms.append(Term(1.0, image_id=ask.similar_to))
    filters = with_query_filters(filters, parsed) if parsed else filters
    # the text tower runs while no database connection is held: under load, requests would
    # otherwise hold every pooled connection while they wait for the model
    for term in terms:
        if term.text is not None:
            embedder.embed_text(term.text)
    with ctx.connection() as conn:
        against = against_words(terms, [p.name for p in parsed.people if p.exclude] if parsed else [])
        try:
            results, more = ranked_page(conn, ctx, embedder, terms, filters, ask, level, order, against)
        except UnknownImage as exc:
            raise _unknown_image(ask, exc) from None
        with_people(conn, results)
    page: dict[str, Any] = {"query": ask.echo}
    if ask.similar_to is None:
        page["understood"] = _understood(parsed, terms, ask.uploads)
    page["sort"] = {"by": "date", "order": order.name} if order else {"by": "relevance"}
    return {**page, "results": results, "limit": ask.limit, "offset": ask.offset, "has_more": more}


def ranked_page(
    conn: psycopg.Connection[Any],
    ctx: SearchContext,
    embedder: Embedder,
    terms: Sequence[Term],
    filters: SearchFilters,
    ask: Ask,
    min_match: str | None,
    order: DateOrder | None = None,
    against: Sequence[Sequence[str]] = (),
) -> tuple[list[dict[str, Any]], bool]:
    """The page of results (API objects with `match` and `relevance`) and whether more follow;
    with `order`, every match at `min_match` or above (strong unless said), by date. `against`:
    the words of the negative terms, a group per term (`api.text_search.against_words`)."""
    model = embedder.name
    words = ranked_words(terms, filters)
    stored = embeddings_of(conn, [t.image_id for t in terms if t.image_id is not None], model)
    parts: list[tuple[np.ndarray, float, bool]] = []
    for i, term in enumerate(terms):
        if term.image_id is not None:
            if term.image_id not in stored:
                raise UnknownImage(i, term)
            parts.append((stored[term.image_id], term.weight, True))
        else:
            assert term.text is not None
            parts.append((embedder.embed_text(term.text), term.weight, False))
    parts += [(u.vector, u.weight, True) for u in ask.uploads]
    # an image asked for by example would otherwise be its own best match
    excluded = [t.image_id for t in terms if t.image_id is not None and t.weight > 0]
    unwanted = [t.image_id for t in terms if t.image_id is not None and t.weight < 0]

    if not parts and not words:  # only dates, folders, places and -text: every image that meets them
        oldest = order is not None and order.oldest_first
        hits, more = browse_newest(
            conn,
            model=model,
            limit=ask.limit,
            offset=ask.offset,
            filters=filters,
            exclude_ids=excluded,
            oldest_first=oldest,
        )
        return [{**h.as_json(), "match": STRONG, "relevance": None} for h in hits], more

    vector = query_vector(parts) if parts else None
    steered = any(weight < 0 for _, weight, _ in parts)  # a cosine below zero: nearer what it steers from
    judge = ctx.judges.for_embedder(embedder)
    judging = judge.judging_vector(parts) if parts else None

    def found(at: int, n: int) -> tuple[list[Found], bool]:
        common: dict[str, Any] = {"model": model, "limit": n, "offset": at, "filters": filters}
        common.update(exclude_ids=excluded, ef_search=ctx.settings.search_ef, with_vectors=True)
        if words or against:
            return search_fused(conn, vector, words, unwanted_ids=unwanted, against=against, **common)
        assert vector is not None
        hits, more = search_by_vector(conn, vector, **common)
        return [Found(h, None) for h in hits], more

    def judged(at: int, n: int) -> tuple[list[dict[str, Any]], bool]:
        hits, more = found(at, n)
        out = []
        margins: list[float | None] = [None] * len(hits)  # the text ranking alone: nothing else to judge
        if judging is not None and hits:
            margins = [float(m) for m in judge.margins(judging, np.stack([vector_of(h.record) for h in hits]))]
        for hit, margin in zip(hits, margins):
            said = hit.text_match is not None
            level = judged_level(margin, hit.record.score, said=said, against=hit.against, steered=steered)
            text = None if hit.text_match is None else hit.text_match.as_json()
            relevance = None if margin is None else round(margin, 3)
            out.append({**hit.record.as_json(), "match": level, "relevance": relevance, "text_match": text})
        return out, more

    if order is not None:
        return by_date(judged, min_match or STRONG, order, offset=ask.offset, limit=ask.limit, scan=MIN_MATCH_SCAN)
    if min_match is None:
        return judged(ask.offset, ask.limit)
    passing: list[dict[str, Any]] = []
    scanned, more = 0, True
    while more and len(passing) <= ask.offset + ask.limit and scanned < MIN_MATCH_SCAN:
        chunk, more = judged(scanned, MAX_LIMIT)
        scanned += len(chunk)
        passing += [r for r in chunk if at_least(r["match"], min_match)]
    return passing[ask.offset : ask.offset + ask.limit], len(passing) > ask.offset + ask.limit


def vector_of(hit: ImageRecord) -> np.ndarray:
    assert hit.vector is not None, "searched with_vectors"
    return hit.vector


def parse(
    q: str,
    conn: psycopg.Connection[Any],
    model: str,
    folders: FolderCache,
    today: date | None = None,
    places: Callable[[], PlaceIndex] | None = None,
    stamp_of: Callable[[], datetime | None] | None = None,
) -> ParsedQuery:
    """`q` in the query language; a bare word that names a folder exactly (ignoring case) is that
    folder, and words that name a place of the collection (`api.places`) are that place. The
    folder list is read once, on the first word that asks; `places` gives the places."""
    names: dict[str, str] | None = None

    def folder_named(word: str) -> str | None:
        nonlocal names
        if names is None:
            names = {f["path"].lower(): f["path"] for f in list_folders(conn, model, folders, stamp_of)}
        return names.get(word.strip("/").lower())

    def place_named(words: str) -> str | None:
        entry = places().named(words) if places else None
        return entry.name if entry else None

    known: dict[str, tuple[int, str]] | None = None

    def person_named(words: str) -> tuple[int, str] | None:
        nonlocal known
        if known is None:
            known = named_people(conn)
        return known.get(" ".join(words.split()).lower())

    parsed = parse_query(
        q, today=today or date.today(), folder_named=folder_named, place_named=place_named, person_named=person_named
    )
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
    narrowed = filters.narrowed(after, before, [f for f in folders if f])
    if parsed.people:
        narrowed = replace(
            narrowed,
            people=narrowed.people + tuple(p.person_id for p in parsed.people if not p.exclude),
            without_people=narrowed.without_people + tuple(p.person_id for p in parsed.people if p.exclude),
        )
    if not parsed.texts:
        return narrowed
    wanted = tuple(filter_words(t.text) for t in parsed.texts if not t.exclude)
    unwanted = tuple(filter_words(t.text) for t in parsed.texts if t.exclude)
    return replace(narrowed, has_text=narrowed.has_text + wanted, lacks_text=narrowed.lacks_text + unwanted)


def ranked_words(terms: Sequence[Term], filters: SearchFilters) -> tuple[str, ...]:
    """The words the text side ranks by: those of the plain words for the model (not of terms to
    steer away from) and of the `text:` filters; none for a search by example alone."""
    plain = plain_words([t.text for t in terms if t.text is not None and t.weight > 0])
    return tuple(dict.fromkeys((*plain, *(w for group in filters.has_text for w in group))))


def with_places(filters: SearchFilters, parsed: ParsedQuery | None, places: Callable[[], PlaceIndex]) -> SearchFilters:
    """`place=` and the query's places as filters: both must hold, if both are given."""
    names = [[filters.place] if filters.place else [], [p.place for p in parsed.places] if parsed else []]
    matches = tuple(match_places(places(), group) for group in names if group)
    return replace(filters, places=filters.places + matches) if matches else filters


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


def _understood(parsed: ParsedQuery | None, terms: Sequence[Term], uploads: Sequence[Upload]) -> dict[str, Any]:
    if parsed is not None:
        understood = parsed.understood()
    else:
        text = " ".join(t.text for t in terms if t.text)
        understood = {"text": text, "terms": [t.as_json() for t in terms], "filters": {}}
    understood["terms"] += [{"upload": u.name, "weight": u.weight} for u in uploads]
    return understood


def _unknown_image(ask: Ask, exc: UnknownImage) -> UserError:
    """Where the unknown id came from decides how the error points at it."""
    if ask.similar_to is not None and exc.term.image_id == ask.similar_to:
        return NotFound(f"No indexed image has id {ask.similar_to}.")
    if ask.q.strip():
        at = ask.q.lower().find("img:", exc.term.start)
        return QueryError(f"unknown image id {exc.term.image_id}", max(at, 0), "the id of an indexed image")
    return BadRequest(f"terms.{exc.index}: unknown image id {exc.term.image_id}: expected the id of an indexed image")
