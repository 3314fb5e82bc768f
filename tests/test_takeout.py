"""A Google Photos Takeout, laid out as Takeout writes it: each picture's and video's metadata in a
JSON file beside it (`.jpg.json`, `.supplemental-metadata.json`, names cut at 46 characters, a
duplicate's `(1)` moved to the end), read as sidecars. Its date and position where the file has
none of its own, its description and people's names as searchable words; the JSON files never
indexed, failed or skipped; a changed JSON updates its picture, in one-shot updates and live.
With faces on, the one face of a picture whose JSON names one person is that person.

One folder is indexed once for the tests that only look (tiny model, real Postgres)."""

from __future__ import annotations

import asyncio
import json
import shutil
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from conftest import TINY_MODEL, _with_database, query, serve_and_wait, wait_for
from fastapi.testclient import TestClient
from shapes import Drawing, draw
from stills import Facts, write_jpeg
from videos import write_video

from api.app import create_app
from core.media.takeout import MediaNames
from core.settings import Settings, load_settings
from core.store.faces import FoundFace
from flows.engine import index_once
from flows.face_pass import named_by_takeout
from flows.indexer import image_id

ALBUM = "Takeout/Google Photos/Photos from 2019"
ALFAMA, TOKYO, PARIS = (38.7112, -9.1277), (35.6764, 139.6993), (48.8584, 2.2945)
CUT = 46  # Takeout cuts a JSON's name, `.json` aside, at this many characters
LONG_NAME = "Screenshot_20190921-101500_Some_Messaging_Application.png"  # cut inside its own name
SUPPLEMENTAL_CUT = "PXL_20190922_101500123.MP.jpg"  # `.supplemental-metadata` cut short


def json_name(media: str, *, supplemental: bool = True, counter: str = "") -> str:
    """The name Takeout gives a media file's JSON: `.supplemental-metadata` added (newer exports),
    cut at 46 characters, then the duplicate's counter and `.json`."""
    return f"{(media + '.supplemental-metadata' if supplemental else media)[:CUT]}{counter}.json"


def takeout_json(
    title: str,
    taken: datetime,
    where: tuple[float, float] | None = None,
    *,
    description: str = "",
    people: tuple[str, ...] = (),
) -> str:
    """A JSON sidecar as Google Photos writes it (`geoDataExif` repeats what the file said: nothing here)."""

    def geo(position: tuple[float, float] | None) -> dict[str, float]:
        lat, lon = position or (0.0, 0.0)
        return {"latitude": lat, "longitude": lon, "altitude": 0.0, "latitudeSpan": 0.0, "longitudeSpan": 0.0}

    seconds = int(taken.replace(tzinfo=UTC).timestamp())
    document: dict[str, Any] = {
        "title": title,
        "description": description,
        "imageViews": "12",
        "creationTime": {"timestamp": "1700000000", "formatted": "Nov 14, 2023, 10:13:20 PM UTC"},
        "photoTakenTime": {"timestamp": str(seconds), "formatted": taken.strftime("%b %d, %Y, %I:%M:%S %p UTC")},
        "geoData": geo(where),
        "geoDataExif": geo(None),
        "googlePhotosOrigin": {"mobileUpload": {"deviceType": "ANDROID_PHONE"}},
    }
    if people:
        document["people"] = [{"name": name} for name in people]
    return json.dumps(document, indent=2)


def picture(path: Path, drawing: Drawing, facts: Facts = Facts()) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_jpeg(path, draw(drawing, width=160, height=120), facts)


