"""The query language: `q` → weighted terms for the model, plus date, folder and place filters.

    2:sunset + mountains - people       terms joined by + (with) and - (without), optional weights
    "t - shirt" + x-ray                 quotes keep words (and operators, dates, places) literal
    beach + img:3401622331081469        an indexed image as a term
    beach in:holidays/2023 July 2023    filters: in:FOLDER, a bare word naming a subfolder, dates
    beach in Lisbon, New York 2023      filters: the names of places where pictures were taken
    text:"cafe luna" -text:draft        the picture's own words: names, keywords, title, text in it
    Ada at the beach, Ada and Grace     filters: the names of people (all must be in the picture)
    person:"Ada Lovelace" -person:Ada   a person explicitly, or pictures without them

Plain words search both what a picture shows and its own words (`api.text_search`); `text:WORD` or
`text:"WORDS"` asks for pictures whose own words hold all of them, and ranks by those words alone
when nothing else is asked; `-text:...` leaves out pictures whose own words hold them.

Pure functions: no database, no model. Folder, place and people's names come through lookups the
caller supplies (so that only names the collection has are taken: an ordinary word is never a place
unless pictures were taken somewhere of that name, nor a person unless the user gave someone that
name), and relative dates through `today` (the date words: `api.query_dates`). Where words could be
read several ways, dates come first, then the longest name of a person (up to MAX_PLACE_WORDS
words), then the longest place name ("New York" before "York"), then a folder's name, then a
one-word place.

Operators are `+` and `-` at the start of the query or after a space ("a dog - cat", "a dog -cat"); a hyphen
inside a word ("x-ray", "t-shirt", "2021-2022") is part of it; a backslash makes a quote an ordinary character
(\\"). A weight `N:` (0.01 to 100) weighs its whole term, up to the next operator. Errors count positions from 0.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from typing import Any, TypeVar

from api.bounds import MAX_WEIGHT, MIN_WEIGHT
from api.query_dates import date_at
from core.errors import BadRequest
from core.store.text_index import words_of

MAX_TERMS = 20


class QueryError(BadRequest):
    """A query that cannot be read; says where and what was expected instead."""

    def __init__(self, problem: str, position: int, expected: str) -> None:
        self.problem = problem
        self.position = position
        self.expected = expected
        super().__init__(f"q: {problem} at position {position}: expected {expected}")

    def details(self) -> dict[str, Any]:
        return {"position": self.position, "expected": self.expected}


@dataclass(frozen=True)
class Term:
    weight: float  # negative for terms after "-"
    text: str | None = None
    image_id: int | None = None
    start: int = 0  # span in q, from its operator (if any) to its last character
    end: int = 0

    def as_json(self) -> dict[str, Any]:
        what: dict[str, Any] = {"text": self.text} if self.text is not None else {"image_id": self.image_id}
        return {**what, "weight": self.weight, "start": self.start, "end": self.end}


@dataclass(frozen=True)
class DateRange:
    first: date  # inclusive
    last: date  # inclusive
    words: str
    start: int
    end: int

    def as_json(self) -> dict[str, Any]:
        return {
            "words": self.words,
            "taken_after": self.first.isoformat(),
            "taken_before": self.last.isoformat(),
            "start": self.start,
            "end": self.end,
        }


@dataclass(frozen=True)
class FolderFilter:
    folder: str
    words: str
    start: int
    end: int

    def as_json(self) -> dict[str, Any]:
        return {"folder": self.folder, "words": self.words, "start": self.start, "end": self.end}


@dataclass(frozen=True)
class PlaceFilter:
    place: str  # the name as the lookup gave it
    words: str  # as typed, with a connector before it ("in Lisbon")
    start: int
    end: int

    def as_json(self) -> dict[str, Any]:
        return {"place": self.place, "words": self.words, "start": self.start, "end": self.end}


@dataclass(frozen=True)
class PersonFilter:
    person_id: int
    name: str  # as the lookup gave it
    exclude: bool  # -person:
    words: str  # as typed, with a connector before it ("and Grace")
    start: int
    end: int

    def as_json(self) -> dict[str, Any]:
        return {
            "person_id": self.person_id,
            "name": self.name,
            "exclude": self.exclude,
            "words": self.words,
            "start": self.start,
            "end": self.end,
        }


@dataclass(frozen=True)
class TextFilter:
    text: str  # as typed, without its quotes
    exclude: bool  # -text:
    start: int
    end: int

    def as_json(self) -> dict[str, Any]:
        return {"text": self.text, "exclude": self.exclude, "start": self.start, "end": self.end}


@dataclass
class ParsedQuery:
    terms: list[Term] = field(default_factory=list)
    dates: list[DateRange] = field(default_factory=list)
    folders: list[FolderFilter] = field(default_factory=list)
    places: list[PlaceFilter] = field(default_factory=list)
    texts: list[TextFilter] = field(default_factory=list)
    people: list[PersonFilter] = field(default_factory=list)

    @property
    def date_span(self) -> tuple[date, date] | None:
        """Several dates in one query cover the span from the earliest to the latest."""
        if not self.dates:
            return None
        return min(d.first for d in self.dates), max(d.last for d in self.dates)

    @property
    def text(self) -> str:
        return " ".join(t.text for t in self.terms if t.text is not None)

    def understood(self) -> dict[str, Any]:
        span = self.date_span
        filters: dict[str, Any] = {}
        if span:
            filters["taken_after"], filters["taken_before"] = span[0].isoformat(), span[1].isoformat()
            filters["dates"] = [d.as_json() for d in self.dates]
        if self.folders:
            filters["folders"] = [f.as_json() for f in self.folders]
        if self.places:
            filters["places"] = [p.as_json() for p in self.places]
        if self.texts:
            filters["text"] = [t.as_json() for t in self.texts]
        if self.people:
            filters["people"] = [p.as_json() for p in self.people]
        return {"text": self.text, "terms": [t.as_json() for t in self.terms], "filters": filters}


# --- lexing ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Token:
    kind: str  # "op", "word" or "phrase"
    value: str  # an operator, a word as typed, or a phrase without its quotes
    start: int
    end: int


def _closing_quote(q: str, opening: int) -> int:
    close = q.find('"', opening + 1)
    while close > 0 and q[close - 1] == "\\":  # \" is a quote character, not the end
        close = q.find('"', close + 1)
    if close < 0:
        raise QueryError("unbalanced quote", opening, 'a closing "')
    return close


def _lex(q: str) -> list[_Token]:
    tokens: list[_Token] = []
    i, n = 0, len(q)
    while i < n:
        ch = q[i]
        if ch.isspace():
            i += 1
        elif ch == '"':
            close = _closing_quote(q, i)
            tokens.append(_Token("phrase", q[i + 1 : close].replace('\\"', '"'), i, close + 1))
            i = close + 1
        elif ch in "+-" and (i == 0 or q[i - 1].isspace()) and (i + 1 == n or q[i + 1] not in "+-"):
            tokens.append(_Token("op", ch, i, i + 1))
            i += 1
        else:
            start = i
            while i < n and not q[i].isspace():
                # a quoted part inside a word (in:"my folder", 2:"red car") runs to its closing quote
                opens = q[i] == '"' and (i == 0 or q[i - 1] != "\\")
                i = _closing_quote(q, i) + 1 if opens else i + 1
            tokens.append(_Token("word", q[start:i], start, i))
    return tokens


# --- parsing ---------------------------------------------------------------------------------

WEIGHT = re.compile(r"([0-9.][^:\"\s]*):(.*)", re.DOTALL)
IMAGE = re.compile(r"img:(.*)", re.DOTALL | re.IGNORECASE)
FOLDER = re.compile(r"in:(.*)", re.DOTALL | re.IGNORECASE)
TEXT = re.compile(r"text:(.*)", re.DOTALL | re.IGNORECASE)
PERSON = re.compile(r"person:(.*)", re.DOTALL | re.IGNORECASE)
TRAILING = ",.;!?"  # "beach, 2023." still finds the year
CONNECTORS = {"in", "from", "during", "on", "of"}  # "beach in 2023": "in" goes with the date
MAX_PLACE_WORDS = 5  # "Saint Vincent and the Grenadines"
PERSON_CONNECTORS = {"and", "&", "with", "of"}  # "Ada and Grace", "a walk with Ada", "photos of Ada"

Person = tuple[int, str]  # a person's id and name, as `person_named` gives them
T = TypeVar("T")


def _unquote(raw: str) -> str:
    return raw[1:-1] if len(raw) >= 2 and raw[0] == raw[-1] == '"' else raw


def parse_query(
    q: str,
    *,
    today: date,
    folder_named: Callable[[str], str | None] = lambda word: None,
    place_named: Callable[[str], str | None] = lambda words: None,
    person_named: Callable[[str], Person | None] = lambda words: None,
) -> ParsedQuery:
    """Read `q`. `folder_named(word)` returns the subfolder a bare word names exactly, or None;
    it is called only for unquoted words that are neither operators, weights nor dates.
    `place_named(words)` returns the place that one or more unquoted words (joined by single
    spaces) name, or None; it is called for words of terms that are not "- ..." terms.
    `person_named(words)` likewise returns the person (id, name) the words name, or None."""
    tokens = _lex(q)
    groups: list[tuple[_Token | None, list[_Token]]] = [(None, [])]
    for token in tokens:
        if token.kind == "op":
            if not groups[-1][1] and (groups[-1][0] is not None or len(groups) > 1):
                raise QueryError(f"'{token.value}' after an operator", token.start, "a term between them")
            if groups[-1][1] or groups[-1][0] is not None:
                groups.append((token, []))
            else:
                groups[-1] = (token, [])  # a query that starts with an operator
        else:
            groups[-1][1].append(token)
    last_op, last_words = groups[-1]
    if last_op is not None and not last_words:
        raise QueryError(f"'{last_op.value}' at the end", last_op.start, f"a term after '{last_op.value}'")

    parsed = ParsedQuery()
    plain = len(groups) == 1 and groups[0][0] is None
    for op, words in groups:
        sign = -1.0 if op is not None and op.value == "-" else 1.0
        _read_term(q, op, words, sign, plain, parsed, today, Lookups(folder_named, place_named, person_named))
    if len(parsed.terms) > MAX_TERMS:
        raise QueryError(f"more than {MAX_TERMS} terms", parsed.terms[MAX_TERMS].start, "fewer terms")
    return parsed


@dataclass(frozen=True)
class Lookups:
    """What the caller knows of the collection: its folders', places' and people's names."""

    folder_named: Callable[[str], str | None]
    place_named: Callable[[str], str | None]
    person_named: Callable[[str], Person | None] = lambda words: None


