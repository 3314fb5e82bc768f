"""The web page and the monitoring view, driven in a real headless Chromium against a real server."""

from __future__ import annotations

import io
import random
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import ARTIFACTS, copy_tiny_model, free_port, shared_server, wait_for
from playwright.sync_api import expect
from shapes import ALL_DRAWINGS, Drawing, draw, random_drawing, write_corpus

from core.settings import Settings

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]


def write_gallery(folder: Path) -> None:
    """Beside the 18 shapes already in `folder`: three varied pictures of every colour and shape (72
    in all, more than one page), a subfolder, and a file that is not an image."""
    rng = random.Random(11)
    for round_ in range(3):
        for drawing in ALL_DRAWINGS:
            random_drawing(drawing, rng, base=160).save(folder / f"{drawing.slug}-{round_}.png")
    (folder / "holiday").mkdir()
    shutil.copy(folder / "yellow-square.png", folder / "holiday" / "beach.png")
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a whole jpeg")


@pytest.fixture
def gallery(settings: Settings) -> Settings:
    """The gallery (`write_gallery`) in a folder of this test's own."""
    write_gallery(settings.image_dir)
    return settings


@pytest.fixture(scope="module")
def server(pg_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One server over the gallery for the whole module, for the tests that only look (search,
    open, scroll, filter, read the status): none changes the folder, the model or the server. A
    test that does uses `own_server`."""
    top = tmp_path_factory.mktemp("gallery")
    write_corpus(top / "img")
    write_gallery(top / "img")
    with shared_server(pg_server, top, 73) as (base, _):
        yield base


@pytest.fixture
def own_server(gallery: Settings, start_process: Any) -> Iterator[str]:
    """A server of the test's own over the gallery, for a test that changes the folder or the model."""
    port = free_port()
    start_process(gallery, "serve", PORT=str(port))
    base = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            body = httpx.get(f"{base}/api/status", timeout=2).json()
        except (httpx.TransportError, ValueError):
            return False
        return bool(body["live"] and not body["scanning"] and body["images"] == 73)

    wait_for(ready, timeout=120)
    yield base


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One Chromium for the whole module; each test gets a fresh context (cookies, storage) and page."""
    with launched_browser() as launched:
        yield launched


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    yield from new_page(browser)


@contextmanager
def launched_browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def new_page(browser: Any) -> Iterator[Any]:
    """A page in a new context of `browser`, as a new visitor's; fails the test on a script error."""
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    try:
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.set_default_timeout(15_000)
        yield page
    finally:
        context.close()
    assert errors == [], errors


def open_page() -> Iterator[Any]:
    """A page in a Chromium of its own (for a module that drives a browser in one or two tests)."""
    with launched_browser() as browser:
        yield from new_page(browser)


def first_paths(page: Any, n: int = 3) -> list[str]:
    return page.locator(".tile").evaluate_all(f"(tiles) => tiles.slice(0, {n}).map((t) => t.dataset.path)")


def screenshot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name))


def test_typing_a_description_shows_the_matching_picture_first(page: Any, server: str) -> None:
    page.goto(server + "/")
    assert page.evaluate("document.activeElement.id") == "q"
    page.keyboard.type("a green triangle")
    # typing searches once it pauses: wait for the whole query, then for its answer
    page.wait_for_url("**/?q=a+green+triangle")
    page.wait_for_selector("#results:not([aria-busy])", state="attached")
    assert first_paths(page, 1)[0].startswith("green-triangle")
    assert page.locator(".tile .score").first.inner_text().startswith("0.")
    page.wait_for_function("[...document.images].every((i) => i.complete)")
    screenshot(page, "search-page.png")


