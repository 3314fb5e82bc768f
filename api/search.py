"""Searching the `images` table: one parameterised SQL statement per search, ranked by cosine distance.

Unfiltered first pages are served by the HNSW index (`ORDER BY embedding <=> q`). Filters, and
pages deeper than `hnsw.ef_search`, use an exact scan ordered by (distance, id): pgvector 0.6
applies filters after the index scan, which would return fewer results than exist, and a scan
that deep is no longer approximate-cheap anyway. Both orders are deterministic, so paging is stable.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta
from typing import Any

import numpy as np
import psycopg
from psycopg import sql

from core.db import IMAGES_TABLE
from core.errors import BadRequest
from core.freshness import UntilIndexChanges
from core.model_state import model_table

MAX_LIMIT = 200


@dataclass(frozen=True)
class SearchFilters:
    folder: str | None = None  # relative to IMAGE_DIR
    taken_after: datetime | None = None  # inclusive
    taken_before: datetime | None = None  # exclusive
    format: str | None = None
    any_folder: tuple[str, ...] = ()  # the query's own folders: an image in any one of them

    @property
    def any(self) -> bool:
        values = (self.folder, self.taken_after, self.taken_before, self.format)
        return any(v is not None for v in values) or bool(self.any_folder)

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
            return start + timedelta(days=1) if end_of_day else start
        return datetime.fromisoformat(text.replace("Z", "+00:00")).replace(tzinfo=None)
    except ValueError:
        raise BadRequest(f"{name}={raw!r} is not an ISO date such as 2024-06-30 or 2024-06-30T18:00") from None


def make_filters(
    folder: str | None = None,
    taken_after: str | None = None,
    taken_before: str | None = None,
    format: str | None = None,
) -> SearchFilters:
    for name, value in (("taken_after", taken_after), ("taken_before", taken_before), ("format", format)):
        if value is not None and "\x00" in value:
            raise BadRequest(f"{name} must not contain NUL (\\x00) characters")
    return SearchFilters(
        folder=parse_folder(folder),
        taken_after=parse_when(taken_after, "taken_after", end_of_day=False),
        taken_before=parse_when(taken_before, "taken_before", end_of_day=True),
        format=(format.strip().lower().lstrip(".") or None) if format else None,
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
    vector: np.ndarray | None = field(default=None, compare=False, repr=False)  # when asked for

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "path": self.path,
            "score": None if self.score is None else round(self.score, 6),
            "width": self.width,
            "height": self.height,
            "size": self.size,
            "format": self.format,
            "taken_at": self.taken_at.isoformat() if self.taken_at else None,
            "date_source": self.date_source,
            "camera": self.camera,
            "url": f"/api/images/{self.id}/file",
            "thumbnail_url": f"/api/images/{self.id}/thumbnail",
        }


COLUMNS = sql.SQL(
    "id, path, width, height, size, format, COALESCE(taken_at, modified_at::timestamp) AS taken, "
    "CASE WHEN taken_at IS NULL THEN 'modified' ELSE 'exif' END AS date_source, camera"
)


def record_of(row: tuple[Any, ...], score: float | None, vector: Any = None) -> ImageRecord:
    id_, path, width, height, size, fmt, taken, source, camera = row
    return ImageRecord(id_, path, score, width, height, size, fmt, taken, source, camera, _numpy(vector))


def _numpy(vector: Any) -> np.ndarray | None:
    if vector is None:
        return None
    return vector.to_numpy() if hasattr(vector, "to_numpy") else np.asarray(vector, dtype=np.float32)


def _where(
    model: str, filters: SearchFilters, exclude_ids: Sequence[int]
) -> tuple[list[sql.Composable], dict[str, Any]]:
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
    if exclude_ids:
        where.append(sql.SQL("id <> ALL(%(exclude)s)"))
        params["exclude"] = list(exclude_ids)
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
    """Ranked images nearest to `vector`; returns (page, whether more follow). `with_vectors`
    also reads each result's embedding (for judging its relevance)."""
    if not 1 <= limit <= MAX_LIMIT:
        raise BadRequest(f"limit must be between 1 and {MAX_LIMIT}")
    if offset < 0:
        raise BadRequest("offset must be 0 or more")
    where, params = _where(model, filters, exclude_ids)
    params.update(q=vector.astype(np.float32), n=limit + 1, skip=offset)
    exact = filters.any or offset + limit + 1 > ef_search
    order = sql.SQL("embedding <=> %(q)s, id") if exact else sql.SQL("embedding <=> %(q)s")
    extra = sql.SQL(", embedding") if with_vectors else sql.SQL("")
    query = sql.SQL(
        "SELECT {cols}, 1 - (embedding <=> %(q)s) AS score{extra} FROM {table} WHERE {where} "
        "ORDER BY {order} LIMIT %(n)s OFFSET %(skip)s"
    ).format(
        cols=COLUMNS,
        extra=extra,
        table=sql.Identifier(model_table(model)),
        where=sql.SQL(" AND ").join(where),
        order=order,
    )
    with conn.transaction():
        conn.execute(sql.SQL("SET LOCAL hnsw.ef_search = {}").format(sql.Literal(int(ef_search))))
        # binary: vectors arrive as floats rather than text to parse (1.5 ms less per page of 10)
        rows = conn.execute(query, params, binary=True).fetchall()
    if with_vectors:
        page = [record_of(row[:-2], float(row[-2]), row[-1]) for row in rows[:limit]]
    else:
        page = [record_of(row[:-1], float(row[-1])) for row in rows[:limit]]
    return page, len(rows) > limit


