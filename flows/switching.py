"""Building a new model beside the one in use, and switching searches to it.

The rules are `core.store.model_state`'s; this is the indexer's side of them: which models to open for a
run, and after each scan or heartbeat, whether the run must restart with another set of models or
the model being built now takes over.
"""

from __future__ import annotations

import logging
from typing import Any

from core.errors import UserError
from core.models.embedder import Embedder, Embedders
from core.settings import Settings
from core.store.db import connect, table_exists
from core.store.model_state import ModelChoice, coverage, model_table, read_choice, settle_choice, switch_to
from flows.run import IndexRun

log = logging.getLogger("sightline.indexer")


def settle_models(url: str, settings: Settings) -> ModelChoice:
    with connect(url) as conn:
        return settle_choice(conn, settings.clip_model)


def open_models(
    choice: ModelChoice, settings: Settings, url: str, embedders: Embedders
) -> tuple[ModelChoice, list[Embedder]]:
    """Open the model in use and the one being built. One that cannot be opened is reported in a
    line and left out: a bad new choice never stops the indexing of the old one. When the model in
    use is the one that cannot be opened (its files removed) but the new one can, switch now."""
    opened: list[Embedder] = []
    for name in dict.fromkeys([choice.serving, choice.building]):
        if name is None:
            continue
        try:
            opened.append(embedders.get(name, settings.device, settings.precision))
        except UserError as exc:
            if name == choice.serving and choice.building is None:
                raise
            log.error("%s", exc)
    if not opened:
        raise UserError(f"Neither {choice.serving!r} nor {choice.building!r} can be opened; set CLIP_MODEL")
    if opened[0].name != choice.serving:
        log.warning("switching to %s now: the model in use cannot be opened", opened[0].name)
        with connect(url) as conn:
            switch_to(conn, opened[0].name)
            choice = read_choice(conn, settings.clip_model)
    return choice, opened


def _adopt_first_model(conn: Any, run: IndexRun, now: ModelChoice) -> bool:
    """The first model of a new index is in use as soon as its table exists: nothing to wait for."""
    if now.active is None and table_exists(conn, model_table(now.target)):
        switch_to(conn, now.target)
        run.choice = read_choice(conn, run.settings.clip_model)
        return True
    return False


def adopt_first_model(url: str, run: IndexRun) -> None:
    with connect(url) as conn:
        _adopt_first_model(conn, run, read_choice(conn, run.settings.clip_model))


def next_step(url: str, run: IndexRun, scanned: bool) -> str | None:
    """What the model choice asks of the indexer now: "restart" (the wanted model changed, so the
    set of models and tables to keep changes), "switched" (the model being built covers the
    collection, or a switch was asked for, and now answers searches), or nothing."""
    with connect(url) as conn:
        now = read_choice(conn, run.settings.clip_model)
        if now.target != run.choice.target:
            return "restart"
        if _adopt_first_model(conn, run, now):
            return None
        building = run.choice.building
        if building is None or building not in run.slots or now.active == building:
            return None  # (the last: switched already, the restart that follows not yet begun)
        if not table_exists(conn, model_table(building)):
            return None  # asked to switch at once, but the indexer has not made its table yet
        covered, total = coverage(conn, now)
        if now.switch_requested or (scanned and covered >= total):
            log.warning("switching searches to %s (%d of %d files embedded)", building, covered, total)
            switch_to(conn, building)
            return "switched"
    return None
