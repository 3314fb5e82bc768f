"""One ranked query over pictures and their words: file and folder names, XMP keywords, titles and
descriptions (sidecars and embedded), and text painted in the pictures, fused with the visual
ranking; `text:` and `-text:`; which words matched and where; the page's highlight boxes.

One real indexed folder (tiny model, real Postgres, the real OCR pass) is shared by the module."""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from conftest import ROOT, TINY_MODEL, _with_database, env_for
from fastapi.testclient import TestClient
from shapes import Drawing, draw, write_corpus
from signs import Painted, Sign, paint
from stills import write_jpeg, write_sidecar, xmp_packet

from api.answer import Ask, OneConnection, answer
from api.app import create_app
from core.models.embedder import open_embedder
from core.settings import Settings, load_settings
from core.store.db import connect
from core.store.text_index import words_of
from core.store.vector_index import forget_shapes

SIGNS = (
    Sign("P1010001.JPG", ("CAFE LUNA",)),
    Sign("P1010002.JPG", ("Invoice 4711", "ACME")),
    Sign("P1010003.JPG", ("LUNCH MENU",)),
)
CAFE, INVOICE, LUNCH = (f"signs/{sign.name}" for sign in SIGNS)


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory, pg_server: str) -> Iterator[tuple[Settings, list[Painted]]]:
    """Signs with painted words, a camera folder (IMG_4711.JPG, a picture with an .xmp sidecar, one
    with embedded XMP keywords), and the coloured shapes as pictures that only look like things."""
    root = tmp_path_factory.mktemp("text")
    images = root / "img"
    write_corpus(images / "shapes")
    painted = [paint(images / "signs", sign) for sign in SIGNS]
    camera = images / "camera"
    camera.mkdir()
    write_jpeg(camera / "IMG_4711.JPG", draw(Drawing("blue", "square"), width=160, height=120))
    write_jpeg(camera / "IMG_0003.JPG", draw(Drawing("green", "circle"), width=160, height=120))
    packet = xmp_packet(keywords=("holiday", "lisbon"), title="Tram 28", description="Up the hill to the castle")
    write_sidecar(camera / "IMG_0003.JPG.xmp", packet)
    embedded = xmp_packet(keywords=("harbour",), title="Boats at dawn")
    write_jpeg(camera / "DSC_0100.JPG", draw(Drawing("yellow", "triangle"), width=160, height=120), xmp=embedded)
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = _with_database(pg_server, name)
    settings = load_settings(
        {"IMAGE_DIR": str(images), "DATA_DIR": str(root / "data"), "DATABASE_URL": url, **TINY_MODEL}
    )
    from flows.engine import index_once

    asyncio.run(index_once(settings))  # the embeddings, then the text in the pictures
    yield settings, painted
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def client(library: tuple[Settings, list[Painted]]) -> Iterator[TestClient]:
    with TestClient(create_app(library[0])) as c:
        yield c


def letters(text: str) -> str:
    return "".join(c for c in text.lower() if c.isalnum())


