"""Writes: rows per second into the indexed table when the embeddings are already computed, as after
a GPU pass or for a model whose embeddings are cached: what is left is reading and hashing each file,
its facts, and the row. A folder of small pictures (200 a folder) whose embeddings are put in the
content-hash cache first, then, each in a `python main.py index` of its own and checked:

- the first scan: rows per second end to end (the rows, then the indexes built over them);
- an update after changing, deleting and adding 1 % of the files: only those rows change;
- a switch to another model whose embeddings are cached: rows per second into its new table;
- a scan killed with SIGKILL halfway, then run again: every file has exactly one right row.

    python -m bench.writes [--files 200000] [--model DIR]
    python -m bench.writes --prepare DIR [--files 200000]   # the first scan's input only, to profile
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import resource
import shlex
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import psycopg
from PIL import Image

from bench.common import Report, env_for, main_py, run_alone, run_measured, verdict
from bench.serving import synthetic_embeddings
from bench.switch import same_weights_elsewhere
from core.models.embedder import open_embedder
from core.settings import PROJECT_ROOT, Settings, get_settings
from core.store.db import connect, database_url, ensure_schema
from core.store.model_state import SWITCH_GRACE_SECONDS, model_table

GOAL_ROWS_PER_SECOND = 2000
# the settings `--prepare` prints: where things are, and what the scan reads with
_SHOWN = ("IMAGE_DIR", "DATA_DIR", "DATABASE_URL", "CLIP_MODEL", "PRECISION", "OCR", "FACES", "HF_HUB_OFFLINE")
PER_FOLDER = 200


def _template() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (16, 12), (200, 120, 40)).save(out, "JPEG", quality=70)
    return out.getvalue()


def picture_bytes(i: int, version: int = 0) -> bytes:
    """A small JPEG made distinct by bytes after its end (decoders ignore them): its own content hash."""
    return _TEMPLATE + f"picture {i} version {version}".encode()


_TEMPLATE = _template()


def write_pictures(folder: Path, numbers: range, version: int = 0) -> dict[Path, bytes]:
    written = {}
    for i in numbers:
        path = folder / f"day{i // PER_FOLDER:04d}" / f"IMG_{i:06d}.jpg"
        if i % PER_FOLDER == 0 or not path.parent.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
        data = picture_bytes(i, version)
        path.write_bytes(data)
        written[path] = data
    return written


def cache_embeddings(url: str, model: str, dim: int, contents: list[bytes], seed: int) -> None:
    """What a GPU pass leaves behind: an embedding per content hash, in the cache the indexer reads."""
    vectors = synthetic_embeddings(len(contents), dim, seed)  # clustered like a model's: the graph's build time
    with connect(url) as conn, conn.cursor() as cur:
        with cur.copy("COPY embedding_cache (model, content_hash, embedding) FROM STDIN") as copy:
            for data, vector in zip(contents, vectors):
                copy.write_row((model, hashlib.sha256(data).hexdigest(), vector.tobytes()))


def postgres_cpu(data_dir: Path) -> float:
    """CPU seconds the embedded server under `data_dir` has used: its processes and those it reaped."""
    main = psutil.Process(int((data_dir / "postgres" / "postmaster.pid").read_text().split()[0]))
    spent = main.cpu_times()
    total = spent.user + spent.system + spent.children_user + spent.children_system
    for child in main.children(recursive=True):
        try:
            times = child.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


@dataclass
class Timed:
    """One `python main.py index`: its summary, wall time, CPU time, and when its rows were all in."""

    summary: dict[str, float]
    wall: float
    indexer_cpu: float  # seconds, the indexing process
    postgres_cpu: float  # seconds, the database server
    rows_at: float  # seconds after the start when the model table first held `rows` rows
    indexer_cpu_at: float  # the indexing process's CPU by then
    loop_cpu_at: float  # of which its main thread's (the event loop, where the GIL is held)
    postgres_cpu_at: float
    indexed_at: float  # seconds after the start when the table's HNSW index was there


_HNSW_THERE = "SELECT 1 FROM pg_indexes WHERE tablename = %s AND indexdef LIKE '%%USING hnsw%%'"


def timed_index(env: dict[str, str], url: str, data_dir: Path, table: str, rows: int) -> Timed:
    """Run `python main.py index --json`, polling the model table's row count (and what both
    processes spent) from this process meanwhile."""
    before, pg_before = resource.getrusage(resource.RUSAGE_CHILDREN), postgres_cpu(data_dir)
    started = time.perf_counter()
    proc = subprocess.Popen(
        main_py("index", "--json"), env=env, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    reached: list[float] = []
    indexed: list[float] = []
    done = threading.Event()

    def watch() -> None:
        process = psutil.Process(proc.pid)
        with psycopg.connect(url, autocommit=True) as conn:
            while not done.wait(0.2):
                try:
                    count = int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # type: ignore[index]
                    spent = process.cpu_times()
                    loop = next(t for t in process.threads() if t.id == proc.pid)
                except (psycopg.errors.UndefinedTable, psutil.Error):
                    continue
                if count >= rows:
                    at = time.perf_counter() - started
                    reached.extend((at, spent.user + spent.system, loop.user_time + loop.system_time))
                    reached.append(postgres_cpu(data_dir))
                    break
            while not done.wait(0.2):
                if conn.execute(_HNSW_THERE, (table,)).fetchone() is not None:
                    indexed.append(time.perf_counter() - started)
                    return

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    out, err = proc.communicate()
    wall = time.perf_counter() - started
    done.set()
    watcher.join(10)
    if proc.returncode != 0:
        raise RuntimeError(f"index failed: {err[-2000:].decode(errors='replace')}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    indexer = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    rows_at, indexer_at, loop_at, pg_at = reached if reached else (wall, indexer, indexer, postgres_cpu(data_dir))
    return Timed(
        summary=json.loads(out.decode().strip().splitlines()[-1]),
        wall=wall,
        indexer_cpu=indexer,
        postgres_cpu=postgres_cpu(data_dir) - pg_before,
        rows_at=rows_at,
        indexer_cpu_at=indexer_at,
        loop_cpu_at=loop_at,
        postgres_cpu_at=pg_at - pg_before,
        indexed_at=indexed[0] if indexed else wall,
    )


def _index(env: dict[str, str]) -> tuple[dict[str, float], float]:
    result, wall, _ = run_measured(main_py("index", "--json"), env)
    if result.returncode != 0:
        raise RuntimeError(f"index failed: {result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1]), wall


def _rows(url: str, table: str) -> list[tuple[str, int, str]]:
    with connect(url) as conn:
        return [(r[0], r[1], r[2]) for r in conn.execute(f"SELECT path, id, content_hash FROM {table}")]


def _expected(image_dir: Path, files: dict[Path, bytes]) -> dict[str, str]:
    return {p.relative_to(image_dir).as_posix(): hashlib.sha256(d).hexdigest() for p, d in files.items()}


def _exactly(rows: list[tuple[str, int, str]], expected: dict[str, str]) -> tuple[int, int, int]:
    """Rows missing, rows extra (a path or an id twice, or a path that is no file), rows whose
    content hash is not their file's."""
    paths = {r[0] for r in rows}
    extra = len(rows) - len(paths & set(expected)) + len(rows) - len({r[1] for r in rows})
    wrong = sum(1 for path, _, digest in rows if path in expected and expected[path] != digest)
    return len(set(expected) - paths), extra, wrong


