"""Matches listed by date instead of by relevance (`sort=date`, `order=newest|oldest`).

Every result is judged (`api.relevance`); sorted by date, a search lists every result at or above
a level (strong unless `min_match` says otherwise), newest or oldest first. The matches come from
the ranking, in chunks, from the best score down: at most `scan` of them (the same bound as
`min_match`), and no further than the first chunk without a single match at that level (past the
point where the query stops describing the pictures, another match is very unlikely). They are
then ordered by (date, id): the set and its order depend only on the index, never on the page
asked for, so pages continue each other without gaps or repeats.

A query of only filters (dates, folders, places) has no relevance to sort by: it lists every
picture that meets them by date in any case, newest first unless `order=oldest`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from api.relevance import at_least
from api.search import MAX_LIMIT
from core.errors import BadRequest

SORTS = ("relevance", "date")
ORDERS = ("newest", "oldest")

Judged = Callable[[int, int], tuple[list[dict[str, Any]], bool]]  # (offset, limit) → (results, more)


@dataclass(frozen=True)
class DateOrder:
    name: str  # newest | oldest

    @property
    def oldest_first(self) -> bool:
        return self.name == "oldest"


def check_sort(sort: str | None, order: str | None) -> DateOrder | None:
    """The date order asked for, or None for the ranking by relevance."""
    by = (sort or "").strip().lower() or "relevance"
    if by not in SORTS:
        raise BadRequest(f"sort={sort!r} is not a sort: expected relevance or date")
    direction = (order or "").strip().lower()
    if direction and direction not in ORDERS:
        raise BadRequest(f"order={order!r} is not an order: expected newest or oldest")
    if by == "relevance":
        if direction:
            raise BadRequest(f"order={order!r} goes with sort=date: add sort=date, or leave order out")
        return None
    return DateOrder(direction or "newest")


def by_date(
    judged: Judged, level: str, order: DateOrder, *, offset: int, limit: int, scan: int
) -> tuple[list[dict[str, Any]], bool]:
    """A page of the matches at `level` or above, by date; and whether more follow."""
    matches: list[dict[str, Any]] = []
    scanned, more = 0, True
    while more and scanned < scan:
        chunk, more = judged(scanned, MAX_LIMIT)
        scanned += len(chunk)
        passing = [r for r in chunk if at_least(r["match"], level)]
        matches += passing
        if not passing:
            break
    matches.sort(key=lambda r: r["id"])
    # ISO dates of one shape sort as text; a stable sort keeps ids ascending within a date
    matches.sort(key=lambda r: r["taken_at"] or "", reverse=not order.oldest_first)
    return matches[offset : offset + limit], len(matches) > offset + limit
