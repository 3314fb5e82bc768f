"""The ranges of what the HTTP API takes, beyond pages (`MAX_LIMIT`, `MAX_OFFSET`: `api.search`)
and ids (non-negative bigints, as the database stores them). A value outside is a 422 with one
line; `docs/http-api.md` lists them all.
"""

from __future__ import annotations

# Only the ratios of terms' weights matter (the query vector is normalised), but their weighted
# sum must stay finite and away from 0: 1e300 overflows it, 1e-300 makes it vanish.
MIN_WEIGHT = 0.01
MAX_WEIGHT = 100.0

# A video's second, for its thumbnail: longer than any video (115 days).
MAX_SECOND = 10_000_000.0

# Characters of `q`, and of a term's text in the structured form: a paragraph, which the text
# tower truncates to its 77 tokens. A search costs more than linear time in its words (8,000 took
# 76 s, 400 about a second), mostly past the parser: every plain word is a test of the text search.
MAX_QUERY = 2000
MAX_TEXT = 2000

# Filters, each at least as long as its longest sensible value: a path, a place's name, an ISO
# date-time with fractions and an offset; a format's name, with room for what a probe sends.
MAX_FOLDER = 4096
MAX_PLACE = 200
MAX_DATE = 40
MAX_FORMAT = 100
MAX_WORD = 20  # min_match, sort, order: one of a few words
