"""Searching the `images` table: one parameterised SQL statement per search, ranked by cosine distance.

Pages take their candidates from the HNSW indexes of the items and of the video frames (on
`embedding::halfvec(dim)` where pgvector has it, `core.store.vector_index`) and rank them exactly by
(float32 distance, id). Filters are served by the index with pgvector 0.8's iterative scans; on
older servers, for filters that pass few rows, and past the deepest candidate pool, every row
that passes the filters is ranked instead (`api.search_plan`). Both are deterministic and a pool's
size does not depend on the page, so paging is stable.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta
from typing import Any

import numpy as np
import psycopg
from psycopg import sql

from api.people import people_conditions
from api.places import PlaceMatch, place_conditions
from api.search_plan import Plan, plan_search, run_planned, vector_hits
from core.errors import BadRequest
from core.media.places import Place
from core.store.db import IMAGES_TABLE, database_key
from core.store.freshness import UntilIndexChanges
from core.store.model_state import model_table
from core.store.text_index import text_filter
from core.store.vector_index import IndexShape, index_shape

MAX_LIMIT = 200
# deeper than any collection is long; the database's bigint would hold more, but a page that deep
# is a mistake (or a probe) better answered in one line
MAX_OFFSET = 100_000_000


def check_page(limit: int, offset: int = 0) -> None:
    if not 1 <= limit <= MAX_LIMIT:
        raise BadRequest(f"limit must be between 1 and {MAX_LIMIT}")
    if not 0 <= offset <= MAX_OFFSET:
        raise BadRequest(f"offset must be between 0 and {MAX_OFFSET:,}")


@dataclass(frozen=True)
class SearchFilters:
    folder: str | None = None  # relative to IMAGE_DIR
    taken_after: datetime | None = None  # inclusive
    taken_before: datetime | None = None  # exclusive
    format: str | None = None
    any_folder: tuple[str, ...] = ()  # the query's own folders: an image in any one of them
    place: str | None = None  # a place name as asked (`place=`); `answer` resolves it into `places`
    places: tuple[PlaceMatch, ...] = ()  # each must hold (`api.places`)
    has_text: tuple[tuple[str, ...], ...] = ()  # text:"…": each group's words all in its texts
    lacks_text: tuple[tuple[str, ...], ...] = ()  # -text:"…": not all of each group's words
    people: tuple[int, ...] = ()  # person ids: each must be in the picture
    without_people: tuple[int, ...] = ()  # -person:: none of them may be

    @property
    def any(self) -> bool:
        values = (self.folder, self.taken_after, self.taken_before, self.format)
        return any(v is not None for v in values) or bool(
            self.any_folder or self.places or self.has_text or self.lacks_text or self.people or self.without_people
        )

    def narrowed(
        self, after: datetime | None = None, before: datetime | None = None, folders: Sequence[str] = ()
    ) -> SearchFilters:
        """These filters and the query's own: both date ranges must hold."""
        return replace(
            self,
            taken_after=max((d for d in (self.taken_after, after) if d is not None), default=None),
            taken_before=min((d for d in (self.taken_before, before) if d is not None), default=None),
            any_folder=tuple(dict.fromkeys((*self.any_folder, *folders))),
        )


