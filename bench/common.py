"""Shared pieces of the benchmark: corpus generation, subprocesses of `main.py`, servers, timing."""

from __future__ import annotations

import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from PIL import Image, ImageDraw

from core.settings import PROJECT_ROOT, Settings


@dataclass
class Row:
    """One line of the results table."""

    part: str
    metric: str
    ours: str
    usual: str = ""
    ratio: str = ""
    target: str = ""
    met: str = ""


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, *args: Any, **kwargs: Any) -> None:
        row = Row(*args, **kwargs)
        self.rows.append(row)
        print(
            f"  {row.part}: {row.metric} = {row.ours}"
            + (f" (usual {row.usual}, ratio {row.ratio})" if row.usual else ""),
            flush=True,
        )


def run_alone(prefix: str, part: Callable[[Report, Path], None]) -> None:
    """One part of the benchmark on its own (`python -m bench.PART`): in a folder of its own, removed
    after, its rows printed as the table's."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    report = Report()
    try:
        part(report, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for row in report.rows:
        print(f"| {row.part} | {row.metric} | {row.ours} | {row.usual} | {row.target} | {row.met} |")


def verdict(ok: bool) -> str:
    return "yes" if ok else "no"


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(p / 100 * len(ordered) + 0.5)) - 1))]


def median(values: list[float]) -> float:
    return statistics.median(values)


def generate_photos(folder: Path, count: int, seed: int = 0, size: tuple[int, int] = (640, 480)) -> list[Path]:
    """Photo-sized JPEGs with texture, so decoding costs what a real photo costs."""
    rng = random.Random(seed)
    np_rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        noise = np_rng.integers(0, 255, (size[1] // 8, size[0] // 8, 3), dtype=np.uint8)
        image = Image.fromarray(noise, "RGB").resize(size, Image.Resampling.BILINEAR)
        pen = ImageDraw.Draw(image)
        for _ in range(6):
            x, y = rng.randrange(size[0]), rng.randrange(size[1])
            r = rng.randrange(20, 160)
            pen.ellipse((x - r, y - r, x + r, y + r), fill=tuple(rng.randrange(256) for _ in range(3)))
        path = folder / f"sub{i % 7}" / f"photo-{i:05d}.jpg"
        path.parent.mkdir(exist_ok=True)
        image.save(path, "JPEG", quality=88)
        paths.append(path)
    return paths


def list_images(folder: Path) -> list[Path]:
    from core.media.pictures import is_image_name

    return sorted(p for p in folder.rglob("*") if p.is_file() and is_image_name(p.name) and not p.name.startswith("."))


def env_for(settings: Settings, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        IMAGE_DIR=str(settings.image_dir),
        DATA_DIR=str(settings.data_dir),
        DATABASE_URL=settings.database_url,
        CLIP_MODEL=settings.clip_model,
        PRECISION=settings.precision,
        TEXT_TOWER=settings.text_tower,
        IMAGE_TOWER=settings.image_tower,
        BATCH_SIZE=str(settings.batch_size),
        OCR=settings.ocr,
        COCOINDEX_DISABLE_USAGE_TRACKING="1",
        HF_HUB_OFFLINE="1",
    )
    env.update(extra)
    return env


def run_measured(cmd: list[str], env: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], float, int]:
    """Run a command; returns (result, wall seconds, peak resident bytes of the process tree)."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0
    watched = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            rss = watched.memory_info().rss
            peak = max(peak, rss)
        except psutil.Error:
            pass
        time.sleep(0.05)
    out, err = proc.communicate()
    wall = time.perf_counter() - started
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err), wall, peak


def main_py(*args: str) -> list[str]:
    return [sys.executable, str(PROJECT_ROOT / "main.py"), *args]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


class Server:
    """A server subprocess (`main.py serve` or `uvicorn --factory api.app:create_app`), stopped on exit."""

    def __init__(self, cmd: list[str], env: dict[str, str], log: Path) -> None:
        self._log = open(log, "w")  # noqa: SIM115
        self.proc = subprocess.Popen(cmd, env=env, cwd=PROJECT_ROOT, stdout=self._log, stderr=subprocess.STDOUT)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._log.close()


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()
