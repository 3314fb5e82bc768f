"""The benchmark still runs end to end (tiny sizes; the real run is `make bench`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import ROOT


def test_the_benchmark_smoke_run_fills_every_part_of_the_table(tmp_path: Path) -> None:
    out = tmp_path / "RESULTS.md"
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    table = out.read_text()
    parts = ("1 indexing", "2 re-run", "3 live", "4 query", "5 memory", "6 cold start", "7 load", "8 duplicates")
    later = ("10 formats", "11 text", "12 cold index", "13 faces", "14 precision", "15 writes", "16 defaults")
    for part in (*parts, *later):
        assert f"| {part} |" in table, part
    assert "| --- |" in table and "cores" in table
    rerun = next(line for line in table.splitlines() if "unchanged corpus" in line)
    assert rerun.rstrip().endswith("| yes |")  # a second run embeds nothing
