"""Memory and worker settings for the embedded Postgres, from the machine and the collection.

Postgres's own defaults (128 MB `shared_buffers`, 64 MB `maintenance_work_mem`, 4 MB `work_mem`) fit
a small shared server; the embedded one has the machine to itself and one large HNSW index, which
is fast only while it is in memory and built fast only while its graph fits `maintenance_work_mem`.

The settings go into `sightline.conf` in the data folder, included from `postgresql.conf`, rewritten
before every start (`shared_buffers` and the worker pool only change at a start) and again once the
server answers, with the collection's size read from it (the others apply on a reload). A value set
with `ALTER SYSTEM` still wins: `postgresql.auto.conf` is read after both.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from core.settings import Settings
from core.threads import usable_cores

MB = 1024 * 1024
GB = 1024 * MB
CONF_FILE = "sightline.conf"
INCLUDE_LINE = f"include_if_exists = '{CONF_FILE}'"
# Measured with pgvector 0.8.6 (m = 16): the build's graph holds each element's vector plus about
# 720 bytes of neighbour lists and bookkeeping; 512-d float vectors took 2,763 bytes an element
# in maintenance_work_mem, halfvec 1,740 ("hnsw graph no longer fits ... after N tuples").
GRAPH_OVERHEAD = 720
SHARED_BUFFERS_CAP = 8 * GB
WORK_MEM_CAP = 256 * MB
_SIZED_FOR = re.compile(r"^# sized for (\d+) vectors of (\d+) dimensions", re.M)


@dataclass(frozen=True)
class Machine:
    ram: int  # bytes this process may use: the machine's, or its container's limit
    cores: int  # cores this process may run on
    shm_free: int  # free bytes in /dev/shm, where a parallel index build keeps its graph


def _cgroup_limit() -> int | None:
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            raw = Path(path).read_text().strip()
        except OSError:
            continue
        if raw.isdigit() and int(raw) < 1 << 60:  # cgroup v1 says "no limit" with a huge number
            return int(raw)
    return None


def _cgroup_cores() -> float | None:
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        return int(quota) / int(period)
    except (OSError, ValueError):
        return None  # no file, or "max": no quota


def this_machine() -> Machine:
    import psutil

    ram = int(psutil.virtual_memory().total)
    limit = _cgroup_limit()
    cores = usable_cores()
    quota = _cgroup_cores()
    try:
        shm = shutil.disk_usage("/dev/shm").free
    except OSError:
        shm = ram  # no /dev/shm (macOS): Postgres uses POSIX shared memory from RAM
    return Machine(
        ram=min(ram, limit) if limit else ram,
        cores=max(1, min(cores, int(quota)) if quota else cores),
        shm_free=shm,
    )


def graph_bytes(rows: int, dims: int, bytes_per_dim: int = 4) -> int:
    """The memory an HNSW build of `rows` vectors needs to keep its whole graph (m = 16);
    `bytes_per_dim` 2 for halfvec."""
    return rows * (dims * bytes_per_dim + GRAPH_OVERHEAD)


def _pg(nbytes: int) -> str:
    """Bytes as a Postgres memory value, in whole MB (rounded up)."""
    return f"{max(1, -(-nbytes // MB))}MB"


def choose(machine: Machine, rows: int, dims: int, settings: Settings) -> dict[str, str]:
    """The server settings for this machine and a collection of `rows` vectors of `dims`, with any
    PG_* setting overriding the computed value."""
    shared = min(max(128 * MB, machine.ram // 4), SHARED_BUFFERS_CAP)
    # the graph plus a fifth for the index's own growth during the build, never under
    # Postgres's default, never more than a quarter of the memory
    need = graph_bytes(rows, dims) * 6 // 5
    maintenance = min(max(64 * MB, need), max(64 * MB, machine.ram // 4))
    workers = machine.cores if not settings.pg_parallel_workers else settings.pg_parallel_workers
    # a parallel build keeps the graph in /dev/shm (a container's is 64 MB unless given more):
    # where it cannot, the build runs in the leader alone, in its own memory
    maintenance_workers = max(0, workers - 1)
    if machine.shm_free < maintenance + 32 * MB:
        maintenance_workers = 0
    connections = 100
    work = min(max(4 * MB, (machine.ram - shared) // (connections * 3)), WORK_MEM_CAP)
    chosen = {
        "shared_buffers": settings.pg_shared_buffers or _pg(shared),
        "effective_cache_size": settings.pg_effective_cache_size or _pg(machine.ram * 3 // 4),
        "maintenance_work_mem": settings.pg_maintenance_work_mem or _pg(maintenance),
        "work_mem": settings.pg_work_mem or _pg(work),
        "max_worker_processes": str(max(8, workers + 4)),
        "max_parallel_workers": str(workers),
        "max_parallel_workers_per_gather": str(max(1, min(4, workers // 2))),
        "max_parallel_maintenance_workers": str(min(maintenance_workers, 7)),
    }
    return chosen


def render(chosen: dict[str, str], rows: int, dims: int, machine: Machine) -> str:
    lines = [
        f"# sized for {rows} vectors of {dims} dimensions, {machine.ram // MB} MB of memory, {machine.cores} cores",
        "# Written by Sightline at every start of the embedded server: edits here are lost. Set",
        "# PG_SHARED_BUFFERS and the other PG_* settings instead (docs/configuration.md).",
        *(f"{name} = '{value}'" for name, value in chosen.items()),
    ]
    return "\n".join(lines) + "\n"


def sized_for(pgdata: Path) -> tuple[int, int]:
    """The collection size the file was last written for: (rows, dims); (0, 512) for none."""
    try:
        found = _SIZED_FOR.search((pgdata / CONF_FILE).read_text())
    except OSError:
        found = None
    return (int(found[1]), int(found[2])) if found else (0, 512)


def write(pgdata: Path, text: str) -> bool:
    """Write the settings file (and include it once from postgresql.conf); True if it changed."""
    conf = pgdata / CONF_FILE
    try:
        if conf.read_text() == text:
            return False
    except OSError:
        pass
    tmp = conf.with_suffix(f".{os.getpid()}.tmp")  # two commands may start at once
    tmp.write_text(text)
    owner = pgdata.stat()
    if os.geteuid() == 0:  # the server runs as the data folder's owner
        os.chown(tmp, owner.st_uid, owner.st_gid)
    tmp.replace(conf)
    main = pgdata / "postgresql.conf"
    if main.exists() and INCLUDE_LINE not in main.read_text():
        with main.open("a") as out:
            out.write(f"\n# Sightline's sizing for this machine and collection\n{INCLUDE_LINE}\n")
    return True


def collection_size(conn: psycopg.Connection[Any]) -> tuple[int, int]:
    """(rows, dims) of the largest vector table, or of the embedding cache where that is larger
    (a rebuild or a model switch writes every cached image again)."""
    row = conn.execute(
        """
        SELECT coalesce(max(greatest(c.reltuples, 0)), 0)::bigint, coalesce(max(a.atttypmod), 512)
        FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_type t ON t.oid = a.atttypid
        WHERE t.typname IN ('vector', 'halfvec') AND c.relkind = 'r' AND NOT a.attisdropped
        """
    ).fetchone()
    cached = conn.execute("SELECT greatest(reltuples, 0)::bigint FROM pg_class WHERE relname = 'embedding_cache'")
    cache_rows = (cached.fetchone() or (0,))[0]
    rows, dims = (int(row[0]), int(row[1])) if row else (0, 512)
    return max(rows, int(cache_rows)), dims if dims > 0 else 512


def prepare(settings: Settings, pgdata: Path, machine: Machine | None = None) -> dict[str, str]:
    """Before a start: the settings for the size the collection had last time."""
    machine = machine or this_machine()
    rows, dims = sized_for(pgdata)
    chosen = choose(machine, rows, dims, settings)
    if (pgdata / "PG_VERSION").exists():
        write(pgdata, render(chosen, rows, dims, machine))
    return chosen


def resize(settings: Settings, pgdata: Path, conn: psycopg.Connection[Any]) -> dict[str, str]:
    """Once the server answers (or after a bulk load): the settings for the collection as it is
    now, applied with a reload where they changed."""
    machine = this_machine()
    rows, dims = collection_size(conn)
    chosen = choose(machine, rows, dims, settings)
    if write(pgdata, render(chosen, rows, dims, machine)):
        conn.execute("SELECT pg_reload_conf()")
    return chosen


def indexer_session(settings: Settings) -> dict[str, str]:
    """Session settings for the indexer's own connections to the embedded server. CocoIndex builds
    a new table's HNSW index once the first scan's rows are in, when the server was sized for an
    empty database: with 64 MB the graph of 200,000 rows spills to disk and the build took over 20
    minutes here, against about 3 with it in memory. pgvector takes only the memory the graph
    needs, so the ceiling (a quarter of the memory, or PG_MAINTENANCE_WORK_MEM) costs small tables
    nothing. An external server's settings are its administrator's."""
    if not settings.embedded_database:
        return {}
    chosen = choose(this_machine(), rows=1 << 40, dims=1, settings=settings)
    return {k: chosen[k] for k in ("maintenance_work_mem", "max_parallel_maintenance_workers")}
