"""The web page with what a phone and a camera write: a video played from the second a search
matched, a Live Photo's motion played in place, a RAW original to download, an iPhone's HEVC video
(which this Chromium cannot decode) converted by the server and played from the matched second,
and the status page's folders, in a real headless Chromium against a real server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from camera_roll import write_camera_roll
from conftest import polled_server
from playwright.sync_api import expect
from shapes import Drawing, write_corpus
from test_browser import PHONE, browser, new_page, screenshot  # noqa: F401  (one Chromium for the module)
from videos import write_video

pytestmark = pytest.mark.browser

# the 18 shapes, and in DCIM: clip.mp4, IMG_0001.JPG (+ .CR2), IMG_0002.HEIC (+ .MOV), IMG_0003.JPG, IMG_0004.MOV
ITEMS = 23
HEVC = 'video/mp4; codecs="hvc1.1.6.L93.B0"'


def camera_roll(folder: Path) -> None:
    write_corpus(folder)
    roll = folder / "DCIM"
    write_camera_roll(roll)
    # what an iPhone records: HEVC with AAC sound, which Chromium on Linux does not play
    write_video(
        roll / "IMG_0004.MOV",
        [(Drawing("green", "circle"), 3), (Drawing("orange", "triangle"), 3)],
        codec="libx265",
        codec_options={"x265-params": "log-level=error"},
        sound="aac",
    )
    (roll / "more-notes.pdf").write_bytes(b"%PDF-1.7")


@pytest.fixture(scope="module")
def library(pg_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One polled server over the camera roll for the whole module: its tests only look."""
    top = tmp_path_factory.mktemp("camera-roll")
    camera_roll(top / "img")
    with polled_server(pg_server, top, ITEMS) as (base, _):
        yield base


@pytest.fixture
def page(library: str, browser: Any) -> Iterator[Any]:  # noqa: F811
    yield from new_page(browser)


def result(base: str, q: str, path: str) -> dict[str, Any]:
    found = httpx.get(f"{base}/api/search", params={"q": q, "limit": 40}).json()["results"]
    return next(r for r in found if r["path"] == path)


def open_result(page: Any, base: str, q: str, path: str, shot: str | None = None) -> Any:
    """Search for `q`, open the tile of `path` in the larger view; returns the tile. `shot` names
    a screenshot of the results, taken once their thumbnails are in."""
    page.goto(f"{base}/?q={q.replace(' ', '%20')}")
    tile = page.locator(f".tile[data-path='{path}']")
    if shot:
        tile.wait_for()
        page.wait_for_function("[...document.querySelectorAll('.tile img')].slice(0, 12).every((i) => i.complete)")
        screenshot(page, shot)
    tile.locator("button").first.click()
    expect(page.locator("#viewer")).to_be_visible()
    return tile


def badge(tile: Any, kind: str) -> str:
    return str(tile.locator(f".badge.{kind} [aria-hidden]").inner_text())


def fact(page: Any, label: str) -> str:
    return str(page.locator("#viewer-facts dt", has_text=label).locator("xpath=following-sibling::dd[1]").inner_text())


def test_a_video_found_by_a_search_plays_from_the_matched_second(page: Any, library: str) -> None:
    clip = result(library, "a blue square", "DCIM/clip.mp4")
    second = clip["second"]
    assert 4 <= second < 8  # the blue half
    tile = open_result(page, library, "a blue square", "DCIM/clip.mp4", shot="search-video-tile.png")
    assert badge(tile, "duration") == "0:08"
    assert badge(tile, "at") == f"at 0:0{round(second)}"
    assert tile.locator(".badge.live").count() == 0
    assert page.locator("#viewer-img").is_hidden()
    # it plays, and everything it has played lies in the blue half: it did not start at 0
    page.wait_for_function(
        "(() => { const v = document.querySelector('#viewer-video'); "
        "return !v.hidden && !v.paused && v.played.length > 0 && v.currentTime > 0 })()"
    )
    start = page.evaluate("document.querySelector('#viewer-video').played.start(0)")
    assert start == pytest.approx(second, abs=0.25) and start >= 4
    assert page.evaluate("document.querySelector('#viewer-video').currentTime") >= 4
    assert fact(page, "Length") == "0:08" and fact(page, "Matched at") == f"0:0{round(second)}"
    assert fact(page, "Place") == "Baixa, Lisbon, Portugal" and fact(page, "GPS") == "38.71390° N, 9.13940° W"
    assert fact(page, "Recorded")
    screenshot(page, "viewer-video.png")
    # the arrows belong to a focused player (it seeks with them); the view stays on the video
    page.focus("#viewer-video")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    assert page.inner_text("#viewer-path") == "DCIM/clip.mp4"
    # Esc closes the view and lets go of the video
    page.keyboard.press("Escape")
    expect(page.locator("#viewer")).to_be_hidden()
    # (the dialog's close event, which stops it, comes a moment after the dialog hides)
    page.wait_for_function("(() => { const v = document.querySelector('#viewer-video'); return v.paused && !v.src })()")


