"""The passes after the embeddings, text (`flows.ocr_pass`) and faces (`flows.face_pass`), side by
side: which run under the settings, once (`index`) or following the index (`watch`, `serve`)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from core.settings import Settings
from flows.face_pass import FacePass
from flows.ocr_pass import OcrPass
from flows.second_pass import SecondPass

ProgressFn = Callable[[int, int], None]


async def run_once(settings: Settings, url: str, text_progress: ProgressFn | None) -> tuple[int, int]:
    """Read what waits; returns (texts read, contents looked at for faces). The two passes run side by
    side, each in a thread of its own on one core: the faces of a library are found long before its
    text is read, so they add next to nothing to an update's time. A pass with nothing waiting reads
    nothing and loads nothing."""

    async def text() -> int:
        if settings.ocr == "off":
            return 0
        return await asyncio.to_thread(OcrPass(settings, url).run_until_done, text_progress)

    async def faces() -> int:
        return await asyncio.to_thread(FacePass(settings, url).run_until_done) if settings.faces else 0

    text_read, faces_read = await asyncio.gather(text(), faces())
    return text_read, faces_read


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
