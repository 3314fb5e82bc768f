"""Twenty outages in a row against one running `main.py serve` (issue 28): the database stopped
(a fast shutdown, what `pg_ctl stop -m fast` does) or its postmaster killed (`kill -9`) at random
moments of the first scan and of later updates (files added, changed and deleted between
outages), each for a random 1–2 s here (`make stress-outages` runs them at the issue's 1–10 s).
The server is one the test starts again itself, so an outage lasts as long as planned (Sightline
would start its own embedded server again at once; `OUTAGE_SERVER=embedded` does that instead).

Throughout, the same process answers `/api/status`, saying that it waits for the database while it
is away; afterwards every file is indexed exactly once: one row per file with its current content,
none missing, deletes reflected, each version of each file through the model once (the indexer's
count of pictures embedded), no error row, no traceback.

The moments come from one seed: `OUTAGE_SEED=N` replays a run's plan (printed, and named in any
failure). A moment is picked from the indexer's progress (pictures embedded, new rows written, the
engine starting again after the last outage), not from a clock, so a plan means the same on a busy
machine.
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
from conftest import Process, wait_for
from shapes import ALL_DRAWINGS, random_drawing
from test_outages import Database, Sightline, start_sightline

from core.store.model_state import model_table


def _seconds() -> tuple[float, float]:
    low, _, high = os.environ.get("OUTAGE_SECONDS", "1-2").partition("-")
    return float(low), float(high or low)


SEED = int(os.environ.get("OUTAGE_SEED") or random.SystemRandom().randrange(1 << 32))
OUTAGES = int(os.environ.get("OUTAGE_COUNT", "20"))
SECONDS = _seconds()
FIRST_SCAN = 360  # files: enough that several outages find the first scan under way
NOTICED_WITHIN = 60.0  # the deadline for any state the test waits for (generous: the machine is shared)


@dataclass
class Outage:
    """One outage of the plan: when (`moment`), how, for how long, and the changes made before it."""

    phase: str  # "first scan" | "update"
    moment: str  # progress: after `progress` pictures embedded (first scan) or new rows (update);
    # changes: just after the changes; restarting: as the engine starts again; idle: all caught up
    how: str  # stopped | killed
    seconds: float
    progress: int = 0
    adds: int = 0
    edits: int = 0
    deletes: int = 0
    late: bool = False  # planned in the first scan, which a busy machine had let end before it

    def __str__(self) -> str:
        if self.phase == "first scan":
            what = f"first scan, after {self.progress} pictures embedded" + (" (it was over)" if self.late else "")
        else:
            what = f"update +{self.adds} ~{self.edits} -{self.deletes}, {self.moment}"
            what += f" {self.progress} new rows" if self.moment == "progress" else ""
        return f"{what}: {self.how} for {self.seconds:.1f}s"


def plan(rng: random.Random, count: int) -> list[Outage]:
    """The outages in order: a third in the first scan (at rising progress, before its middle), the
    rest in later updates."""
    low, high = SECONDS
    first = max(1, count // 3)
    outages: list[Outage] = []
    for done in sorted(rng.sample(range(FIRST_SCAN // 2), first)):
        how = rng.choice(["stopped", "killed"])
        outages.append(Outage("first scan", "progress", how, rng.uniform(low, high), progress=done))
    for _ in range(count - first):
        how = rng.choice(["stopped", "killed"])
        moment = rng.choice(["changes", "changes", "progress", "restarting", "idle"])
        outage = Outage("update", moment, how, rng.uniform(low, high))
        if moment in ("changes", "progress"):
            outage.adds, outage.edits, outage.deletes = rng.randint(1, 6), rng.randint(0, 3), rng.randint(0, 3)
            outage.progress = rng.randint(1, outage.adds) if moment == "progress" else 0
        outages.append(outage)
    return outages


@dataclass
class Library:
    """The folder under test and every version of every file written into it."""

    folder: Path
    staging: Path
    rng: random.Random
    current: dict[str, str] = field(default_factory=dict)  # path -> content hash
    versions: set[str] = field(default_factory=set)  # every content hash ever written
    added: int = 0

    def write(self, key: str) -> None:
        """A new, never seen picture at `key`, written whole (a rename), as a careful copy does."""
        while True:
            out = io.BytesIO()
            random_drawing(self.rng.choice(ALL_DRAWINGS), self.rng).save(out, format="PNG")
            data = out.getvalue()
            digest = hashlib.sha256(data).hexdigest()
            if digest not in self.versions:
                break
        staged = self.staging / key.replace("/", "_")
        staged.parent.mkdir(parents=True, exist_ok=True)
        staged.write_bytes(data)
        (self.folder / key).parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged, self.folder / key)
        self.current[key] = digest
        self.versions.add(digest)

    def delete(self, key: str) -> None:
        (self.folder / key).unlink()
        del self.current[key]

    def change(self, outage: Outage, indexed: dict[str, str]) -> set[str]:
        """Apply an outage's changes; returns the keys added. Only files whose current version is
        indexed are edited or deleted: then every version written is one the model must see."""
        done = sorted(k for k, h in self.current.items() if indexed.get(k) == h)
        touched = self.rng.sample(done, min(len(done), outage.edits + outage.deletes))
        for key in touched[: outage.edits]:
            self.write(key)
        for key in touched[outage.edits :]:
            self.delete(key)
        new = set()
        for _ in range(outage.adds):
            self.added += 1
            new.add(key := f"later/{self.added:03d}.png")
            self.write(key)
        return new


class StatusWatch:
    """`/api/status` asked every quarter second from a thread of its own, for the whole test: every
    answer must come, as JSON, with 200 (or 503 while the database is away)."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.problems: list[str] = []
        self.answers = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with httpx.Client(timeout=20) as client:
            while not self._stop.is_set():
                try:
                    answer = client.get(f"{self.base}/api/status")
                    body = answer.json()
                    if answer.status_code not in (200, 503) or not isinstance(body, dict):
                        self.problems.append(f"{answer.status_code}: {answer.text[:300]}")
                    else:
                        self.answers += 1
                except (httpx.HTTPError, ValueError) as exc:
                    self.problems.append(f"{type(exc).__name__}: {exc}")
                self._stop.wait(0.25)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)


