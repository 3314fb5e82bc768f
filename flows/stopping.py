"""Stopping an engine for good before its environment closes and the next engine starts.

Leaving CocoIndex's runtime does not stop an update. Its files go on being read and embedded, and
each fails once it reaches the closed environment ("The CocoIndex environment is closed", retried
over and over by the engine), while the next engine starts on the same files: the model asked
twice for one picture, and, at the process's end, callbacks into a closed event loop. So an update
is cancelled the way CocoIndex's own command line cancels one on Ctrl-C (its global cancellation
token, which reaches every file's coroutine), its end awaited, and then the files it still had in
hand and the model calls it had started (`flows.run.InFlight`): a model call finishes and leaves
its embedding in memory for the next engine (`flows.cache`).

Each wait is bounded: an engine that does not stop in time is logged, and left behind.

CocoIndex 1.0 has no public call that cancels one update: `cancel_all` and
`reset_global_cancellation` are what its command line (`cocoindex update`, on Ctrl-C) and its own
tests use. The token is the process's, and this process runs one engine at a time.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from cocoindex._internal import core as coco_core

from core.errors import first_line
from flows.run import IndexRun

log = logging.getLogger("sightline.indexer")

STOP_SECONDS = 60.0  # a model call in hand finishes within this, even a large batch on a CPU


async def stop_update(handle: Any, run: IndexRun, *, started: bool) -> None:
    """Cancel the update of `handle` and wait until nothing of it runs any more. `started`: whether
    the update was started (an update handle starts its update when first awaited)."""
    coco_core.cancel_all()
    try:
        if started:
            try:
                await asyncio.wait_for(handle.result(), STOP_SECONDS)
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as exc:  # "Operation cancelled", the error that ended it, or a timeout
                log.debug("the engine stopped: %s", first_line(exc))
        try:
            await asyncio.wait_for(run.in_flight.idle(), STOP_SECONDS)
        except TimeoutError:
            log.warning(
                "the indexer's engine did not stop within %.0fs (%d files in hand); starting the next one",
                STOP_SECONDS,
                run.in_flight.files,
            )
    finally:
        # the token is the process's: the next update needs a fresh one
        coco_core.reset_global_cancellation()
