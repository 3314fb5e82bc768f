"""Answers kept until the indexer reports a change.

Some answers read the whole index (the folders and their counts, the groups of duplicates) and are
asked for again and again: by every query with a bare word, by every page of groups. They stay
right for as long as the index does not change, which the indexer records in one row
(`core.store.indexer_status.last_change`): a cached answer is served while that stamp is the same, and
for `max_age` seconds at most, because something other than the indexer may write too.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Hashable
from datetime import datetime
from time import monotonic
from typing import Any, Generic, TypeVar

import psycopg

from core.store import indexer_status

V = TypeVar("V")


def stamp_once(conn: psycopg.Connection[Any]) -> Callable[[], datetime | None]:
    """The index's change stamp, read on the first call only: the lookups of one search (its
    folders, its places) then cost one query to the server between them, not one each."""
    return functools.cache(lambda: indexer_status.last_change(conn))


class UntilIndexChanges(Generic[V]):
    """A cache of answers by key, each valid until the indexer reports a change.

    With `one_at_a_time`, answers are computed one after another: for an expensive answer the
    first requests of a page arrive together, and computing it twice at once would only halve
    the speed of both; the second finds the first's answer when its turn comes.
    """

    def __init__(self, max_age: float, *, one_at_a_time: bool = False) -> None:
        self.max_age = max_age
        self._entries: dict[Hashable, tuple[datetime | None, float, V]] = {}
        self._lock = threading.Lock()
        self._computing: threading.Lock | None = threading.Lock() if one_at_a_time else None

    def get(
        self,
        conn: psycopg.Connection[Any],
        key: Hashable,
        compute: Callable[[], V],
        stamp_of: Callable[[], datetime | None] | None = None,
    ) -> V:
        """The answer for `key`; `stamp_of` gives the index's change stamp where the caller has
        read it already (`stamp_once`)."""
        stamp = stamp_of() if stamp_of is not None else indexer_status.last_change(conn)
        found = self._fresh(key, stamp)
        if found is not None:
            return found[0]
        if self._computing is None:
            return self._store(key, stamp, compute)
        with self._computing:
            found = self._fresh(key, stamp)
            return found[0] if found is not None else self._store(key, stamp, compute)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def _fresh(self, key: Hashable, stamp: datetime | None) -> tuple[V] | None:
        with self._lock:
            entry = self._entries.get(key)
        if entry is not None and entry[0] == stamp and monotonic() - entry[1] < self.max_age:
            return (entry[2],)
        return None

    def _store(self, key: Hashable, stamp: datetime | None, compute: Callable[[], V]) -> V:
        started = monotonic()  # an answer is as old as the data it read
        value = compute()
        with self._lock:
            self._entries[key] = (stamp, started, value)
        return value