def overlaps(box: list[float], painted: tuple[float, float, float, float]) -> bool:
    """The box OCR found is on the painted line (their centres within the other)."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    px, py = (painted[0] + painted[2]) / 2, (painted[1] + painted[3]) / 2
    inside = painted[0] <= cx <= painted[2] and painted[1] <= cy <= painted[3]
    return inside and box[0] <= px <= box[2] and box[1] <= py <= box[3]


def search(client: TestClient, q: str, **params: Any) -> list[dict[str, Any]]:
    response = client.get("/api/search", params={"q": q, "limit": 40, **params})
    assert response.status_code == 200, response.text
    results: list[dict[str, Any]] = response.json()["results"]
    return results


def paths(results: list[dict[str, Any]]) -> list[str]:
    return [r["path"] for r in results]


class TestWordsInPictures:
    def test_the_phrase_painted_on_a_sign_finds_that_picture_first(
        self, client: TestClient, library: tuple[Settings, list[Painted]]
    ) -> None:
        results = search(client, "CAFE LUNA")
        first = results[0]
        assert first["path"] == CAFE and first["match"] == "strong"
        assert first["text_match"]["words"] == ["cafe", "luna"] and first["text_match"]["where"] == ["ocr"]
        [line] = first["text_match"]["lines"]
        assert letters(line["text"]) == "cafeluna"  # OCR often runs words together: still found
        assert overlaps(line["box"], library[1][0].boxes[0])
        # the visual side still ranks the rest, found through no text
        assert len(results) > 20 and all(r["text_match"] is None for r in results[1:])
        assert first["score"] is not None  # the cosine to the query, as for every result

    def test_part_of_a_word_and_a_number_find_the_text_around_them(self, client: TestClient) -> None:
        assert paths(search(client, "luna"))[0] == CAFE
        found = search(client, "4711")
        assert set(paths(found[:2])) == {INVOICE, "camera/IMG_4711.JPG"}
        where = {r["path"]: r["text_match"]["where"] for r in found[:2]}
        assert where == {INVOICE: ["ocr"], "camera/IMG_4711.JPG": ["name"]}
        invoice = next(r for r in found if r["path"] == INVOICE)
        [line] = invoice["text_match"]["lines"]  # not "ACME"
        assert "4711" in line["text"]

    def test_a_file_name_finds_that_file(self, client: TestClient) -> None:
        found = search(client, "IMG_4711")
        assert found[0]["path"] == "camera/IMG_4711.JPG"
        assert found[0]["text_match"] == {"words": ["img", "4711"], "where": ["name"], "lines": []}
        assert found[1]["text_match"] is None  # the invoice says 4711 but is no IMG

    def test_a_near_word_is_no_match(self, client: TestClient) -> None:
        assert all(r["path"] != LUNCH or r["text_match"] is None for r in search(client, "luna"))


class TestNamesAndKeywords:
    @pytest.mark.parametrize(
        ("q", "path", "where"),
        [
            ("lisbon", "camera/IMG_0003.JPG", ["keywords"]),  # from the .xmp sidecar
            ("tram 28", "camera/IMG_0003.JPG", ["title"]),
            ("the castle", "camera/IMG_0003.JPG", ["description"]),
            ("harbour", "camera/DSC_0100.JPG", ["keywords"]),  # XMP inside the JPEG
            ("camera dsc", "camera/DSC_0100.JPG", ["name"]),  # a folder's name and the file's
        ],
    )
    def test_the_words_people_gave_a_picture_find_it(
        self, client: TestClient, q: str, path: str, where: list[str]
    ) -> None:
        first = search(client, q)[0]
        assert first["path"] == path and first["text_match"]["where"] == where and first["match"] == "strong"

    def test_names_are_cut_into_words_as_queries_are(self) -> None:
        assert words_of("camera/IMG_4711.JPG") == ["camera", "img", "4711", "jpg"]
        assert words_of("Café-Luna2024") == ["café", "luna", "2024"]


class TestTextFilters:
    def test_text_only_keeps_the_pictures_whose_words_hold_it_ranked_by_them(self, client: TestClient) -> None:
        found = search(client, 'text:"cafe luna"')
        assert paths(found) == [CAFE] and found[0]["score"] is None and found[0]["match"] == "strong"
        assert set(paths(search(client, "text:4711"))) == {INVOICE, "camera/IMG_4711.JPG"}

    def test_text_with_words_for_the_model_ranks_only_the_pictures_that_say_it(self, client: TestClient) -> None:
        found = search(client, "a blue square text:4711")
        assert paths(found)[0] == "camera/IMG_4711.JPG" and len(found) == 2
        assert all(r["text_match"]["words"] == ["4711"] for r in found)

    def test_minus_text_leaves_out_the_pictures_whose_words_hold_it(self, client: TestClient) -> None:
        everything = paths(search(client, "a sign", limit=200))
        without = paths(search(client, "a sign -text:luna", limit=200))
        assert CAFE in everything and sorted(without) == sorted(set(everything) - {CAFE})
        assert CAFE not in paths(search(client, "-text:luna", limit=200))  # newest first, less it

    def test_understood_lists_the_text_filters(self, client: TestClient) -> None:
        body = client.get("/api/search", params={"q": 'beach -text:"for sale"'}).json()
        assert body["understood"]["filters"]["text"] == [{"text": "for sale", "exclude": True, "start": 6, "end": 22}]

    def test_a_text_filter_without_words_is_one_clear_line(self, client: TestClient) -> None:
        response = client.get("/api/search", params={"q": "beach text:!!"})
        assert response.status_code == 422 and response.json()["position"] == 6


class TestFusedRanking:
    def test_text_matches_are_strong_matches(self, client: TestClient) -> None:
        strong = search(client, "CAFE LUNA", min_match="strong")
        assert paths(strong)[0] == CAFE

    def test_an_example_of_less_like_this_is_judged_by_its_looks_alone(self, client: TestClient) -> None:
        [sign] = [r for r in search(client, "CAFE LUNA") if r["path"] == CAFE]
        pushed = search(client, f"CAFE LUNA - img:{sign['id']}")
        [again] = [r for r in pushed if r["path"] == CAFE]
        assert again["text_match"] is None and again["match"] != "strong"  # its own words do not lift it
        assert paths(pushed)[0] != CAFE

    def test_pages_continue_each_other_without_gaps_or_repeats(self, client: TestClient) -> None:
        whole = paths(search(client, "4711 blue", limit=24))
        pages: list[str] = []
        for offset in range(0, 24, 7):
            pages += paths(search(client, "4711 blue", limit=min(7, 24 - offset), offset=offset))
        assert pages == whole and len(set(whole)) == 24

    def test_each_word_is_found_through_a_gin_index(self, library: tuple[Settings, list[Painted]]) -> None:
        from psycopg import sql

        from core.store.model_state import model_table
        from core.store.text_index import word_in

        table = model_table(library[0].clip_model)
        asked = {
            (table, "search_words", "cafe"): f"{table}_words_trgm_idx",  # part of a word
            (table, "search_words", "28"): f"{table}_words_fts_idx",  # the start of a word
            ("picture_text", "text", "invoices"): "picture_text_trgm_idx",  # or nearly
            ("picture_text", "text", "ac"): "picture_text_fts_idx",
        }
        with connect(library[0].database_url) as conn, conn.transaction():
            conn.execute("SET LOCAL enable_seqscan = off")  # tables this small are cheaper to read whole
            for (name, column, word), index in asked.items():
                test = word_in(sql.Identifier(column), word, trigram=True, fuzzy=name == "picture_text")
                query = sql.SQL("EXPLAIN SELECT 1 FROM {} WHERE {}").format(sql.Identifier(name), test)
                plan = "\n".join(r[0] for r in conn.execute(query, {}))
                assert f"Bitmap Index Scan on {index}" in plan, plan

    def test_without_pg_trgm_words_still_match_as_substrings(self, library: tuple[Settings, list[Painted]]) -> None:
        settings = library[0]
        embedder = open_embedder(settings.clip_model, settings.device, settings.precision)
        with connect(settings.database_url) as conn, conn.transaction(force_rollback=True):
            conn.execute("DROP EXTENSION pg_trgm CASCADE")  # as on a server without contrib
            forget_shapes()
            try:
                ctx = OneConnection(conn, embedder, settings)
                assert answer(ctx, Ask(q="luna"))["results"][0]["path"] == CAFE
                found = answer(ctx, Ask(q="4711"))["results"]
                assert {r["path"] for r in found[:2]} == {INVOICE, "camera/IMG_4711.JPG"}
            finally:
                forget_shapes()


def says(result: dict[str, Any], *words: str) -> bool:
    """The result's file name says every word (the shapes' names say what they show)."""
    return set(words) <= set(words_of(result["path"]))


def last(results: list[dict[str, Any]], spoken_against: Callable[[dict[str, Any]], bool]) -> bool:
    """Every result spoken against comes after every other, and at least one is there."""
    flags = [spoken_against(r) for r in results]
    return any(flags) and flags == sorted(flags)


class TestNegativeTerms:
    """A term after `-` steers away on every side of the ranking: the looks and the words.
    The shapes are named for what they show (shapes/red-circle.png)."""

    def test_minus_red_pushes_down_the_picture_named_red_that_the_query_also_names(self, client: TestClient) -> None:
        found = search(client, "a red circle - red")
        assert len(found) == 24 and last(found, lambda r: says(r, "red"))
        [named] = [r for r in found if r["path"] == "shapes/red-circle.png"]
        assert named["match"] != "strong" and named["text_match"] is None  # its name lifts it not
        assert not any(r["match"] == "strong" for r in found if says(r, "red"))
        assert all(r["match"] != "strong" for r in found if r["score"] < 0)

    def test_minus_red_leaves_the_other_circles_strong_unless_they_look_like_the_opposite(
        self, client: TestClient
    ) -> None:
        found = search(client, "a circle - red")
        assert last(found, lambda r: says(r, "red"))
        circles = {r["path"]: r for r in found if says(r, "circle") and not says(r, "red")}
        assert len(circles) == 5 and all(r["text_match"]["words"] == ["circle"] for r in circles.values())
        # the purple circle looks more like "red" than like "a circle" to the tiny model (its
        # cosine with circle - red is below zero): its name alone makes it no strong match
        pointing_away = [r for r in circles.values() if r["score"] < 0]
        assert pointing_away and all(r["match"] == "weak" for r in pointing_away)
        assert all(r["match"] == "strong" for r in circles.values() if r["score"] >= 0)
        assert all(r["match"] != "strong" for r in found if r["score"] < 0 or says(r, "red"))

    def test_a_quoted_phrase_speaks_against_the_pictures_that_say_all_of_it(self, client: TestClient) -> None:
        found = search(client, 'a circle -"red circle"')
        assert last(found, lambda r: r["path"] == "shapes/red-circle.png")
        assert all(r["match"] != "strong" for r in found if r["path"] == "shapes/red-circle.png")
        # a weight steers the looks less, the words as much
        assert last(search(client, "a circle - 0.2:red"), lambda r: says(r, "red"))

    @pytest.mark.parametrize(
        ("q", "spoken_against"),
        [
            ("a circle - lisbon", "camera/IMG_0003.JPG"),  # a keyword, from the .xmp sidecar
            ("a sign - luna", CAFE),  # text read in the picture (among the signs, each named signs/...)
            ("a blue square - harbour", "camera/DSC_0100.JPG"),  # a keyword inside the JPEG
        ],
    )
    def test_keywords_and_text_read_in_pictures_speak_against_them_too(
        self, client: TestClient, q: str, spoken_against: str
    ) -> None:
        found = search(client, q)
        assert last(found, lambda r: r["path"] == spoken_against)
        assert found[-1]["match"] != "strong"

    def test_a_negative_term_speaks_against_whole_words_only(self, library: tuple[Settings, list[Painted]]) -> None:
        from psycopg import sql

        from core.store.model_state import model_table
        from core.store.text_index import says_any

        settings = library[0]
        table = model_table(settings.clip_model)
        with connect(settings.database_url) as conn:

            def against(*groups: tuple[str, ...]) -> set[str]:
                test = says_any(sql.SQL("i.search_words"), sql.SQL("i.content_hash"), groups)
                rows = conn.execute(sql.SQL("SELECT path FROM {} i WHERE {}").format(sql.Identifier(table), test))
                return {path for (path,) in rows}

            assert against(("invoice",)) == {INVOICE} and against(("ice",)) == set()  # not "Invoice"
            assert against(("red", "circle")) == {"shapes/red-circle.png"}  # every word of the term
            assert against(("signs", "acme")) == {INVOICE}  # some in its name, some in the text read in it
            assert against(("cafe", "4711")) == set()  # each term on its own
            assert against(("acme",), ("luna",)) == {INVOICE, CAFE}

    def test_a_page_that_reaches_the_pictures_spoken_against_looks_beyond_the_pool(
        self, library: tuple[Settings, list[Painted]]
    ) -> None:
        """With the smallest pool (SEARCH_EF=10) the nearest candidates to a red circle are all
        shapes, which `- 0.01:shapes` speaks against (their folder's name), while the signs and the
        camera's pictures lie beyond: those come first, found by asking for more candidates."""
        settings = dataclasses.replace(library[0], search_ef=10)
        embedder = open_embedder(settings.clip_model, settings.device, settings.precision)
        q = "a red circle - 0.01:shapes"
        with connect(settings.database_url) as conn:
            ctx = OneConnection(conn, embedder, settings)
            whole = answer(ctx, Ask(q=q, limit=24))["results"]
            pages = [r for at in range(0, 24, 3) for r in answer(ctx, Ask(q=q, limit=3, offset=at))["results"]]
        assert [r["path"].startswith("shapes/") for r in whole] == [False] * 6 + [True] * 18
        assert paths(pages) == paths(whole)

    def test_pages_continue_each_other(self, client: TestClient) -> None:
        whole = paths(search(client, "a circle - red", limit=24))
        pages: list[str] = []
        for offset in range(0, 24, 5):
            pages += paths(search(client, "a circle - red", limit=5, offset=offset))
        assert pages == whole and len(set(whole)) == 24


class TestCommandLine:
    def test_search_in_a_terminal_finds_a_file_by_its_name_and_says_which_words_matched(
        self, library: tuple[Settings, list[Painted]]
    ) -> None:
        command = f"{sys.executable} {ROOT / 'main.py'} search IMG_4711 --limit 3"
        result = subprocess.run(
            ["script", "-qec", command, "/dev/null"],
            env={**env_for(library[0]), "COLUMNS": "160"},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stdout
        first = next(line for line in result.stdout.splitlines() if "camera/IMG_4711.JPG" in line)
        assert " 1 " in first and "strong" in first and "name: img 4711" in first


@pytest.mark.browser
def test_the_larger_view_highlights_where_the_words_are(
    library: tuple[Settings, list[Painted]], start_process: Callable[..., Any]
) -> None:
    """Served for real; the highlight sits over the painted line, in the picture's own proportions."""
    import httpx
    from conftest import serve_and_wait
    from test_browser import open_page

    settings, painted = library
    _, base = serve_and_wait(start_process, settings)
    for page in open_page():
        page.goto(base + "/?q=CAFE%20LUNA")
        page.wait_for_function("document.querySelector('.tile')?.dataset.path === 'signs/P1010001.JPG'")
        assert "cafe luna" in page.locator(".tile .badge.text").first.inner_text().lower()
        page.locator(".tile button").first.click()
        box = page.locator("#viewer-highlights .highlight")
        box.wait_for()
        assert box.count() == 1 and letters(box.get_attribute("title") or "") == "cafeluna"
        # the layer is the picture as shown (scaled to fit its box, centred), the box on the line
        img, picture = page.locator("#viewer-img").bounding_box(), page.locator("#viewer-highlights").bounding_box()
        assert abs(picture["width"] / picture["height"] - 480 / 320) < 0.02
        assert abs(picture["x"] + picture["width"] / 2 - (img["x"] + img["width"] / 2)) < 2
        assert picture["width"] <= img["width"] + 1 and picture["height"] <= img["height"] + 1
        shown = box.bounding_box()
        found = httpx.get(f"{base}/api/search", params={"q": "CAFE LUNA", "limit": 1}).json()["results"][0]
        x0, y0, x1, y1 = found["text_match"]["lines"][0]["box"]
        assert abs(shown["x"] - (picture["x"] + x0 * picture["width"])) < 2
        assert abs(shown["width"] - (x1 - x0) * picture["width"]) < 2
        assert abs(shown["y"] - (picture["y"] + y0 * picture["height"])) < 2
        assert "ocr" in page.locator("#viewer-facts").inner_text().lower()