def write_takeout(album: Path) -> None:
    """Pictures and a video without dates or places of their own, each beside its JSON; a picture
    whose EXIF has both; and the album's own `metadata.json`, which describes no picture."""
    picture(album / "IMG_1001.jpg", Drawing("red", "circle"))
    (album / "IMG_1001.jpg.json").write_text(
        takeout_json("IMG_1001.jpg", datetime(2019, 7, 14, 18, 30), ALFAMA, description="Sunset with grandma")
    )
    picture(album / "IMG_1002.jpg", Drawing("blue", "square"))
    (album / json_name("IMG_1002.jpg")).write_text(
        takeout_json("IMG_1002.jpg", datetime(2019, 8, 2, 9, 0), PARIS, people=("Ada Lovelace", "Grace Hopper"))
    )
    for name, day, shape in ((LONG_NAME, 21, "triangle"), (SUPPLEMENTAL_CUT, 22, "circle")):
        picture(album / name, Drawing("green", shape))
        (album / json_name(name)).write_text(takeout_json(name, datetime(2019, 9, day, 10, 15), TOKYO))
    # the same name twice in the album: the second is `(1)`, and so is its JSON, after the extension
    picture(album / "IMG_1004.jpg", Drawing("yellow", "circle"))
    picture(album / "IMG_1004(1).jpg", Drawing("purple", "square"))
    (album / "IMG_1004.jpg.json").write_text(takeout_json("IMG_1004.jpg", datetime(2019, 10, 1, 8, 0)))
    (album / json_name("IMG_1004.jpg", supplemental=False, counter="(1)")).write_text(
        takeout_json("IMG_1004.jpg", datetime(2019, 10, 2, 8, 0), PARIS)
    )
    # the camera's own date and position win over what Google Photos says
    exif = Facts(taken_at=datetime(2018, 5, 5, 10, 0), latitude=TOKYO[0], longitude=TOKYO[1])
    picture(album / "IMG_1005.jpg", Drawing("red", "square"), exif)
    (album / "IMG_1005.jpg.json").write_text(
        takeout_json("IMG_1005.jpg", datetime(2019, 11, 11, 11, 11), PARIS, description="Shrine visit")
    )
    write_video(album / "VID_1006.mp4", [(Drawing("blue", "circle"), 2)])
    (album / json_name("VID_1006.mp4")).write_text(
        takeout_json("VID_1006.mp4", datetime(2019, 12, 24, 20, 0), ALFAMA, description="Carols at the cathedral")
    )
    (album / "metadata.json").write_text(json.dumps({"title": "Photos from 2019", "description": "", "access": ""}))


MEDIA = {"IMG_1001.jpg", "IMG_1002.jpg", LONG_NAME, SUPPLEMENTAL_CUT, "IMG_1004.jpg", "IMG_1004(1).jpg"}
MEDIA |= {"IMG_1005.jpg", "VID_1006.mp4"}
JSONS = 9  # one per media file, and the album's metadata.json


def fresh_settings(pg_server: str, top: Path, **extra: str) -> Settings:
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    folders = {"IMAGE_DIR": str(top / "img"), "DATA_DIR": str(top / "data")}
    return load_settings({**folders, "DATABASE_URL": _with_database(pg_server, name), **TINY_MODEL, **extra})


