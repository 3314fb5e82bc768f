"""People: faces found in real portraits, grouped into people without being asked, named, merged,
split and hidden through the API and the command line, searched by name; and every correction
outlasting a restart, a re-scan, a re-saved file, a new photo and a change of face model.

One folder of the shared portraits and their variants is indexed once (FACES=on, the real dlib
models, a real Postgres); each test that changes something works on a copy of that library (its
database cloned from the indexed one, its folder and data copied), so tests never depend on each
other's corrections."""

from __future__ import annotations

import asyncio
import io
import json
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from conftest import TINY_MODEL, _with_database, query, run_main
from faces import portrait, write_faces
from fastapi.testclient import TestClient
from PIL import Image, ImageOps
from psycopg.conninfo import conninfo_to_dict
from stills import write_sidecar, xmp_packet

from api.app import create_app
from core.settings import Settings, load_settings
from core.store.text_index import words_of
from flows.engine import index_once

FACES_ON = {**TINY_MODEL, "FACES": "on", "OCR": "off"}


@dataclass
class Library:
    settings: Settings
    who: dict[str, str]  # file name → obama, biden, both or nobody

    def api(self) -> TestClient:
        return TestClient(create_app(self.settings))

    def index(self) -> Any:
        return asyncio.run(index_once(self.settings))

    def person_of(self, client: TestClient, name: str) -> int:
        """The id of the person whose pictures are the `name` ones of the folder (obama or biden)."""
        for person in client.get("/api/people").json()["people"]:
            paths = {item["path"] for item in client.get(f"/api/people/{person['id']}").json()["items"]}
            if paths and all(self.who[p] in (name, "both") for p in paths) and any(self.who[p] == name for p in paths):
                return int(person["id"])
        raise AssertionError(f"no person holds the {name} pictures: {client.get('/api/people').json()}")


def _settings(top: Path, url: str) -> Settings:
    return load_settings(
        {"IMAGE_DIR": str(top / "img"), "DATA_DIR": str(top / "data"), "DATABASE_URL": url, **FACES_ON}
    )


@pytest.fixture(scope="module")
def indexed(pg_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Library]:
    top = tmp_path_factory.mktemp("people")
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    who = write_faces(top / "img")
    library = Library(_settings(top, _with_database(pg_server, name)), who)
    summary = library.index()
    assert summary.faces_read == len(who)
    with psycopg.connect(pg_server, autocommit=True) as conn:  # the copies' template, which nobody uses
        _drop_sessions(conn, name)
        conn.execute(f'CREATE DATABASE "{name}_template" TEMPLATE "{name}"')
    yield library
    with psycopg.connect(pg_server, autocommit=True) as conn:
        for database in (name, f"{name}_template"):
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def _drop_sessions(conn: psycopg.Connection[Any], database: str) -> None:
    conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (database,))