def test_a_bookmarked_query_opens_with_its_results_and_back_returns(page: Any, server: str) -> None:
    page.goto(server + "/?q=a%20red%20circle")
    page.wait_for_function("document.querySelector('.tile')?.dataset.path.startsWith('red-circle')")
    assert page.input_value("#q") == "a red circle"
    page.fill("#q", "a blue square")
    page.press("#q", "Enter")
    page.wait_for_function("document.querySelector('.tile')?.dataset.path.startsWith('blue-square')")
    page.go_back()
    page.wait_for_function("document.querySelector('.tile')?.dataset.path.startsWith('red-circle')")
    assert page.input_value("#q") == "a red circle"


def test_the_larger_view_shows_facts_and_more_like_this(page: Any, server: str) -> None:
    page.goto(server + "/?q=a%20purple%20triangle")
    page.wait_for_function("document.querySelector('.tile')?.dataset.path.includes('purple-triangle')")
    page.locator(".tile button").first.click()
    expect(page.locator("#viewer")).to_be_visible()
    facts = page.inner_text("#viewer-facts")
    assert "Dimensions" in facts and "Size" in facts
    assert "/api/images/" in page.get_attribute("#viewer-original", "href")
    first = page.inner_text("#viewer-path")
    first_id = tile_ids(page)[0]
    page.keyboard.press("ArrowRight")
    page.wait_for_function(f"document.querySelector('#viewer-path').textContent !== {first!r}")
    page.keyboard.press("ArrowLeft")
    page.wait_for_function(f"document.querySelector('#viewer-path').textContent === {first!r}")
    page.click("#viewer-similar")
    page.wait_for_url(f"**/?similar={first_id}")
    # the chip naming the example comes with the answer's tiles, not before
    expect(page.locator("#query-chip")).to_contain_text(f"Images like #{first_id}")
    assert first not in first_paths(page, 1)
    assert all("purple" in p for p in first_paths(page, 2))
    page.locator(".tile button").first.click()
    page.keyboard.press("Escape")
    expect(page.locator("#viewer")).to_be_hidden()


def test_searching_by_an_uploaded_example(page: Any, server: str, tmp_path: Path) -> None:
    example = tmp_path / "example.png"
    draw(Drawing("purple", "circle"), width=150, height=120, background=(235, 235, 235)).save(example)
    page.goto(server + "/")
    page.set_input_files("#file", str(example))
    page.wait_for_function("document.querySelector('.tile')?.dataset.path.startsWith('purple-circle')")
    assert "example.png" in page.inner_text("#query-chip")


def test_scrolling_loads_the_next_page(page: Any, server: str) -> None:
    page.goto(server + "/?q=a%20orange%20circle")
    page.wait_for_function("document.querySelectorAll('.tile').length === 40")
    page.mouse.wheel(0, 20_000)
    page.wait_for_function("document.querySelectorAll('.tile').length === 73")
    paths = page.locator(".tile").evaluate_all("(tiles) => tiles.map((t) => t.dataset.path)")
    assert len(set(paths)) == 73


def test_the_folder_filter_is_reflected_in_the_url(page: Any, server: str) -> None:
    page.goto(server + "/?q=a%20red%20circle")
    page.wait_for_selector(".tile")
    page.select_option("#folder", "holiday")
    page.wait_for_function("document.querySelectorAll('.tile').length === 1")
    assert "folder=holiday" in page.url
    assert first_paths(page, 1) == ["holiday/beach.png"]


def test_a_picture_dropped_into_the_folder_becomes_findable_without_reloading(
    page: Any, own_server: str, gallery: Settings
) -> None:
    server = own_server
    page.goto(server + "/?q=a%20green%20square")
    page.wait_for_selector(".tile")
    buffer = io.BytesIO()
    draw(Drawing("green", "square"), width=140, height=140).save(buffer, "PNG")
    (gallery.image_dir / "just-arrived.png").write_bytes(buffer.getvalue())
    page.wait_for_function(
        "[...document.querySelectorAll('.tile')].some((t) => t.dataset.path === 'just-arrived.png')",
        timeout=20_000,
    )


