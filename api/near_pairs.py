"""Every pair of embeddings at or above a cosine threshold, without comparing all pairs.

Asking the HNSW index for each image's neighbours costs one graph walk per image (about 2 ms on
2 cores, so minutes at 100,000 images), most of it spent on pages and tuples, not on arithmetic.
Here the vectors are read once and compared in blocks with matrix products instead:

- small collections (up to `EXACT_MAX`) are compared all against all, so the answer is exact;
- larger ones are cut into cells around centroids (a few rounds of spherical k-means on a sample),
  each vector lives in its nearest cell, and each vector is compared with the members of its
  `PROBES` nearest cells. Two near-duplicates (cosine ≥ 0.9) sit so close that the cell of one is
  almost always among the nearest cells of the other; `bench.duplicates` measures the recall
  against an exact all-pairs scan.

The products run on a thread per core, each thread with products of its own (blocks, cells) and
torch computing on that thread alone: independent products need no barrier, so a thread the busy
machine deschedules delays only its own share. They run in bfloat16 through torch (8× numpy's
float32 on this CPU, whose cores have bfloat16 instructions): rounding each coordinate to bfloat16
moves a cosine of unit vectors by at most `ROUNDING`, so the products keep every pair within that
margin of the threshold, and each pair kept is then checked in float32. There are no false pairs,
and the all-against-all path misses none.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np
import torch

from core.threads import one_torch_thread, usable_cores

EXACT_MAX = 8192  # all against all up to here: 8,192² products take well under a second
PROBES = 6  # cells each vector is compared in
SAMPLE_PER_CELL = 24  # k-means trains on this many vectors per cell
ROUNDS = 4  # k-means rounds: cells balanced enough that no block is much larger than the rest
BLOCK = 4096  # rows of one matrix product: bounds memory at BLOCK × BLOCK floats
ROUNDING = 0.01  # bound on |bfloat16 dot − exact dot| for unit vectors: 2 × 2⁻⁸ + accumulation
SEED = 17  # the cells, and so the rare missed pair, are the same on every run

T = TypeVar("T")
R = TypeVar("R")


def _on_every_core(work: Callable[[T], R], items: Sequence[T]) -> list[R]:
    """`work` over `items`, in order, on a thread per core this process may use (torch releases
    the interpreter lock inside its products)."""
    cores = usable_cores()
    if min(cores, len(items)) <= 1:
        return [work(item) for item in items]
    with ThreadPoolExecutor(min(cores, len(items)), thread_name_prefix="near-pairs") as pool:
        return list(pool.map(work, items))


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return np.ascontiguousarray(vectors / norms, dtype=np.float32)


def _pairs_in_block(x: torch.Tensor, left: np.ndarray, right: np.ndarray, cut: float) -> tuple[np.ndarray, np.ndarray]:
    """Candidate pairs (row numbers, a < b) between rows `left` and `right` of `x` (bfloat16)."""
    # index_select, not x[tensor]: the latter takes 25× as long for a gather of rows
    sims = x.index_select(0, torch.from_numpy(left)) @ x.index_select(0, torch.from_numpy(right)).T.contiguous()
    rows, cols = torch.nonzero(sims >= cut - ROUNDING, as_tuple=True)
    a, b = left[rows.numpy()], right[cols.numpy()]
    keep = a < b  # each pair once, and no image with itself
    return a[keep], b[keep]


def _all_against_all(x: torch.Tensor, cut: float) -> list[tuple[np.ndarray, np.ndarray]]:
    index = np.arange(len(x))
    # only blocks at or right of the diagonal: the rest are the same pairs mirrored
    return _on_every_core(lambda s: _pairs_in_block(x, index[s : s + BLOCK], index[s:], cut), range(0, len(x), BLOCK))


def _centroids(x: torch.Tensor, cells: int, rng: np.random.Generator) -> torch.Tensor:
    sample = x.index_select(
        0, torch.from_numpy(rng.choice(len(x), min(len(x), cells * SAMPLE_PER_CELL), replace=False))
    )
    centroids = sample.index_select(0, torch.from_numpy(rng.choice(len(sample), cells, replace=False))).float()
    for _ in range(ROUNDS):
        right = centroids.bfloat16().T.contiguous()
        nearest = torch.cat(
            _on_every_core(
                lambda s: torch.argmax(sample[s : s + BLOCK] @ right, dim=1),  # noqa: B023 (runs at once)
                range(0, len(sample), BLOCK),
            )
        )
        sums = torch.zeros_like(centroids).index_add_(0, nearest, sample.float())
        empty = torch.bincount(nearest, minlength=cells) == 0
        sums[empty] = centroids[empty]  # a cell nothing chose keeps its place
        centroids = torch.nn.functional.normalize(sums, dim=1)
    return centroids.bfloat16()


def _nearest_cells(x: torch.Tensor, centroids: torch.Tensor, probes: int) -> np.ndarray:
    """Each row's `probes` nearest cells, nearest first (the first is where it lives)."""
    right = centroids.T.contiguous()
    parts = _on_every_core(
        lambda s: torch.topk(x[s : s + BLOCK] @ right, probes, dim=1).indices, range(0, len(x), BLOCK)
    )
    return torch.cat(parts).numpy()


