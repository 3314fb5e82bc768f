"""The query language, weighted sums, relevance levels and dates in the query: the parser on its own,
then the API and the CLI over one real indexed folder (tiny model, real Postgres) shared by the module."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import io
import shutil
import threading
import uuid
from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any

import numpy as np
import psycopg
import pytest
from conftest import TINY_CLIP, TINY_MODEL, _with_database, free_port, query, run_main, wait_for
from fastapi.testclient import TestClient
from PIL import Image
from shapes import ALL_DRAWINGS, Drawing, draw, write_corpus

from api.answer import query_vector
from api.app import create_app
from api.query import QueryError, parse_query
from api.relevance import NEUTRAL_CAPTIONS, STRONG_MARGIN, judged_level
from api.text_search import against_words
from core.models.checkpoints import find_checkpoint
from core.settings import Settings, load_settings

TODAY = date(2025, 7, 10)  # a Thursday in summer


def parsed(q: str, folders: tuple[str, ...] = ()) -> dict[str, Any]:
    named = {f.lower(): f for f in folders}
    return parse_query(q, today=TODAY, folder_named=lambda w: named.get(w.lower())).understood()


def terms(q: str) -> list[tuple[str | int | None, float]]:
    return [(t.get("text", t.get("image_id")), t["weight"]) for t in parsed(q)["terms"]]


# --- parsing ---------------------------------------------------------------------------------


class TestParsing:
    @pytest.mark.parametrize(
        ("q", "expected"),
        [
            ("a red circle", [("a red circle", 1.0)]),
            ("  a  red   circle ", [("a  red   circle", 1.0)]),  # a plain query reaches the model as typed
            ("2:sunset + mountains - people", [("sunset", 2.0), ("mountains", 1.0), ("people", -1.0)]),
            ("a dog - cat", [("a dog", 1.0), ("cat", -1.0)]),
            ("a dog -cat", [("a dog", 1.0), ("cat", -1.0)]),
            ("x-ray t-shirt", [("x-ray t-shirt", 1.0)]),
            ("a - b", [("a", 1.0), ("b", -1.0)]),
            ('"t - shirt" + 0.5:x-ray', [("t - shirt", 1.0), ("x-ray", 0.5)]),
            ('2:"red car" - 1.5:blue', [("red car", 2.0), ("blue", -1.5)]),
            ("- cat", [("cat", -1.0)]),
            ("beach + img:123 - 0.5:img:456", [("beach", 1.0), (123, 1.0), (456, -0.5)]),
            ('"summer 2023"', [("summer 2023", 1.0)]),  # quoted: words, not a date
            ("a +b", [("a", 1.0), ("b", 1.0)]),
            ("c++ code", [("c++ code", 1.0)]),
            ('a 12\\" record', [('a 12\\" record', 1.0)]),  # an escaped quote is a character
            ('"the \\"best\\" one" + b', [('the "best" one', 1.0), ("b", 1.0)]),
        ],
    )
    def test_terms_and_weights(self, q: str, expected: list[tuple[Any, float]]) -> None:
        assert terms(q) == expected

    @pytest.mark.parametrize(
        ("q", "position", "expected"),
        [
            ('a red "circle', 6, 'a closing "'),
            ('in:"my folder', 3, 'a closing "'),
            ("2x:sunset", 0, "a number before ':'"),
            ("sea + 1.2.3:sun", 6, "a number before ':'"),
            ("0:sunset", 0, "a weight from 0.01 to 100"),
            ("sea + 1e300:sun", 6, "a weight from 0.01 to 100"),  # its sum with others would overflow
            ("1e-300:sun + sea", 0, "a weight from 0.01 to 100"),  # it would vanish from the sum
            ("a + - b", 4, "a term between them"),
            ("beach -", 6, "a term after '-'"),
            ("img:abc", 0, "an image id (a number) after img:"),
            ("img:5 red", 6, "+ or - between them"),
            ("beach in:", 6, "a folder name after in:"),
        ],
    )
    def test_errors_say_where_and_what_was_expected(self, q: str, position: int, expected: str) -> None:
        with pytest.raises(QueryError) as caught:
            parse_query(q, today=TODAY)
        assert caught.value.position == position and expected in caught.value.expected
        assert str(caught.value).startswith("q: ") and f"at position {position}: expected" in str(caught.value)

    def test_spans_cover_each_term_with_its_operator_and_weight(self) -> None:
        q = "2:sunset + mountains - img:7"
        spans = [q[t["start"] : t["end"]] for t in parsed(q)["terms"]]
        assert spans == ["2:sunset", "+ mountains", "- img:7"]

    def test_what_a_query_steers_away_from_as_words_a_group_per_term(self) -> None:
        def ada(words: str) -> tuple[int, str] | None:
            return (7, "Ada Lovelace") if words.lower() == "ada" else None

        q = 'beach - a red car -"t-shirt" - 0.5:the - img:7 + red -person:Ada -text:sale - RED CAR'
        read = parse_query(q, today=TODAY, person_named=ada)
        people = [p.name for p in read.people if p.exclude]
        # the little words and images say nothing; -text: is a filter of its own; one group per term
        assert against_words(read.terms, people) == (("red", "car"), ("t", "shirt"), ("ada", "lovelace"))


class TestDatesAndFolders:
    @pytest.mark.parametrize(
        ("q", "text", "after", "before"),
        [
            ("2023", "", "2023-01-01", "2023-12-31"),
            ("beach 2023", "beach", "2023-01-01", "2023-12-31"),
            ("beach in 2023", "beach", "2023-01-01", "2023-12-31"),
            ("July 2023 beach", "beach", "2023-07-01", "2023-07-31"),
            ("sept 2022", "", "2022-09-01", "2022-09-30"),
            ("2021-2022", "", "2021-01-01", "2022-12-31"),
            ("2023-02", "", "2023-02-01", "2023-02-28"),
            ("2024-02-29", "", "2024-02-29", "2024-02-29"),
            ("summer 2023", "", "2023-06-01", "2023-08-31"),
            ("winter 2023", "", "2023-12-01", "2024-02-29"),
            ("yesterday", "", "2025-07-09", "2025-07-09"),
            ("today", "", "2025-07-10", "2025-07-10"),
            ("last week", "", "2025-06-30", "2025-07-06"),
            ("this week", "", "2025-07-07", "2025-07-13"),
            ("last month", "", "2025-06-01", "2025-06-30"),
            ("this year", "", "2025-01-01", "2025-12-31"),
            ("last year", "", "2024-01-01", "2024-12-31"),
            ("last summer", "", "2024-06-01", "2024-08-31"),  # this one is not over yet
            ("last spring", "", "2025-03-01", "2025-05-31"),
            ("last winter", "", "2024-12-01", "2025-02-28"),
            ("dogs, 2019.", "dogs,", "2019-01-01", "2019-12-31"),
            ("2019 and 2021", "and", "2019-01-01", "2021-12-31"),  # several dates: their span
        ],
    )
    def test_date_words_become_a_filter(self, q: str, text: str, after: str, before: str) -> None:
        understood = parsed(q)
        assert understood["text"] == text
        assert (understood["filters"]["taken_after"], understood["filters"]["taken_before"]) == (after, before)

    @pytest.mark.parametrize(
        "q",
        ["a 1984 poster", '"2023"', "12345", "2023-13", "may flowers", "last supper", "beach - 2023", "3 dogs"],
    )
    def test_ordinary_words_are_not_eaten(self, q: str) -> None:
        assert "taken_after" not in parsed(q)["filters"] or q == "a 1984 poster"
        if q == "a 1984 poster":
            assert parsed(q)["text"] == "a poster"  # a year is a year, even in a title

    def test_a_bare_word_is_a_folder_only_when_it_names_one_exactly(self) -> None:
        folders = ("holidays", "holidays/2023", "Trips")
        u = parsed("beach holidays", folders)
        assert u["text"] == "beach" and [f["folder"] for f in u["filters"]["folders"]] == ["holidays"]
        assert parsed("beach trips", folders)["filters"]["folders"][0]["folder"] == "Trips"
        assert parsed("beach holiday", folders)["filters"] == {}  # not exactly
        assert parsed('beach "holidays"', folders)["filters"] == {}  # quoted: a word
        u = parsed("in:holidays/2023 sea", folders)
        assert u["text"] == "sea" and u["filters"]["folders"][0]["folder"] == "holidays/2023"
        assert parsed('in:"my photos/x" sea', folders)["filters"]["folders"][0]["folder"] == "my photos/x"

    def test_folders_are_looked_up_only_for_candidate_words_and_at_most_once_per_word(self) -> None:
        asked: list[str] = []

        def named(word: str) -> str | None:
            asked.append(word)
            return None

        parse_query('"a red" + circle 2023 - img:5', today=TODAY, folder_named=named)
        assert asked == ["circle"]


# --- one indexed folder for the rest ---------------------------------------------------------

PRESENT = [d for d in ALL_DRAWINGS if d.caption != "a red circle"]


def dated_jpeg(drawing: Drawing, when: date) -> bytes:
    exif = Image.Exif()
    exif.get_ifd(0x8769)[36867] = when.strftime("%Y:%m:%d 12:00:00")
    buffer = io.BytesIO()
    draw(drawing, width=160, height=120).save(buffer, "JPEG", quality=92, exif=exif)
    return buffer.getvalue()


def last_summer(today: date) -> date:
    return date(today.year if today.month > 8 else today.year - 1, 7, 15)


@pytest.fixture(scope="module")
def indexed(pg_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """17 colour-shape pictures (no red circle), a copy of one, EXIF-dated JPEGs in folders."""
    root = tmp_path_factory.mktemp("query")
    folder = root / "img"
    write_corpus(folder, tuple(PRESENT))
    shutil.copy(folder / "yellow-triangle.png", folder / "yellow-triangle-copy.png")
    today = date.today()
    files = {
        "holidays/2023/green-triangle-july.jpg": (Drawing("green", "triangle"), date(2023, 7, 15)),
        "holidays/2023/blue-circle-january.jpg": (Drawing("blue", "circle"), date(2023, 1, 2)),
        "trips/green-triangle-2019.jpg": (Drawing("green", "triangle"), date(2019, 5, 1)),
        "recent/green-triangle-yesterday.jpg": (Drawing("green", "triangle"), today - timedelta(days=1)),
        "recent/green-triangle-last-summer.jpg": (Drawing("green", "triangle"), last_summer(today)),
    }
    for path, (drawing, when) in files.items():
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_bytes(dated_jpeg(drawing, when))
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    settings = load_settings(
        {
            "IMAGE_DIR": str(folder),
            "DATA_DIR": str(root / "data"),
            "DATABASE_URL": _with_database(pg_server, name),
            **TINY_MODEL,
        }
    )
    from flows.engine import index_once

    asyncio.run(index_once(settings))
    yield settings
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def client(indexed: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(indexed)) as c:
        yield c


@pytest.fixture(scope="module")
def model(indexed: Settings) -> Any:
    from core.models.embedder import open_embedder

    return open_embedder(indexed.clip_model, indexed.device, indexed.precision)


def image_id(settings: Settings, path: str) -> int:
    return int(query(settings, "SELECT id FROM images WHERE path = %s", (path,))[0][0])


def stored(settings: Settings) -> dict[str, np.ndarray]:
    rows = query(settings, "SELECT path, embedding FROM images")
    return {path: vec.to_numpy() for path, vec in rows}


def search(client: TestClient, q: str, **params: Any) -> dict[str, Any]:
    response = client.get("/api/search", params={"q": q, "limit": 50, **params})
    assert response.status_code == 200, response.text
    return response.json()


def found(body: dict[str, Any]) -> list[str]:
    return [r["path"] for r in body["results"]]


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


class TestWeightedSums:
    def test_a_plain_query_searches_with_exactly_the_old_vector(self, model: Any) -> None:
        q = "  a  blue   square "
        terms_ = parse_query(q, today=TODAY).terms
        vector = query_vector([(model.embed_text(t.text), t.weight, False) for t in terms_])
        assert np.array_equal(vector, model.embed_text(q.strip()))

    def test_scores_are_cosines_with_the_hand_computed_weighted_sum(
        self, client: TestClient, indexed: Settings, model: Any
    ) -> None:
        body = search(client, '2:"a blue square" + a yellow circle - 0.5:a green triangle')
        red, yellow, green = (model.embed_text(t) for t in ("a blue square", "a yellow circle", "a green triangle"))
        expected = unit(2 * red.astype(np.float64) + yellow - 0.5 * green)
        vectors = stored(indexed)
        for r in body["results"]:
            assert r["score"] == pytest.approx(float(vectors[r["path"]] @ expected), abs=2e-5)
        # by score, except that the pictures whose names say "green triangle" (what the query
        # steers away from, however lightly) come after all the others
        said = ["green-triangle" in r["path"] for r in body["results"]]
        assert said == sorted(said) and sum(said) == 5 and len(said) == 23
        for side in (False, True):
            scores = [r["score"] for r, s in zip(body["results"], said) if s == side]
            assert scores == sorted(scores, reverse=True)
        assert [t["weight"] for t in body["understood"]["terms"]] == [2.0, 1.0, -0.5]

    def test_an_image_term_adds_the_stored_embedding_and_is_left_out_of_its_results(
        self, client: TestClient, indexed: Settings, model: Any
    ) -> None:
        ident = image_id(indexed, "purple-square.png")
        body = search(client, f"a orange triangle - 0.5:img:{ident}")
        vectors = stored(indexed)
        expected = unit(model.embed_text("a orange triangle").astype(np.float64) - 0.5 * vectors["purple-square.png"])
        top = body["results"][0]
        assert top["score"] == pytest.approx(float(vectors[top["path"]] @ expected), abs=2e-5)
        more = search(client, f"img:{ident} + a purple circle")
        assert "purple-square.png" not in found(more)
        expected = unit(vectors["purple-square.png"].astype(np.float64) + model.embed_text("a purple circle"))
        top = more["results"][0]
        assert top["score"] == pytest.approx(float(vectors[top["path"]] @ expected), abs=2e-5)

    def test_the_structured_form_gives_the_same_answer_as_the_language(
        self, client: TestClient, indexed: Settings
    ) -> None:
        ident = image_id(indexed, "orange-square.png")
        body = {
            "terms": [{"text": "a blue triangle", "weight": 2}, {"image_id": ident, "weight": -0.5}],
            "limit": 10,
            "folder": "holidays",
        }
        posted = client.post("/api/search", json=body)
        assert posted.status_code == 200, posted.text
        spoken = search(client, f'2:"a blue triangle" - 0.5:img:{ident}', limit=10, folder="holidays")
        assert posted.json()["results"] == spoken["results"] and len(spoken["results"]) == 2

    def test_the_openapi_schema_documents_the_structured_form(self, client: TestClient) -> None:
        schema = client.get("/openapi.json").json()
        assert "requestBody" in schema["paths"]["/api/search"]["post"]
        assert {"TextTerm", "ImageTerm", "StructuredSearch"} <= set(schema["components"]["schemas"])

    def test_an_upload_combines_with_text(self, client: TestClient) -> None:
        upload = io.BytesIO()
        draw(Drawing("yellow", "triangle"), width=140, height=110, background=(40, 40, 40)).save(upload, "PNG")
        files = {"file": ("example.png", upload.getvalue(), "image/png")}
        alone = client.post("/api/search/image", files=files, params={"limit": 3})
        assert found(alone.json())[0].startswith("yellow-triangle")
        mixed = client.post("/api/search/image", files=files, params={"q": "a blue circle", "image_weight": 0.2})
        body = mixed.json()
        assert mixed.status_code == 200 and body["understood"]["terms"][-1] == {"upload": "example.png", "weight": 0.2}
        assert "blue-circle" in found(body)[0]


class TestErrors:
    @pytest.mark.parametrize(
        ("q", "detail"),
        [
            ('a red "circle', 'q: unbalanced quote at position 6: expected a closing "'),
            ("abc:x + 2x:sun", "q: weight '2x' at position 8: expected a number before ':' such as 2 or 0.5"),
            ("beach + img:999", "q: unknown image id 999 at position 8: expected the id of an indexed image"),
            ("a red circle - a red circle", "q: the terms cancel each other out"),
            ("in:../etc", "q: folder 'in:../etc' at position 0: expected a subfolder of IMAGE_DIR"),
            ("sun + 1e300:sea", "q: weight '1e300' at position 6: expected a weight from 0.01 to 100"),
            ("a " * 1001, "q: String should have at most 2000 characters"),  # searching would take seconds
        ],
    )
    def test_every_parse_error_is_a_one_line_422(self, client: TestClient, q: str, detail: str) -> None:
        response = client.get("/api/search", params={"q": q})
        assert response.status_code == 422 and response.json()["detail"].startswith(detail), response.text
        assert "\n" not in response.json()["detail"]

    @pytest.mark.parametrize(
        "body",
        [
            {"terms": []},
            {"terms": [{"text": "x", "weight": "heavy"}]},
            {"terms": [{"image_id": 999}]},
            {"terms": [{"text": "a", "weight": 0}]},
            {"terms": [{"text": "a", "weight": 0.001}, {"text": "b", "weight": 0.001}]},  # the sum would vanish
            {"terms": [{"text": "a", "weight": 1e300}, {"text": "b", "weight": 1e300}]},  # the sum would overflow
            {"terms": [{"text": "a", "weight": True}]},  # no number, though Python would take it for 1
            {"terms": [{"text": "a"}], "offset": False},
            {"terms": [{"text": "a"}], "limit": "5"},
            {"terms": [{"image_id": 2**63}]},  # more than a bigint holds
            {"terms": [{"text": "a"}], "taken_after": "2024-01-01" * 5},
            {"terms": [{"text": "a"}], "min_match": "great"},
            {"terms": [{"text": "a"}], "folder": "a\x00b"},
            {"terms": [{"text": "a"}], "format": "png\x00"},
            {"terms": [{"text": "a", "image_id": 3}]},
        ],
    )
    def test_bad_structured_queries_are_a_422(self, client: TestClient, body: dict[str, Any]) -> None:
        response = client.post("/api/search", json=body)
        assert response.status_code == 422 and "\n" not in response.json()["detail"], response.text

    def test_the_post_needs_the_token_when_one_is_set(self, indexed: Settings) -> None:
        with TestClient(create_app(indexed.with_overrides(api_token="query-token"))) as c:
            body = {"terms": [{"text": "a blue square"}]}
            assert c.post("/api/search", json=body).status_code == 401
            ok = c.post("/api/search", json=body, headers={"Authorization": "Bearer query-token"})
            assert ok.status_code == 200 and found(ok.json())[0] == "blue-square.png"


class TestRelevance:
    def test_a_pair_that_is_in_the_folder_is_a_strong_match(self, client: TestClient) -> None:
        body = search(client, "a blue square")
        assert body["results"][0]["path"] == "blue-square.png" and body["results"][0]["match"] == "strong"
        assert {"strong", "none"} <= {r["match"] for r in body["results"]}

    def test_a_pair_that_is_not_in_the_folder_has_no_strong_match(self, client: TestClient) -> None:
        body = search(client, "a red circle")
        assert body["results"] and all(r["match"] != "strong" for r in body["results"])
        assert search(client, "a red circle", min_match="strong")["results"] == []

    @pytest.mark.parametrize("caption", [d.caption for d in PRESENT])
    def test_every_pair_in_the_folder_is_found_as_a_strong_match(self, client: TestClient, caption: str) -> None:
        strong = found(search(client, caption, min_match="strong"))
        assert caption.removeprefix("a ").replace(" ", "-") + ".png" in strong

    def test_a_partial_match_is_weak(self, client: TestClient) -> None:
        body = search(client, "a purple circle")
        levels = {r["path"]: r["match"] for r in body["results"]}
        assert levels["purple-circle.png"] == "strong" and levels["purple-triangle.png"] == "weak"
        assert levels["blue-square.png"] == "none"

    def test_min_match_keeps_the_ranking_and_pages(self, client: TestClient) -> None:
        def key(results: list[dict[str, Any]]) -> list[tuple[float, str]]:
            return [(r["score"], r["match"]) for r in results]

        every = search(client, "a purple circle")["results"]
        weak_or_better = [r for r in every if r["match"] != "none"]
        assert len(weak_or_better) == 2
        assert key(search(client, "a purple circle", min_match="weak")["results"]) == key(weak_or_better)
        first = client.get("/api/search", params={"q": "a purple circle", "min_match": "weak", "limit": 1}).json()
        assert key(first["results"]) == key(weak_or_better[:1]) and first["has_more"] is True
        second = client.get(
            "/api/search", params={"q": "a purple circle", "min_match": "weak", "limit": 1, "offset": 1}
        ).json()
        assert key(second["results"]) == key(weak_or_better[1:]) and second["has_more"] is False

    def test_more_like_this_judges_the_duplicate_strong(self, client: TestClient, indexed: Settings) -> None:
        ident = image_id(indexed, "yellow-triangle.png")
        similar = client.get(f"/api/images/{ident}/similar", params={"limit": 50}).json()["results"]
        assert similar[0]["path"] == "yellow-triangle-copy.png" and similar[0]["match"] == "strong"
        assert [r for r in similar if r["match"] == "none"]
        assert found(search(client, f"img:{ident}", min_match="strong")) == ["yellow-triangle-copy.png"]

    @pytest.mark.parametrize(
        ("margin", "score", "said", "against", "steered", "level"),
        [
            (0.0, 0.9, False, False, False, "strong"),
            (-9.0, -0.4, True, False, False, "strong"),  # its words say it; no negative term
            (-9.0, -0.4, True, False, True, "weak"),  # looks more like what the query steers from
            (-0.5, -0.1, False, False, True, "weak"),
            (-0.5, 0.3, False, True, True, "weak"),  # its words say what the query steers from
            (-9.0, 0.3, True, True, True, "weak"),
            (-9.0, 0.3, False, True, True, "none"),
            (None, None, True, False, False, "strong"),  # text: alone
            (None, None, True, True, False, "weak"),
        ],
    )
    def test_words_and_looks_make_a_level_together(
        self, margin: float | None, score: float | None, said: bool, against: bool, steered: bool, level: str
    ) -> None:
        assert judged_level(margin, score, said=said, against=against, steered=steered) == level

    def test_the_bank_is_judged_with_the_models_own_temperature(self) -> None:
        tiny = find_checkpoint(str(TINY_CLIP))
        assert tiny.logit_scale == pytest.approx(np.exp(2.727094), rel=1e-4)
        assert dataclasses.replace(tiny, folder="/nonexistent").logit_scale == 100.0
        assert len(set(NEUTRAL_CAPTIONS)) == len(NEUTRAL_CAPTIONS) and STRONG_MARGIN < 0


class TestDateAndFolderFilters:
    def test_a_year_in_the_query_filters_by_the_exif_date(self, client: TestClient) -> None:
        body = search(client, "a green triangle 2023")
        assert found(body) == ["holidays/2023/green-triangle-july.jpg", "holidays/2023/blue-circle-january.jpg"]
        assert body["understood"]["text"] == "a green triangle"
        assert body["understood"]["filters"]["taken_after"] == "2023-01-01"

    def test_a_month_and_a_range(self, client: TestClient) -> None:
        assert found(search(client, "a blue circle July 2023")) == ["holidays/2023/green-triangle-july.jpg"]
        assert found(search(client, "a green triangle 2020-2022")) == []
        assert (
            found(search(client, "a green triangle 2019-2023"))[:2]
            == [
                "trips/green-triangle-2019.jpg",
                "holidays/2023/green-triangle-july.jpg",
            ]
            or len(found(search(client, "a green triangle 2019-2023"))) == 3
        )

    def test_relative_dates_use_todays_date(self, client: TestClient) -> None:
        assert found(search(client, "a green triangle yesterday")) == ["recent/green-triangle-yesterday.jpg"]
        assert found(search(client, "last summer")) == ["recent/green-triangle-last-summer.jpg"]

    def test_a_date_alone_lists_what_was_taken_then_newest_first(self, client: TestClient) -> None:
        body = search(client, "2023")
        assert found(body) == ["holidays/2023/green-triangle-july.jpg", "holidays/2023/blue-circle-january.jpg"]
        assert all(r["score"] is None and r["match"] == "strong" for r in body["results"])

    def test_query_dates_narrow_the_date_parameters(self, client: TestClient) -> None:
        assert found(search(client, "a green triangle 2023", taken_before="2023-03-01")) == [
            "holidays/2023/blue-circle-january.jpg"
        ]

    def test_folder_words(self, client: TestClient) -> None:
        body = search(client, "a green triangle trips")
        assert found(body) == ["trips/green-triangle-2019.jpg"] and body["understood"]["text"] == "a green triangle"
        assert len(found(search(client, "a green triangle in:holidays/2023"))) == 2
        assert len(found(search(client, "in:recent + in:trips"))) == 3
        assert found(search(client, "a green triangle in:holidays", folder="trips")) == []
        assert len(found(search(client, "a green triangle trip"))) == 23  # not a folder: a word


# --- the command line, here and through a server ---------------------------------------------


class TestCommandLine:
    def test_levels_min_match_and_how_the_query_was_understood(self, indexed: Settings) -> None:
        result = run_main(indexed, "search", "a green triangle 2023", "--min-match", "strong")
        assert result.returncode == 0, result.stderr
        lines = result.stdout.strip().splitlines()
        assert lines == [line for line in lines if line.endswith("\tstrong")]
        assert lines[0].split("\t")[1] == "holidays/2023/green-triangle-july.jpg"
        assert "a green triangle" in result.stderr and "2023-01-01" in result.stderr

    def test_a_parse_error_is_one_line(self, indexed: Settings) -> None:
        result = run_main(indexed, "search", 'a "red')
        assert result.returncode == 2
        assert result.stderr.strip() == 'error: q: unbalanced quote at position 2: expected a closing "'

    def test_here_and_through_a_server_give_the_same_answer(self, indexed: Settings) -> None:
        import uvicorn

        from api.cli import search_here, search_through_server

        port = free_port()
        settings = indexed.with_overrides(port=port)
        server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="error"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        try:
            wait_for(lambda: server.started, timeout=60)
            ident = image_id(indexed, "orange-square.png")
            args = argparse.Namespace(
                text=f"a green triangle 2023 - 0.3:img:{ident}", image=None, limit=5, offset=0, min_match="weak"
            )
            remote = search_through_server(settings, args)
            assert remote is not None
            assert remote == search_here(settings, args)[0]
            assert remote["understood"]["filters"]["taken_after"] == "2023-01-01"
        finally:
            server.should_exit = True
            thread.join(10)