def parse_folder(raw: str | None) -> str | None:
    if raw is None or not raw.strip("/ "):
        return None
    if "\x00" in raw:
        raise BadRequest("folder must not contain NUL (\\x00) characters")
    parts = [p for p in raw.strip().replace("\\", "/").split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise BadRequest("folder must be a subfolder of IMAGE_DIR, without '..'")
    return "/".join(parts)


def parse_when(raw: str | None, name: str, *, end_of_day: bool) -> datetime | None:
    """An ISO date or date-time. A bare date as an upper bound includes that whole day."""
    if raw is None or not raw.strip():
        return None
    text = raw.strip()
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            start = datetime.combine(day, time())
            if end_of_day:  # the last day Python can name has no day after it
                return start + timedelta(days=1) if day < date.max else datetime.max
            return start
        return datetime.fromisoformat(text.replace("Z", "+00:00")).replace(tzinfo=None)
    except ValueError:
        raise BadRequest(f"{name}={raw!r} is not an ISO date such as 2024-06-30 or 2024-06-30T18:00") from None


def make_filters(
    folder: str | None = None,
    taken_after: str | None = None,
    taken_before: str | None = None,
    format: str | None = None,
    place: str | None = None,
    person: int | None = None,
) -> SearchFilters:
    checked = (("taken_after", taken_after), ("taken_before", taken_before), ("format", format), ("place", place))
    for name, value in checked:
        if value is not None and "\x00" in value:
            raise BadRequest(f"{name} must not contain NUL (\\x00) characters")
    return SearchFilters(
        folder=parse_folder(folder),
        taken_after=parse_when(taken_after, "taken_after", end_of_day=False),
        taken_before=parse_when(taken_before, "taken_before", end_of_day=True),
        format=(format.strip().lower().lstrip(".") or None) if format else None,
        place=(place.strip() or None) if place else None,
        people=() if person is None else (person,),
    )


@dataclass(frozen=True)
class ImageRecord:
    id: int
    path: str
    score: float | None
    width: int
    height: int
    size: int
    format: str
    taken_at: datetime | None  # EXIF date taken, else the file's modification time
    date_source: str  # "exif" or "modified"
    camera: str | None
    facts: ItemFacts = field(default_factory=lambda: ItemFacts())
    second: float | None = None  # a video: the second of the frame that matched
    vector: np.ndarray | None = field(default=None, compare=False, repr=False)  # when asked for

    def as_json(self) -> dict[str, Any]:
        facts = self.facts
        at = self.second if self.second is not None else facts.poster_at
        thumbnail = f"/api/images/{self.id}/thumbnail" + (f"?at={at:g}" if at is not None else "")
        return {
            "id": self.id,
            "path": self.path,
            "kind": "live" if facts.motion and facts.kind == "picture" else facts.kind,
            "score": None if self.score is None else round(self.score, 6),
            "width": self.width,
            "height": self.height,
            "size": self.size,
            "format": self.format,
            "taken_at": self.taken_at.isoformat() if self.taken_at else None,
            "date_source": self.date_source,
            "camera": self.camera,
            "latitude": facts.latitude,
            "longitude": facts.longitude,
            "place": facts.place.as_json() if facts.place else None,
            "keywords": list(facts.keywords),
            "title": facts.title,
            "description": facts.description,
            "rating": facts.rating,
            "duration": facts.duration,
            "second": self.second,
            "url": f"/api/images/{self.id}/file",
            "thumbnail_url": thumbnail,
            "preview_url": f"/api/images/{self.id}/preview" if facts.needs_preview(self.format) else None,
            "original_url": f"/api/images/{self.id}/original" if facts.original else None,
            "motion_url": f"/api/images/{self.id}/motion" if facts.motion else None,
            "play_url": f"/api/images/{self.id}/video" if facts.kind == "video" or facts.motion else None,
        }


# formats every browser shows in an <img> or a <video> as they are (an MPO as the JPEG it starts with)
BROWSER_FORMATS = frozenset({"jpeg", "jpg", "mpo", "png", "webp", "gif", "bmp", "mp4", "m4v", "webm", "mov"})


@dataclass(frozen=True)
class ItemFacts:
    """What a row says beyond its size and date: where, what it is called, and for videos and
    pairs, what goes with it."""

    kind: str = "picture"
    latitude: float | None = None
    longitude: float | None = None
    keywords: tuple[str, ...] = ()
    title: str | None = None
    description: str | None = None
    rating: int | None = None
    duration: float | None = None
    poster_at: float | None = None
    original: str | None = None
    motion: str | None = None
    place: Place | None = None

    def needs_preview(self, fmt: str) -> bool:
        return self.kind == "picture" and fmt not in BROWSER_FORMATS


COLUMNS = sql.SQL(
    "id, path, width, height, size, format, COALESCE(taken_at, modified_at::timestamp) AS taken, "
    "CASE WHEN taken_at IS NULL THEN 'modified' WHEN kind = 'video' THEN 'created' ELSE 'exif' END AS date_source, "
    "camera, kind, latitude, longitude, keywords, title, description, rating, duration, poster_at, original, motion, "
    "place_locality, place_city, place_region, place_country, place_code"
)
COLUMN_COUNT = 25


def record_of(
    row: tuple[Any, ...], score: float | None, vector: Any = None, second: float | None = None
) -> ImageRecord:
    id_, path, width, height, size, fmt, taken, source, camera = row[:9]
    kind, lat, lon, keywords, title, description, rating, duration, poster_at, original, motion = row[9:20]
    locality, city, region, country, code = row[20:COLUMN_COUNT]
    place = Place(city, country, code, region, locality) if city and country else None
    facts = ItemFacts(
        kind, lat, lon, tuple(keywords or ()), title, description, rating, duration, poster_at, original, motion, place
    )
    return ImageRecord(id_, path, score, width, height, size, fmt, taken, source, camera, facts, second, _numpy(vector))


def _numpy(vector: Any) -> np.ndarray | None:
    if vector is None:
        return None
    return vector.to_numpy() if hasattr(vector, "to_numpy") else np.asarray(vector, dtype=np.float32)


def search_where(
    model: str, filters: SearchFilters, exclude_ids: Sequence[int], trigram: bool = False
) -> tuple[list[sql.Composable], dict[str, Any]]:
    """The conditions of a search's WHERE (unqualified columns of the model's table), and their
    parameters. `trigram`: the server has pg_trgm (text filters use its indexes)."""
    where: list[sql.Composable] = [sql.SQL("model = %(model)s")]
    params: dict[str, Any] = {"model": model}
    if filters.folder:
        where.append(sql.SQL("starts_with(path, %(folder)s)"))
        params["folder"] = filters.folder + "/"
    if filters.any_folder:
        where.append(sql.SQL("EXISTS (SELECT 1 FROM unnest(%(any_folder)s::text[]) f WHERE starts_with(path, f))"))
        params["any_folder"] = [f + "/" for f in filters.any_folder]
    if filters.taken_after:
        where.append(sql.SQL("COALESCE(taken_at, modified_at::timestamp) >= %(after)s"))
        params["after"] = filters.taken_after
    if filters.taken_before:
        where.append(sql.SQL("COALESCE(taken_at, modified_at::timestamp) < %(before)s"))
        params["before"] = filters.taken_before
    if filters.format:
        aliases = {"jpg": ["jpeg", "jpg"], "jpeg": ["jpeg", "jpg"], "tif": ["tiff", "tif"], "tiff": ["tiff", "tif"]}
        where.append(sql.SQL("format = ANY(%(formats)s)"))
        params["formats"] = aliases.get(filters.format, [filters.format])
    where += place_conditions(filters.places, params)
    if exclude_ids:
        where.append(sql.SQL("id <> ALL(%(exclude)s)"))
        params["exclude"] = list(exclude_ids)
    for words in filters.has_text:
        where.append(text_filter(model_table(model), words, trigram, present=True))
    for words in filters.lacks_text:
        where.append(text_filter(model_table(model), words, trigram, present=False))
    where += people_conditions(filters.people, filters.without_people, params)
    return where, params


def search_by_vector(
    conn: psycopg.Connection[Any],
    vector: np.ndarray,
    *,
    model: str,
    limit: int,
    offset: int = 0,
    filters: SearchFilters = SearchFilters(),
    exclude_ids: Sequence[int] = (),
    ef_search: int = 100,
    with_vectors: bool = False,
) -> tuple[list[ImageRecord], bool]:
    """Ranked images and videos nearest to `vector`; returns (page, whether more follow).
    `with_vectors` also reads each result's embedding (for judging its relevance).

    A video is as near as its nearest frame. Candidates come from the two HNSW indexes (items and
    frames), filtered there where pgvector can (`api.search_plan`), and are ranked exactly; pages
    too deep for the index, and filters it cannot serve, rank every row that passes the filters."""
    check_page(limit, offset)
    table_name = model_table(model)
    shape = index_shape(conn, table_name)
    where, params = search_where(model, filters, exclude_ids, shape.trigram)
    wanted = offset + limit + 1
    params.update(q=vector.astype(np.float32), n=limit + 1, skip=offset)
    plan = plan_search(
        conn,
        table_name,
        shape,
        sql.SQL(" AND ").join(where),
        params,
        wanted=wanted,
        ef_search=ef_search,
        filtered=filters.any,
    )
    rows = _ranked(conn, plan, shape, table_name, where, params, filters.any, with_vectors)
    if plan.pool is not None and len(rows) <= limit:
        # a short page from the index: the filter passes fewer rows than the graph walk reached,
        # or the walk stopped at hnsw.max_scan_tuples; ranking every passing row is then both
        # complete and cheap
        rows = _ranked(conn, Plan(None), shape, table_name, where, params, filters.any, with_vectors)
    page = []
    for row in rows[:limit]:
        second = None if row[COLUMN_COUNT + 1] is None else float(row[COLUMN_COUNT + 1])
        best = row[COLUMN_COUNT + 2] if with_vectors else None
        page.append(record_of(row[:COLUMN_COUNT], float(row[COLUMN_COUNT]), best, second))
    return page, len(rows) > limit


def _ranked(
    conn: psycopg.Connection[Any],
    plan: Plan,
    shape: IndexShape,
    table_name: str,
    where: list[sql.Composable],
    params: dict[str, Any],
    filtered: bool,
    with_vectors: bool,
) -> list[tuple[Any, ...]]:
    hits, params = vector_hits(plan, shape, table_name, where, params, filtered)
    query = sql.SQL(
        "SELECT {cols}, 1 - d AS score, second{extra} FROM ({hits}) hit ORDER BY d, id LIMIT %(n)s OFFSET %(skip)s"
    ).format(cols=COLUMNS, extra=sql.SQL(", best") if with_vectors else sql.SQL(""), hits=hits)
    return run_planned(conn, plan, query, params)


def browse_newest(
    conn: psycopg.Connection[Any],
    *,
    model: str,
    limit: int,
    offset: int = 0,
    filters: SearchFilters = SearchFilters(),
    exclude_ids: Sequence[int] = (),
    oldest_first: bool = False,
) -> tuple[list[ImageRecord], bool]:
    """Images that pass the filters, newest (or oldest) first: the answer to a query of only
    dates, folders and places."""
    check_page(limit)
    table_name = model_table(model)
    where, params = search_where(model, filters, exclude_ids, index_shape(conn, table_name).trigram)
    params.update(n=limit + 1, skip=max(0, offset))
    query = sql.SQL(
        "SELECT {cols} FROM {table} WHERE {where} "
        "ORDER BY COALESCE(taken_at, modified_at::timestamp) {direction}, id LIMIT %(n)s OFFSET %(skip)s"
    ).format(
        cols=COLUMNS,
        table=sql.Identifier(table_name),
        where=sql.SQL(" AND ").join(where),
        direction=sql.SQL("ASC" if oldest_first else "DESC"),
    )
    rows = conn.execute(query, params).fetchall()
    return [record_of(row, None) for row in rows[:limit]], len(rows) > limit


def embeddings_of(conn: psycopg.Connection[Any], ids: Sequence[int], model: str) -> dict[int, np.ndarray]:
    """The embeddings of these images (those indexed with `model`), by id."""
    if not ids:
        return {}
    rows = conn.execute(
        sql.SQL("SELECT id, embedding FROM {table} WHERE id = ANY(%s) AND model = %s").format(
            table=sql.Identifier(model_table(model))
        ),
        (list(ids), model),
    ).fetchall()
    return {int(r[0]): vector for r in rows if (vector := _numpy(r[1])) is not None}


def get_image(conn: psycopg.Connection[Any], image_id: int) -> ImageRecord | None:
    row = conn.execute(
        sql.SQL("SELECT {cols} FROM {table} WHERE id = %s").format(cols=COLUMNS, table=sql.Identifier(IMAGES_TABLE)),
        (image_id,),
    ).fetchone()
    return None if row is None else record_of(row, None)


@dataclass(frozen=True)
class StoredFile:
    """What serving an item's files needs to know of it."""

    path: str
    format: str
    content_hash: str
    kind: str
    poster_at: float | None
    duration: float | None
    original: str | None
    motion: str | None


def stored_file(conn: psycopg.Connection[Any], image_id: int) -> StoredFile | None:
    row = conn.execute(
        sql.SQL(
            "SELECT path, format, content_hash, kind, poster_at, duration, original, motion FROM {table} WHERE id = %s"
        ).format(table=sql.Identifier(IMAGES_TABLE)),
        (image_id,),
    ).fetchone()
    return None if row is None else StoredFile(*row)


FOLDERS_MAX_AGE = 30.0  # seconds; an upper bound on staleness when something other than the indexer writes

FolderCache = UntilIndexChanges[list[dict[str, Any]]]


def folder_cache() -> FolderCache:
    return UntilIndexChanges(FOLDERS_MAX_AGE)


def list_folders(
    conn: psycopg.Connection[Any],
    model: str,
    cache: FolderCache,
    stamp_of: Callable[[], datetime | None] | None = None,
) -> list[dict[str, Any]]:
    """Every folder that holds images indexed with `model` (directly or below), with how many.

    Counting reads every row, which costs tens of milliseconds at 100,000 images, and every query
    with a bare word asks (is it a folder name?), hence the cache.
    """
    return cache.get(conn, (database_key(conn), model), lambda: _count_folders(conn, model), stamp_of)


def _count_folders(conn: psycopg.Connection[Any], model: str) -> list[dict[str, Any]]:
    counts: dict[str, int] = {}
    query = sql.SQL(
        "SELECT regexp_replace(path, '/[^/]*$', '') AS folder, count(*) FROM {table} "
        "WHERE model = %s AND position('/' in path) > 0 GROUP BY 1"
    ).format(table=sql.Identifier(model_table(model)))
    for folder, count in conn.execute(query, (model,)):
        parts = folder.split("/")
        for depth in range(1, len(parts) + 1):
            key = "/".join(parts[:depth])
            counts[key] = counts.get(key, 0) + count
    return [{"path": path, "images": n} for path, n in sorted(counts.items())]
