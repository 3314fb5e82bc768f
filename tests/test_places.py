"""Places and sorting by date: a GPS position becomes a place through the offline gazetteer, the
parser takes the collection's place names for filters, and the API, the command line and the page
find pictures by where and list them by when, over one served folder of trips (`trips.py`)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from typing import Any

import httpx
import pytest
from conftest import polled_server, run_main
from playwright.sync_api import expect
from test_browser import open_page, screenshot
from trips import ITEMS, LISBON, RED_CIRCLES_NEWEST_FIRST, write_trips

from api.query import parse_query
from core.media.places import place_at
from core.settings import Settings

# --- the gazetteer -----------------------------------------------------------------------------


class TestGazetteer:
    @pytest.mark.parametrize(
        ("latitude", "longitude", "label"),
        [
            (38.7112, -9.1277, "Alfama, Lisbon, Portugal"),  # a neighbourhood, and the city it is in
            (35.6764, 139.6993, "Yoyogi, Tokyo, Japan"),
            (48.8584, 2.2945, "Neuilly-sur-Seine, Paris, Île-de-France, France"),  # nearest is a suburb
            (40.7128, -74.0060, "New York City, New York, United States"),
            (-33.9249, 18.4241, "Cape Town, Western Cape, South Africa"),
            (35.4437, 139.6380, "Yokohama, Kanagawa, Japan"),  # a big city of its own beside Tokyo
        ],
    )
    def test_a_position_names_its_locality_city_region_and_country(
        self, latitude: float, longitude: float, label: str
    ) -> None:
        place = place_at(latitude, longitude)
        assert place is not None and place.label == label

    def test_the_open_sea_and_no_position_are_nowhere(self) -> None:
        assert place_at(30.0, -40.0) is None  # mid-Atlantic, hundreds of km from the Azores
        assert place_at(0.0, 0.0) is None and place_at(None, 1.0) is None and place_at(float("nan"), 1.0) is None


# --- the parser ---------------------------------------------------------------------------------

KNOWN = ("Lisbon", "Portugal", "Tokyo", "New York", "York", "Cape Town", "Île-de-France")


def read(q: str) -> dict[str, Any]:
    from core.media.places import place_key

    named = {place_key(p): p for p in KNOWN}
    return parse_query(q, today=date(2025, 7, 10), place_named=lambda w: named.get(place_key(w))).understood()


def places(q: str) -> list[str]:
    return [p["place"] for p in read(q)["filters"].get("places", [])]


class TestPlacesInTheQuery:
    @pytest.mark.parametrize(
        ("q", "text", "found"),
        [
            ("Lisbon", "", ["Lisbon"]),
            ("lisbon", "", ["Lisbon"]),
            ("beach in Lisbon", "beach", ["Lisbon"]),
            ("beach in New York", "beach", ["New York"]),  # the longest name, not York
            ("cape town harbour", "harbour", ["Cape Town"]),
            ("ile de france", "", ["Île-de-France"]),
            ("Lisbon, Portugal", "", ["Lisbon", "Portugal"]),
            ('"Lisbon" tram', "Lisbon tram", []),  # quoted: a word for the model
            ("tram in Berlin", "tram in Berlin", []),  # no picture from Berlin: ordinary words
            ("a tram - Lisbon", "a tram Lisbon", []),  # without: a term, never a filter
        ],
    )
    def test_names_of_the_collection_become_filters(self, q: str, text: str, found: list[str]) -> None:
        understood = read(q)
        assert places(q) == found
        assert " ".join(t["text"] for t in understood["terms"]) == text

    def test_a_place_and_a_date_together_and_each_chip_span_is_its_words(self) -> None:
        q = "sunset in Tokyo 2023"
        filters = read(q)["filters"]
        (place,) = filters["places"]
        assert q[place["start"] : place["end"]] == place["words"] == "in Tokyo"
        assert filters["taken_after"] == "2023-01-01" and read(q)["text"] == "sunset"


# --- the API and the command line over a served folder -----------------------------------------


@pytest.fixture(scope="module")
def trips(pg_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Settings]]:
    """One polled server over the trips for the whole module: its tests only look."""
    top = tmp_path_factory.mktemp("trips")
    write_trips(top / "img")
    with polled_server(pg_server, top, ITEMS) as served:
        yield served


def search(base: str, **params: Any) -> dict[str, Any]:
    response = httpx.get(f"{base}/api/search", params={"limit": 40, **params}, timeout=30)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def found(base: str, **params: Any) -> list[str]:
    return [r["path"] for r in search(base, **params)["results"]]


class TestPlacesOverTheApi:
    def test_every_format_s_gps_becomes_the_place_in_its_result(self, trips: tuple[str, Settings]) -> None:
        base, _ = trips
        where = {r["path"]: (r["place"] or {}).get("label") for r in search(base, q="in:DCIM")["results"]}
        assert where == {
            "DCIM/tram.jpg": "Alfama, Lisbon, Portugal",  # EXIF in a JPEG
            "DCIM/castle.heic": "Lisbon, Portugal",  # EXIF in a HEIC
            "DCIM/shrine.heic": "Yoyogi, Tokyo, Japan",
            "DCIM/tower.jpg": "Neuilly-sur-Seine, Paris, Île-de-France, France",  # from its XMP sidecar
            "DCIM/street.mp4": "Times Square, New York City, New York, United States",  # QuickTime metadata
            "DCIM/harbour.jpg": "Cape Town, Western Cape, South Africa",
            "DCIM/garden.jpg": None,
        }

    def test_the_places_are_listed_with_their_counts(self, trips: tuple[str, Settings]) -> None:
        base, _ = trips
        listed = {p["name"]: (p["kind"], p["images"]) for p in httpx.get(f"{base}/api/places").json()["places"]}
        assert listed["Lisbon"] == ("region", 2) and listed["Portugal"] == ("country", 2)
        assert listed["Alfama"] == ("locality", 1) and listed["Cape Town"] == ("city", 1)
        assert listed["New York"] == ("region", 1) and listed["Tokyo"] == ("region", 1)
        assert "Berlin" not in listed and len(listed) == 17

    def test_a_place_name_alone_finds_only_the_pictures_taken_there(self, trips: tuple[str, Settings]) -> None:
        base, _ = trips
        page = search(base, q="Lisbon")
        assert {r["path"] for r in page["results"]} == LISBON
        assert [p["place"] for p in page["understood"]["filters"]["places"]] == ["Lisbon"]
        assert found(base, q="new york") == ["DCIM/street.mp4"]
        assert found(base, q="Cape Town") == ["DCIM/harbour.jpg"]
        assert found(base, q="Tokyo 2023") == ["DCIM/shrine.heic"] and found(base, q="Tokyo 2022") == []

    def test_a_description_with_a_place_is_a_visual_search_within_it(self, trips: tuple[str, Settings]) -> None:
        base, _ = trips
        page = search(base, q="a red circle in Lisbon")
        assert page["understood"]["text"] == "a red circle"
        assert [r["path"] for r in page["results"]] == ["DCIM/tram.jpg", "DCIM/castle.heic"]
        elsewhere = search(base, q="a red circle in Berlin")  # Berlin is no place of the collection
        assert elsewhere["understood"]["text"] == "a red circle in Berlin" and len(elsewhere["results"]) == ITEMS

    def test_places_within_each_other_narrow_and_side_by_side_add_up(self, trips: tuple[str, Settings]) -> None:
        base, _ = trips
        assert found(base, q="Alfama, Portugal") == ["DCIM/tram.jpg"]  # not all of Portugal
        assert set(found(base, q="Lisbon Tokyo")) == LISBON | {"DCIM/shrine.heic"}

    def test_the_place_filter_holds_with_the_query_s_own(self, trips: tuple[str, Settings]) -> None:
        base, _ = trips
        assert found(base, q="a red circle", place="tokyo") == ["DCIM/shrine.heic"]
        assert found(base, q="Lisbon", place="Japan") == []
        body = {"terms": [{"text": "a red circle"}], "place": "Cape Town"}
        posted = httpx.post(f"{base}/api/search", json=body).json()
        assert [r["path"] for r in posted["results"]] == ["DCIM/harbour.jpg"]


class TestSortByDate:
    def test_strong_matches_are_listed_newest_or_oldest_first(self, trips: tuple[str, Settings]) -> None:
        base, _ = trips
        newest = search(base, q="a red circle", sort="date")
        assert [r["path"] for r in newest["results"]] == RED_CIRCLES_NEWEST_FIRST
        assert {r["match"] for r in newest["results"]} == {"strong"}
        assert newest["sort"] == {"by": "date", "order": "newest"}
        oldest = found(base, q="a red circle", sort="date", order="oldest")
        assert oldest == RED_CIRCLES_NEWEST_FIRST[::-1]

    def test_pages_by_date_continue_each_other(self, trips: tuple[str, Settings]) -> None:
        base, _ = trips
        first = search(base, q="a red circle", sort="date", limit=3)
        second = search(base, q="a red circle", sort="date", limit=3, offset=3)
        assert first["has_more"] and not second["has_more"]
        assert [r["path"] for r in first["results"] + second["results"]] == RED_CIRCLES_NEWEST_FIRST

    def test_a_query_of_only_filters_lists_by_date_either_way(self, trips: tuple[str, Settings]) -> None:
        base, _ = trips
        assert found(base, q="Portugal") == ["DCIM/tram.jpg", "DCIM/castle.heic"]
        assert found(base, q="Portugal", sort="date", order="oldest") == ["DCIM/castle.heic", "DCIM/tram.jpg"]

    def test_a_place_chosen_without_words_lists_what_was_taken_there(self, trips: tuple[str, Settings]) -> None:
        base, _ = trips
        assert found(base, q="", place="Portugal") == ["DCIM/tram.jpg", "DCIM/castle.heic"]
        assert found(base, place="Japan", sort="date", order="oldest") == ["DCIM/shrine.heic"]
        nothing = httpx.get(f"{base}/api/search", params={"q": " "})
        assert nothing.status_code == 422 and "or give a filter such as place=" in nothing.json()["detail"]

    @pytest.mark.parametrize(
        ("params", "says"),
        [
            ({"sort": "colour"}, "expected relevance or date"),
            ({"sort": "date", "order": "sideways"}, "expected newest or oldest"),
            ({"order": "oldest"}, "goes with sort=date"),
        ],
    )
    def test_a_bad_sort_is_a_422_in_one_line(
        self, trips: tuple[str, Settings], params: dict[str, str], says: str
    ) -> None:
        base, _ = trips
        response = httpx.get(f"{base}/api/search", params={"q": "a red circle", **params})
        assert response.status_code == 422 and says in response.json()["detail"]


class TestCommandLine:
    def test_places_and_a_search_there_by_date_from_the_terminal(self, trips: tuple[str, Settings]) -> None:
        _, settings = trips
        listed = run_main(settings, "places")
        assert listed.returncode == 0, listed.stderr
        assert "2\tLisbon\tregion\tPortugal" in listed.stdout.splitlines()
        # another port: no server answers, so this process searches the database itself
        result = run_main(settings, "search", "a red circle", "--place", "Portugal", "--sort", "date", PORT="9")
        assert result.returncode == 0, result.stderr
        assert [line.split("\t")[1] for line in result.stdout.splitlines()] == ["DCIM/tram.jpg"]


# --- the page -----------------------------------------------------------------------------------


@pytest.fixture
def page(trips: tuple[str, Settings]) -> Iterator[Any]:
    yield from open_page()


def tile_paths(page: Any) -> list[str]:
    return page.locator(".tile").evaluate_all("(tiles) => tiles.map((t) => t.dataset.path)")


@pytest.mark.browser
def test_a_place_in_the_query_is_a_chip_and_the_larger_view_says_where(page: Any, trips: tuple[str, Settings]) -> None:
    base, _ = trips
    page.goto(f"{base}/?q=a%20red%20circle%20in%20Lisbon")
    chip = page.locator("#chips .chip.place")
    expect(chip).to_have_text("in Lisbon×")
    page.wait_for_function("document.querySelectorAll('.tile').length === 2")
    assert tile_paths(page) == ["DCIM/tram.jpg", "DCIM/castle.heic"]
    assert page.locator(".tile[data-path='DCIM/tram.jpg'] .where").inner_text() == "Lisbon"
    screenshot(page, "search-place.png")
    page.locator(".tile[data-path='DCIM/tram.jpg'] button").first.click()
    facts = page.locator("#viewer-facts")
    expect(facts.locator("dt", has_text="Place").locator("xpath=following-sibling::dd[1]")).to_have_text(
        "Alfama, Lisbon, Portugal"
    )
    page.keyboard.press("Escape")
    chip.locator("button.remove").click()  # the place goes; the description stays
    page.wait_for_url("**/?q=a+red+circle")
    page.wait_for_function(f"document.querySelectorAll('.tile').length === {ITEMS}")


@pytest.mark.browser
def test_the_page_filters_by_a_listed_place_and_sorts_by_date(page: Any, trips: tuple[str, Settings]) -> None:
    base, _ = trips
    page.goto(f"{base}/?q=a%20red%20circle")
    page.wait_for_function(f"document.querySelectorAll('.tile').length === {ITEMS}")
    page.select_option("#sort", "newest")
    page.wait_for_url("**/?q=a+red+circle&sort=newest")
    page.wait_for_function("document.querySelectorAll('.tile').length === 4")
    assert tile_paths(page) == RED_CIRCLES_NEWEST_FIRST
    page.select_option("#sort", "oldest")
    page.wait_for_function(f"document.querySelector('.tile')?.dataset.path === '{RED_CIRCLES_NEWEST_FIRST[-1]}'")
    assert tile_paths(page) == RED_CIRCLES_NEWEST_FIRST[::-1]
    assert page.locator("#place option", has_text="Portugal (2)").count() == 1
    page.select_option("#place", "Portugal")
    page.wait_for_url("**/?q=a+red+circle&place=Portugal&sort=oldest")
    page.wait_for_function("document.querySelectorAll('.tile').length === 1")
    assert tile_paths(page) == ["DCIM/tram.jpg"]
    page.reload()  # the place and the order are in the URL
    page.wait_for_function("document.querySelectorAll('.tile').length === 1")
    assert page.input_value("#place") == "Portugal" and page.input_value("#sort") == "oldest"
    page.fill("#q", "")  # no words: the place alone lists what was taken there, in the order chosen
    page.press("#q", "Enter")
    page.wait_for_url("**/?place=Portugal&sort=oldest")
    page.wait_for_function("document.querySelectorAll('.tile').length === 2")
    assert tile_paths(page) == ["DCIM/castle.heic", "DCIM/tram.jpg"]