def _by_cells(x: torch.Tensor, cut: float, probes: int) -> list[tuple[np.ndarray, np.ndarray]]:
    # √(probes · n) cells: placing the vectors (n × cells products) then costs what comparing
    # them within cells does (probes × n × n / cells)
    cells = max(1, int(np.sqrt(probes * len(x))))
    probes = min(probes, cells)
    nearest = _nearest_cells(x, _centroids(x, cells, np.random.default_rng(SEED)), probes)
    home = nearest[:, 0]
    members_order = np.argsort(home, kind="stable")
    member_bounds = np.searchsorted(home[members_order], np.arange(cells + 1))
    # (vector, cell) for every probe, grouped by cell: each cell's queries in one product
    probe_rows = np.repeat(np.arange(len(x)), probes)
    probe_cells = nearest.reshape(-1)
    probe_order = np.argsort(probe_cells, kind="stable")
    probe_bounds = np.searchsorted(probe_cells[probe_order], np.arange(cells + 1))

    def in_cell(cell: int) -> list[tuple[np.ndarray, np.ndarray]]:
        members = members_order[member_bounds[cell] : member_bounds[cell + 1]]
        queries = probe_rows[probe_order[probe_bounds[cell] : probe_bounds[cell + 1]]]
        steps = range(0, len(queries) if len(members) else 0, BLOCK)
        return [_pairs_in_block(x, queries[s : s + BLOCK], members, cut) for s in steps]

    return [pair for found in _on_every_core(in_cell, range(cells)) for pair in found]


def _checked(x: np.ndarray, a: np.ndarray, b: np.ndarray, cut: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The candidates whose float32 cosine reaches the cut, with it."""
    sims = np.concatenate(
        [np.empty(0, dtype=np.float32)]
        + [np.einsum("ij,ij->i", x[a[s : s + BLOCK]], x[b[s : s + BLOCK]]) for s in range(0, len(a), BLOCK)]
    )
    keep = sims >= cut
    return a[keep], b[keep], np.minimum(sims[keep], 1.0)


def near_pairs(
    vectors: np.ndarray, threshold: float, *, exact_max: int = EXACT_MAX, probes: int = PROBES
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(a, b, similarity) arrays, row numbers a < b, for the pairs of rows with cosine ≥ threshold."""
    empty = np.empty(0, dtype=np.int64)
    if len(vectors) < 2:
        return empty, empty, np.empty(0, dtype=np.float32)
    x = unit_rows(vectors)
    xb = torch.from_numpy(x).bfloat16()
    # a hair of slack: identical pictures re-encoded can differ by float rounding at threshold 1.0
    cut = threshold - 1e-6
    with one_torch_thread():
        parts = _all_against_all(xb, cut) if len(x) <= exact_max else _by_cells(xb, cut, probes)
    a = np.concatenate([empty, *(p[0] for p in parts)])
    b = np.concatenate([empty, *(p[1] for p in parts)])
    # a pair found from both sides (each in a cell the other probes) once
    keys = np.unique(a * len(x) + b)
    return _checked(x, keys // len(x), keys % len(x), cut)