def test_the_monitoring_view_lists_the_corrupt_file_with_its_reason(page: Any, server: str) -> None:
    page.goto(server + "/status")
    page.wait_for_function("document.querySelector('#images').textContent === '73'")
    row = page.locator("#failures tbody tr", has_text="corrupt.jpg")
    assert "truncated or corrupt" in row.inner_text() or "not an image" in row.inner_text()
    assert page.inner_text("#live").startswith("Live")
    assert "tiny-clip" in page.inner_text("#model")
    folder = page.inner_text("#folders li")  # one folder on a local disk: file events arrive
    assert "watched live" in folder and "74 files" in folder and "skipped" not in folder  # corrupt.jpg too
    screenshot(page, "status-page.png")


def test_the_monitoring_view_builds_another_model_and_switches_to_it(
    page: Any, own_server: str, tmp_path: Path
) -> None:
    server = own_server
    page.goto(server + "/status")
    page.wait_for_function("document.querySelector('#images').textContent === '73'")
    page.fill("#model-name", str(tmp_path / "not-a-model"))
    page.click("#model-form button")
    page.wait_for_function("document.querySelector('#model-message').className === 'bad'")
    assert "not-a-model" in page.inner_text("#model-message")

    other = copy_tiny_model(tmp_path / "other-model")
    page.fill("#model-name", str(other))
    page.click("#model-form button")
    # the answer to the choice already shows the build, and which model searches use meanwhile
    page.wait_for_selector("#building:not([hidden])")
    assert f"Building {other}" in page.inner_text("#building-text")
    assert "tiny-clip" in page.inner_text("#building-text")
    # 73 images later the new model answers searches and the build is over
    page.wait_for_function("document.querySelector('#model').textContent.includes('other-model')", timeout=60_000)
    page.wait_for_selector("#building[hidden]", state="attached")
    page.wait_for_function("document.querySelector('#model-message').textContent.startsWith('Searches now use')")
    screenshot(page, "status-page-after-switch.png")


def test_an_unreachable_server_is_said_plainly(page: Any, server: str) -> None:
    page.goto(server + "/")
    page.route("**/api/**", lambda route: route.abort())
    page.fill("#q", "a red square")
    page.press("#q", "Enter")
    page.wait_for_function("document.querySelector('#banner').textContent.includes(\"Can't reach\")")


BROWSER_TOKEN = "browser-test-token-7"


@pytest.fixture
def token_server(settings: Settings, start_process: Any) -> Iterator[str]:
    """A server with API_TOKEN over the 18 coloured shapes."""
    port = free_port()
    start_process(settings, "serve", PORT=str(port), API_TOKEN=BROWSER_TOKEN)
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {BROWSER_TOKEN}"}

    def ready() -> bool:
        try:
            body = httpx.get(f"{base}/api/status", headers=headers, timeout=2).json()
        except (httpx.TransportError, ValueError):
            return False
        return bool(body.get("live") and not body["scanning"] and body["images"] == 18)

    wait_for(ready, timeout=120)
    yield base


@pytest.fixture
def token_page(token_server: str, browser: Any) -> Iterator[Any]:
    yield from new_page(browser)


def images_loaded(page: Any, selector: str) -> None:
    """Every image under `selector` has arrived and decoded (a 401 would leave it broken)."""
    page.wait_for_function(
        f"[...document.querySelectorAll({selector!r})].length > 0 && "
        f"[...document.querySelectorAll({selector!r})].every((i) => i.complete && i.naturalWidth > 0)"
    )


