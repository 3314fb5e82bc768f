"""The People page and the people on the search page, in a real headless Chromium against a real
server that found the faces in `faces.write_faces` (two public figures, variants, both in one
picture): the list with covers and counts, naming in place, the merge offered for a name someone
else has, merging two selected people, a person's pictures with the face marked, a face split out,
a person's name searched with its chip, and the people of a picture in the larger view.

One server serves the module (finding the faces takes a while); every test starts from the people
it found, put back in the database before each test, so that what one test corrects is not what
the next one sees."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg
import pytest
from conftest import TINY_MODEL, Process, _with_database, free_port, wait_for
from faces import write_faces
from playwright.sync_api import expect
from test_browser import PHONE, open_page, screenshot

from core.settings import load_settings

pytestmark = pytest.mark.browser

PEOPLE_TABLES = ("people", "face_people", "face_corrections")
OBAMA_PICTURES = 8  # his five portraits, a crop, a mirror, and the picture of both
BIDEN_PICTURES = 3  # his portrait, a darker copy, and the picture of both
WITH_A_FACE = OBAMA_PICTURES + BIDEN_PICTURES - 1  # one picture holds both


@dataclass
class Library:
    base: str
    database_url: str
    files: dict[str, str]  # file name → who is in it
    obama: int  # person ids, as the faces pass grouped them
    biden: int

    def people(self, hidden: bool = False) -> list[dict[str, Any]]:
        answer = httpx.get(f"{self.base}/api/people", params={"hidden": str(hidden).lower()})
        answer.raise_for_status()
        return list(answer.json()["people"])

    def person(self, person_id: int) -> dict[str, Any]:
        answer = httpx.get(f"{self.base}/api/people/{person_id}")
        answer.raise_for_status()
        return dict(answer.json())

    def name(self, person_id: int, name: str) -> None:
        httpx.patch(f"{self.base}/api/people/{person_id}", json={"name": name}).raise_for_status()

    def pictures_of(self, who: str) -> set[str]:
        return {name for name, there in self.files.items() if there in (who, "both")}


@pytest.fixture(scope="module")
def library(pg_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Library]:
    """`main.py serve` with faces on over the faces folder, once every face is found; the people it
    found are kept aside in the database to be put back before each test."""
    top = tmp_path_factory.mktemp("faces")
    files = write_faces(top / "img")
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = _with_database(pg_server, name)
    folders = {"IMAGE_DIR": str(top / "img"), "DATA_DIR": str(top / "data")}
    settings = load_settings({**folders, "DATABASE_URL": url, **TINY_MODEL, "FACES": "on", "OCR": "off"})
    port = free_port()
    server = Process(settings, ["serve"], top / "serve.log", PORT=str(port))
    base = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        if server.proc.poll() is not None:
            raise AssertionError(f"serve exited:\n{server.output()}")
        try:
            body = httpx.get(f"{base}/api/status", timeout=2).json()
        except (httpx.TransportError, ValueError):
            return False
        faces = body.get("faces") or {}
        done = body["live"] and not body["scanning"] and body["images"] == len(files)
        return bool(done and faces.get("read") == len(files) and faces.get("waiting") == 0)

    try:
        wait_for(ready, timeout=180, interval=0.3)
        found = httpx.get(f"{base}/api/people").json()["people"]
        assert [p["pictures"] for p in found] == [OBAMA_PICTURES, BIDEN_PICTURES], found
        paths = {p["id"]: {i["path"] for i in httpx.get(f"{base}/api/people/{p['id']}").json()["items"]} for p in found}
        obama, biden = found[0]["id"], found[1]["id"]
        library = Library(base, url, files, obama, biden)
        assert paths == {obama: library.pictures_of("obama"), biden: library.pictures_of("biden")}
        with psycopg.connect(url, autocommit=True) as conn:
            for table in PEOPLE_TABLES:
                conn.execute(f"CREATE TABLE kept_{table} AS SELECT * FROM {table}")
        yield library
    finally:
        server.stop()
        with psycopg.connect(pg_server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def page(library: Library) -> Iterator[Any]:
    """A page on a library with the people as the faces pass found them: two, without names."""
    with psycopg.connect(library.database_url, autocommit=True) as conn, conn.transaction():
        conn.execute(f"TRUNCATE {', '.join(PEOPLE_TABLES)}")
        for table in PEOPLE_TABLES:
            conn.execute(f"INSERT INTO {table} SELECT * FROM kept_{table}")
    yield from open_page()


def card(page: Any, person_id: int) -> Any:
    return page.locator(f"#people .person[data-person-id='{person_id}']")


def open_people(page: Any, library: Library, count: int = 2) -> None:
    page.goto(f"{library.base}/people")
    expect(page.locator("#people .person")).to_have_count(count)


def covers_loaded(page: Any) -> None:
    page.wait_for_function(
        "[...document.querySelectorAll('#people img.cover')].every((i) => i.complete && i.naturalWidth > 0)"
    )


def no_sideways_scroll(page: Any) -> None:
    assert page.evaluate("document.documentElement.scrollWidth") <= page.evaluate("window.innerWidth")


def test_the_people_page_lists_everyone_with_a_face_and_counts(page: Any, library: Library) -> None:
    open_people(page, library)
    cards = page.locator("#people .person")
    # most pictures first, each with their face, "Add a name" and how many pictures
    assert cards.evaluate_all("(cs) => cs.map((c) => Number(c.dataset.personId))") == [library.obama, library.biden]
    expect(card(page, library.obama).locator(".counts")).to_have_text(f"{OBAMA_PICTURES} pictures")
    expect(card(page, library.biden).locator(".counts")).to_have_text(f"{BIDEN_PICTURES} pictures")
    expect(cards.locator(".name")).to_have_text(["Add a name", "Add a name"])
    covers_loaded(page)
    sizes = page.locator("#people img.cover").evaluate_all("(is) => is.map((i) => [i.naturalWidth, i.naturalHeight])")
    assert sizes == [[160, 160], [160, 160]]  # the square face crops
    expect(page.locator("#summary")).to_have_text("2 people")
    screenshot(page, "people-page.png")
    # the navigation leads here from the other pages
    page.goto(f"{library.base}/?q=a%20portrait")
    page.click("#people-link")
    expect(page.locator("#people .person")).to_have_count(2)
    page.set_viewport_size(PHONE)
    covers_loaded(page)
    screenshot(page, "people-page-phone.png")
    no_sideways_scroll(page)
    box = card(page, library.biden).bounding_box()
    assert box["x"] + box["width"] <= PHONE["width"], "two people side by side on a phone"


def test_a_name_typed_in_place_is_kept(page: Any, library: Library) -> None:
    open_people(page, library)
    biden = card(page, library.biden)
    biden.locator(".name").click()
    field = biden.locator(".name-input")
    expect(field).to_be_focused()
    field.type("Joe Biden")
    field.press("Enter")
    expect(biden.locator(".name")).to_have_text("Joe Biden")
    expect(page.locator("#notice")).to_have_text("Saved: Joe Biden.")
    assert [(p["id"], p["name"]) for p in library.people()] == [(library.obama, None), (library.biden, "Joe Biden")]
    # Escape leaves the name as it was, and the keyboard where it was
    page.reload()
    biden.locator(".name").click()
    field.fill("Someone Else")
    field.press("Escape")
    expect(biden.locator(".name")).to_have_text("Joe Biden")
    expect(biden.locator(".name")).to_be_focused()
    expect(field).to_be_hidden()
    assert library.person(library.biden)["name"] == "Joe Biden"
    # an empty name is refused on the spot, in one line under the field
    biden.locator(".name").press("Enter")
    field.fill("  ")
    field.press("Enter")
    expect(biden.locator(".field-error")).to_contain_text("cannot be empty")
    page.reload()
    expect(biden.locator(".name")).to_have_text("Joe Biden")


def test_a_name_someone_else_has_offers_to_merge_them(page: Any, library: Library) -> None:
    library.name(library.biden, "Joe Biden")
    open_people(page, library)
    obama = card(page, library.obama)
    obama.locator(".name").click()
    obama.locator(".name-input").type("joe biden")
    obama.locator(".name-input").press("Enter")
    error = obama.locator(".field-error")
    expect(error).to_contain_text("“Joe Biden” is already someone else's name.")
    offer = error.get_by_role("button", name="Merge with Joe Biden")
    expect(offer).to_be_visible()
    assert library.person(library.obama)["name"] is None  # nothing changed yet
    offer.click()
    expect(page.locator("#people .person")).to_have_count(1)
    expect(card(page, library.biden).locator(".name")).to_have_text("Joe Biden")
    faces = OBAMA_PICTURES + BIDEN_PICTURES
    expect(card(page, library.biden).locator(".counts")).to_have_text(f"{WITH_A_FACE} pictures · {faces} faces")
    expect(page.locator("#notice")).to_contain_text("Merged into Joe Biden")
    assert [(p["id"], p["name"]) for p in library.people()] == [(library.biden, "Joe Biden")]


def test_two_selected_people_merge_into_one(page: Any, library: Library) -> None:
    open_people(page, library)
    merge = page.locator("#merge")
    expect(page.locator("#merge-bar")).to_be_hidden()
    card(page, library.biden).get_by_role("checkbox").check()
    expect(merge).to_be_disabled()
    card(page, library.obama).get_by_role("checkbox").check()
    # without names, the one with more pictures stays
    expect(merge).to_have_text(f"Merge into the one with {OBAMA_PICTURES} pictures")
    expect(card(page, library.obama)).to_have_class(re.compile(r"\bkeeps\b"))
    expect(card(page, library.biden)).not_to_have_class(re.compile(r"\bkeeps\b"))
    page.click("#clear-selection")
    expect(page.locator("#merge-bar")).to_be_hidden()
    # a name wins over more pictures
    library.name(library.biden, "Joe Biden")
    page.reload()
    card(page, library.obama).get_by_role("checkbox").check()
    card(page, library.biden).get_by_role("checkbox").check()
    expect(merge).to_have_text("Merge into Joe Biden")
    merge.click()
    expect(page.locator("#people .person")).to_have_count(1)
    expect(card(page, library.biden).locator(".name")).to_have_text("Joe Biden")
    expect(page.locator("#merge-bar")).to_be_hidden()
    people = library.people()
    assert [(p["id"], p["name"], p["pictures"]) for p in people] == [(library.biden, "Joe Biden", WITH_A_FACE)]
    assert httpx.get(f"{library.base}/api/people/{library.obama}").status_code == 404


def face_box_on_picture(item: Any) -> tuple[list[float], list[float]]:
    """The drawn box as fractions of the shown picture, and the picture's own (natural) size."""
    return item.evaluate(
        """(li) => {
            const img = li.querySelector('img'), box = li.querySelector('.face-box').getBoundingClientRect();
            const pic = img.getBoundingClientRect();
            const f = [(box.left - pic.left) / pic.width, (box.top - pic.top) / pic.height,
                       (box.right - pic.left) / pic.width, (box.bottom - pic.top) / pic.height];
            return [f, [pic.width / pic.height, img.naturalWidth / img.naturalHeight]];
        }"""
    )


