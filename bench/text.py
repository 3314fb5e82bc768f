"""Words for the synthetic scale databases, and the hybrid query's latency against the vector-only one.

Every synthetic row gets two keywords and a two-word title from a vocabulary of 2,000 made-up words
(so a word is in about 200 rows of 100,000, as a place or a person's name would be), and every
tenth row text "read" in it: three words and a four-digit number. The hybrid search
(`api.text_search.search_fused`: the vector ranking and the text ranking fused) is timed against
`api.search.search_by_vector` on the same probes, through the same SQL the server runs.
"""

from __future__ import annotations

import json
import random
import time
from typing import Any

import numpy as np
import psycopg
from pgvector.psycopg import register_vector
from psycopg import sql

from api.search import search_by_vector
from api.text_search import search_fused
from bench.common import Report, median, percentile, verdict
from core.store.model_state import model_table
from core.store.text_index import OCR_TABLE, item_index_sql, item_words, matching_ids


def _made_up_words(count: int, seed: int = 5) -> tuple[str, ...]:
    """Pronounceable made-up words of 5 to 9 letters (consonants and vowels in turn), as varied in
    their trigrams as names and places are: words built from a handful of syllables share so many
    trigrams that every one of them looks like a common word to a trigram index."""
    rng = random.Random(seed)
    consonants, vowels = "bcdfghjklmnprstvwz", "aeiou"
    words: dict[str, None] = {}
    while len(words) < count:
        length = rng.randint(5, 9)
        words["".join(rng.choice(vowels if n % 2 else consonants) for n in range(length))] = None
    return tuple(words)


VOCABULARY = _made_up_words(2000)
OCR_EVERY = 10


def synthetic_text(i: int) -> tuple[list[str], str]:
    """Row i's keywords and title."""
    n = len(VOCABULARY)
    keywords = [VOCABULARY[(i * 7919) % n], VOCABULARY[(i * 104729 + 13) % n]]
    return keywords, f"{VOCABULARY[(i * 31) % n]} {VOCABULARY[(i * 17 + 5) % n]}"


def text_side_queries(count: int, rows: int) -> list[str]:
    """Queries that the text side answers (every word in some rows' keywords, titles or picture
    text): by turns one made-up word (in about a hundred rows' keywords or titles, and some rows'
    picture text) and the two keywords of one row (in a handful)."""
    out = []
    for n in range(count):
        row = (n * 7919 + 11) % rows
        out.append(VOCABULARY[(n * 37) % len(VOCABULARY)] if n % 2 else " ".join(synthetic_text(row)[0]))
    return out


def synthetic_words(path: str, i: int) -> tuple[list[str], str, str]:
    """Row i's keywords, title and `search_words`, as the indexer would store them."""
    keywords, title = synthetic_text(i)
    return keywords, title, item_words(path, keywords, title, None)


def add_picture_text(conn: psycopg.Connection[Any], count: int) -> None:
    """Text read in every OCR_EVERY-th row's picture (its content hash is `f"{i:064x}"`)."""
    n = len(VOCABULARY)
    with conn.cursor().copy(f"COPY {OCR_TABLE} (content_hash, text, lines, engine) FROM STDIN") as copy:
        for i in range(0, count, OCR_EVERY):
            text = f"{VOCABULARY[(i * 13) % n].upper()} {VOCABULARY[(i * 29) % n].upper()} No {i % 10_000:04d}"
            lines = [{"text": text, "box": [0.1, 0.1, 0.9, 0.2], "confidence": 0.9}]
            copy.write_row((f"{i:064x}", text, json.dumps(lines), "bench"))
    conn.execute(f"ANALYZE {OCR_TABLE}")


def create_text_indexes(conn: psycopg.Connection[Any], table: str, trigram: bool) -> float:
    """The indexes the indexer declares on the words; returns how long they took."""
    started = time.perf_counter()
    for statement in item_index_sql(table, trigram).split("; "):
        conn.execute(statement)
    return time.perf_counter() - started


def measure_hybrid(
    url: str, vectors: np.ndarray, probes: list[int], report: Report, ef_search: int, model: str
) -> dict[str, float]:
    """Vector-only, hybrid and text-only searches for the same probes (a row's vector and one of
    its keywords), p50 / p95, and whether the text side read its GIN indexes."""
    size = len(vectors)
    timings: dict[str, list[float]] = {"vector": [], "hybrid": [], "text": []}
    found_own = 0
    with psycopg.connect(url, autocommit=True) as conn:
        register_vector(conn)
        common: dict[str, Any] = {"model": model, "limit": 10, "ef_search": ef_search}
        search_fused(conn, vectors[0], [synthetic_text(0)[0][0]], **common)  # warm the caches
        for i in probes:
            word = synthetic_text(i)[0][0]
            for kind in ("vector", "hybrid", "text"):
                started = time.perf_counter()
                if kind == "vector":
                    search_by_vector(conn, vectors[i], **common)
                else:
                    page, _ = search_fused(conn, vectors[i] if kind == "hybrid" else None, [word], **common)
                    found_own += kind == "hybrid" and any(f.record.id == i for f in page)
                timings[kind].append(time.perf_counter() - started)
        query = matching_ids(model_table(model), [synthetic_text(probes[0])[0][0]], True)
        plan = "\n".join(r[0] for r in conn.execute(sql.SQL("EXPLAIN {}").format(query), {}))
    table = model_table(model)
    read_whole = any(f"Seq Scan on {name}" in plan for name in (table, OCR_TABLE))
    indexed = f"Index Scan on {table}_words_" in plan and "Index Scan on picture_text_" in plan and not read_whole
    p50 = {k: median(v) * 1000 for k, v in timings.items()}
    p95 = {k: percentile(v, 95) * 1000 for k, v in timings.items()}
    big = size >= 100_000
    report.add(
        "4 query",
        f"search SQL, hybrid (vector + one keyword, fused) at {size:,}: p50 / p95, against vector-only",
        f"{p50['hybrid']:.1f} / {p95['hybrid']:.1f} ms",
        f"{p50['vector']:.1f} / {p95['vector']:.1f} ms (vector only)",
        f"{p50['vector'] / p50['hybrid']:.2f}×",
        "p50 ≤ vector-only + 10 ms at 100k" if big else "",
        verdict(p50["hybrid"] <= p50["vector"] + 10) if big else "",
    )
    report.add(
        "4 query",
        f"search SQL, text only (text:WORD) at {size:,}: p50 / p95; text side on its GIN indexes",
        f"{p50['text']:.1f} / {p95['text']:.1f} ms; {'yes' if indexed else 'no'}",
        "",
        "",
        "GIN indexes used",
        verdict(indexed),
    )
    report.add(
        "4 query",
        f"hybrid: the row whose keyword was asked for is on the first page, at {size:,}",
        f"{found_own} of {len(probes)}",
    )
    return {"hybrid_p50_ms": p50["hybrid"], "vector_p50_ms": p50["vector"], "text_p50_ms": p50["text"]}