def test_with_a_token_the_page_asks_once_remembers_it_and_asks_again_when_it_is_wrong(
    token_page: Any, token_server: str
) -> None:
    page = token_page
    page.goto(token_server + "/?q=a%20red%20circle")
    page.wait_for_selector("#token-dialog", state="visible")
    assert "not accepted" not in page.inner_text("#token-hint")
    page.fill("#token", "a-wrong-guess")
    page.press("#token", "Enter")
    page.wait_for_function("document.querySelector('#token-hint')?.textContent.includes('not accepted')")
    screenshot(page, "token-prompt.png")
    page.fill("#token", BROWSER_TOKEN)
    page.press("#token", "Enter")
    page.wait_for_function("document.querySelector('.tile')?.dataset.path.startsWith('red-circle')")
    assert page.locator("#token-dialog").count() == 0
    images_loaded(page, ".tile img")  # <img> tags cannot send the header: the image cookie did
    page.locator(".tile button").first.click()
    images_loaded(page, "#viewer-img")
    screenshot(page, "search-page-with-token.png")

    # remembered: a new visit, and the status view, ask nothing
    assert page.evaluate("localStorage.getItem('sightline-token')") == BROWSER_TOKEN
    page.goto(token_server + "/?q=a%20blue%20square")
    page.wait_for_function("document.querySelector('.tile')?.dataset.path.startsWith('blue-square')")
    page.goto(token_server + "/status")
    page.wait_for_function("document.querySelector('#images').textContent === '18'")
    assert page.locator("#token-dialog").count() == 0

    # a token that stopped working (the server's API_TOKEN changed) is asked for again
    page.evaluate("localStorage.setItem('sightline-token', 'an-old-token')")
    page.goto(token_server + "/?q=a%20yellow%20triangle")
    page.wait_for_function("document.querySelector('#token-hint')?.textContent.includes('not accepted')")
    page.fill("#token", BROWSER_TOKEN)
    page.press("#token", "Enter")
    page.wait_for_function("document.querySelector('.tile')?.dataset.path.startsWith('yellow-triangle')")
    images_loaded(page, ".tile img")


def tile_ids(page: Any, selector: str = ".tile") -> list[str]:
    return page.locator(selector).evaluate_all("(tiles) => tiles.map((t) => t.dataset.id)")


def test_the_query_is_shown_as_chips_that_can_be_removed(page: Any, server: str) -> None:
    page.goto(server + "/?q=" + "holiday a green triangle - a green square".replace(" ", "%20"))
    page.wait_for_function("document.querySelectorAll('.tile').length === 1")
    assert first_paths(page, 1) == ["holiday/beach.png"]
    chips = page.locator("#chips .chip").all_inner_texts()
    assert [c.replace("×", "").strip() for c in chips] == ["a green triangle", "without a green square", "in holiday/"]
    screenshot(page, "search-chips.png")
    page.locator("#chips .chip.folder .remove").click()
    page.wait_for_function("document.querySelectorAll('.tile').length > 1")
    assert page.input_value("#q") == "a green triangle - a green square"
    assert "holiday" not in page.url and "q=a+green+triangle+-+a+green+square" in page.url
    page.locator("#chips .chip.term-negative .remove").click()
    page.wait_for_function("document.querySelector('#q').value === 'a green triangle'")
    page.wait_for_function("document.querySelector('#chips').hidden")
    page.go_back()
    page.wait_for_function("document.querySelector('#q').value === 'a green triangle - a green square'")


def test_more_and_less_like_this_add_image_terms(page: Any, server: str) -> None:
    page.goto(server + "/?q=a%20blue%20circle")
    page.wait_for_function("document.querySelector('.tile')?.dataset.path.startsWith('blue-circle')")
    first = tile_ids(page)[0]
    page.locator(".tile").first.hover()
    page.locator(".tile .less-like").first.click()
    expect(page.locator("#q")).to_have_value(f"a blue circle - img:{first}")
    # the chips and the tiles of one answer arrive together: once the chip shows, so do the tiles
    expect(page.locator("#chips .chip.term-negative img")).to_have_count(1)
    assert tile_ids(page)[0] != first
    assert first not in tile_ids(page, "#results .tile")  # pushed down, out of the strong matches
    other = tile_ids(page)[0]
    page.locator(".tile").first.hover()
    page.locator(".tile .more-like").first.click()
    page.wait_for_function(f"document.querySelector('#q').value.endsWith('+ img:{other}')")
    page.wait_for_function("document.querySelectorAll('#chips .chip.term').length === 3")
    page.wait_for_selector(".tile")
    assert other not in tile_ids(page)  # an example is not its own result
    page.locator(".tile button").first.click()
    page.click("#viewer-less")
    page.wait_for_function("document.querySelectorAll('#chips .chip.term-negative').length === 2")


