"""How many cores this process may use, and how many threads torch computes with where the default
(one per core) costs more than it gives."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the system has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """torch on the calling thread with one compute thread, for work made of many small products
    (duplicate grouping's blocks, a short query through the text tower). With a thread per core,
    each product waits on a barrier for every thread, and on busy cores a thread that is not
    running holds the barrier for a whole time slice: 71 s instead of 9 s for duplicate grouping
    at 100,000, and 29 to 113 ms instead of 9 to 18 ms for one query through ViT-B/32's text
    tower, measured on this project's shared 2 cores."""
    import torch  # only where torch is already in use: the callers hold tensors

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