@dataclass
class Prepared:
    """A folder of `files` pictures and a database whose cache holds their embeddings."""

    run: Settings
    url: str
    model: str
    dim: int
    env: dict[str, str]  # what `python main.py index` runs with
    written: dict[Path, bytes]


def prepare(settings: Settings, folder: Path, files: int, seed: int = 1) -> Prepared:
    run = settings.with_overrides(image_dir=folder / "img", data_dir=folder / "data", database_url="", ocr="off")
    embedder = open_embedder(run.clip_model, run.device, run.precision)
    url = database_url(run)  # started here, so it outlives the indexing processes killed below
    ensure_schema(url)
    print(f"writes: {files} pictures, {embedder.dim}-d embeddings cached for {embedder.name}", flush=True)
    written = write_pictures(run.image_dir, range(files))
    cache_embeddings(url, embedder.name, embedder.dim, list(written.values()), seed=seed)
    env = {**env_for(run), "FACES": "off"}
    return Prepared(run, url, embedder.name, embedder.dim, env, written)


def bench_writes(settings: Settings, report: Report, work: Path, files: int = 200_000) -> None:
    prepared = prepare(settings, work / "writes", files)
    run, url, env, written = prepared.run, prepared.url, prepared.env, prepared.written
    embedder_name, dim = prepared.model, prepared.dim
    table = model_table(embedder_name)

    first = timed_index(env, url, run.data_dir, table, files)
    rate = files / first.wall
    missing, extra, wrong = _exactly(_rows(url, table), _expected(run.image_dir, written))
    report.add(
        "15 writes",
        f"rows/s into the indexed table, first scan of {files:,} pictures whose embeddings are cached "
        "(`python main.py index`, wall: the rows, then the indexes over them)",
        f"{rate:,.0f} rows/s ({first.wall:.1f} s: rows in by {first.rows_at:.1f} s, "
        f"indexes {first.wall - first.rows_at:.1f} s)",
        f"{first.summary['embedded']:.0f} model calls; {missing} missing, {extra} extra, {wrong} wrong",
        "",
        f"≥ {GOAL_ROWS_PER_SECOND:,}",
        verdict(rate >= GOAL_ROWS_PER_SECOND and first.summary["embedded"] == 0 and missing + extra + wrong == 0),
    )
    ms = 1000 / files
    report.add(
        "15 writes",
        "CPU per row in that scan, while the rows went in / while the indexes were built: "
        "the indexing process (its event loop's thread), Postgres",
        f"{first.indexer_cpu_at * ms:.2f} ({first.loop_cpu_at * ms:.2f}) / "
        f"{(first.indexer_cpu - first.indexer_cpu_at) * ms:.2f} ms, "
        f"{first.postgres_cpu_at * ms:.2f} / {(first.postgres_cpu - first.postgres_cpu_at) * ms:.2f} ms",
        f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} after",
    )

    # 1 % changed (new bytes, their embeddings cached too), 1 % deleted, 1 % added
    step = max(1, files // 100)
    changed = write_pictures(run.image_dir, range(0, files, 100), version=1)
    deleted = {p for i, p in enumerate(written) if i % 100 == 50}
    for path in deleted:
        path.unlink()
    added = write_pictures(run.image_dir, range(files, files + step))
    cache_embeddings(url, embedder_name, dim, [*changed.values(), *added.values()], seed=2)
    now = {p: d for p, d in written.items() if p not in deleted} | changed | added
    update, update_wall = _index(env)
    missing, extra, wrong = _exactly(_rows(url, table), _expected(run.image_dir, now))
    right = (update["added"], update["updated"], update["deleted"], update["embedded"]) == (
        len(added),
        len(changed),
        len(deleted),
        0,
    )
    report.add(
        "15 writes",
        f"update after changing {len(changed):,}, deleting {len(deleted):,} and adding {len(added):,} "
        f"of the {files:,} (`python main.py index`, wall)",
        f"{update_wall:.1f} s: added {update['added']:.0f}, updated {update['updated']:.0f}, "
        f"deleted {update['deleted']:.0f}",
        f"{missing} missing, {extra} extra, {wrong} wrong",
        "",
        "only those rows",
        verdict(right and missing + extra + wrong == 0),
    )

    # a switch to a model whose embeddings are cached: its table from the facts the files' bucket
    # remembers, without reading them (the new model: the same weights under another name)
    elsewhere = same_weights_elsewhere(run.clip_model, work / "writes" / "other-model")
    other = open_embedder(elsewhere, run.device, run.precision)
    cache_embeddings(url, other.name, other.dim, list(now.values()), seed=4)
    chosen = subprocess.run(main_py("model", other.name), env=env, cwd=PROJECT_ROOT, capture_output=True, text=True)
    if chosen.returncode != 0:
        raise RuntimeError(f"model failed: {chosen.stderr[-2000:]}")
    new_table = model_table(other.name)
    switch = timed_index(env, url, run.data_dir, new_table, len(now))
    missing, extra, wrong = _exactly(_rows(url, new_table), _expected(run.image_dir, now))
    rate = len(now) / switch.indexed_at
    report.add(
        "15 writes",
        f"rows/s into a new model's table, its embeddings cached ({len(now):,} rows: `python main.py model M`, "
        "then `python main.py index`, until the new table's index is built)",
        f"{rate:,.0f} rows/s ({switch.indexed_at:.1f} s: rows in by {switch.rows_at:.1f} s)",
        f"{switch.summary['embedded']:.0f} model calls; {missing} missing, {extra} extra, {wrong} wrong; "
        f"the command {switch.wall:.0f} s (the switch waits {SWITCH_GRACE_SECONDS:.0f} s for servers)",
        "",
        f"≥ {GOAL_ROWS_PER_SECOND:,}",
        verdict(rate >= GOAL_ROWS_PER_SECOND and switch.summary["embedded"] == 0 and missing + extra + wrong == 0),
    )
    bench_crash(settings, report, work, max(200, files // 10))


def bench_crash(settings: Settings, report: Report, work: Path, files: int) -> None:
    """A first scan killed with SIGKILL once half its rows are in (the first, for a small one), held
    there by a lock on the table so that the moment does not depend on speed; then run again."""
    prepared = prepare(settings, work / "writes-crash", files, seed=3)
    run, url, env, written = prepared.run, prepared.url, prepared.env, prepared.written
    table = model_table(prepared.model)
    proc = subprocess.Popen(
        main_py("index"), env=env, cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    with psycopg.connect(url, autocommit=True) as conn:
        rows = 0
        hold_at = files // 2 if files >= 2000 else 1  # a small scan is over in a second
        while rows < hold_at and proc.poll() is None:
            time.sleep(0.01)
            try:
                rows = int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # type: ignore[index]
            except psycopg.errors.UndefinedTable:
                continue
        with conn.transaction():
            conn.execute(f"LOCK TABLE {table} IN SHARE MODE")  # no more rows until the process is gone
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(30)
    killed_at = len(_rows(url, table))
    again, wall = _index(env)
    missing, extra, wrong = _exactly(_rows(url, table), _expected(run.image_dir, written))
    report.add(
        "15 writes",
        f"first scan of {files:,} killed with SIGKILL, then `python main.py index` again: rows after",
        f"killed at {killed_at:,} rows; after: {missing} missing, {extra} extra, {wrong} wrong",
        f"the rest in {wall:.1f} s, {again['embedded']:.0f} model calls",
        "",
        "exactly once",
        verdict(0 < killed_at < files and missing + extra + wrong == 0 and again["embedded"] == 0),
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.writes", description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=200_000)
    parser.add_argument("--model", help="model folder or id (default: CLIP_MODEL); only its size is used")
    parser.add_argument(
        "--prepare",
        type=Path,
        metavar="DIR",
        help="only write the pictures and cache their embeddings in DIR, and print the environment in which "
        "`python main.py index` makes the first scan (to profile it)",
    )
    args = parser.parse_args()
    os.environ.setdefault("COCOINDEX_DISABLE_USAGE_TRACKING", "1")
    base = get_settings()
    model = args.model or base.clip_model
    # a folder by its full path, as the indexing processes (run from the project's root) name it
    settings = base.with_overrides(clip_model=str(Path(model).resolve()) if Path(model).is_dir() else model)
    if args.prepare:
        prepared = prepare(settings, args.prepare.resolve(), args.files)
        shown = " ".join(f"{k}={shlex.quote(v)}" for k, v in prepared.env.items() if k in _SHOWN)
        print(f"{shown} python main.py index")
        return
    run_alone("sightline-writes-", lambda report, work: bench_writes(settings, report, work, args.files))


if __name__ == "__main__":
    main()