def test_strong_matches_come_first_then_a_divider_and_no_good_match_is_said(page: Any, server: str) -> None:
    page.goto(server + "/?q=a%20red%20circle")
    page.wait_for_function("document.querySelector('.tile')?.dataset.path.startsWith('red-circle')")
    strong = page.locator("#results .tile").evaluate_all("(ts) => ts.map((t) => t.dataset.match)")
    assert strong and set(strong) == {"strong"}
    assert page.locator("#divider-none").is_visible() and page.locator("#message").is_hidden()
    none = page.locator("#results-none .tile").evaluate_all("(ts) => ts.map((t) => t.dataset.match)")
    assert none and set(none) == {"none"}
    screenshot(page, "search-divider.png")

    page.fill("#q", "hello world")
    page.press("#q", "Enter")
    page.wait_for_function("document.querySelector('#message').textContent.includes('No good match')")
    assert page.locator("#results .tile").count() == 0 and page.locator("#results-none .tile").count() > 0
    screenshot(page, "search-no-good-match.png")


# Holds back the answers to searches whose URL contains `window.holdAnswers` until the test calls
# `releaseAnswers()`, so that a test can look at the page while an answer is on its way, and make
# an older answer arrive after a newer one. `heldRead` counts the held answers the page has read.
HOLD_ANSWERS = """
window.held = [];
window.heldRead = 0;
const realFetch = window.fetch;
window.fetch = async (resource, options) => {
  const response = await realFetch(resource, options);
  if (!window.holdAnswers || !String(resource).includes(window.holdAnswers)) return response;
  await new Promise((resolve) => window.held.push(resolve));
  const json = response.json.bind(response);
  response.json = async () => {
    const body = await json();
    window.heldRead += 1;
    return body;
  };
  return response;
};
window.releaseAnswers = () => window.held.splice(0).forEach((resolve) => resolve());
"""


def chip_texts(page: Any) -> list[str]:
    return [" ".join(c.replace("×", "").split()) for c in page.locator("#chips .chip").all_inner_texts()]


def test_while_an_answer_is_on_its_way_the_page_keeps_the_previous_one_whole(page: Any, server: str) -> None:
    page.add_init_script(HOLD_ANSWERS)
    page.goto(server + "/?q=a%20blue%20circle%20-%20a%20red%20square")
    expect(page.locator("#chips .chip")).to_have_count(2)
    before = tile_ids(page)
    assert chip_texts(page) == ["a blue circle", "without a red square"]
    page.evaluate("window.holdAnswers = '/api/search?'")
    page.locator(".tile").first.hover()
    page.locator(".tile .less-like").first.click()
    page.wait_for_function("window.held.length > 0")
    # the server has answered, the page has not seen it: the old tiles and their chips, together
    assert tile_ids(page) == before
    assert chip_texts(page) == ["a blue circle", "without a red square"]
    assert page.get_attribute("#results", "aria-busy") == "true"

    page.evaluate("releaseAnswers()")
    expect(page.locator("#chips .chip.term-negative img")).to_have_count(1)
    assert chip_texts(page) == ["a blue circle", "without a red square", f"without image #{before[0]}"]
    assert tile_ids(page)[0] != before[0]
    assert page.get_attribute("#results", "aria-busy") is None