def indexed(app: Sightline) -> dict[str, str]:
    """path -> content hash of the rows in the table; {} while unreadable (or not made yet)."""
    try:
        with psycopg.connect(app.db.admin_url(app.settings), connect_timeout=5) as conn:
            query = f"SELECT path, content_hash FROM {model_table(app.settings.clip_model)}"
            return {path: digest for path, digest in conn.execute(query)}
    except (psycopg.Error, OSError, IndexError):
        return {}


def take_down(app: Sightline, outage: Outage, log: Callable[[str], None]) -> None:
    """The outage itself: the database stopped or killed, kept away for its seconds and until the
    indexer has said that it waits for it (log and status), then started again. Sightline starts
    its embedded server again itself, often before a status could say so: there the log tells."""
    went, backs = app.log_count("indexing resumes by itself"), app.log_count("back after")
    began = time.monotonic()
    app.db.fail(outage.how)
    wait_for(lambda: app.log_count("indexing resumes by itself") > went, NOTICED_WITHIN, 0.05)
    own = app.db.external is None
    said = wait_for(lambda: _waiting(app) or (own and app.log_count("back after") > backs), NOTICED_WITHIN, 0.05)
    assert said is True or said.startswith("database unreachable"), said
    rest = outage.seconds - (time.monotonic() - began)
    if rest > 0 and not own:
        time.sleep(rest)  # the outage's own length: the one wait here that is a time
    app.db.start_again()
    log(f"{outage}: noticed, down {time.monotonic() - began:.1f}s")


def embedded(app: Sightline) -> int:
    """Pictures embedded so far, as the cache has them: the test's own query, where asking the
    server (busy embedding) could take long enough for the scan to end meanwhile."""
    try:
        with psycopg.connect(app.db.admin_url(app.settings), connect_timeout=5) as conn:
            row = conn.execute("SELECT count(*) FROM embedding_cache").fetchone()
            return int(row[0]) if row else 0
    except (psycopg.Error, OSError, IndexError):
        return -1


def _waiting(app: Sightline) -> str | None:
    status = app.status()
    return status.get("waiting") if status else None


def back(app: Sightline) -> None:
    """Wait until the indexer says the database is back as often as it said it went away."""
    wait_for(lambda: app.log_count("back after") >= app.log_count("indexing resumes by itself"), NOTICED_WITHIN, 0.05)


def settled(app: Sightline, library: Library) -> dict[str, Any] | None:
    """The status once the indexer has caught up with the folder (rows as the files are), else None."""
    status = app.ready(len(library.current))
    return status if status and indexed(app) == library.current else None


@contextmanager
def seeded(seed: int, outages: list[Outage], log: list[str]) -> Iterator[None]:
    """Any failure names the seed that replays it, the plan and what happened."""
    try:
        yield
    except AssertionError as exc:
        steps = "\n".join(f"  {n + 1:2}. {o}" for n, o in enumerate(outages))
        raise AssertionError(
            f"OUTAGE_SEED={seed} replays this plan:\n{steps}\nwhat happened:\n" + "\n".join(log) + f"\n{exc}"
        ) from exc


