"""The passes after the embeddings, text (`flows.ocr_pass`) then faces (`flows.face_pass`): which
run under the settings, once (`index`) or following the index (`watch`, `serve`)."""

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
    """Read what waits, text first; returns (texts read, contents looked at for faces). A pass with
    nothing waiting reads nothing and loads nothing."""
    text_read = (
        0 if settings.ocr == "off" else await asyncio.to_thread(OcrPass(settings, url).run_until_done, text_progress)
    )
    faces_read = await asyncio.to_thread(FacePass(settings, url).run_until_done) if settings.faces else 0
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