def test_an_answer_that_arrives_after_a_newer_one_is_dropped(page: Any, server: str) -> None:
    page.add_init_script(HOLD_ANSWERS + "window.holdAnswers = 'green';")
    page.goto(server + "/?q=a%20green%20circle%20-%20a%20red%20square")
    page.wait_for_function("window.held.length === 1")
    page.fill("#q", "a yellow square - a blue circle")
    page.press("#q", "Enter")
    page.wait_for_function("document.querySelector('.tile')?.dataset.path.startsWith('yellow-square')")
    yellow = tile_ids(page)

    page.evaluate("releaseAnswers()")  # the answer for green comes last
    page.wait_for_function("window.heldRead === 1")
    assert tile_ids(page) == yellow
    assert chip_texts(page) == ["a yellow square", "without a blue circle"]
    assert page.input_value("#q") == "a yellow square - a blue circle"
    assert "green" not in page.url


def test_a_new_answer_is_shown_from_its_start(page: Any, server: str) -> None:
    page.goto(server + "/?q=a%20orange%20circle")
    page.wait_for_function("document.querySelectorAll('.tile').length >= 40")
    page.evaluate("window.scrollTo(0, 900)")
    assert page.evaluate("window.scrollY") == 900
    page.fill("#q", "a green square")  # the header stays on screen while scrolled
    page.press("#q", "Enter")
    page.wait_for_function("document.querySelector('.tile')?.dataset.path.startsWith('green-square')")
    assert page.evaluate("window.scrollY") == 0


PHONE = {"width": 390, "height": 844}

# Per page: where it is, what to wait for before measuring, the controls in its header (all on
# the first screen) and those of its own forms (reachable by scrolling down, never sideways).
PAGES = {
    "search": (
        "/?q=a%20red%20circle",
        ".tile",
        [".brand", "#q", "label.pick", "#duplicates-link", "#status-link"],
        ["#folder", "#after", "#before", "#clear-filters", ".tile button"],
    ),
    "status": (
        "/status",
        "#failures:not([hidden])",
        [".brand", ".bar .nav[href='/']", ".bar .nav[href='/duplicates']"],
        ["#model-name", "#model-form button"],
    ),
    "duplicates": (
        "/duplicates",
        ".dup-group",
        [".brand", ".bar .nav[href='/']", ".bar .nav[href='/status']"],
        ["#threshold", "#folder", "#dup-form button"],
    ),
}


@pytest.mark.parametrize("name", PAGES)
def test_every_page_fits_a_phone(page: Any, server: str, name: str) -> None:
    path, ready, header, forms = PAGES[name]
    page.set_viewport_size(PHONE)
    page.goto(server + path)
    page.wait_for_selector(ready)
    # lazy images load once near the screen: wait for those on it
    page.wait_for_function(
        """[...document.images].filter((i) => {
            const box = i.getBoundingClientRect();
            return box.top < innerHeight && box.left < innerWidth;
        }).every((i) => i.complete)"""
    )
    screenshot(page, f"mobile-{name}.png")
    width = page.evaluate("window.innerWidth")
    assert width == PHONE["width"]
    assert page.evaluate("document.documentElement.scrollWidth") <= width, "the page scrolls sideways"

    def usable(selector: str, on_first_screen: bool) -> None:
        control = page.locator(selector).first
        if not on_first_screen:
            control.scroll_into_view_if_needed()
        box = control.bounding_box()
        assert box is not None, f"{selector} is not shown"
        assert box["x"] >= 0 and box["x"] + box["width"] <= width, f"{selector} is cut off: {box}"
        # a control scrolled into view may end a fraction of a pixel past the edge (sub-pixel layout)
        assert box["y"] >= 0 and box["y"] + box["height"] <= PHONE["height"] + 1, f"{selector} is off screen: {box}"
        control.click(trial=True)  # nothing covers it

    for selector in header:
        usable(selector, on_first_screen=True)
    for selector in forms:
        usable(selector, on_first_screen=False)
