"""Telling, without the engine, that nothing changed since the last complete update.

A one-shot `main.py index` (cron, a NAS task) on a folder where nothing happened would otherwise
have CocoIndex visit every file's component to find nothing to do: about 1 ms a file, 9 s for
10,000. An update that saw every file through records a fingerprint of everything its rows depend
on; the next one takes the same fingerprint and, where it matches, only reports what the tables
hold. The fingerprint covers:

- every file in the folders: path, size, times and inode (`flows.walk`), sidecars and unknown
  files included;
- the settings the rows and their indexes depend on, and the model choice and state id in `sightline_meta` (a
  model being built, or CocoIndex's state folder lost, runs the engine);
- the indexer's own code: a new release may index differently.

The rules that keep it honest:
- It is forgotten whenever the engine starts (`forget`, from the lifespan): a live indexer, or an
  update cut short, leaves none behind, so what they did is never hidden behind an old one.
- It is recorded only by an update that saw every file without an error, with no file waiting
  for a retry (`RETRIED_ON_NEXT_RUN`), from the listing taken before that update started: a file
  that changed meanwhile makes the next listing differ.
- It is used only while the tables still hold a row or an error for every file listed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.media.library import Library
from core.settings import Settings
from core.store import indexer_status
from core.store.db import ERRORS_TABLE, connect, table_exists
from core.store.model_state import model_table, read_choice
from flows.upkeep import local_state_id
from flows.walk import scan_folder

KEY = "unchanged_since"
# said of a file that could not be read: the next update must not skip it
RETRIED_ON_NEXT_RUN = "it is retried on the next change or run"
_CODE = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Listing:
    """The folders as one update found them before it started."""

    files: int  # pictures and videos: what the tables hold a row or an error for
    digest: str


def take_listing(library: Library) -> Listing:
    digest = hashlib.sha256()
    files = 0
    for root in library.roots:
        digest.update(f"{root.label}\0{root.path}\n".encode())
        files += len(scan_folder(root.path, note=digest.update).files)
    return Listing(files=files, digest=digest.hexdigest())


def _code_digest() -> str:
    digest = hashlib.sha256()
    for package in ("core", "flows"):
        for source in sorted((_CODE / package).rglob("*.py")):
            digest.update(source.relative_to(_CODE).as_posix().encode() + b"\0" + source.read_bytes())
    return digest.hexdigest()


def fingerprint(conn: Any, settings: Settings, listing: Listing) -> str:
    meta = conn.execute("SELECT key, value FROM sightline_meta WHERE key <> %s ORDER BY key", (KEY,)).fetchall()
    parts = [
        listing.digest,
        _code_digest(),
        repr(sorted(meta)),
        repr(local_state_id(settings)),  # CocoIndex's state folder, lost or replaced, runs the engine
        repr((settings.clip_model, settings.max_image_pixels, settings.video_frames, settings.ocr)),
        repr(settings.hnsw_ef_construction),  # the indexes the engine declares
    ]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


@dataclass(frozen=True)
class Held:
    """What the tables hold for an unchanged folder."""

    model: str
    rows: int
    failed: int


def held(url: str, settings: Settings, listing: Listing) -> Held | None:
    """What the tables hold, where nothing changed since the last complete update; else None."""
    with connect(url) as conn:
        if not table_exists(conn, "sightline_meta") or not table_exists(conn, ERRORS_TABLE):
            return None
        recorded = conn.execute("SELECT value FROM sightline_meta WHERE key = %s", (KEY,)).fetchone()
        if recorded is None or recorded[0] != fingerprint(conn, settings, listing):
            return None
        model = read_choice(conn, settings.clip_model).serving
        table = model_table(model)
        if not table_exists(conn, table):
            return None
        counted = f"SELECT (SELECT count(*) FROM {table}), (SELECT count(*) FROM {ERRORS_TABLE})"
        rows, failed = conn.execute(counted).fetchone() or (0, 0)
    # a file's rows may be gone behind the indexer's back (a restored backup, a hand-made DELETE)
    return Held(model=model, rows=rows, failed=failed) if rows + failed == listing.files else None


def report(url: str, held: Held) -> None:
    """The status heartbeat of an update that found nothing to do: when the folder was last looked at."""
    files = held.rows + held.failed
    beat = indexer_status.Heartbeat(
        model=held.model,
        device=None,  # the last known values are kept
        precision=None,
        cpu=None,
        live=False,
        scanning=False,
        last_change=None,
        files_total=files,
        files_done=files,
        files_pending=0,
        throughput=0.0,
    )
    with connect(url) as conn:
        indexer_status.write(conn, beat)


def record(url: str, settings: Settings, listing: Listing) -> bool:
    """After an update that saw every file: remember the folder as it found it, unless a file
    waits for a retry. Returns whether it was recorded."""
    with connect(url) as conn:
        waiting = conn.execute(
            f"SELECT 1 FROM {ERRORS_TABLE} WHERE reason LIKE %s LIMIT 1", (f"%{RETRIED_ON_NEXT_RUN}",)
        ).fetchone()
        if waiting is not None:
            return False
        conn.execute(
            "INSERT INTO sightline_meta (key, value) VALUES (%s, %s) "
            "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            (KEY, fingerprint(conn, settings, listing)),
        )
    return True


def forget(url: str) -> None:
    with connect(url) as conn:
        conn.execute("DELETE FROM sightline_meta WHERE key = %s", (KEY,))
