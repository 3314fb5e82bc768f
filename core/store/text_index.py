"""The words a picture can be found by, and the SQL that finds them through GIN indexes.

Two texts per picture: its *words* on the model's table (`search_words`: the file and folder
names, XMP/IPTC keywords, title and description, cut into words by the indexer), and the text read
off the picture by OCR (`picture_text`, joined by content hash, as the OCR pass wrote it). A
query's words are cut the same way (`words_of`): lower case, split at every character that is
neither a letter nor a digit and between letters and digits, so `IMG_4711.JPG` is "img 4711" and
the query `img4711` finds it. Each query word is tested alike in both texts:

    1–2 characters    a word of the text starts with it (full-text search, `w:*`)
    3–4 characters    it occurs anywhere in the text ("4711" in "INV4711", "luna" in "CAFELUNA")
    5 or more         it occurs anywhere; in OCR text also where pg_trgm's word_similarity
                      says it nearly does (≥ 0.6, pg_trgm's default threshold): a misreading

A picture matches when every word occurs in its words, in its OCR text, or some in one and the
rest in the other. Substring and similarity tests are served by `gin_trgm_ops` indexes where the
server has pg_trgm (`core.store.vector_features`), prefixes by `to_tsvector('simple', ...)` indexes;
without pg_trgm the same tests run as plain ILIKE, without an index and without similarity.
The SQL here is for statements run with parameters: its percent signs are doubled. The query's
words go into it as `Word`s: literals as written, which `bind_words` turns into parameters, so that
searches whose words differ share one statement text (and one plan, `api.search_plan.run_planned`).

The words are a column rather than an expression index over (path, title, description, keywords):
a trigram index is lossy, so every row it finds is checked again, and evaluating the expression
(three regular expressions) cost 15 µs a row, one second for a word in 66,000 names at 100,000.
Similarity is for OCR text only for the same reason: the index finds many rows that share some
trigrams with a word, and checking them cost 30 µs each (5,000 rows for one word at 100,000 names),
while names and keywords were typed, not misread.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from psycopg import sql
from psycopg.abc import AdaptContext

OCR_TABLE = "picture_text"
WORDS_COLUMN = "search_words"
FUZZY_FROM = 5  # words this long also match by trigram similarity
SUBSTRING_FROM = 3  # a trigram index cannot serve a shorter pattern

_SEPARATORS = re.compile(r"[\W_]+")
_DIGIT_EDGES = re.compile(r"(?<=\d)(?=[^\d\s])|(?<=[^\d\s])(?=\d)")


class Word(sql.Composable):
    """A value made of a query's words (a word, a pattern, words joined), as a statement holds it:
    a quoted literal (percent signs doubled, as in the rest of this SQL) until `bind_words`."""

    def __init__(self, value: str) -> None:
        super().__init__(value)
        self.value = value

    def as_bytes(self, context: AdaptContext | None = None) -> bytes:
        return sql.Literal(self.value.replace("%", "%%")).as_bytes(context)


def bind_words(
    query: sql.Composed, params: dict[str, Any], context: AdaptContext | None = None
) -> tuple[bytes, dict[str, Any]]:
    """`query` as the statement to run, with each `Word` a named parameter instead (`word_0`,
    `word_1`, … in the order they first appear, one per distinct value), and `params` with their
    values: the statement's text then depends on the shape of the query (how many words, how long),
    not on the words themselves. (One walk that writes the statement: a copy of the tree with
    placeholders, written after, took twice as long.)"""
    names: dict[str, str] = {}

    def written(part: sql.Composable) -> bytes:
        if isinstance(part, Word):
            name = names.setdefault(part.value, f"word_{len(names)}")
            return f"%({name})s".encode()
        if isinstance(part, sql.Composed):
            return b"".join(written(p) for p in part)
        return part.as_bytes(context)

    statement = written(query)
    return statement, {**params, **{name: value for value, name in names.items()}}


def words_of(*texts: str | None) -> list[str]:
    """The words of `texts`, as search sees them: "IMG_4711.JPG" → ["img", "4711", "jpg"]."""
    joined = " ".join(t for t in texts if t)
    return _DIGIT_EDGES.sub(" ", _SEPARATORS.sub(" ", joined.lower())).split()


def name_words(path: str) -> list[str]:
    """The words of a library key's folder and file names, without the file's extension."""
    stem = re.sub(r"\.[^./]*$", "", path)
    return words_of(stem)


def item_words(path: str, keywords: Sequence[str], title: str | None, description: str | None) -> str:
    """What the indexer stores in `search_words` for a picture."""
    return " ".join(name_words(path) + words_of(*keywords, title, description))


def item_index_sql(table: str, trigram: bool) -> str:
    """The words' full-text index and, where pg_trgm exists, their trigram index."""
    fts = (
        f"CREATE INDEX IF NOT EXISTS {table}_words_fts_idx ON {table} USING gin (to_tsvector('simple', {WORDS_COLUMN}))"
    )
    if not trigram:
        return fts
    return (
        fts + f"; CREATE INDEX IF NOT EXISTS {table}_words_trgm_idx ON {table} USING gin ({WORDS_COLUMN} gin_trgm_ops)"
    )


def item_index_teardown_sql(table: str) -> str:
    return f"DROP INDEX IF EXISTS {table}_words_fts_idx; DROP INDEX IF EXISTS {table}_words_trgm_idx"