def run_plan(app: Sightline, library: Library, outages: list[Outage], log: Callable[[str], None]) -> None:
    """Each outage at its moment (waiting first until the indexer is back from the last one: a fault
    before then would find it still waiting, and not be one)."""
    for outage in outages:
        back(app)
        if outage.phase == "first scan":
            # by pictures embedded: finer than rows, which the engine commits in batches
            wait_for(lambda: embedded(app) >= outage.progress, NOTICED_WITHIN, 0.02)  # noqa: B023
            outage.late = embedded(app) >= FIRST_SCAN
        elif outage.moment == "idle":
            wait_for(lambda: settled(app, library), NOTICED_WITHIN, 0.1)
        elif outage.moment in ("changes", "progress"):
            new = library.change(outage, indexed(app))
            if outage.moment == "progress":
                wait_for(lambda: len(new & indexed(app).keys()) >= outage.progress, NOTICED_WITHIN, 0.02)  # noqa: B023
        take_down(app, outage, log)


def stopped_while_embedding(app: Sightline, library: Library) -> None:
    """The end: stopped (SIGTERM, as `docker stop` does) with files in hand, the process ends by
    itself, cleanly: its engine stopped before the event loop closes (else callbacks into a closed
    loop, and an abort at exit)."""
    before = embedded(app)
    for n in range(40):
        library.write(f"last/{n:03d}.png")
    wait_for(lambda: embedded(app) >= before + 4, NOTICED_WITHIN, 0.02)
    app.process.proc.terminate()
    code = app.process.proc.wait(NOTICED_WITHIN)
    output = app.process.output()
    assert_clean(output, "stopping")
    assert code == 0, output[-3000:]


# what a process says that breaks down: an error nobody handled, an engine outliving its environment,
# callbacks into a closed event loop, and the aborts at exit that follow them
BREAKDOWN = ("Traceback", "environment is closed", "Event loop is closed", "Fatal Python error", "terminate called")


def assert_clean(output: str, when: str) -> None:
    for sign in BREAKDOWN:
        lines = [line[:300] for line in output.splitlines() if sign in line]
        assert not lines, f"{when}: {len(lines)} lines say {sign!r}: {lines[:5]}"


def test_twenty_outages_in_a_row_one_process_every_file_once(
    tmp_path: Path, start_process: Callable[..., Process]
) -> None:
    rng = random.Random(SEED)
    outages = plan(rng, OUTAGES)
    print(f"\nOUTAGE_SEED={SEED}: {OUTAGES} outages of {SECONDS[0]:g}-{SECONDS[1]:g}s")
    library = Library(tmp_path / "img", tmp_path / "staging", random.Random(rng.random()))
    for n in range(FIRST_SCAN):
        library.write(f"first/{n:03d}.png")
    db = Database(os.environ.get("OUTAGE_SERVER", "external"), tmp_path)
    happened: list[str] = []
    started = time.monotonic()

    def log(line: str) -> None:
        happened.append(f"  {time.monotonic() - started:6.1f}s {line}")

    try:
        with seeded(SEED, outages, happened):
            app = start_sightline(start_process, db, library.folder)
            pid = app.process.proc.pid
            watch = StatusWatch(app.base)
            try:
                run_plan(app, library, outages, log)
                status = wait_for(lambda: settled(app, library), NOTICED_WITHIN * 2, 0.1)
                log(f"caught up: {len(library.current)} files, {len(library.versions)} versions")
            finally:
                watch.stop()
            output = app.process.output()
            assert app.process.proc.poll() is None and app.process.proc.pid == pid, output[-4000:]
            assert not watch.problems, watch.problems[:5]
            assert watch.answers > 0
            in_first_scan = sum(o.phase == "first scan" and not o.late for o in outages)
            assert in_first_scan >= min(2, OUTAGES), f"only {in_first_scan} outages found the first scan under way"
            assert indexed(app) == library.current  # one row per file, its current version, deletes gone
            assert status["failed"] == [], status["failed"]
            # each version of each file through the model once, whatever the outages interrupted
            assert status["embedded"] == len(library.versions), (status["embedded"], len(library.versions))
            assert_clean(output, "the outages")
            assert output.count("indexing resumes by itself") == output.count("back after") >= OUTAGES
            stopped_while_embedding(app, library)
    finally:
        db.close()
    print("\n".join(happened))
