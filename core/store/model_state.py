"""Which model answers searches, and which one is being built to replace it.

Every model's embeddings live in a table of their own (`model_table`), so a new model is built
beside the one in use and a search never mixes the two. `images` is a view of the table of the
model in use; switching repoints it, in one transaction with the record of which model is active.

The choices are kept in `sightline_meta`, so the indexer, the server and the CLI agree:
- `active_model`: answers searches;
- `target_model`: the one wanted; when it differs from the active one the indexer builds it;
- `configured_model`: CLIP_MODEL as the indexer last saw it. Editing CLIP_MODEL is a newer wish
  than an earlier settings call, so a changed value becomes the target;
- `switch_requested`: switch to the target now, before it covers the collection.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from core.store.db import IMAGES_TABLE, table_exists

_TABLE_PREFIX = "images_"

# Servers ask which model is in use at most this often, and the old model's table is kept this
# much longer after a switch, so a search that started just before it never finds its table gone.
CHECK_SECONDS = 1.0
SWITCH_GRACE_SECONDS = 2.5 * CHECK_SECONDS


def model_table(model: str) -> str:
    """The table that holds one model's rows: a short digest of the model name, because names
    can be long paths and Postgres names stop at 63 bytes."""
    return _TABLE_PREFIX + hashlib.sha256(model.encode()).hexdigest()[:12]


def frames_table(model: str) -> str:
    """The table of one model's video frames, beside its `model_table`."""
    return model_table(model) + "_frames"


@dataclass(frozen=True)
class ModelChoice:
    active: str | None  # None: nothing indexed yet
    target: str
    switch_requested: bool = False

    @property
    def building(self) -> str | None:
        """The model being built beside the active one, if any."""
        return self.target if self.active is not None and self.target != self.active else None

    @property
    def serving(self) -> str:
        """The model searches use: the active one, or the target before anything is indexed."""
        return self.active or self.target


def _meta(conn: psycopg.Connection[Any]) -> dict[str, str]:
    return dict(conn.execute("SELECT key, value FROM sightline_meta").fetchall())


def _put(conn: psycopg.Connection[Any], key: str, value: str | None) -> None:
    if value is None:
        conn.execute("DELETE FROM sightline_meta WHERE key = %s", (key,))
    else:
        conn.execute(
            "INSERT INTO sightline_meta (key, value) VALUES (%s, %s) "
            "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            (key, value),
        )


def read_choice(conn: psycopg.Connection[Any], configured: str) -> ModelChoice:
    """What the database says, or what CLIP_MODEL says where it says nothing yet."""
    if not table_exists(conn, "sightline_meta"):
        return ModelChoice(active=None, target=configured)
    meta = _meta(conn)
    active = meta.get("active_model")
    if active is not None and not table_exists(conn, model_table(active)):
        active = None  # recorded, but its table is gone (a rebuild): start over with the target
    return ModelChoice(
        active=active,
        target=meta.get("target_model") or configured,
        switch_requested=meta.get("switch_requested") == "1",
    )


def settle_choice(conn: psycopg.Connection[Any], configured: str) -> ModelChoice:
    """The indexer's view at start-up: a changed CLIP_MODEL becomes the target."""
    with conn.transaction():
        meta = _meta(conn)
        if meta.get("configured_model") != configured:
            _put(conn, "configured_model", configured)
            _put(conn, "target_model", configured)
            _put(conn, "switch_requested", None)
    return read_choice(conn, configured)


def choose_model(conn: psycopg.Connection[Any], model: str, *, switch_now: bool = False) -> None:
    """A settings call: build `model`, and with `switch_now` use it as soon as the indexer has
    started on it (choosing the active one cancels a build in progress)."""
    with conn.transaction():
        _put(conn, "target_model", model)
        _put(conn, "switch_requested", "1" if switch_now else None)


def switch_to(conn: psycopg.Connection[Any], model: str) -> None:
    """Make `model` the one searches use, at once for every process. The old model's table goes
    when the indexer restarts without it, and its cached embeddings after that (`forget_others`)."""
    with conn.transaction():
        _put(conn, "active_model", model)
        _put(conn, "target_model", model)
        _put(conn, "switch_requested", None)
        # not CREATE OR REPLACE: it cannot change a column's type, and vector sizes differ by model
        conn.execute(sql.SQL("DROP VIEW IF EXISTS {}").format(sql.Identifier(IMAGES_TABLE)))
        view = sql.SQL("CREATE VIEW {} AS SELECT * FROM {}")
        conn.execute(view.format(sql.Identifier(IMAGES_TABLE), sql.Identifier(model_table(model))))


def refresh_view(conn: psycopg.Connection[Any], model: str) -> None:
    """Make the `images` view show every column of the model's table again. A view keeps the
    columns its table had when it was made, and the indexer adds columns as Sightline learns
    more about files (places, keywords, videos)."""
    count = "SELECT count(*) FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = %s"
    have = conn.execute(count, (IMAGES_TABLE,)).fetchone()
    want = conn.execute(count, (model_table(model),)).fetchone()
    if have and want and have[0] and want[0] and have[0] != want[0]:
        with conn.transaction():
            conn.execute(sql.SQL("DROP VIEW IF EXISTS {}").format(sql.Identifier(IMAGES_TABLE)))
            view = sql.SQL("CREATE VIEW {} AS SELECT * FROM {}")
            conn.execute(view.format(sql.Identifier(IMAGES_TABLE), sql.Identifier(model_table(model))))


def forget_others(conn: psycopg.Connection[Any], models: list[str]) -> int:
    """Drop the cached embeddings of every model but these; returns how many."""
    return conn.execute("DELETE FROM embedding_cache WHERE model <> ALL(%s)", (models,)).rowcount


def model_tables(conn: psycopg.Connection[Any]) -> list[str]:
    """Every per-model table in the database (for rebuilds)."""
    rows = conn.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() AND tablename ~ %s",
        (f"^{_TABLE_PREFIX}[0-9a-f]{{12}}$",),
    ).fetchall()
    return [r[0] for r in rows]


def coverage(conn: psycopg.Connection[Any], choice: ModelChoice) -> tuple[int, int]:
    """(files the model being built has, files the active model has)."""
    if choice.active is None or choice.building is None:
        return 0, 0
    active, building = model_table(choice.active), model_table(choice.building)
    total = count_images(conn, choice.active)
    if total == 0 or not table_exists(conn, building):
        return 0, total
    row = conn.execute(
        sql.SQL("SELECT count(*) FROM {a} a WHERE EXISTS (SELECT 1 FROM {b} b WHERE b.path = a.path)").format(
            a=sql.Identifier(active), b=sql.Identifier(building)
        )
    ).fetchone()
    return (int(row[0]) if row else 0), total


def count_images(conn: psycopg.Connection[Any], model: str) -> int:
    """How many images `model`'s table holds (0 before it exists)."""
    table = model_table(model)
    if not table_exists(conn, table):
        return 0
    row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()
    return int(row[0]) if row else 0