def test_a_persons_pictures_show_where_their_face_is(page: Any, library: Library) -> None:
    library.name(library.biden, "Joe Biden")
    open_people(page, library)
    card(page, library.biden).locator(".cover-link").click()
    page.wait_for_url(f"**/people#person-{library.biden}")
    items = page.locator("#faces .face-item")
    expect(items).to_have_count(BIDEN_PICTURES)
    expect(page.locator("#person-name .name")).to_have_text("Joe Biden")
    expect(page.locator("#person-counts")).to_have_text(f"{BIDEN_PICTURES} pictures")
    search = page.get_by_role("link", name="Search for their pictures")
    assert search.get_attribute("href") == "/?q=person%3A%22Joe%20Biden%22"
    expect(page.locator("#faces .face-item.loaded")).to_have_count(BIDEN_PICTURES)
    person = library.person(library.biden)
    assert [i["path"] for i in person["items"]] == items.evaluate_all("(ls) => ls.map((l) => l.dataset.path)")
    for item, expected in zip(items.all(), person["items"]):
        drawn, (shown_ratio, natural_ratio) = face_box_on_picture(item)
        assert shown_ratio == pytest.approx(natural_ratio, rel=0.02)  # the picture keeps its shape
        assert drawn == pytest.approx(expected["box"], abs=0.01)
        expect(item.locator(".face-box")).to_be_visible()
        expect(item.get_by_role("button", name="Not Joe Biden")).to_be_visible()
    screenshot(page, "people-person.png")
    # the list is a step back
    page.click("#back")
    expect(page.locator("#people .person")).to_have_count(2)