def browse_newest(
    conn: psycopg.Connection[Any],
    *,
    model: str,
    limit: int,
    offset: int = 0,
    filters: SearchFilters = SearchFilters(),
    exclude_ids: Sequence[int] = (),
) -> tuple[list[ImageRecord], bool]:
    """Images that pass the filters, newest first: the answer to a query of only dates and folders."""
    if not 1 <= limit <= MAX_LIMIT:
        raise BadRequest(f"limit must be between 1 and {MAX_LIMIT}")
    where, params = _where(model, filters, exclude_ids)
    params.update(n=limit + 1, skip=max(0, offset))
    query = sql.SQL(
        "SELECT {cols} FROM {table} WHERE {where} "
        "ORDER BY COALESCE(taken_at, modified_at::timestamp) DESC, id LIMIT %(n)s OFFSET %(skip)s"
    ).format(cols=COLUMNS, table=sql.Identifier(model_table(model)), where=sql.SQL(" AND ").join(where))
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


def image_file_facts(conn: psycopg.Connection[Any], image_id: int) -> tuple[str, str, str] | None:
    """(path, format, content hash) of an indexed image."""
    row = conn.execute(
        sql.SQL("SELECT path, format, content_hash FROM {table} WHERE id = %s").format(
            table=sql.Identifier(IMAGES_TABLE)
        ),
        (image_id,),
    ).fetchone()
    return None if row is None else (row[0], row[1], row[2])


FOLDERS_MAX_AGE = 30.0  # seconds; an upper bound on staleness when something other than the indexer writes

FolderCache = UntilIndexChanges[list[dict[str, Any]]]


def folder_cache() -> FolderCache:
    return UntilIndexChanges(FOLDERS_MAX_AGE)


def list_folders(conn: psycopg.Connection[Any], model: str, cache: FolderCache) -> list[dict[str, Any]]:
    """Every folder that holds images indexed with `model` (directly or below), with how many.

    Counting reads every row, which costs tens of milliseconds at 100,000 images, and every query
    with a bare word asks (is it a folder name?), hence the cache.
    """
    return cache.get(conn, (conn.info.dsn, model), lambda: _count_folders(conn, model))


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
