"""Giving memory back to the system after a large part of the process is let go of."""

from __future__ import annotations

import ctypes
import gc
import sys


def give_back() -> None:
    """Collect what is unreachable and return the freed heap to the system. glibc keeps what large
    models and their activations freed in its heap (an allocation it once saw freed raises its
    threshold for mapping the next ones apart), so without `malloc_trim` the process's resident
    size would stay where it was; elsewhere the collection alone is done."""
    gc.collect()
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc (musl): its heap returns freed memory by itself
