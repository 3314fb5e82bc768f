"""Honest relevance: is a result a `strong` match, a `weak` one, or `none` at all?

A raw cosine score means different things for different queries and models ("a dog" may top out
at 0.31 where a long description tops out at 0.26; the tiny test model's scores run near 0.9), so
a fixed score threshold cannot say whether anything matched. Nor can a result's standing within
its own collection: the best of unrelated images still stands out.

The judgement asks each result image instead: does the query describe it about as well as the best
of a fixed bank of neutral captions ("a dog", "a beach", "a red square", "something", ...)? For
image x, query vector q and bank captions c:

    margin(x) = logit_scale × (x·q − max_c x·c)

`logit_scale` is the model's own learned temperature (100 for OpenAI's CLIP, about 15 for the
tiny test model), which turns cosine differences into the logits CLIP was trained on, so the same
thresholds hold for every model: a margin of −1 means the query is e¹ ≈ 2.7 times less likely than
the best neutral caption to be the one that goes with the image.

    strong  margin ≥ −1   the query describes the image at least nearly as well as any caption
    weak    margin ≥ −3   something of the query is there (the colour but not the shape, ...)
    none    below

Measured with the tiny model on its 18 colour × shape pictures: the right picture's margin is 0,
the best wrong one's −2.05 (a partial match: weak). The bank is embedded once per model (one text
batch) and cached; a search judges only the page it returns, with the result vectors the search
already read, so a judgement costs one small matrix product and no extra scan.

Image terms (an indexed image, an upload, "more like this") are judged through the bank as well:
an image term stands for the softmax-weighted mean of the bank captions that describe it (what
the neutral vocabulary says the picture shows); the query's judging vector is the same weighted
sum as its search vector, with those stand-ins for image terms. Image-to-image cosines cannot be
compared with caption scores directly (CLIP's image and text embeddings sit apart), and how an
image stands within the collection says little (see above).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from core.models.embedder import Embedder

STRONG = "strong"
WEAK = "weak"
NONE = "none"
LEVELS = (NONE, WEAK, STRONG)  # in increasing order
STRONG_MARGIN = -1.0
WEAK_MARGIN = -3.0

_SUBJECTS = (
    "a person", "a group of people", "a face", "a child", "a dog", "a cat", "a bird", "a horse",
    "a car", "a bicycle", "a building", "a house", "a street", "a city", "a tree", "a flower",
    "a plant", "a forest", "a field", "a mountain", "a beach", "the sea", "a lake", "a river",
    "the sky", "a sunset", "snow", "food", "a meal", "a drink", "a room", "a table", "a chair",
    "a bed", "a window", "a door", "a screen", "a document", "text", "a toy", "a ball", "a bag",
    "clothes", "shoes", "a boat", "a train", "an airplane", "a road", "a bridge", "a sign",
    "a pattern", "a texture", "an object", "a thing", "something", "a picture", "a photo",
    "an image", "a drawing", "a shape",
)  # fmt: skip
_COLOURS = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white", "grey")
_SHAPES = ("circle", "square", "triangle")
NEUTRAL_CAPTIONS: tuple[str, ...] = (
    _SUBJECTS
    + tuple(f"a {c} {s}" for c in _COLOURS for s in _SHAPES)
    + tuple(f"something {c}" for c in _COLOURS)
    + tuple(f"a {s}" for s in _SHAPES)
)


def level_of(margin: float) -> str:
    if margin >= STRONG_MARGIN:
        return STRONG
    if margin >= WEAK_MARGIN:
        return WEAK
    return NONE


def judged_level(margin: float | None, score: float | None, *, said: bool, against: bool, steered: bool) -> str:
    """A result's level from all it has: its looks (`margin`; `score`, its cosine to the search
    vector), whether its own words say what the query asks for (`said`), whether they say what a
    negative term steers away from (`against`), and whether the query steers away from anything.

    Words make a match strong only when no negative term speaks against them ("a red circle -
    red": a file named "red circle" is no strong match). And with terms to steer away from, the
    sign of the cosine says on which side the picture lies: the search vector is the weighted sum
    of the terms, so a cosine below zero means that the picture looks more like what the query
    steers away from than like what it asks for (weights counted). Such a result is never strong,
    whatever its words say: at most weak. Without negative terms the sign means nothing fixed (the
    tiny test model gives words it never learnt, such as a keyword's "lisbon", cosines below zero),
    and the words of a picture that say the query make it strong."""
    if margin is None or score is None:  # the text ranking alone: nothing else to judge
        return WEAK if against else STRONG
    looks = level_of(margin)
    if against or (steered and score < 0):
        return WEAK if said or looks != NONE else NONE
    return STRONG if said else looks


def at_least(level: str, minimum: str | None) -> bool:
    return minimum is None or LEVELS.index(level) >= LEVELS.index(minimum)


def _products(rows: np.ndarray, other: np.ndarray) -> np.ndarray:
    """`rows @ other.T` (or `rows @ other` for a vector) without BLAS. These products are tiny (a
    page of results against about a hundred captions), and numpy's `@` hands them to OpenBLAS,
    whose threads then spin on the cores the text tower's threads need: beside a forward pass of
    the tower, one page's judgement measured 22 ms that way against 0.06 ms with einsum."""
    return np.einsum("id,cd->ic" if other.ndim == 2 else "id,d->i", rows, other)


def _unit(v: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(v))
    return v / norm if norm > 1e-12 else v


class Judge:
    """The bank of neutral captions for one model, and the judgement of results against it."""

    def __init__(self, bank: np.ndarray, logit_scale: float) -> None:
        self.bank = bank.astype(np.float32)  # captions × dim, unit rows
        self.scale = float(logit_scale)

    def image_stand_in(self, vector: np.ndarray) -> np.ndarray:
        """What the neutral captions say an image shows, as one text-side unit vector."""
        logits = self.scale * _products(self.bank, vector)
        weights = np.exp(logits - logits.max())
        return _unit(np.einsum("c,cd->d", weights / weights.sum(), self.bank)).astype(np.float32)

    def judging_vector(self, parts: Sequence[tuple[np.ndarray, float, bool]]) -> np.ndarray:
        """(vector, weight, is_image) per term → the unit vector results are judged against."""
        total = sum(w * (self.image_stand_in(v) if is_image else v) for v, w, is_image in parts)
        return _unit(np.asarray(total, dtype=np.float32))

    def margins(self, judging: np.ndarray, vectors: np.ndarray) -> np.ndarray:
        if len(vectors) == 0:
            return np.zeros(0, dtype=np.float32)
        best_caption = _products(vectors, self.bank).max(axis=1)
        return self.scale * (_products(vectors, judging) - best_caption)


class Judges:
    """The judge of each model, made on first use: embedding the bank is one text batch."""

    def __init__(self) -> None:
        self._judges: dict[str, Judge] = {}
        self._lock = threading.Lock()

    def for_embedder(self, embedder: Embedder) -> Judge:
        with self._lock:
            judge = self._judges.get(embedder.name)
            if judge is None:
                bank = embedder.embed_texts(list(NEUTRAL_CAPTIONS))
                judge = self._judges[embedder.name] = Judge(bank, embedder.logit_scale)
            return judge