def test_a_live_photo_shows_its_still_and_plays_its_motion_in_place(page: Any, library: str) -> None:
    live = result(library, "a purple circle", "DCIM/IMG_0002.HEIC")
    tile = open_result(page, library, "a purple circle", "DCIM/IMG_0002.HEIC", shot="search-live-tile.png")
    assert badge(tile, "live") == "LIVE"
    # the still is the server's JPEG of the HEIC, which Chromium cannot show itself
    page.wait_for_function(
        f"(() => {{ const i = document.querySelector('#viewer-img'); return !i.hidden && "
        f"i.src.endsWith({live['preview_url']!r}) && i.complete && i.naturalWidth === 160 }})()"
    )
    assert page.locator("#viewer-video").is_hidden()
    page.evaluate(
        """(() => {
        const v = document.querySelector('#viewer-video');
        const still = document.querySelector('#viewer-img');
        v.addEventListener('playing', () => {
          window.motion = { src: v.currentSrc, shown: !v.hidden, stillHidden: still.hidden };
        }, { once: true });
        })()"""
    )
    button = page.get_by_role("button", name="Play Live Photo")
    button.focus()
    page.keyboard.press("Enter")  # a button: the keyboard plays it too
    page.wait_for_function("window.motion !== undefined")
    motion = page.evaluate("window.motion")
    # an iPhone's motion is HEVC, which this Chromium cannot decode: what plays is the server's H.264
    assert motion["src"] == library + live["play_url"] and motion["shown"] and motion["stillHidden"]
    assert httpx.get(library + live["play_url"] + "/status").json()["converted"] is True
    # two seconds later the motion has played through and the still is back
    page.wait_for_function(
        "(() => { const v = document.querySelector('#viewer-video'); return v.ended && v.hidden && "
        "!document.querySelector('#viewer-img').hidden })()"
    )
    expect(page.locator("#viewer-live")).to_have_text("▶ Play Live Photo")

    # on a phone the still and its button fit the screen
    page.set_viewport_size(PHONE)
    for selector in ("#viewer-img", "#viewer-live", "#viewer-close"):
        box = page.locator(selector).bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"], (selector, box)
    page.locator("#viewer-live").click(trial=True)  # nothing covers it
    screenshot(page, "mobile-viewer-live.png")


def test_a_raw_original_and_the_pictures_own_words_are_in_the_larger_view(page: Any, library: str) -> None:
    jpeg_item = result(library, "a yellow triangle", "DCIM/IMG_0001.JPG")
    open_result(page, library, "a yellow triangle", "DCIM/IMG_0001.JPG")
    link = page.locator("#viewer-raw")
    expect(link).to_be_visible()
    assert link.get_attribute("href") == jpeg_item["original_url"]
    raw = httpx.get(library + link.get_attribute("href"))
    assert raw.content.startswith(b"raw sensor data") and "IMG_0001.CR2" in raw.headers["content-disposition"]
    assert page.get_attribute("#viewer-img", "src") == jpeg_item["url"]  # a JPEG shows as it is

    page.keyboard.press("Escape")
    open_result(page, library, "a green square", "DCIM/IMG_0003.JPG")
    expect(page.locator("#viewer-raw")).to_be_hidden()
    assert fact(page, "Title") == "Tram 28"
    assert fact(page, "Description") == "Up the hill to the castle"
    assert fact(page, "Keywords") == "holiday, lisbon"
    assert fact(page, "Rating") == "★★★★☆"
    assert page.locator("#viewer-facts [aria-label='4 of 5 stars']").count() == 1
    screenshot(page, "viewer-xmp.png")


def test_an_iphone_video_is_converted_and_plays_from_the_matched_second(page: Any, library: str) -> None:
    hevc = result(library, "a orange triangle", "DCIM/IMG_0004.MOV")
    second = hevc["second"]
    assert second >= 3  # the orange half
    page.goto(f"{library}/?q=a%20orange%20triangle")
    # Debian's Chromium decodes no HEVC: what plays below is the server's H.264
    assert page.evaluate(f"document.createElement('video').canPlayType({HEVC!r})") == ""
    page.evaluate(
        """(() => {
        const note = document.querySelector('#viewer-video-note');
        window.notes = [];
        new MutationObserver(() => { if (!note.hidden) window.notes.push(note.textContent); })
          .observe(note, { attributes: true, childList: true, subtree: true, characterData: true });
        })()"""
    )
    page.locator(".tile[data-path='DCIM/IMG_0004.MOV'] button").first.click()
    page.wait_for_function(
        "(() => { const v = document.querySelector('#viewer-video'); "
        "return !v.hidden && !v.error && !v.paused && v.played.length > 0 && v.currentTime > 0 })()"
    )
    # the view said so while it waited, then played the conversion from the matched second
    notes = page.evaluate("window.notes")
    assert notes and notes[0].startswith("Preparing this video for this browser"), notes
    expect(page.locator("#viewer-video-note")).to_be_hidden()
    expect(page.locator("#viewer-media-error")).to_be_hidden()
    played = page.evaluate(
        "(() => { const v = document.querySelector('#viewer-video'); "
        "return { src: v.currentSrc, start: v.played.start(0), now: v.currentTime, error: v.error } })()"
    )
    assert played["src"].split("#")[0] == library + hevc["play_url"] and played["error"] is None
    assert played["start"] == pytest.approx(second, abs=0.25) and played["now"] >= 3
    screenshot(page, "viewer-converted-video.png")
    status = httpx.get(library + hevc["play_url"] + "/status").json()
    assert status["converted"] is True and status["codec"] == "hevc"


def test_the_status_page_lists_each_folder_its_watch_and_what_it_skipped(page: Any, library: str) -> None:
    page.goto(library + "/status")
    page.wait_for_function("document.querySelector('#pictures').textContent === '21'")
    assert page.inner_text("#videos") == "2"
    assert page.inner_text("#live-photos") == "1"
    assert page.inner_text("#raw-originals") == "1"
    folder = page.locator("#folders li")
    expect(folder).to_have_count(1)
    text = folder.inner_text()
    assert "polled every SCAN_INTERVAL" in text and "watched live" not in text
    assert "skipped: 2 .pdf, 1 .mp3" in text
    assert "25 files" in text  # 18 shapes and 7 in DCIM, the RAW and the motion among them
    assert page.locator("#image-dir-line").is_hidden()
    screenshot(page, "status-folders.png")
