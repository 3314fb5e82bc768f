"""Dates in the query language: the words for a day, a month, a season, a year or a span of
years, absolute ("July 2023", "2021-2022", "2024-02-29") or relative to today ("last summer",
"this week", "yesterday"). Pure functions, like the parser that uses them (`api.query`)."""

from __future__ import annotations

import re
from datetime import date, timedelta

MONTHS = {
    name: number
    for number, names in enumerate(
        [
            ("january", "jan"),
            ("february", "feb"),
            ("march", "mar"),
            ("april", "apr"),
            ("may",),
            ("june", "jun"),
            ("july", "jul"),
            ("august", "aug"),
            ("september", "sep", "sept"),
            ("october", "oct"),
            ("november", "nov"),
            ("december", "dec"),
        ],
        start=1,
    )
    for name in names
}
# northern hemisphere, meteorological: a season starts on the first of its month
SEASONS = {"spring": 3, "summer": 6, "autumn": 9, "fall": 9, "winter": 12}
YEAR = re.compile(r"(19|20)\d\d")
YEARS = re.compile(r"((?:19|20)\d\d)[-–]((?:19|20)\d\d)")
ISO_MONTH = re.compile(r"((?:19|20)\d\d)-(\d\d)")
ISO_DAY = re.compile(r"((?:19|20)\d\d)-(\d\d)-(\d\d)")


def _month(year: int, month: int) -> tuple[date, date]:
    first = date(year, month, 1)
    following = date(year + month // 12, month % 12 + 1, 1)
    return first, following - timedelta(days=1)


def _season(year: int, first_month: int) -> tuple[date, date]:
    """The season starting in `first_month` of `year` (winter 2023 is Dec 2023 – Feb 2024)."""
    first = date(year, first_month, 1)
    end_month = first_month + 3
    following = date(year + (end_month - 1) // 12, (end_month - 1) % 12 + 1, 1)
    return first, following - timedelta(days=1)


def _last_season(first_month: int, today: date) -> tuple[date, date]:
    """The most recent season of that name that is over."""
    year = today.year
    while True:
        first, last = _season(year, first_month)
        if last < today:
            return first, last
        year -= 1


def _this_season(first_month: int, today: date) -> tuple[date, date]:
    """The season of that name that is running, or else the one of this year (winter: the one
    that started last December while it is still January or February)."""
    if first_month == 12 and today.month <= 2:
        return _season(today.year - 1, 12)
    return _season(today.year, first_month)


def _relative(unit: str, which: str, today: date) -> tuple[date, date] | None:
    if unit in SEASONS:
        return (_last_season if which == "last" else _this_season)(SEASONS[unit], today)
    if unit == "week":
        monday = today - timedelta(days=today.weekday())
        if which == "last":
            return monday - timedelta(days=7), monday - timedelta(days=1)
        return monday, monday + timedelta(days=6)
    if unit == "month":
        if which == "last":
            previous = today.replace(day=1) - timedelta(days=1)
            return _month(previous.year, previous.month)
        return _month(today.year, today.month)
    if unit == "year":
        year = today.year - 1 if which == "last" else today.year
        return date(year, 1, 1), date(year, 12, 31)
    return None


def date_at(words: list[str], today: date) -> tuple[tuple[date, date], int] | None:
    """A date expression at the start of `words` (lower-case): its range and how many words."""
    w0 = words[0]
    w1 = words[1] if len(words) > 1 else None
    if w0 == "today":
        return (today, today), 1
    if w0 == "yesterday":
        yesterday = today - timedelta(days=1)
        return (yesterday, yesterday), 1
    if w0 in ("last", "this") and w1 is not None:
        found = _relative(w1, w0, today)
        if found:
            return found, 2
    if w1 is not None and YEAR.fullmatch(w1):
        if w0 in MONTHS:
            return _month(int(w1), MONTHS[w0]), 2
        if w0 in SEASONS:
            return _season(int(w1), SEASONS[w0]), 2
    if YEAR.fullmatch(w0):
        return (date(int(w0), 1, 1), date(int(w0), 12, 31)), 1
    if m := YEARS.fullmatch(w0):
        a, b = sorted((int(m[1]), int(m[2])))
        return (date(a, 1, 1), date(b, 12, 31)), 1
    if m := ISO_DAY.fullmatch(w0):
        try:
            day = date(int(m[1]), int(m[2]), int(m[3]))
        except ValueError:
            return None
        return (day, day), 1
    if (m := ISO_MONTH.fullmatch(w0)) and 1 <= int(m[2]) <= 12:
        return _month(int(m[1]), int(m[2])), 1
    return None