def test_a_face_said_not_to_be_them_becomes_a_person_of_its_own(page: Any, library: Library) -> None:
    library.name(library.biden, "Joe Biden")
    page.goto(f"{library.base}/people#person-{library.biden}")
    items = page.locator("#faces .face-item")
    expect(items).to_have_count(BIDEN_PICTURES)
    together = page.locator("#faces .face-item[data-path='together.jpg']")
    together.get_by_role("button", name="Not Joe Biden").click()
    expect(items).to_have_count(BIDEN_PICTURES - 1)
    expect(page.locator("#faces .face-item[data-path='together.jpg']")).to_have_count(0)
    expect(page.locator("#person-counts")).to_have_text(f"{BIDEN_PICTURES - 1} pictures")
    expect(page.locator("#notice")).to_contain_text("Moved out into a new person.")
    people = library.people()
    assert len(people) == 3
    (new,) = [p for p in people if p["id"] not in (library.obama, library.biden)]
    assert (new["name"], new["pictures"]) == (None, 1)
    assert [i["path"] for i in library.person(new["id"])["items"]] == ["together.jpg"]
    # the line leads to them
    page.locator("#notice").get_by_role("link", name="Open them").click()
    page.wait_for_url(f"**/people#person-{new['id']}")
    expect(items).to_have_count(1)
    expect(page.locator("#person-name .name")).to_have_text("Add a name")
    # and "Move to…" puts the face back
    items.first.locator("select.move-to").select_option(str(library.biden))
    expect(page.locator("#person-empty")).to_be_visible()
    assert library.person(library.biden)["pictures"] == BIDEN_PICTURES


