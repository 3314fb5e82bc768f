"""What the index holds and what the indexer is doing, read from the database so that any process
(the server, `python main.py status`, a second machine) sees the same thing."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg

from core.models.faces import face_model_name
from core.settings import Settings
from core.store import faces, folder_survey, indexer_status, picture_text, replicas
from core.store.db import ERRORS_TABLE, IMAGES_TABLE, DatabaseError, connect, database_url, table_exists
from core.store.model_state import count_images, coverage, model_table, read_choice


def models_status(conn: psycopg.Connection[Any], settings: Settings) -> dict[str, Any]:
    """The model in use and the one being built beside it, with how far that build has come."""
    choice = read_choice(conn, settings.clip_model)
    building = None
    if choice.building is not None:
        done, images = coverage(conn, choice)  # of the images the model in use has
        building = {"name": choice.building, "done": done, "total": images, "switch_requested": choice.switch_requested}
    else:
        images = count_images(conn, choice.serving)
    return {
        "active": {"name": choice.serving, "images": images},
        "building": building,
        "configured": settings.clip_model,
    }


def status_from(
    conn: psycopg.Connection[Any], settings: Settings, local: indexer_status.LocalIndexer | None = None
) -> dict[str, Any]:
    """The status as the database tells it; what the indexer is doing comes from `local` instead
    where it runs in this process (it knows before its first heartbeat, and never goes stale)."""
    models = models_status(conn, settings)
    failed: list[dict[str, Any]] = []
    if table_exists(conn, ERRORS_TABLE):
        failed = [
            {"path": path, "reason": reason}
            for path, reason in conn.execute(f"SELECT path, reason FROM {ERRORS_TABLE} ORDER BY path")
        ]
    row = indexer_status.read(conn)
    alive = row is not None and row.alive
    replication = replicas.replication(conn)
    return {
        "database": "ok",
        "images": models["active"]["images"],
        "failed": failed,
        "model": models["active"]["name"],
        "models": models,
        "device": row.device if row else None,
        "precision": row.precision if row else None,
        "cpu": row.cpu if row else None,
        "live": bool(row and alive and row.live),
        "scanning": bool(row and alive and row.scanning),
        "last_change_at": _iso(row.last_change_at) if row else None,
        "pending": row.files_pending if row and alive else 0,
        "progress": {"done": row.files_done, "total": row.files_total} if row and alive else None,
        "throughput": round(row.throughput, 2) if row and alive else 0.0,
        "indexer_started_at": _iso(row.started_at) if row else None,
        "heartbeat_at": _iso(row.heartbeat_at) if row else None,
        "image_dir": str(settings.image_dir),
        "folders": [survey.as_json() for survey in folder_survey.read(conn)],
        "media": media_counts(conn),
        "text": picture_text.progress(conn, model_table(models["active"]["name"])).as_json(settings.ocr),
        "faces": faces.progress(conn, model_table(models["active"]["name"]), face_model_name()).as_json(
            "on" if settings.faces else "off"
        ),
        "embedded": None,
        "reused": None,
        "waiting": None,
        "replica": replication.replica,
        "replication_lag": None if replication.lag is None else round(replication.lag, 3),
    } | _indexer_here(local)


def _indexer_here(local: indexer_status.LocalIndexer | None) -> dict[str, Any]:
    if local is None:
        return {}
    here: dict[str, Any] = {
        "live": local.running,
        "scanning": local.running and local.scanning,
        "embedded": local.embedded,
        "reused": local.reused,
        "waiting": local.waiting,
    }
    if local.running and local.scanning:
        here["progress"] = {"done": local.files_done, "total": local.files_total}
    return here


def media_counts(conn: psycopg.Connection[Any]) -> dict[str, int]:
    """How many items of each kind the index holds, and the files paired into them."""
    counts = {"pictures": 0, "videos": 0, "live_photos": 0, "raw_originals": 0}
    has_kind = conn.execute(
        "SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema() "
        "AND table_name = %s AND column_name = 'kind'",
        (IMAGES_TABLE,),
    ).fetchone()
    if not has_kind:
        return counts  # nothing indexed yet, or an index the indexer has not upgraded yet
    query = f"SELECT kind, count(*), count(motion), count(original) FROM {IMAGES_TABLE} GROUP BY kind"
    for kind, n, motions, originals in conn.execute(query):
        counts["videos" if kind == "video" else "pictures"] += n
        counts["live_photos"] += motions
        counts["raw_originals"] += originals
    return counts


def unreachable_status(
    settings: Settings, reason: str, local: indexer_status.LocalIndexer | None = None
) -> dict[str, Any]:
    return {
        "database": f"unreachable: {reason}",
        "images": None,
        "failed": [],
        "model": settings.clip_model,
        "models": {
            "active": {"name": settings.clip_model, "images": None},
            "building": None,
            "configured": settings.clip_model,
        },
        "device": None,
        "precision": None,
        "cpu": None,
        "live": False,
        "scanning": False,
        "last_change_at": None,
        "pending": 0,
        "progress": None,
        "throughput": 0.0,
        "indexer_started_at": None,
        "heartbeat_at": None,
        "image_dir": str(settings.image_dir),
        "folders": [],
        "media": None,
        "text": None,
        "faces": None,
        "embedded": None,
        "reused": None,
        "waiting": None,
    } | _indexer_here(local)


def read_status(settings: Settings) -> dict[str, Any]:
    try:
        with connect(database_url(settings)) as conn:
            return status_from(conn, settings)
    except DatabaseError as exc:
        return unreachable_status(settings, str(exc))


def render_status(status: dict[str, Any]) -> str:
    lines = [
        f"database   {status['database']}",
        f"images     {status['images']}",
        f"model      {status['model']} on {status['device'] or '?'} ({status['precision'] or '?'}"
        + (f"; CPU offers {status['cpu']})" if status.get("cpu") else ")"),
        *_building_lines(status["models"]),
        f"indexer    {'live' if status['live'] else 'not running'}"
        + (" — first scan under way" if status["scanning"] else ""),
        f"changed    {status['last_change_at'] or 'never'}",
        *_replica_lines(status),
        *_folder_lines(status),
    ]
    media = status.get("media")
    if media:
        lines.append(
            f"media      {media['pictures']} pictures ({media['live_photos']} Live Photos, "
            f"{media['raw_originals']} with a RAW original), {media['videos']} videos"
        )
    text = status.get("text")
    if text:
        lines.append(_text_line(text))
    found = status.get("faces")
    if found:
        counts = f"{found['read']} read, {found['waiting']} waiting, {found['failed']} failed"
        lines.append(f"faces      {counts} (FACES={found['mode']})")
    if status["progress"] and status["scanning"]:
        p = status["progress"]
        lines.append(f"progress   {p['done']}/{p['total']} files, {status['throughput']} files/s")
    failed = status["failed"]
    lines.append(f"failed     {len(failed)}")
    lines += [f"  {f['path']}: {f['reason']}" for f in failed]
    return "\n".join(lines)


def _text_line(text: dict[str, Any]) -> str:
    if text["mode"] == "off":
        return f"text       not read (OCR=off); {text['read']} pictures read earlier"
    return (
        f"text       {text['read']} pictures read, {text['waiting']} waiting, {text['skipped']} skipped "
        f"(OCR={text['mode']})"
    )


def _replica_lines(status: dict[str, Any]) -> list[str]:
    if not status.get("replica"):
        return []
    lag = status.get("replication_lag")
    behind = "not known yet" if lag is None else f"{lag:g} s behind the primary at most"
    return [f"replica    read-only, {behind}"]


def _folder_lines(status: dict[str, Any]) -> list[str]:
    folders = status.get("folders") or []
    if not folders:
        return [f"folder     {status['image_dir']}"]
    lines = []
    for folder in folders:
        name = f"{folder['label']}: " if folder["label"] else ""
        lines.append(f"folder     {name}{folder['path']} ({folder['watch']}, {folder['files']} files)")
        if folder["skipped"]:
            skipped = ", ".join(f"{n} {ext}" for ext, n in folder["skipped"].items())
            lines.append(f"  skipped: {skipped}")
    return lines


def render_models(models: dict[str, Any]) -> str:
    active = models["active"]
    lines = [f"in use     {active['name']} ({active['images']} images)", *_building_lines(models)]
    if models["configured"] != active["name"] and not models.get("building"):
        lines.append(f"CLIP_MODEL {models['configured']} (the indexer builds it when it next starts)")
    return "\n".join(lines)


def _building_lines(models: dict[str, Any]) -> list[str]:
    building = models.get("building")
    if not building:
        return []
    line = f"building   {building['name']}: {building['done']}/{building['total']} files"
    if building.get("error"):
        line += f" — cannot be loaded: {building['error']}"
    elif building.get("switch_requested"):
        line += " — switching now, as asked"
    else:
        line += " — searches switch to it once it has them all"
    return [line]


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None
