"""The embedded server is sized for the machine and the collection: the rules on machines of several
sizes, the PG_* settings overriding each, and a real embedded server started with them and resized
once a collection is in it."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from core.settings import Settings, SettingsError, load_settings
from core.store.db import database_url
from core.store.pg_sizing import GB, MB, Machine, choose, graph_bytes


def settings(tmp_path: Path, **env: str) -> Settings:
    empty = tmp_path / "empty.env"
    empty.write_text("")
    return load_settings({"DATA_DIR": str(tmp_path / "data"), "IMAGE_DIR": str(tmp_path), **env}, env_file=empty)


def mb(value: str) -> int:
    assert value.endswith("MB"), value
    return int(value[:-2])


class TestRules:
    def test_a_small_machine_with_a_million_photos(self, tmp_path: Path) -> None:
        laptop = Machine(ram=8 * GB, cores=4, shm_free=4 * GB)
        chosen = choose(laptop, 1_000_000, 512, settings(tmp_path))
        assert mb(chosen["shared_buffers"]) == 2048  # a quarter of the memory
        assert mb(chosen["effective_cache_size"]) == 6144
        # the graph of a million 512-d vectors (2.7 GB) does not fit in a quarter: capped there
        assert graph_bytes(1_000_000, 512) > 2 * GB and mb(chosen["maintenance_work_mem"]) == 2048
        assert chosen["max_parallel_workers"] == "4" and chosen["max_parallel_maintenance_workers"] == "3"
        assert 4 <= mb(chosen["work_mem"]) <= 256

    def test_a_large_machine_holds_the_whole_graph_and_caps_shared_buffers(self, tmp_path: Path) -> None:
        server = Machine(ram=128 * GB, cores=32, shm_free=64 * GB)
        chosen = choose(server, 1_000_000, 512, settings(tmp_path))
        assert mb(chosen["shared_buffers"]) == 8192
        assert graph_bytes(1_000_000, 512) * 1.2 <= mb(chosen["maintenance_work_mem"]) * MB < 4 * GB
        assert chosen["max_parallel_maintenance_workers"] == "7" and int(chosen["max_worker_processes"]) >= 32

    def test_an_empty_collection_keeps_postgress_build_memory(self, tmp_path: Path) -> None:
        chosen = choose(Machine(ram=16 * GB, cores=2, shm_free=8 * GB), 0, 512, settings(tmp_path))
        assert chosen["maintenance_work_mem"] == "64MB" and chosen["max_parallel_maintenance_workers"] == "1"

    def test_a_container_with_a_small_dev_shm_builds_in_one_process(self, tmp_path: Path) -> None:
        container = Machine(ram=16 * GB, cores=8, shm_free=64 * MB)
        chosen = choose(container, 500_000, 512, settings(tmp_path))
        assert chosen["max_parallel_maintenance_workers"] == "0"

    def test_each_setting_overrides_its_value(self, tmp_path: Path) -> None:
        own = settings(
            tmp_path,
            PG_SHARED_BUFFERS="1gb",
            PG_EFFECTIVE_CACHE_SIZE="3GB",
            PG_MAINTENANCE_WORK_MEM="700MB",
            PG_WORK_MEM="16mb",
            PG_PARALLEL_WORKERS="3",
        )
        chosen = choose(Machine(ram=64 * GB, cores=16, shm_free=32 * GB), 10, 512, own)
        assert chosen["shared_buffers"] == "1GB" and chosen["effective_cache_size"] == "3GB"
        assert chosen["maintenance_work_mem"] == "700MB" and chosen["work_mem"] == "16MB"
        assert chosen["max_parallel_workers"] == "3" and chosen["max_parallel_maintenance_workers"] == "2"

    @pytest.mark.parametrize("value", ["2", "lots", "2 GiB", "-1GB"])
    def test_a_size_without_a_unit_is_refused_in_one_line(self, tmp_path: Path, value: str) -> None:
        with pytest.raises(SettingsError, match="PG_SHARED_BUFFERS=.* must be auto or a size with its unit"):
            settings(tmp_path, PG_SHARED_BUFFERS=value)


def show(url: str, *names: str) -> list[str]:
    with psycopg.connect(url) as conn:
        return [str(conn.execute(f"SHOW {name}").fetchone()[0]) for name in names]  # type: ignore[index]


def test_the_embedded_server_starts_sized_and_follows_the_collection(tmp_path: Path) -> None:
    own = settings(tmp_path, PG_SHARED_BUFFERS="160MB")
    url = database_url(own)
    assert show(url, "shared_buffers", "maintenance_work_mem", "synchronous_commit") == ["160MB", "64MB", "on"]
    pgdata = own.pg_data_dir
    assert "shared_buffers = '160MB'" in (pgdata / "sightline.conf").read_text()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        conn.execute("CREATE TABLE big (e vector(512))")
        # what the planner's statistics would say of a table of 200,000 rows
        conn.execute("UPDATE pg_class SET reltuples = 200000 WHERE relname = 'big'")
    from core.store import pg_sizing

    with psycopg.connect(url, autocommit=True) as conn:
        chosen = pg_sizing.resize(own, pgdata, conn)
    expected = -(-max(64 * MB, min(graph_bytes(200_000, 512) * 6 // 5, pg_sizing.this_machine().ram // 4)) // MB)
    assert chosen["maintenance_work_mem"] == f"{expected}MB"
    # applied by a reload, without a restart
    assert show(url, "maintenance_work_mem")[0] in (f"{expected}MB", f"{expected // 1024}GB")
    assert "sized for 200000 vectors of 512 dimensions" in (pgdata / "sightline.conf").read_text()
