"""The passes after the embeddings, text (`flows.ocr_pass`) and faces (`flows.face_pass`), side by
side: which run under the settings, once (`index`) or following the index (`watch`, `serve`)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from core.settings import Settings
from core.threads import usable_cores
from flows.face_pass import FacePass
from flows.ocr_pass import OcrPass
from flows.second_pass import SecondPass

ProgressFn = Callable[[int, int], None]


async def run_once(settings: Settings, url: str, text_progress: ProgressFn | None) -> tuple[int, int]:
    """Read what waits; returns (texts read, contents looked at for faces). The two passes run side by
    side on the machine's cores, each thread with one compute thread of its own: the faces in one
    thread, the text in the others (`text_workers`), and in the faces' thread too once the faces are
    done, so no core is left idle while text waits. A pass with nothing waiting reads nothing and
    loads nothing."""
    text_pass = OcrPass(settings, url) if settings.ocr != "off" else None
    face_pass = FacePass(settings, url) if settings.faces else None
    workers, most = text_workers(usable_cores(), faces=face_pass is not None)

    async def text() -> int:
        if text_pass is None:
            return 0
        return await asyncio.to_thread(text_pass.run_until_done, text_progress, workers)

    async def faces() -> int:
        if face_pass is None:
            return 0
        try:
            return await asyncio.to_thread(face_pass.run_until_done)
        finally:
            if text_pass is not None and workers < most:
                text_pass.add_worker()

    text_read, faces_read = await asyncio.gather(text(), faces())
    return text_read, faces_read


MAX_TEXT_WORKERS = 2  # each holds an OCR engine: about 230 MB while it detects text in a 12 MP photo


def text_workers(cores: int, *, faces: bool) -> tuple[int, int]:
    """How many threads read text beside the faces pass's one, and how many once it is done."""
    most = max(1, min(cores, MAX_TEXT_WORKERS))
    return max(1, min(most, cores - 1 if faces else cores)), most


def start_following(settings: Settings, url: str, busy: Callable[[], bool]) -> list[SecondPass[Any]]:
    """The passes the settings ask for, started: each reads whenever `busy` says the indexer is idle."""
    started: list[SecondPass[Any]] = []
    if settings.ocr != "off":
        started.append(OcrPass(settings, url, busy=busy))
    if settings.faces:
        started.append(FacePass(settings, url, busy=busy))
    for second_pass in started:
        second_pass.start()
    return started