def test_a_person_hidden_and_shown_again_and_a_face_that_is_none(page: Any, library: Library) -> None:
    open_people(page, library)
    card(page, library.biden).get_by_role("button", name=f"Hide unnamed person #{library.biden}").click()
    expect(page.locator("#people .person")).to_have_count(1)
    expect(page.locator("#notice")).to_contain_text("is hidden")
    assert [p["id"] for p in library.people()] == [library.obama]
    page.get_by_label("Show hidden people").check()
    expect(page.locator("#people .person")).to_have_count(2)
    biden = card(page, library.biden)
    expect(biden.locator(".tag")).to_have_text("Hidden")
    expect(page.locator("#summary")).to_have_text("2 people, 1 of them hidden")
    biden.locator(".hide-toggle").click()
    expect(biden.locator(".tag")).to_have_count(0)
    assert [p["id"] for p in library.people()] == [library.obama, library.biden]
    # "Not a face": gone from the person and from the picture's people
    biden.locator(".cover-link").click()
    darker = page.locator("#faces .face-item[data-path='biden-darker.jpg']")
    darker.get_by_role("button", name="Not a face").click()
    expect(page.locator("#faces .face-item")).to_have_count(BIDEN_PICTURES - 1)
    expect(darker).to_have_count(0)
    results = httpx.get(f"{library.base}/api/search", params={"q": "a man in a suit"}).json()["results"]
    assert [r["people"] for r in results if r["path"] == "biden-darker.jpg"] == [[]]


def test_a_name_in_the_search_box_is_a_chip_and_finds_only_their_pictures(page: Any, library: Library) -> None:
    library.name(library.biden, "Joe Biden")
    page.goto(f"{library.base}/")
    page.fill("#q", "Joe Biden")
    page.press("#q", "Enter")
    chip = page.locator("#chips .chip.with-person")
    expect(chip).to_have_text("with Joe Biden×")
    expect(chip.locator("img")).to_be_visible()  # their face
    tiles = page.locator("#results .tile")
    expect(tiles).to_have_count(BIDEN_PICTURES)
    assert set(tiles.evaluate_all("(ts) => ts.map((t) => t.dataset.path)")) == library.pictures_of("biden")
    assert page.locator("#results-weak .tile, #results-none .tile").count() == 0
    page.wait_for_function("[...document.images].every((i) => i.complete)")
    screenshot(page, "search-person-chip.png")
    page.set_viewport_size(PHONE)
    page.wait_for_function("[...document.images].every((i) => i.complete)")
    screenshot(page, "search-person-chip-phone.png")
    no_sideways_scroll(page)
    # the pictures without him, and the chip's × takes the person out of the query
    page.fill("#q", '-person:"Joe Biden"')
    page.press("#q", "Enter")
    expect(chip).to_have_text("without Joe Biden×")
    expect(chip).to_have_class("chip filter with-person person-negative")
    expect(tiles).to_have_count(len(library.files) - BIDEN_PICTURES)
    chip.get_by_role("button", name="Remove Joe Biden").click()
    expect(page.locator("#q")).to_have_value("")


