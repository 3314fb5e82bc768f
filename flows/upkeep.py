"""Keeping CocoIndex's own state and the database in step, and the embedding cache lean."""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from core.settings import Settings
from core.store import picture_text
from core.store.db import ERRORS_TABLE, IMAGES_TABLE, connect, table_exists
from core.store.model_state import forget_others, model_tables, refresh_view

log = logging.getLogger("sightline.indexer")

_STATE_ID_FILE = "sightline-state-id"


def reconcile_state(url: str, settings: Settings) -> None:
    """Keep CocoIndex's local state and the database's tables in step.

    CocoIndex remembers what it wrote in an LMDB folder under DATA_DIR. If that folder is lost while
    the tables survive (or DATABASE_URL now names another server), the two disagree and the engine
    would fail with DuplicateTableError or write into tables it thinks exist. A shared id, kept in
    both places, tells; on a mismatch the CocoIndex-managed tables are dropped and rebuilt, which is
    cheap because the embedding cache survives.
    """
    id_file = settings.state_dir / _STATE_ID_FILE
    local = local_state_id(settings)
    with connect(url) as conn:
        row = conn.execute("SELECT value FROM sightline_meta WHERE key = 'state_id'").fetchone()
        remote = row[0] if row else None
        if local is not None and local == remote:
            return
        old_layout = _relkind(conn, IMAGES_TABLE) == "r"  # before per-model tables, `images` was one
        if old_layout:
            local = None
        stale_tables = table_exists(conn, IMAGES_TABLE) or table_exists(conn, ERRORS_TABLE) or model_tables(conn)
        # (a state folder with nothing but the id: a start stopped between its two writes)
        if stale_tables or (remote is None and _engine_state_in(settings.state_dir)):
            log.warning(
                "The indexer state in %s does not match the database; rebuilding the images table "
                "(cached embeddings are reused, so no image goes through the model again).",
                settings.state_dir,
            )
            conn.execute(f"DROP {'TABLE' if old_layout else 'VIEW'} IF EXISTS {IMAGES_TABLE}")
            for table in [ERRORS_TABLE, *(f"{t}_frames" for t in model_tables(conn)), *model_tables(conn)]:
                conn.execute(f"DROP TABLE IF EXISTS {table}")
            conn.execute("DELETE FROM sightline_meta WHERE key = 'active_model'")
            shutil.rmtree(settings.state_dir, ignore_errors=True)
        new_id = uuid.uuid4().hex
        # the file first, whole or not at all, then the database: stopped between the two, the next
        # start finds the new id on disk and no tables made under it, and only writes it again
        _write_durably(id_file, new_id + "\n")
        conn.execute(
            "INSERT INTO sightline_meta (key, value) VALUES ('state_id', %s) "
            "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            (new_id,),
        )


def local_state_id(settings: Settings) -> str | None:
    """The id kept beside CocoIndex's state (`reconcile_state`); None where there is none."""
    try:
        return (settings.state_dir / _STATE_ID_FILE).read_text().strip()
    except FileNotFoundError:
        return None


def _engine_state_in(folder: Path) -> bool:
    """Whether CocoIndex has written its state in `folder` (anything beside the id file)."""
    try:
        return any(not p.name.startswith(_STATE_ID_FILE) for p in folder.iterdir())
    except OSError:
        return False


def _write_durably(path: Path, text: str) -> None:
    """Replace `path` by `text` atomically and durably: a full disk or a power cut leaves the old
    file or the new one, never a truncated one (which would read as a lost state: a rebuild)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(path.name + ".tmp")
    try:
        with open(temp, "w") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)  # the rename itself
    finally:
        os.close(folder)


def _relkind(conn: Any, name: str) -> str | None:
    row = conn.execute("SELECT relkind FROM pg_class WHERE oid = to_regclass(%s)", (name,)).fetchone()
    return str(row[0]) if row else None


def forget_models_not_in(url: str, models: list[str]) -> None:
    """Once a run with its models is under way, any other model's cached embeddings are stale:
    a switch made them so, or a build was cancelled."""
    with connect(url) as conn:
        forget_others(conn, models)
        refresh_view(conn, models[0])


def refresh_images_view(url: str, model: str) -> None:
    """The `images` view gets the columns a run may have added to the model's table."""
    with connect(url) as conn:
        refresh_view(conn, model)


def prune_cache(url: str) -> int:
    """Forget cached embeddings and text that no indexed file has any more; returns how many
    embeddings."""
    with connect(url) as conn:
        picture_text.prune(conn)
        tables = model_tables(conn)
        referenced = " AND ".join(
            f"NOT EXISTS (SELECT 1 FROM {t} i WHERE i.content_hash = c.content_hash AND i.model = c.model)"
            for t in tables
        )
        cursor = conn.execute(f"DELETE FROM embedding_cache c WHERE {referenced or 'true'}")
        return cursor.rowcount
