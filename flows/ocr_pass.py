"""The OCR pass: the text of every picture the index holds, read after its embedding, at a lower
priority, into `picture_text` (`core.store.picture_text`); how it runs is `flows.second_pass`'s.

A picture is decoded upright (`core.media.pictures`) and read (`core.models.ocr`). One that cannot
be decoded gets a row saying why (`skipped`); videos are not read.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from core.errors import ImageError, first_line
from core.media.pictures import render_picture_data
from core.models.ocr import READ_LONGEST, Reading, TextReader, engine_name, read_picture
from core.settings import Settings
from core.store import picture_text
from flows.second_pass import SecondPass

log = logging.getLogger("sightline.indexer")


class OcrPass(SecondPass[Reading]):
    """Reads pictures' text in a thread of its own."""

    name = "sightline-ocr"
    doing = "Reading the text in pictures"

    def __init__(self, settings: Settings, url: str, busy: Callable[[], bool] = lambda: False) -> None:
        super().__init__(settings, url, busy)
        self._readers = threading.local()  # an engine per worker thread (one is not for several)
        self.engine = engine_name()

    @property
    def reader(self) -> TextReader:
        """This thread's engine, made on its first picture: its one compute thread is this thread."""
        reader: TextReader | None = getattr(self._readers, "reader", None)
        if reader is None:
            reader = self._readers.reader = TextReader(threads=1)
        return reader

    def waiting(
        self, conn: Any, table: str, limit: int, leave_out: Collection[str], after: str
    ) -> list[tuple[str, str, str]]:
        return [(h, key, "picture") for h, key in picture_text.waiting(conn, table, limit, leave_out, after)]

    def count_waiting(self, conn: Any, table: str) -> int:
        return picture_text.progress(conn, table).waiting

    def process(self, key: str, kind: str, path: Path, data: bytes) -> Reading:
        try:
            picture = render_picture_data(data, str(path), READ_LONGEST, max_pixels=self.settings.max_image_pixels)
        except ImageError as exc:
            return Reading([], skipped=f"cannot be decoded for reading ({exc})")
        try:
            return read_picture(self.reader, picture, self.settings.ocr)
        except Exception as exc:  # the engine tripping over one picture: said once, never retried
            log.warning("could not read the text of %s: %s", key, first_line(exc))
            return Reading([], skipped=f"OCR failed ({first_line(exc)})")

    def store(self, conn: Any, content_hash: str, key: str, result: Reading) -> None:
        picture_text.write(conn, content_hash, result, self.engine)
