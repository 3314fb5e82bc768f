"""An update of a folder where nothing happened is answered from the folder listing, without
starting the engine; anything the rows depend on that changed sends it through the engine, which
finds what changed as before (`flows.unchanged`)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, env_for, query, run_main
from shapes import ALL_DRAWINGS, Drawing, draw
from stills import xmp_packet

from core.media.library import library_of
from core.settings import Settings
from core.store.db import database_url
from core.store.model_state import model_table
from flows import unchanged

N = len(ALL_DRAWINGS)

Index = Callable[[Settings], Any]


def rows(settings: Settings) -> dict[str, tuple[Any, ...]]:
    return {r[0]: r[1:] for r in query(settings, "SELECT path, content_hash, modified_at, keywords FROM images")}


class TestNothingChanged:
    def test_a_second_update_is_answered_from_the_listing(self, settings: Settings, index: Index) -> None:
        first = index(settings)
        assert not first.from_listing and first.added == N
        before = rows(settings)
        again = index(settings)
        assert again.from_listing
        assert (again.added, again.updated, again.deleted, again.unchanged, again.failed) == (0, 0, 0, N, 0)
        assert again.embedded == 0 and rows(settings) == before

    def test_bad_files_are_still_counted_with_their_reasons(self, settings: Settings, index: Index) -> None:
        (settings.image_dir / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
        assert index(settings).failed == 1
        again = index(settings)
        assert again.from_listing and (again.unchanged, again.failed) == (N, 1)
        assert [path for (path,) in query(settings, "SELECT path FROM index_errors")] == ["broken.jpg"]

    def test_the_command_line_says_so(self, settings: Settings) -> None:
        first = run_main(settings, "index")
        assert first.returncode == 0, first.stderr
        assert "no file changed" not in first.stdout
        line = run_main(settings, "index")
        assert line.returncode == 0, line.stderr
        assert f"unchanged {N}, failed 0" in line.stdout
        assert "no file changed since the last complete update" in line.stdout
        as_json = run_main(settings, "index", "--json")
        assert json.loads(as_json.stdout)["from_listing"] is True

    def test_the_status_heartbeat_says_when_the_folder_was_last_looked_at(
        self, settings: Settings, index: Index
    ) -> None:
        index(settings)
        [(first_beat,)] = query(settings, "SELECT heartbeat_at FROM indexer_status")
        assert index(settings).from_listing
        [(beat, done, total)] = query(settings, "SELECT heartbeat_at, files_done, files_total FROM indexer_status")
        assert beat > first_beat and done == total == N


def _replace_content(settings: Settings) -> None:
    draw(Drawing("green", "square"), width=90, height=90).save(settings.image_dir / "red-circle.png")


def _add_file(settings: Settings) -> None:
    shutil.copy(settings.image_dir / "red-circle.png", settings.image_dir / "copy.png")


def _remove_file(settings: Settings) -> None:
    (settings.image_dir / "red-circle.png").unlink()


def _touch(settings: Settings) -> None:
    path = settings.image_dir / "red-circle.png"
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def _add_sidecar(settings: Settings) -> None:
    (settings.image_dir / "red-circle.png.xmp").write_bytes(xmp_packet(keywords=("lisbon",)))


class TestAnyChangeRunsTheEngine:
    @pytest.mark.parametrize(
        "change", [_replace_content, _add_file, _remove_file, _touch, _add_sidecar], ids=lambda f: f.__name__[1:]
    )
    def test_a_change_in_the_folder(self, settings: Settings, index: Index, change: Callable[[Settings], None]) -> None:
        index(settings)
        before = rows(settings)
        change(settings)
        summary = index(settings)
        assert not summary.from_listing
        after = rows(settings)
        assert after != before  # the engine found the change
        assert index(settings).from_listing  # and the next update is quick again

    def test_rows_deleted_behind_its_back(self, settings: Settings, index: Index) -> None:
        index(settings)
        table = model_table(settings.clip_model)
        query(settings, f"DELETE FROM {table} WHERE path = 'red-circle.png' RETURNING path")
        # the tables no longer hold what the fingerprint was taken with: the engine is asked
        assert not index(settings).from_listing

    def test_another_setting_the_rows_depend_on(self, settings: Settings, index: Index) -> None:
        index(settings)
        fewer_frames = settings.with_overrides(video_frames=settings.video_frames + 1)
        assert not index(fewer_frames).from_listing
        assert index(fewer_frames).from_listing

    def test_a_lost_engine_state(self, settings: Settings, index: Index) -> None:
        index(settings)
        shutil.rmtree(settings.state_dir)
        summary = index(settings)
        assert not summary.from_listing and summary.reused == N and len(rows(settings)) == N

    def test_any_engine_start_forgets_the_last_update(self, settings: Settings, index: Index) -> None:
        index(settings)
        # the CocoIndex CLI runs the same engine: what it did is not the last update's fingerprint
        cli = subprocess.run(
            [str(Path(sys.executable).parent / "cocoindex"), "update", "main.py"],
            cwd=ROOT,
            env=env_for(settings),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert cli.returncode == 0, cli.stderr
        assert query(settings, "SELECT value FROM sightline_meta WHERE key = %s", (unchanged.KEY,)) == []
        assert not index(settings).from_listing

    def test_a_file_waiting_for_a_retry_is_never_skipped(self, settings: Settings, index: Index) -> None:
        index(settings)
        url = database_url(settings)
        listing = unchanged.take_listing(library_of(settings.image_dirs))
        query(
            settings,
            "INSERT INTO index_errors (path, reason, size, modified_at) VALUES (%s, %s, 1, now()) RETURNING path",
            ("flaky-disk.jpg", f"cannot read the file (Input/output error); {unchanged.RETRIED_ON_NEXT_RUN}"),
        )
        unchanged.forget(url)
        assert unchanged.record(url, settings, listing) is False
        assert unchanged.held(url, settings, listing) is None