@pytest.fixture
def library(indexed: Library, pg_server: str, tmp_path: Path) -> Iterator[Library]:
    """A copy of the indexed library of this test's own: its database cloned, its files copied."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    source = f"{conninfo_to_dict(indexed.settings.database_url)['dbname']}_template"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{source}"')
    shutil.copytree(indexed.settings.image_dir, tmp_path / "img")
    shutil.copytree(indexed.settings.data_dir, tmp_path / "data")
    yield Library(_settings(tmp_path, _with_database(pg_server, name)), dict(indexed.who))
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def looking(indexed: Library) -> Iterator[TestClient]:
    """The API over the indexed library, for tests that only look."""
    with indexed.api() as client:
        yield client


def pictures_of(client: TestClient, person_id: int) -> set[str]:
    return {item["path"] for item in client.get(f"/api/people/{person_id}").json()["items"]}


def search_paths(client: TestClient, q: str, **params: Any) -> list[str]:
    response = client.get("/api/search", params={"q": q, "limit": 50, **params})
    assert response.status_code == 200, response.text
    return [r["path"] for r in response.json()["results"]]


class TestGrouping:
    def test_the_portraits_and_their_variants_group_into_the_two_people(
        self, indexed: Library, looking: TestClient
    ) -> None:
        people = looking.get("/api/people").json()["people"]
        assert len(people) == 2
        obama, biden = indexed.person_of(looking, "obama"), indexed.person_of(looking, "biden")
        expected = {p for p, w in indexed.who.items() if w in ("obama", "both")}
        assert pictures_of(looking, obama) == expected
        assert pictures_of(looking, biden) == {p for p, w in indexed.who.items() if w in ("biden", "both")}
        assert [p["id"] for p in people] == [obama, biden]  # most pictures first
        assert all(p["name"] is None and not p["hidden"] for p in people)
        cover = looking.get(people[0]["cover_url"])
        assert cover.status_code == 200 and cover.headers["content-type"] == "image/jpeg"
        assert Image.open(io.BytesIO(cover.content)).size == (160, 160)

    def test_two_faces_in_one_picture_are_two_people_with_boxes_where_they_are(
        self, indexed: Library, looking: TestClient
    ) -> None:
        (together,) = [r for r in looking.get("/api/search", params={"q": "together"}).json()["results"]
                       if r["path"] == "together.jpg"]  # fmt: skip
        faces = sorted(together["people"], key=lambda f: f["box"][0])
        assert len(faces) == 2 and faces[0]["person_id"] != faces[1]["person_id"]
        assert faces[0]["person_id"] == indexed.person_of(looking, "obama")
        assert faces[0]["box"][2] < 0.5 < faces[1]["box"][0]  # Obama on the left half, Biden on the right
        assert looking.get(f"/api/images/{together['id']}").json()["people"] == together["people"]

    def test_a_picture_without_a_face_has_no_people(self, looking: TestClient) -> None:
        results = looking.get("/api/search", params={"q": "no face", "limit": 50}).json()["results"]
        assert [r["people"] for r in results if r["path"] == "no-face.jpg"] == [[]]

    def test_the_status_counts_the_faces_pass_by_content(self, indexed: Library, looking: TestClient) -> None:
        faces = looking.get("/api/status").json()["faces"]
        assert faces == {"mode": "on", "read": len(indexed.who), "waiting": 0, "failed": 0}
        text = run_main(indexed.settings, "status", FACES="on").stdout
        assert f"faces      {len(indexed.who)} read, 0 waiting, 0 failed (FACES=on)" in text


@pytest.fixture(scope="class")
def named(indexed: Library, looking: TestClient) -> Iterator[dict[str, int]]:
    """The two people named on the shared library, for one class's tests; the names go afterwards."""
    ids = {"Barack Obama": indexed.person_of(looking, "obama"), "Joe Biden": indexed.person_of(looking, "biden")}
    for name, person_id in ids.items():
        assert looking.patch(f"/api/people/{person_id}", json={"name": name}).status_code == 200
    yield ids
    with psycopg.connect(indexed.settings.database_url, autocommit=True) as conn:
        conn.execute("UPDATE people SET name = NULL")
        conn.execute("DELETE FROM face_corrections")


class TestSearchByWho:
    def test_a_name_in_the_query_is_a_filter_shown_as_a_person(self, indexed: Library, named: dict[str, int],
                                                               looking: TestClient) -> None:  # fmt: skip
        answer = looking.get("/api/search", params={"q": "Joe Biden", "limit": 50}).json()
        assert {r["path"] for r in answer["results"]} == {"biden.jpg", "biden-darker.jpg", "together.jpg"}
        (chip,) = answer["understood"]["filters"]["people"]
        assert chip == {"person_id": named["Joe Biden"], "name": "Joe Biden", "exclude": False, "words": "Joe Biden",
                        "start": 0, "end": 9}  # fmt: skip
        assert all(any(f["name"] == "Joe Biden" for f in r["people"]) for r in answer["results"])

    def test_two_names_ask_for_both_in_the_picture(self, named: dict[str, int], looking: TestClient) -> None:
        assert search_paths(looking, "Barack Obama and Joe Biden") == ["together.jpg"]
        assert search_paths(looking, 'person:"barack obama" person:"JOE BIDEN"') == ["together.jpg"]

    def test_minus_person_leaves_them_out(self, indexed: Library, named: dict[str, int], looking: TestClient) -> None:
        only_biden = {p for p, w in indexed.who.items() if w == "biden"}
        assert set(search_paths(looking, 'Joe Biden -person:"Barack Obama"')) == only_biden

    def test_the_person_parameter_filters_by_id(self, indexed: Library, named: dict[str, int],
                                                looking: TestClient) -> None:  # fmt: skip
        found = search_paths(looking, "", person=named["Barack Obama"])
        assert set(found) == {p for p, w in indexed.who.items() if w in ("obama", "both")}

    def test_ordinary_words_are_never_names(self, named: dict[str, int], looking: TestClient) -> None:
        answer = looking.get("/api/search", params={"q": "a portrait of a man"}).json()
        assert "people" not in answer["understood"]["filters"]

    def test_an_unknown_person_is_a_clear_error(self, named: dict[str, int], looking: TestClient) -> None:
        response = looking.get("/api/search", params={"q": 'beach person:"Ada Lovelace"'})
        assert response.status_code == 422
        assert "no person is named 'Ada Lovelace'" in response.json()["detail"]