def word_in(body: sql.Composable, word: str, trigram: bool, *, fuzzy: bool = False) -> sql.Composable:
    """`word` (one of `words_of`) occurs in `body`, in the form the indexes answer; `fuzzy` (for
    text read by OCR, which misreads) also takes a near occurrence of a long word."""
    if len(word) < SUBSTRING_FROM:
        return sql.SQL("to_tsvector('simple', {}) @@ to_tsquery('simple', {})").format(body, Word(f"{word}:*"))
    inside = sql.SQL("{} ILIKE {}").format(body, Word(f"%{word}%"))
    if fuzzy and trigram and len(word) >= FUZZY_FROM:
        return sql.SQL("({} OR {} <%% {})").format(inside, Word(word), body)
    return inside


def all_words_in(body: sql.Composable, words: Sequence[str], trigram: bool, fuzzy: bool = False) -> sql.Composable:
    return sql.SQL(" AND ").join(word_in(body, w, trigram, fuzzy=fuzzy) for w in words)


def any_word_in(body: sql.Composable, words: Sequence[str], trigram: bool, fuzzy: bool = False) -> sql.Composable:
    return sql.SQL("({})").format(sql.SQL(" OR ").join(word_in(body, w, trigram, fuzzy=fuzzy) for w in words))


def holds_all(words: Sequence[str], trigram: bool, row: str = "i", ocr: str = "p") -> sql.Composable:
    """Every word is in the words of `row` (a model-table row) or in the text of `ocr` (its
    `picture_text` row, joined): a test of rows already found, not one the indexes serve."""
    own, read = sql.SQL(f"{row}.{WORDS_COLUMN}"), sql.SQL(f"{ocr}.text")
    return sql.SQL(" AND ").join(
        sql.SQL("({} OR {})").format(word_in(own, w, trigram), word_in(read, w, trigram, fuzzy=True)) for w in words
    )


def matching_ids(
    table: str,
    words: Sequence[str],
    trigram: bool,
    where: sql.Composable = sql.SQL("true"),
    limit: sql.Composable | None = None,
) -> sql.Composable:
    """The ids of `table`'s rows (those passing `where`, in unqualified columns) that hold every
    word: those whose words hold them all (the word indexes, intersected), and those with OCR text
    holding any of them (its indexes) whose two texts together hold them all. With `limit`, at most
    that many of each: the first found, so that a word in every name costs no more than a rare one."""
    t, ocr = sql.Identifier(table), sql.Identifier(OCR_TABLE)
    cap = sql.SQL("") if limit is None else sql.SQL(" LIMIT {}").format(limit)
    # the OCR rows are read whole before the limit (planned under it, a scan that stops at the
    # first matches looked cheaper than the index, and read the whole table when nothing matched),
    # one test at a time: the planner costs a scan that tests a row (ILIKE, similarity) far below
    # what it takes, so an OR of tests read a table of 10,000 texts whole (23 ms, not 0.9)
    tests = [word_in(sql.SQL("text"), w, trigram) for w in words]
    tests += [sql.SQL("{} <%% text").format(Word(w)) for w in words if trigram and len(w) >= FUZZY_FROM]
    read = sql.SQL(" UNION ").join(sql.SQL("SELECT content_hash, text FROM {} WHERE {}").format(ocr, x) for x in tests)
    return sql.SQL(
        "(SELECT id FROM {t} WHERE {where} AND {in_own}{cap}) UNION "
        "(WITH p AS MATERIALIZED ({read}) "
        "SELECT i.id FROM p JOIN {t} i ON i.content_hash = p.content_hash "
        "WHERE {either} AND i.id IN (SELECT id FROM {t} WHERE {where}){cap})"
    ).format(
        t=t,
        where=where,
        in_own=all_words_in(sql.Identifier(WORDS_COLUMN), words, trigram),
        read=read,
        either=holds_all(words, trigram),
        cap=cap,
    )


def says_any(words: sql.Composable, content_hash: sql.Composable, groups: Sequence[Sequence[str]]) -> sql.Composable:
    """A row's texts (`words`, its `search_words`, and the OCR text of `content_hash`) hold every
    word of at least one group, each as a whole word (full-text search's 'simple' words), some in
    one text and the rest in the other: the test of a picture a negative term speaks against
    (`api.text_search`). Whole words, not the parts of words a query looks for: "red" in "covered"
    or "Fred" says nothing against a picture. A test of rows already found (the candidates of a
    search), one text search per row, so that it costs the same however common the words are."""
    read = sql.SQL("(SELECT o.text FROM {} o WHERE o.content_hash = {})").format(
        sql.Identifier(OCR_TABLE), content_hash
    )
    every = sql.SQL("to_tsquery('simple', {})").format(
        Word(" | ".join("(" + " & ".join(group) + ")" for group in groups))
    )
    # its words first: where they say it (a word of a folder every picture is in) the text read
    # in it is never looked up
    return sql.SQL(
        "(to_tsvector('simple', {words}) @@ {every} "
        "OR to_tsvector('simple', concat_ws(' ', {words}, {read})) @@ {every})"
    ).format(words=words, read=read, every=every)


def text_filter(table: str, words: Sequence[str], trigram: bool, *, present: bool) -> sql.Composable:
    """A WHERE condition: the row's texts hold every word (`present`), or not all of them."""
    ids = matching_ids(table, words, trigram)
    return sql.SQL("id {} ({})").format(sql.SQL("IN" if present else "NOT IN"), ids)