def _place_at(
    tokens: list[_Token], i: int, place_named: Callable[[str], T | None], *, longest: int, shortest: int
) -> tuple[T, int] | None:
    """The place (or person) named by the most words (from `longest` down to `shortest`) from
    tokens[i] on that are plain words: what the lookup gave and how many words."""
    run: list[str] = []
    for token in tokens[i : i + longest]:
        if token.kind != "word" or any(p.fullmatch(token.value) for p in (IMAGE, FOLDER, TEXT, PERSON)):
            break
        run.append(token.value)
        if token.value != token.value.rstrip(TRAILING):
            break  # "Lisbon, Portugal": a comma ends a name
    for n in range(len(run), shortest - 1, -1):
        named = place_named(" ".join(run[:n]).rstrip(TRAILING))
        if named is not None:
            return named, n
    return None


def _read_term(
    q: str,
    op: _Token | None,
    tokens: list[_Token],
    sign: float,
    plain: bool,
    parsed: ParsedQuery,
    today: date,
    lookups: Lookups,
) -> None:
    weight = 1.0
    tokens = list(tokens)
    first = tokens[0]
    span_start = op.start if op is not None else first.start
    weighted = False
    if first.kind == "word" and (m := WEIGHT.fullmatch(first.value)):
        try:
            weight = float(m[1])
        except ValueError:
            raise QueryError(f"weight {m[1]!r}", first.start, "a number before ':' such as 2 or 0.5") from None
        if not MIN_WEIGHT <= weight <= MAX_WEIGHT:
            raise QueryError(f"weight {m[1]!r}", first.start, f"a weight from {MIN_WEIGHT:g} to {MAX_WEIGHT:g}")
        weighted = True
        rest_start = first.start + len(m[1]) + 1
        tokens[0] = _Token("phrase" if m[2].startswith('"') else "word", _unquote(m[2]), rest_start, first.end)
        if not m[2]:
            tokens.pop(0)
        plain = False
        if not tokens:
            raise QueryError("a weight without a term", first.start, f"a term after '{m[1]}:'")
    span_end = tokens[-1].end

    kept: list[_Token] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token.kind == "word" and (m := TEXT.fullmatch(token.value)):
            if weighted:
                raise QueryError("a weight on text:", span_start, "text:WORDS without a weight (it is a filter)")
            text = _unquote(m[1]).strip()
            if not words_of(text):
                raise QueryError("text: without words", token.start, 'words after text:, such as text:"cafe luna"')
            start = op.start if op is not None and sign < 0 and i == 0 else token.start
            parsed.texts.append(TextFilter(text, sign < 0, start, token.end))
            i += 1
            continue
        if token.kind == "word" and (m := PERSON.fullmatch(token.value)):
            parsed.people.append(_person_filter(q, op, token, m[1], sign, i, weighted, span_start, lookups))
            i += 1
            continue
        if token.kind == "word" and (m := FOLDER.fullmatch(token.value)):
            name = _unquote(m[1]).strip()
            if not name.strip("/ "):
                raise QueryError("in: without a folder", token.start, "a folder name after in:")
            parsed.folders.append(FolderFilter(lookups.folder_named(name) or name, token.value, token.start, token.end))
            i += 1
            continue
        if token.kind == "word" and sign > 0:
            run = [token.value.lower().rstrip(TRAILING)]
            if i + 1 < len(tokens) and tokens[i + 1].kind == "word":
                run.append(tokens[i + 1].value.lower().rstrip(TRAILING))
            found = date_at(run, today)
            if found:
                (first_day, last_day), used = found
                begin = _connected(kept, token, CONNECTORS)
                end_token = tokens[i + used - 1]
                words = q[begin.start : end_token.end]
                parsed.dates.append(DateRange(first_day, last_day, words, begin.start, end_token.end))
                i += used
                continue
            person = _place_at(tokens, i, lookups.person_named, longest=MAX_PLACE_WORDS, shortest=1)
            if person is not None:
                (person_id, name), used = person
                begin = _connected(kept, token, PERSON_CONNECTORS)
                end = tokens[i + used - 1].end
                parsed.people.append(PersonFilter(person_id, name, False, q[begin.start : end], begin.start, end))
                i += used
                continue
            place = _place_at(tokens, i, lookups.place_named, longest=MAX_PLACE_WORDS, shortest=2)
            named = None if place else lookups.folder_named(token.value.rstrip(TRAILING))
            if named is not None:
                parsed.folders.append(FolderFilter(named, token.value, token.start, token.end))
                i += 1
                continue
            place = place or _place_at(tokens, i, lookups.place_named, longest=1, shortest=1)
            if place is not None:
                name, used = place
                begin = _connected(kept, token, CONNECTORS)
                end = tokens[i + used - 1].end
                parsed.places.append(PlaceFilter(name, q[begin.start : end], begin.start, end))
                i += used
                continue
        kept.append(token)
        i += 1
    if not kept:
        return  # the term was all filters
    images = [t for t in kept if t.kind == "word" and IMAGE.fullmatch(t.value)]
    if images:
        token = images[0]
        digits = IMAGE.fullmatch(token.value)[1]  # type: ignore[index]
        if not digits.isdigit() or int(digits) >= 2**63:
            raise QueryError(f"image reference {token.value!r}", token.start, "an image id (a number) after img:")
        if len(kept) > 1:
            other = next(t for t in kept if t is not token)
            raise QueryError(f"{token.value} shares a term with other words", other.start, "+ or - between them")
        end = token.end if op is not None or weighted else span_end
        start = span_start if op is not None or weighted else token.start
        parsed.terms.append(Term(sign * weight, image_id=int(digits), start=start, end=end))
        return
    if op is None and not weighted:
        span_start = kept[0].start
    span_end = kept[-1].end  # removing the term from q leaves its filters in place
    if plain and len(kept) == len(tokens) and all(t.kind == "word" for t in kept):
        text = q[kept[0].start : kept[-1].end]  # a plain query reaches the model exactly as typed
    else:
        text = " ".join(t.value.strip() for t in kept if t.value.strip())
    if text:
        parsed.terms.append(Term(sign * weight, text=text, start=span_start, end=span_end))


def _connected(kept: list[_Token], token: _Token, connectors: set[str]) -> _Token:
    """Where a filter's words begin: at a connector just before it ("in Lisbon", "and Grace"), which
    leaves the term's words with it."""
    return kept.pop() if kept and kept[-1].kind == "word" and kept[-1].value.lower() in connectors else token


def _person_filter(
    q: str, op: _Token | None, token: _Token, raw: str, sign: float, i: int, weighted: bool, span_start: int,
    lookups: Lookups,
) -> PersonFilter:  # fmt: skip
    """`person:NAME` (or `-person:NAME`): a person the user named, or an error that says so."""
    if weighted:
        raise QueryError("a weight on person:", span_start, "person:NAME without a weight (it is a filter)")
    name = " ".join(_unquote(raw).split())
    if not name:
        raise QueryError("person: without a name", token.start, 'a name after person:, such as person:"Ada Lovelace"')
    found = lookups.person_named(name)
    if found is None:
        raise QueryError(f"no person is named {name!r}", token.start, "the name of a person (see the People page)")
    start = op.start if op is not None and sign < 0 and i == 0 else token.start
    return PersonFilter(found[0], found[1], sign < 0, q[start : token.end], start, token.end)