def test_minus_person_also_steers_away_from_the_pictures_whose_words_name_them(library: Library) -> None:
    """`-person:` leaves out the pictures with their face and, as every negative term does, puts
    the pictures whose own words name them after every other, never strong: a keyword (a Takeout
    JSON's people alike), or a caption such as obama3.jpg's ("... and vice president Joe Biden
    stand with ..."), where the detector found only Obama's face."""
    folder = library.settings.image_dir
    shutil.copyfile(folder / "no-face.jpg", folder / "gradient.jpg")  # the same looks, no words
    write_sidecar(folder / "no-face.jpg.xmp", xmp_packet(keywords=("Joe Biden",)))
    library.index()
    with library.api() as client:
        assert client.patch(f"/api/people/{library.person_of(client, 'biden')}", json={"name": "Joe Biden"}).is_success
        (example,) = [r["id"] for r in client.get("/api/search", params={"q": "gradient"}).json()["results"]
                      if r["path"] == "gradient.jpg"]  # fmt: skip
        assert search_paths(client, f"img:{example}")[0] == "no-face.jpg"  # its twin, first by looks
        steered = client.get("/api/search", params={"q": f'img:{example} -person:"Joe Biden"', "limit": 50}).json()
    results = steered["results"]
    named = [{"joe", "biden"} <= set(words_of(r["path"], *r["keywords"], r["description"])) for r in results]
    assert named == sorted(named) and {r["path"] for r, n in zip(results, named) if n} == {"no-face.jpg", "obama3.jpg"}
    assert all(r["match"] != "strong" for r, n in zip(results, named) if n)
    assert not {p for p, w in library.who.items() if w in ("biden", "both")} & {r["path"] for r in results}