@pytest.fixture(scope="module")
def indexed(pg_server: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    top = tmp_path_factory.mktemp("takeout")
    write_takeout(top / "img" / ALBUM)
    settings = fresh_settings(pg_server, top)
    summary = asyncio.run(index_once(settings))
    assert summary.failed == 0
    return settings


@pytest.fixture(scope="module")
def takeout(indexed: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(indexed)) as client:
        yield client


def item(client: TestClient, name: str) -> dict[str, Any]:
    response = client.get(f"/api/images/{image_id(f'{ALBUM}/{name}')}")
    assert response.status_code == 200, response.text
    return dict(response.json())


def found_by(client: TestClient, q: str) -> set[str]:
    response = client.get("/api/search", params={"q": q, "limit": 50})
    assert response.status_code == 200, response.text
    return {r["path"].removeprefix(f"{ALBUM}/") for r in response.json()["results"]}


class TestReadAsSidecars:
    @pytest.mark.parametrize(
        ("name", "taken_at", "place"),
        [
            ("IMG_1001.jpg", "2019-07-14T18:30:00", "Alfama, Lisbon, Portugal"),  # `.jpg.json`
            ("IMG_1002.jpg", "2019-08-02T09:00:00", "Neuilly-sur-Seine, Paris, Île-de-France, France"),
            (LONG_NAME, "2019-09-21T10:15:00", "Yoyogi, Tokyo, Japan"),  # its JSON's name cut inside its own
            (SUPPLEMENTAL_CUT, "2019-09-22T10:15:00", "Yoyogi, Tokyo, Japan"),
            ("IMG_1004.jpg", "2019-10-01T08:00:00", None),  # 0.0/0.0: no position
            ("IMG_1004(1).jpg", "2019-10-02T08:00:00", "Neuilly-sur-Seine, Paris, Île-de-France, France"),
            ("IMG_1005.jpg", "2018-05-05T10:00:00", "Yoyogi, Tokyo, Japan"),  # the EXIF's, not the JSON's
            ("VID_1006.mp4", "2019-12-24T20:00:00", "Alfama, Lisbon, Portugal"),
        ],
    )
    def test_the_date_and_place_where_the_file_has_none(
        self, takeout: TestClient, name: str, taken_at: str, place: str | None
    ) -> None:
        shown = item(takeout, name)
        assert shown["taken_at"] == taken_at
        assert shown["date_source"] == ("created" if name.endswith(".mp4") else "exif")
        assert (shown["place"] or {}).get("label") == place
        if name == "IMG_1005.jpg":
            assert (shown["latitude"], shown["longitude"]) == pytest.approx(TOKYO, abs=1e-4)

    def test_the_description_and_the_peoples_names_are_searchable_words(self, takeout: TestClient) -> None:
        assert found_by(takeout, "text:grandma") == {"IMG_1001.jpg"}
        assert found_by(takeout, "text:carols") == {"VID_1006.mp4"}
        assert found_by(takeout, 'text:"Grace Hopper"') == found_by(takeout, "text:lovelace") == {"IMG_1002.jpg"}
        # the JSON's description is the row's, even over the camera's date: text fields are Google's to give
        assert found_by(takeout, "text:shrine") == {"IMG_1005.jpg"}
        shown = item(takeout, "IMG_1002.jpg")
        assert shown["keywords"] == ["Ada Lovelace", "Grace Hopper"] and shown["title"] is None
        assert item(takeout, "IMG_1001.jpg")["description"] == "Sunset with grandma"
        ranked = takeout.get("/api/search", params={"q": "Ada Lovelace", "limit": 3}).json()["results"]
        assert ranked[0]["path"] == f"{ALBUM}/IMG_1002.jpg" and "keywords" in ranked[0]["text_match"]["where"]

    def test_the_json_files_are_neither_indexed_nor_failed_nor_skipped(
        self, indexed: Settings, takeout: TestClient
    ) -> None:
        rows = {path.removeprefix(f"{ALBUM}/") for (path,) in query(indexed, "SELECT path FROM images")}
        assert rows == MEDIA and query(indexed, "SELECT path FROM index_errors") == []
        status = takeout.get("/api/status").json()
        [folder] = status["folders"]
        assert folder["skipped"] == {} and folder["sidecars"] == JSONS
        assert status["failed"] == [] and status["images"] == len(MEDIA)


def test_a_json_file_names_its_media_file_as_takeout_cuts_and_counts_names() -> None:
    media = MediaNames(["IMG_1.jpg", "IMG_1(1).jpg", "IMG_1-edited.jpg", LONG_NAME, "clip.mp4", "a" * 50 + ".mp4"])
    cases = {
        "IMG_1.jpg.json": "IMG_1.jpg",
        "img_1.JPG.supplemental-metadata.json": "IMG_1.jpg",  # case aside
        "IMG_1.jpg(1).json": "IMG_1(1).jpg",
        "IMG_1.jpg.supplemental-metadata(1).json": "IMG_1(1).jpg",
        "IMG_1(1).jpg.json": "IMG_1(1).jpg",
        json_name(LONG_NAME): LONG_NAME,
        json_name("clip.mp4"): "clip.mp4",
        "a" * 46 + ".json": "a" * 50 + ".mp4",
        "IMG_2.jpg.json": None,  # no such picture
        "metadata.json": None,
        "IMG_1.jpg(2).json": None,  # no IMG_1(2).jpg
        "clip.mp.json": None,  # a short name is never taken for a cut one
    }
    assert {name: media.described_by(name) for name in cases} == cases
    assert media.edited_of("IMG_1-edited.jpg") == "IMG_1.jpg" and media.edited_copies("IMG_1.jpg") == (
        "IMG_1-edited.jpg",
    )


def test_a_name_goes_to_a_face_only_where_nothing_else_could_be_meant() -> None:
    def face(named: str | None = None) -> FoundFace:
        source = "xmp" if named else "detected"
        return FoundFace((0.1, 0.1, 0.3, 0.3), 0.9, 80, 1.0, True, None, source=source, named=named)

    def names(found: list[FoundFace]) -> list[tuple[str | None, str]]:
        return [(f.named, f.source) for f in found]

    assert names(named_by_takeout([face()], ("Ada",))) == [("Ada", "takeout")]
    assert names(named_by_takeout([face()], ("Ada", "Grace"))) == [(None, "detected")]  # whose face?
    assert names(named_by_takeout([face(), face()], ("Ada",))) == [(None, "detected")] * 2  # which face?
    assert names(named_by_takeout([], ("Ada",))) == []
    # a region named in XMP settles one face and one name: the face and the name left go together
    both = named_by_takeout([face("Ada"), face()], ("ada", "Grace"))
    assert names(both) == [("Ada", "xmp"), ("Grace", "takeout")]
    assert names(named_by_takeout([face("Ada")], ("Ada",))) == [("Ada", "xmp")]


def test_a_changed_json_updates_its_picture_without_the_model(pg_server: str, tmp_path: Path) -> None:
    album = tmp_path / "img" / ALBUM
    write_takeout(album)
    settings = fresh_settings(pg_server, tmp_path)
    first = asyncio.run(index_once(settings))
    sidecar = album / json_name("IMG_1002.jpg")
    sidecar.write_text(takeout_json("IMG_1002.jpg", datetime(2020, 1, 2, 3, 4), TOKYO, people=("Alan Turing",)))
    second = asyncio.run(index_once(settings))
    [(keywords, taken_at, city)] = query(
        settings, "SELECT keywords, taken_at, place_city FROM images WHERE path = %s", (f"{ALBUM}/IMG_1002.jpg",)
    )
    assert keywords == ["Alan Turing"] and taken_at == datetime(2020, 1, 2, 3, 4) and city == "Tokyo"
    assert first.embedded == len(MEDIA) and second.embedded == 0
    # removed: the picture has nothing of Takeout's any more
    sidecar.unlink()
    asyncio.run(index_once(settings))
    assert query(settings, "SELECT keywords, taken_at FROM images WHERE path = %s", (f"{ALBUM}/IMG_1002.jpg",)) == [
        ([], None)
    ]


def test_the_live_indexer_follows_a_json_written_after_its_picture(
    pg_server: str, tmp_path: Path, start_process: Any
) -> None:
    album = tmp_path / "img" / "Takeout"
    picture(album / "IMG_2001.jpg", Drawing("red", "circle"))
    settings = fresh_settings(pg_server, tmp_path)
    serve_and_wait(start_process, settings, images=1)
    row = "SELECT description, taken_at FROM images WHERE path = 'Takeout/IMG_2001.jpg'"
    assert query(settings, row) == [(None, None)]
    (album / json_name("IMG_2001.jpg")).write_text(
        takeout_json("IMG_2001.jpg", datetime(2019, 6, 1, 12, 0), description="First swim of the year")
    )
    wait_for(lambda: query(settings, row) == [("First swim of the year", datetime(2019, 6, 1, 12, 0))], timeout=60)


def test_the_one_face_of_a_picture_takes_the_one_name_its_json_gives(pg_server: str, tmp_path: Path) -> None:
    from faces import SHARED_FACES, portrait, side_by_side

    album = tmp_path / "img" / "Takeout"
    album.mkdir(parents=True)
    shutil.copyfile(SHARED_FACES / "obama.jpg", album / "obama.jpg")
    (album / "obama.jpg.json").write_text(takeout_json("obama.jpg", datetime(2012, 1, 1), people=("Barack Obama",)))
    side_by_side(portrait("obama3.jpg"), portrait("biden.jpg")).save(album / "together.jpg", quality=90)
    (album / "together.jpg.json").write_text(
        takeout_json("together.jpg", datetime(2012, 1, 2), people=("Joe Biden", "Barack Obama"))
    )
    settings = fresh_settings(pg_server, tmp_path, FACES="on", OCR="off")
    summary = asyncio.run(index_once(settings))
    assert summary.faces_read == 2
    with TestClient(create_app(settings)) as client:
        people = client.get("/api/people").json()["people"]
        # Obama's face in the group photo joins him by looks; nobody tells which face is Biden's
        assert [p["name"] for p in people if p["name"]] == ["Barack Obama"]
        sources = query(settings, "SELECT f.source FROM faces f ORDER BY f.source")
        assert [s for (s,) in sources] == ["detected", "detected", "takeout"]
        assert found_by(client, "text:Biden") == {"Takeout/together.jpg"}
        group = client.get(f"/api/images/{image_id('Takeout/together.jpg')}").json()["people"]
        assert sorted(str(face["name"]) for face in group) == ["Barack Obama", "None"]
        obama = client.get("/api/search", params={"q": "Barack Obama"}).json()
        assert obama["understood"]["filters"]["people"][0]["name"] == "Barack Obama"
        assert {r["path"] for r in obama["results"]} == {"Takeout/obama.jpg", "Takeout/together.jpg"}
