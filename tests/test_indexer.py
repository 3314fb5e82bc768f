"""The indexer keeps a pgvector table in step with a folder: incrementally, with a cache, with bad
files recorded instead of crashing the run, and with one model's vectors per search."""

from __future__ import annotations

import asyncio
import hashlib
import io
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import ROOT, Process, copy_tiny_model, env_for, query, run_main, wait_for, write_slowly
from PIL import Image
from shapes import ALL_DRAWINGS, Drawing, draw

from core.models.embedder import open_embedder
from core.settings import Settings
from core.store.model_state import model_table

N = len(ALL_DRAWINGS)


def rows(settings: Settings) -> dict[str, tuple]:
    return {r[0]: r[1:] for r in query(settings, "SELECT path, content_hash, model, width, height FROM images")}


def errors(settings: Settings) -> dict[str, str]:
    return dict(query(settings, "SELECT path, reason FROM index_errors"))


def jpeg_bytes(image: Image.Image, **save: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", **save)
    return buffer.getvalue()


class TestFirstIndex:
    def test_every_image_gets_one_row_with_its_facts_and_a_unit_vector(
        self, settings: Settings, index: Callable[[Settings], Any]
    ) -> None:
        summary = index(settings)
        assert (summary.added, summary.embedded, summary.failed) == (N, N, 0)
        found = query(settings, "SELECT path, content_hash, size, width, height, format, model, embedding FROM images")
        assert len(found) == N
        for path, digest, size, width, height, fmt, model, embedding in found:
            file = settings.image_dir / path
            assert size == file.stat().st_size and len(digest) == 64
            assert (width, height) == Image.open(file).size
            assert fmt == "png" and model == settings.clip_model
            vector = embedding.to_numpy()
            assert vector.dtype == np.float32 and vector.shape == (32,)
            assert abs(np.linalg.norm(vector) - 1) < 1e-4

    def test_the_table_has_an_hnsw_cosine_index(self, settings: Settings, index: Callable[[Settings], Any]) -> None:
        index(settings)
        table = model_table(settings.clip_model)
        definitions = [r[0] for r in query(settings, "SELECT indexdef FROM pg_indexes WHERE tablename = %s", (table,))]
        # on the half-precision cast where pgvector has it (0.7+), else on the column
        cosine = ("USING hnsw (embedding vector_cosine_ops)", "halfvec_cosine_ops")
        assert any(any(c in d for c in cosine) and "hnsw" in d for d in definitions), definitions

    def test_a_text_query_finds_its_picture_first_by_cosine_distance(
        self, settings: Settings, index: Callable[[Settings], Any]
    ) -> None:
        index(settings)
        model = open_embedder(settings.clip_model)
        for caption in ("a blue square", "a green triangle", "a red circle"):
            vector = model.embed_text(caption)
            best = query(settings, "SELECT path FROM images ORDER BY embedding <=> %s LIMIT 1", (vector,))
            assert best[0][0] == Drawing(*caption.split()[1:]).slug + ".png"

    def test_subfolders_and_upper_case_extensions_are_indexed_hidden_files_are_not(
        self, settings: Settings, index: Callable[[Settings], Any]
    ) -> None:
        nested = settings.image_dir / "trips" / "2023" / "beach"
        nested.mkdir(parents=True)
        shutil.copy(settings.image_dir / "red-circle.png", nested / "SUNSET.PNG")
        draw(ALL_DRAWINGS[1]).save(nested / "photo.JPeG", "JPEG")
        (settings.image_dir / ".hidden").mkdir()
        shutil.copy(settings.image_dir / "red-circle.png", settings.image_dir / ".hidden" / "x.png")
        shutil.copy(settings.image_dir / "red-circle.png", settings.image_dir / "._appledouble.png")
        (settings.image_dir / "notes.txt").write_text("not an image")
        index(settings)
        paths = set(rows(settings))
        assert {"trips/2023/beach/SUNSET.PNG", "trips/2023/beach/photo.JPeG"} <= paths
        assert not any(p.startswith(".") or "/." in p for p in paths)
        assert "notes.txt" not in paths and "notes.txt" not in errors(settings)

    def test_exif_orientation_date_and_camera_are_read(
        self, settings: Settings, index: Callable[[Settings], Any]
    ) -> None:
        picture = draw(ALL_DRAWINGS[0], width=200, height=100)
        exif = Image.Exif()
        exif[274] = 6  # rotate 90° when displayed
        exif[272] = "Tiny Camera"
        exif.get_ifd(0x8769)[36867] = "2021:07:04 12:30:00"
        (settings.image_dir / "rotated.jpg").write_bytes(jpeg_bytes(picture, exif=exif))
        index(settings)
        width, height, taken, camera = query(
            settings, "SELECT width, height, taken_at, camera FROM images WHERE path = 'rotated.jpg'"
        )[0]
        assert (width, height) == (100, 200)
        assert taken.isoformat() == "2021-07-04T12:30:00" and camera == "Tiny Camera"


class TestIncremental:
    def test_an_unchanged_folder_embeds_nothing(self, settings: Settings, index: Callable[[Settings], Any]) -> None:
        index(settings)
        again = index(settings)
        assert (again.added, again.updated, again.deleted, again.unchanged) == (0, 0, 0, N)
        assert again.embedded == 0 and again.reused == 0

    def test_a_modified_file_is_embedded_again(self, settings: Settings, index: Callable[[Settings], Any]) -> None:
        index(settings)
        before = rows(settings)["red-circle.png"]
        time.sleep(0.01)
        draw(Drawing("green", "square"), width=90, height=90).save(settings.image_dir / "red-circle.png")
        summary = index(settings)
        assert (summary.updated, summary.embedded, summary.unchanged) == (1, 1, N - 1)
        after = rows(settings)["red-circle.png"]
        assert after[0] != before[0] and after[2:] == (90, 90)

    def test_a_deleted_file_loses_its_row(self, settings: Settings, index: Callable[[Settings], Any]) -> None:
        index(settings)
        (settings.image_dir / "blue-square.png").unlink()
        summary = index(settings)
        assert summary.deleted == 1 and "blue-square.png" not in rows(settings)

    def test_a_renamed_file_reuses_its_embedding(self, settings: Settings, index: Callable[[Settings], Any]) -> None:
        index(settings)
        old = rows(settings)["blue-square.png"]
        (settings.image_dir / "blue-square.png").rename(settings.image_dir / "renamed.png")
        summary = index(settings)
        assert (summary.added, summary.deleted, summary.embedded, summary.reused) == (1, 1, 0, 1)
        assert rows(settings)["renamed.png"][0] == old[0]

    def test_a_copied_file_reuses_its_embedding(self, settings: Settings, index: Callable[[Settings], Any]) -> None:
        index(settings)
        (settings.image_dir / "copies").mkdir()
        shutil.copy(settings.image_dir / "green-circle.png", settings.image_dir / "copies" / "again.png")
        summary = index(settings)
        assert (summary.added, summary.embedded, summary.reused) == (1, 0, 1)
        vectors = query(
            settings,
            "SELECT embedding FROM images WHERE path IN ('green-circle.png', 'copies/again.png')",
        )
        assert np.array_equal(vectors[0][0].to_numpy(), vectors[1][0].to_numpy())

    def test_losing_the_indexer_state_rebuilds_from_the_cache_without_the_model(
        self, settings: Settings, index: Callable[[Settings], Any]
    ) -> None:
        index(settings)
        shutil.rmtree(settings.state_dir)
        summary = index(settings)
        assert summary.embedded == 0 and summary.reused == N
        assert len(rows(settings)) == N


class TestBadFiles:
    @pytest.fixture
    def bad_files(self, settings: Settings) -> dict[str, bytes]:
        good_jpeg = jpeg_bytes(draw(ALL_DRAWINGS[2], width=300, height=300), quality=95)
        png = io.BytesIO()
        draw(ALL_DRAWINGS[3], width=300, height=300).save(png, "PNG")
        bomb = io.BytesIO()
        Image.new("1", (12_000, 12_000)).save(bomb, "PNG")  # 144 megapixels in a few kB
        files = {
            "empty.jpg": b"",
            "truncated.jpg": good_jpeg[: len(good_jpeg) // 2],
            "truncated.png": png.getvalue()[: len(png.getvalue()) // 2],
            "random.jpg": bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8)),
            "text.png": b"this is a text file, not a picture\n",
            "bomb.png": bomb.getvalue(),
        }
        for name, data in files.items():
            (settings.image_dir / "bad" / name).parent.mkdir(exist_ok=True)
            (settings.image_dir / "bad" / name).write_bytes(data)
        return files

    def test_each_bad_file_gets_a_reason_and_every_good_one_a_row(
        self, settings: Settings, index: Callable[[Settings], Any], bad_files: dict[str, bytes]
    ) -> None:
        summary = index(settings)
        assert summary.failed == len(bad_files) and len(rows(settings)) == N
        reasons = errors(settings)
        assert set(reasons) == {f"bad/{name}" for name in bad_files}
        assert "empty" in reasons["bad/empty.jpg"]
        assert "truncated" in reasons["bad/truncated.jpg"] and "truncated" in reasons["bad/truncated.png"]
        assert "not an image" in reasons["bad/text.png"] and "not an image" in reasons["bad/random.jpg"]
        assert "too large" in reasons["bad/bomb.png"] and "MAX_IMAGE_PIXELS" in reasons["bad/bomb.png"]
        assert all("\n" not in r for r in reasons.values())

    def test_a_fixed_file_loses_its_error_and_a_removed_one_too(
        self, settings: Settings, index: Callable[[Settings], Any], bad_files: dict[str, bytes]
    ) -> None:
        index(settings)
        shutil.copy(settings.image_dir / "red-circle.png", settings.image_dir / "bad" / "text.png")
        (settings.image_dir / "bad" / "empty.jpg").unlink()
        index(settings)
        assert "bad/text.png" in rows(settings)
        assert set(errors(settings)) == {f"bad/{name}" for name in bad_files} - {"bad/text.png", "bad/empty.jpg"}


class TestBuckets:
    """Files are indexed in buckets (`flows.folders.bucket_of`), each a CocoIndex component."""

    def test_rows_stay_right_when_files_move_to_other_components(
        self, settings: Settings, index: Callable[[Settings], Any], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        import flows.folders as folders
        from flows import unchanged

        real_bucket_of = folders.bucket_of
        monkeypatch.setattr(folders, "bucket_of", lambda key: key)  # a component per file, as before buckets
        index(settings)
        before = query(settings, "SELECT path, id, content_hash, embedding FROM images ORDER BY path")
        monkeypatch.setattr(folders, "bucket_of", real_bucket_of)
        unchanged.forget(settings.database_url)  # the engine looks again, as after an upgrade
        summary = index(settings)
        after = query(settings, "SELECT path, id, content_hash, embedding FROM images ORDER BY path")
        assert len(after) == N and [r[:3] for r in after] == [r[:3] for r in before]
        assert all(np.array_equal(a[3].to_numpy(), b[3].to_numpy()) for a, b in zip(after, before))
        assert (summary.added, summary.deleted, summary.embedded, summary.failed) == (0, 0, 0, 0)
        assert errors(settings) == {}

    def test_a_bucket_reads_again_only_its_changed_file(
        self, settings: Settings, index: Callable[[Settings], Any], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        import flows.describe as describe
        import flows.folders as folders

        monkeypatch.setattr(folders, "bucket_of", lambda key: "all")
        index(settings)
        read: list[Path] = []
        real_read = describe._read_and_hash

        def counted(path: Path) -> tuple[bytes, str]:
            read.append(path)
            return real_read(path)

        monkeypatch.setattr(describe, "_read_and_hash", counted)
        changed = settings.image_dir / f"{ALL_DRAWINGS[0].slug}.png"
        draw(ALL_DRAWINGS[1]).save(changed)
        summary = index(settings)
        assert read == [changed]
        assert (summary.updated, summary.embedded) == (1, 1)  # new content: one model call
        assert len(rows(settings)) == N

    def test_a_file_that_raises_gets_an_error_row_and_the_rest_of_its_bucket_their_rows(
        self, settings: Settings, index: Callable[[Settings], Any], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        import flows.folders as folders
        import flows.indexer as indexer
        from flows.unchanged import RETRIED_ON_NEXT_RUN

        bad = f"{ALL_DRAWINGS[2].slug}.png"
        real_words = indexer.item_words

        def words_or_bug(key: str, *args: Any) -> str:
            if key == bad:
                raise ZeroDivisionError("a bug met on this file")
            return real_words(key, *args)

        monkeypatch.setattr(folders, "bucket_of", lambda key: "all")
        monkeypatch.setattr(indexer, "item_words", words_or_bug)
        summary = index(settings)
        assert set(rows(settings)) == {f"{d.slug}.png" for d in ALL_DRAWINGS} - {bad}
        assert errors(settings) == {bad: f"indexing failed (a bug met on this file); {RETRIED_ON_NEXT_RUN}"}
        assert summary.failed == 1
        monkeypatch.setattr(indexer, "item_words", real_words)
        again = index(settings)  # retried: the error row goes, the row comes
        assert len(rows(settings)) == N and errors(settings) == {} and again.embedded == 0


class TestThroughput:
    """The model is kept fed: files are read and decoded while others wait for their batch, and the
    embedding cache is asked about many files in one query."""

    def test_files_waiting_for_the_model_leave_room_to_decode_more(
        self, settings: Settings, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        import random

        from shapes import random_drawing

        import flows.describe as describe
        from core.models.embedder import Embedders
        from flows.engine import index_once
        from flows.run import READ_AHEAD

        rng = random.Random(11)
        extra = 3 * READ_AHEAD
        for i in range(extra):
            random_drawing(ALL_DRAWINGS[i % N], rng).save(settings.image_dir / f"more-{i}.jpg", quality=90)
        decoded: list[int] = []  # appended by the file workers (atomic under the GIL)
        real_decode = describe.decode_image

        def counted_decode(*args: Any, **kwargs: Any) -> Any:
            out = real_decode(*args, **kwargs)
            decoded.append(1)
            return out

        monkeypatch.setattr(describe, "decode_image", counted_decode)
        embedders = Embedders()
        model: Any = embedders.get(settings.clip_model, settings.device, settings.precision)
        real_embed = model.embed_pixels
        passes: list[int] = []

        def first_pass_waits(batch: np.ndarray) -> np.ndarray:
            if not passes:
                # hold the model until, beside this first batch, a full batch more is decoded (more
                # than READ_AHEAD allows in hand at once), or give up
                deadline = time.monotonic() + 60
                wanted = max(2 * READ_AHEAD, len(batch) + model.batch_size)
                while len(decoded) < wanted and time.monotonic() < deadline:
                    time.sleep(0.05)
            passes.append(len(batch))
            return real_embed(batch)

        model.embed_pixels = first_pass_waits
        summary = asyncio.run(index_once(settings, embedders=embedders))
        assert (summary.embedded, summary.failed) == (N + extra, 0)
        assert len(decoded) == N + extra
        assert max(passes) == model.batch_size  # one full forward pass, where READ_AHEAD capped it at 16
        assert len(rows(settings)) == N + extra

    def test_cache_calls_arriving_together_go_in_one_query_and_share_its_failure(self) -> None:
        from flows.cache import Coalesced, DatabaseUnavailable

        batches: list[list[str]] = []

        async def lengths(keys: dict[str, None]) -> dict[str, int]:
            batches.append(list(keys))
            await asyncio.sleep(0)  # a query in flight: the calls arriving meanwhile wait for the next
            if "down" in keys:
                raise DatabaseUnavailable("database unreachable (test)")
            return {k: len(k) for k in keys if k != "absent"}

        async def scenario() -> tuple[list[int | None], int | None, list[BaseException | int | None]]:
            lookups: Coalesced[str, None, int] = Coalesced(lengths)
            together = await asyncio.gather(*(lookups(k, None) for k in ("a", "bb", "ccc", "bb", "absent")))
            alone = await lookups("dddd", None)
            failed = await asyncio.gather(lookups("down", None), lookups("e", None), return_exceptions=True)
            return together, alone, list(failed)

        together, alone, failed = asyncio.run(scenario())
        assert together == [1, 2, 3, 2, None] and alone == 4
        assert batches[:2] == [["a", "bb", "ccc", "absent"], ["dddd"]]
        assert all(isinstance(f, DatabaseUnavailable) for f in failed)


class TestModels:
    def test_changing_the_model_re_embeds_and_never_mixes_vectors(
        self, settings: Settings, index: Callable[[Settings], Any], tmp_path: Path
    ) -> None:
        index(settings)
        other = settings.with_overrides(clip_model=str(copy_tiny_model(tmp_path / "another-model")))
        summary = index(other)
        assert summary.embedded == N
        models = {r[0] for r in query(settings, "SELECT DISTINCT model FROM images")}
        assert models == {other.clip_model}


def cocoindex_update(settings: Settings) -> subprocess.CompletedProcess[str]:
    """`cocoindex update main.py`: the CocoIndex CLI on the project's app."""
    cli = Path(sys.executable).parent / "cocoindex"
    env = env_for(settings)
    return subprocess.run(
        [str(cli), "update", "main.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


class TestCommandLine:
    def test_index_prints_a_summary_and_the_cocoindex_cli_runs_the_same_app(self, settings: Settings) -> None:
        result = run_main(settings, "index")
        assert result.returncode == 0, result.stderr
        assert f"added {N}, updated 0, deleted 0, unchanged 0, failed 0" in result.stdout
        (settings.image_dir / "red-circle.png").unlink()
        import os

        done = cocoindex_update(settings)
        assert done.returncode == 0, done.stderr
        assert len(rows(settings)) == N - 1
        assert os.environ.get("COCOINDEX_DISABLE_USAGE_TRACKING") == "1"

    def test_a_first_index_made_by_the_cocoindex_cli_is_the_one_searches_use(self, settings: Settings) -> None:
        done = cocoindex_update(settings)
        assert done.returncode == 0, done.stderr
        assert len(rows(settings)) == N  # `images` shows the new model's table
        found = run_main(settings, "search", "a red circle", "--limit", "1")
        assert found.returncode == 0 and "red-circle.png" in found.stdout, found.stderr

    def test_the_embedded_database_starts_by_itself_and_keeps_its_data(self, settings: Settings) -> None:
        embedded = settings.with_overrides(database_url="")
        first = run_main(embedded, "index", "--json")
        assert first.returncode == 0, first.stderr
        assert (embedded.data_dir / "postgres" / "PG_VERSION").exists()
        second = run_main(embedded, "index", "--json")
        assert '"unchanged": 18' in second.stdout and '"embedded": 0' in second.stdout


class TestLive:
    def test_watch_follows_the_folder_and_a_slow_copy_ends_as_one_clean_row(
        self, settings: Settings, start_process: Callable[..., Process]
    ) -> None:
        watcher = start_process(settings, "watch")
        wait_for(lambda: "watching" in watcher.output(), timeout=60)
        assert len(rows(settings)) == N

        (settings.image_dir / "green-square.png").unlink()
        wait_for(lambda: "green-square.png" not in rows(settings))

        picture = draw(Drawing("purple", "circle"), width=700, height=500)
        data = jpeg_bytes(picture, quality=95)
        target = settings.image_dir / "slow.jpg"
        write_slowly(target, data)
        digest = hashlib.sha256(data).hexdigest()
        wait_for(lambda: rows(settings).get("slow.jpg", (None,))[0] == digest and "slow.jpg" not in errors(settings))
        time.sleep(1.0)  # nothing left behind after things settle
        assert rows(settings)["slow.jpg"][0] == digest and "slow.jpg" not in errors(settings)
        assert query(settings, "SELECT count(*) FROM images WHERE path = 'slow.jpg'")[0][0] == 1