def test_the_larger_view_shows_who_is_in_the_picture(page: Any, library: Library) -> None:
    library.name(library.biden, "Joe Biden")
    page.goto(f"{library.base}/?q=Joe%20Biden")
    page.locator(".tile[data-path='together.jpg'] button").first.click()
    row = page.locator("#viewer-people")
    expect(row).to_be_visible()
    chips = row.locator(".person-chip")
    expect(chips).to_have_text(["Unnamed person", "Joe Biden"])  # left to right
    expect(row.get_by_role("link", name="Unnamed person")).to_have_attribute("href", f"/people#person-{library.obama}")
    page.wait_for_function("[...document.querySelectorAll('#viewer-people img')].every((i) => i.naturalWidth > 0)")
    # the boxes lie on the faces, shown with "Show faces" (or while the pointer is on the picture)
    layer = page.locator("#viewer-faces")
    expect(layer).to_be_visible()
    expect(layer.locator(".viewer-face")).to_have_text(["Unnamed person", "Joe Biden"])
    page.click("#viewer-faces-toggle")
    expect(page.locator("#viewer-faces-toggle")).to_have_attribute("aria-pressed", "true")
    page.wait_for_function("getComputedStyle(document.querySelector('#viewer-faces')).opacity === '1'")
    faces = httpx.get(f"{library.base}/api/search", params={"q": "Joe Biden"}).json()["results"]
    (shown,) = [r["people"] for r in faces if r["path"] == "together.jpg"]
    drawn = layer.evaluate(
        """(l) => [...l.children].map((b) => { const o = l.getBoundingClientRect(), r = b.getBoundingClientRect();
            return [(r.left - o.left) / o.width, (r.top - o.top) / o.height,
                    (r.right - o.left) / o.width, (r.bottom - o.top) / o.height]; })"""
    )
    assert drawn == [pytest.approx(face["box"], abs=0.01) for face in shown]
    img = page.locator("#viewer-img").bounding_box()
    box = layer.bounding_box()
    assert box["width"] <= img["width"] + 1 and box["height"] <= img["height"] + 1
    screenshot(page, "viewer-people.png")
    # a named face searches for them
    chips.filter(has_text="Joe Biden").click()
    expect(page.locator("#viewer")).to_be_hidden()
    expect(page.locator("#q")).to_have_value('person:"Joe Biden"')
    expect(page.locator("#chips .chip.with-person")).to_have_text("with Joe Biden×")
    # an unnamed one leads to their pictures on the People page
    page.locator(".tile[data-path='together.jpg'] button").first.click()
    row.get_by_role("link", name="Unnamed person").click()
    page.wait_for_url(f"**/people#person-{library.obama}")
    expect(page.locator("#faces .face-item")).to_have_count(OBAMA_PICTURES)


def test_nothing_of_the_people_page_is_cut_off_on_a_phone(page: Any, library: Library) -> None:
    page.set_viewport_size(PHONE)
    page.goto(f"{library.base}/people#person-{library.obama}")
    expect(page.locator("#faces .face-item.loaded")).to_have_count(OBAMA_PICTURES)
    no_sideways_scroll(page)
    for selector in (".brand", ".bar .nav[href='/']", ".bar .nav[href='/status']", "#back"):
        box = page.locator(selector).bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"], selector
    screenshot(page, "people-person-phone.png")


def test_the_status_page_shows_the_faces_pass(page: Any, library: Library) -> None:
    page.goto(library.base + "/status")
    expect(page.locator("#faces-line")).to_have_text("Every picture and video has been looked at for faces.")
    expect(page.locator("#faces-read")).to_have_text(str(len(library.files)))
    expect(page.locator("#faces-waiting")).to_have_text("0")
    expect(page.locator("#text-line")).to_have_text("Text in pictures is not read (OCR=off).")
    expect(page.locator("#faces-progress")).to_be_hidden()