class TestCorrections:
    def test_a_name_survives_a_restart_a_rescan_and_re_detection(self, library: Library) -> None:
        with library.api() as client:
            obama = library.person_of(client, "obama")
            answer = client.patch(f"/api/people/{obama}", json={"name": "  Barack   Obama "})
            assert answer.status_code == 200 and answer.json()["name"] == "Barack Obama"
        for path in library.settings.image_dir.iterdir():
            path.touch()  # every file looks changed: the indexer reads them all again
        library.index()
        # another face model: every picture waits again, and its faces are found anew (new ids)
        with psycopg.connect(library.settings.database_url, autocommit=True) as conn:
            before = {f for (f,) in conn.execute("SELECT id FROM faces")}
            conn.execute("UPDATE face_scans SET model = 'an-older-face-model'")
        assert library.index().faces_read == len(library.who)
        assert not before & {f for (f,) in query(library.settings, "SELECT id FROM faces")}
        with library.api() as client:  # a new app: a restart
            people = {p["name"]: p for p in client.get("/api/people").json()["people"]}
            assert people["Barack Obama"]["pictures"] == sum(w in ("obama", "both") for w in library.who.values())

    def test_a_re_saved_file_and_a_new_photo_join_the_named_person(self, library: Library) -> None:
        with library.api() as client:
            obama = library.person_of(client, "obama")
            client.patch(f"/api/people/{obama}", json={"name": "Barack Obama"})
        # the same picture saved again with other bytes, and a new photo (obama3 mirrored and smaller)
        portrait("obama2.jpg").save(library.settings.image_dir / "obama2.jpg", quality=70)
        new = ImageOps.mirror(portrait("obama3.jpg"))
        new.resize((new.width * 3 // 4, new.height * 3 // 4)).save(library.settings.image_dir / "new.jpg")
        summary = library.index()
        assert (summary.added, summary.updated) == (1, 1)
        with library.api() as client:
            assert {"obama2.jpg", "new.jpg"} <= pictures_of(client, obama)
            assert client.get(f"/api/people/{obama}").json()["name"] == "Barack Obama"

    def test_a_face_moved_out_stays_out_after_its_file_is_re_saved(self, library: Library) -> None:
        with library.api() as client:
            obama = library.person_of(client, "obama")
            (face,) = [f for f in client.get("/api/search", params={"q": "mirrored", "limit": 50}).json()["results"]
                       if f["path"] == "obama-mirrored.jpg"][0]["people"]  # fmt: skip
            moved = client.patch(f"/api/faces/{face['face_id']}", json={"person_id": None}).json()
            assert moved["person_id"] not in (None, obama)
            assert "obama-mirrored.jpg" not in pictures_of(client, obama)
        resaved = library.settings.image_dir / "obama-mirrored.jpg"
        with Image.open(resaved) as picture:
            picture.load()
            picture.save(resaved, quality=60)
        library.index()
        with library.api() as client:
            assert "obama-mirrored.jpg" not in pictures_of(client, obama)
            assert pictures_of(client, moved["person_id"]) == {"obama-mirrored.jpg"}

    def test_merge_then_split_then_hide_then_not_a_face(self, library: Library) -> None:
        with library.api() as client:
            obama, biden = library.person_of(client, "obama"), library.person_of(client, "biden")
            merged = client.post(f"/api/people/{biden}/merge", json={"into": obama})
            assert merged.status_code == 200 and merged.json()["id"] == obama
            assert client.get(f"/api/people/{biden}").status_code == 404
            assert len(client.get("/api/people").json()["people"]) == 1
            (biden_face,) = [i for i in client.get(f"/api/people/{obama}").json()["items"] if i["path"] == "biden.jpg"]
            face_id = self._face_at(client, biden_face)
            split = client.patch(f"/api/faces/{face_id}", json={"person_id": None}).json()
            assert pictures_of(client, split["person_id"]) == {"biden.jpg"}
            client.patch(f"/api/people/{split['person_id']}", json={"hidden": True})
            assert split["person_id"] not in [p["id"] for p in client.get("/api/people").json()["people"]]
            hidden = client.get("/api/people", params={"hidden": "true"}).json()["people"]
            assert [p["hidden"] for p in hidden if p["id"] == split["person_id"]] == [True]
            gone = client.patch(f"/api/faces/{face_id}", json={"not_a_face": True}).json()
            assert gone == {**gone, "not_a_face": True, "person_id": None}
            result = [r for r in client.get("/api/search", params={"q": "biden", "limit": 50}).json()["results"]
                      if r["path"] == "biden.jpg"][0]  # fmt: skip
            assert result["people"] == []
        library.index()  # nothing the user said is undone by a re-scan
        with library.api() as client:
            assert client.get(f"/api/people/{biden}").status_code == 404
            assert "biden.jpg" not in pictures_of(client, obama)

    def test_merging_two_named_people_keeps_the_name_of_the_one_who_remains(self, library: Library) -> None:
        with library.api() as client:
            obama, biden = library.person_of(client, "obama"), library.person_of(client, "biden")
            client.patch(f"/api/people/{obama}", json={"name": "Barack Obama"})
            client.patch(f"/api/people/{biden}", json={"name": "Barack O."})  # named twice by mistake
            kept = client.post(f"/api/people/{biden}/merge", json={"into": obama}).json()
            assert (kept["id"], kept["name"]) == (obama, "Barack Obama")
            assert search_paths(client, "Barack Obama") and client.get(f"/api/people/{biden}").status_code == 404
            renamed = client.patch(f"/api/people/{obama}", json={"name": "Barack O."})
            assert renamed.status_code == 200  # the merged-away name is free again

    @staticmethod
    def _face_at(client: TestClient, item: dict[str, Any]) -> int:
        result = client.get(f"/api/images/{item['image_id']}").json()
        return int(next(f["face_id"] for f in result["people"] if f["box"] == item["box"]))

    def test_bad_input_gets_one_line(self, library: Library) -> None:
        with library.api() as client:
            obama, biden = library.person_of(client, "obama"), library.person_of(client, "biden")
            client.patch(f"/api/people/{obama}", json={"name": "Barack Obama"})
            cases = [
                (client.patch("/api/people/999999", json={"name": "Ada"}), 404, "No person has id 999999"),
                (client.patch(f"/api/people/{biden}", json={"name": "   "}), 422, "name must not be empty"),
                (client.patch(f"/api/people/{biden}", json={"name": "x" * 101}), 422, "at most 100 characters"),
                (client.patch(f"/api/people/{biden}", json={}), 422, "nothing to change"),
                # Postgres text cannot hold NUL: it was a 500 from the UPDATE
                (client.patch(f"/api/people/{biden}", json={"name": "Jo\x00e"}), 422, "must not contain NUL"),
                (
                    client.patch(f"/api/people/{biden}", json={"hidden": 1}),
                    422,
                    "hidden: Input should be a valid boolean",
                ),
                (client.post(f"/api/people/{obama}/merge", json={"into": 2**63}), 422, "into: Input should be less"),
                (client.patch(f"/api/faces/{2**63}", json={"person_id": None}), 422, "face_id: Input should be less"),
                (
                    client.post(f"/api/people/{obama}/merge", json={"into": obama}),
                    422,
                    "cannot be merged into themselves",
                ),
                (client.post(f"/api/people/{obama}/merge", json={"into": 999999}), 404, "No person has id 999999"),
                (client.patch("/api/faces/999999", json={"person_id": None}), 404, "No face has id 999999"),
                (client.patch(f"/api/people/{biden}", json={"name": "barack obama"}), 409, f"merge {biden} {obama}"),
            ]
            for response, status, words in cases:
                assert response.status_code == status, response.text
                assert words in response.json()["detail"] and "\n" not in response.json()["detail"]

    def test_the_command_line_lists_names_and_merges(self, library: Library) -> None:
        with library.api() as client:
            obama, biden = library.person_of(client, "obama"), library.person_of(client, "biden")
        named = run_main(library.settings, "people", "name", str(obama), "Barack", "Obama", FACES="on")
        assert named.returncode == 0, named.stderr
        listed = run_main(library.settings, "people", FACES="on").stdout.splitlines()
        assert listed[0].split("\t")[:2] == [str(obama), "Barack Obama"]
        refused = run_main(library.settings, "people", "merge", str(obama), str(obama), FACES="on")
        assert refused.returncode == 2 and refused.stderr.startswith("error: a person cannot be merged")
        merged = run_main(library.settings, "people", "merge", str(biden), str(obama), "--json", FACES="on")
        assert merged.returncode == 0, merged.stderr
        assert json.loads(merged.stdout)["name"] == "Barack Obama"
        assert len(run_main(library.settings, "people", FACES="on").stdout.splitlines()) == 1


def named_region_packet(name: str, box: tuple[float, float, float, float]) -> bytes:
    """XMP as digiKam and Lightroom write a named face region (MWG: the centre, width and height)."""
    x0, y0, x1, y1 = box
    area = f'stArea:x="{(x0 + x1) / 2}" stArea:y="{(y0 + y1) / 2}" stArea:w="{x1 - x0}" stArea:h="{y1 - y0}"'
    return (
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" xmlns:mwg-rs="http://www.metadataworkinggroup.com/schemas/regions/" '
        'xmlns:stArea="http://ns.adobe.com/xmp/sType/Area#"><mwg-rs:Regions rdf:parseType="Resource">'
        f'<mwg-rs:RegionList><rdf:Bag><rdf:li><rdf:Description mwg-rs:Type="Face" mwg-rs:Name="{name}">'
        f'<mwg-rs:Area {area} stArea:unit="normalized"/></rdf:Description></rdf:li></rdf:Bag></mwg-rs:RegionList>'
        "</mwg-rs:Regions></rdf:Description></rdf:RDF></x:xmpmeta>"
    ).encode()


class TestFacesDrawnInOtherApps:
    def test_a_named_region_names_the_face_it_covers_and_seeds_that_person(self, library: Library) -> None:
        with library.api() as client:
            biden = library.person_of(client, "biden")
            (face,) = [f for f in client.get("/api/search", params={"q": "biden", "limit": 50}).json()["results"]
                       if f["path"] == "biden.jpg"][0]["people"]  # fmt: skip
        # a new photo of him, with the region another app drew around his face, a little larger
        x0, y0, x1, y1 = face["box"]
        grown = (x0 - 0.02, y0 - 0.03, x1 + 0.02, y1 + 0.02)
        portrait("biden.jpg").save(
            library.settings.image_dir / "tagged.jpg", xmp=named_region_packet("Joe Biden", grown)
        )
        library.index()
        with library.api() as client:
            people = {p["name"]: p["id"] for p in client.get("/api/people").json()["people"]}
            assert "Joe Biden" in people and people["Joe Biden"] != biden  # seeded, never merged by itself
            assert pictures_of(client, people["Joe Biden"]) == {"tagged.jpg"}
            assert search_paths(client, "Joe Biden") == ["tagged.jpg"]

    def test_a_named_region_where_no_face_is_found_becomes_a_face_of_its_own(self, library: Library) -> None:
        box = (0.3, 0.3, 0.6, 0.7)
        gradient = Image.open(library.settings.image_dir / "no-face.jpg")
        gradient.save(library.settings.image_dir / "drawn.jpg", xmp=named_region_packet("Ada Lovelace", box))
        library.index()
        with library.api() as client:
            (ada,) = [p for p in client.get("/api/people").json()["people"] if p["name"] == "Ada Lovelace"]
            item = client.get(f"/api/people/{ada['id']}").json()["items"]
            assert [(i["path"], i["box"]) for i in item] == [("drawn.jpg", list(box))]
            assert search_paths(client, 'person:"ada lovelace"') == ["drawn.jpg"]


class TestVideos:
    def test_faces_are_found_in_a_videos_sampled_frames_and_join_their_person(self, library: Library) -> None:
        from videos import write_video

        empty = Image.linear_gradient("L").resize((480, 360)).convert("RGB")
        face = ImageOps.pad(portrait("obama3.jpg"), (480, 360), color=(90, 90, 90))
        write_video(library.settings.image_dir / "clip.mp4", [(empty, 2), (face, 3)], size=(480, 360))
        library.who["clip.mp4"] = "obama"
        summary = library.index()
        assert summary.faces_read == 1  # the video alone: every picture was looked at before
        with library.api() as client:
            obama = library.person_of(client, "obama")
            assert "clip.mp4" in pictures_of(client, obama)
            (video,) = [r for r in client.get("/api/search", params={"q": "", "person": obama, "limit": 50})
                        .json()["results"] if r["path"] == "clip.mp4"]  # fmt: skip
            assert video["kind"] == "video" and [f["person_id"] for f in video["people"]] == [obama]
        seconds = query(library.settings, "SELECT DISTINCT frame FROM faces f JOIN face_scans s USING (content_hash)"
                        " WHERE f.frame >= 0")  # fmt: skip
        assert seconds and all(2.0 <= s <= 5.0 for (s,) in seconds)  # only the frames that show him


class TestWithoutTheFaceModels:
    def test_an_update_says_so_in_one_line_and_indexes_the_rest(self, library: Library, tmp_path: Path) -> None:
        blocked = tmp_path / "no-dlib"  # a Python where dlib is not installed
        blocked.mkdir()
        (blocked / "sitecustomize.py").write_text(
            "import sys\n"
            "class _NoDlib:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name == 'dlib':\n"
            "            raise ImportError('No module named dlib')\n"
            "sys.meta_path.insert(0, _NoDlib())\n"
        )
        portrait("obama3.jpg").save(library.settings.image_dir / "new.jpg", quality=80)
        run = run_main(library.settings, "index", FACES="on", OCR="off", PYTHONPATH=str(blocked))
        assert run.returncode == 0, run.stderr
        assert "added 1" in run.stdout
        lines = [line for line in run.stderr.splitlines() if "faces" in line.lower()]
        assert lines == ["WARNING sightline.indexer: Finding faces is not possible: dlib is not installed: "
                         "pip install dlib-bin"]  # fmt: skip
        with library.api() as client:
            assert client.get("/api/status").json()["faces"]["waiting"] == 1  # kept for when it is installed
            assert "new.jpg" in search_paths(client, "new")
