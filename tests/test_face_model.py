"""The face model (core.models.faces) with the real dlib models on real portraits, and the rule that
puts a picture's faces into people (`assign_faces`).

The portraits are the shared ones (../shared/data/faces: obama*.jpg are Barack Obama, biden.jpg Joe
Biden); variants (mirrored, pasted side by side, blurred, shrunk) are made here at run time."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter, ImageOps

from core.errors import Unavailable
from core.models import faces as F
from core.models.faces import MATCH_DISTANCE, Face, FaceModel, assign_faces, face_distance, open_face_model

ROOT = Path(__file__).resolve().parents[1]
FACES = ROOT.parent / "shared" / "data" / "faces"
PORTRAITS = ("obama.jpg", "obama2.jpg", "obama3.jpg", "obama_partial_face.jpg", "obama_partial_face2.jpg", "biden.jpg")


@cache
def portrait(name: str) -> Image.Image:
    return Image.open(FACES / name).convert("RGB")


@pytest.fixture(scope="module")
def model() -> FaceModel:
    return open_face_model()


@pytest.fixture(scope="module")
def found(model: FaceModel) -> Callable[[str], list[Face]]:
    """The faces of a portrait, found once per module."""
    return cache(lambda name: model.find(portrait(name)))


def side_by_side(a: Image.Image, b: Image.Image, height: int = 800) -> Image.Image:
    a = a.resize((round(a.width * height / a.height), height), Image.Resampling.LANCZOS)
    b = b.resize((round(b.width * height / b.height), height), Image.Resampling.LANCZOS)
    out = Image.new("RGB", (a.width + b.width, height), (128, 128, 128))
    out.paste(a, (0, 0))
    out.paste(b, (a.width, 0))
    return out


def test_importing_the_module_loads_nothing() -> None:
    code = "import sys, core.models.faces; assert not {'dlib', 'face_recognition_models'} & set(sys.modules)"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_missing_models_say_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "face_recognition_models", None)  # importing it fails
    monkeypatch.setattr(F.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(Unavailable, match="pip install face_recognition_models"):
        F._model_path("descriptor")


@pytest.mark.parametrize("name", PORTRAITS)
def test_one_face_in_each_portrait(found: Callable[[str], list[Face]], name: str) -> None:
    (face,) = found(name)
    x0, y0, x1, y1 = face.box
    assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1
    assert len(face.landmarks) == 5
    assert all(x0 - 0.05 <= x <= x1 + 0.05 and y0 - 0.05 <= y <= y1 + 0.05 for x, y in face.landmarks)
    assert face.descriptor.shape == (128,) and face.descriptor.dtype == np.float32
    assert face.pixels > 150 and face.score > 0 and face.usable


def test_one_person_is_nearer_than_the_threshold_and_two_people_are_not(found: Callable[[str], list[Face]]) -> None:
    obamas = [found(name)[0].descriptor for name in PORTRAITS if name.startswith("obama")]
    biden = found("biden.jpg")[0].descriptor
    # each Obama photo is within the threshold of another one (the nearest face of a person is what a
    # new face is compared with); two different photos can be further apart (0.45 here, obama2 to obama3)
    for i, a in enumerate(obamas):
        assert min(face_distance(a, b) for j, b in enumerate(obamas) if j != i) < MATCH_DISTANCE
    assert max(face_distance(a, b) for a in obamas for b in obamas) < 0.5
    assert min(face_distance(a, biden) for a in obamas) > MATCH_DISTANCE + 0.2
    assert face_distance(biden, biden) == 0.0


def test_the_portraits_group_into_two_people(found: Callable[[str], list[Face]]) -> None:
    """assign_faces picture by picture, a person's distance being that of its nearest face."""
    people: dict[int, list[np.ndarray]] = {}
    got: dict[str, int | None] = {}
    for name in PORTRAITS:
        (face,) = found(name)
        near = sorted((min(face_distance(face.descriptor, d) for d in ds), p) for p, ds in people.items())
        (result,) = assign_faces([face.descriptor], [face.usable], [[(p, dist, False) for dist, p in near]])
        person = len(people) if result == "new" else result
        assert isinstance(person, int)
        people.setdefault(person, []).append(face.descriptor)
        got[name] = person
    assert len(people) == 2
    assert len({got[name] for name in PORTRAITS if name.startswith("obama")}) == 1
    assert got["biden.jpg"] != got["obama.jpg"]


def test_two_portraits_side_by_side_give_two_faces_each_in_its_half(
    model: FaceModel, found: Callable[[str], list[Face]]
) -> None:
    picture = side_by_side(portrait("obama.jpg"), portrait("biden.jpg"))
    half = portrait("obama.jpg").width * 800 / portrait("obama.jpg").height / picture.width
    faces = sorted(model.find(picture), key=lambda f: f.box[0])
    assert len(faces) == 2
    left, right = faces
    assert left.box[2] <= half + 0.01 and right.box[0] >= half - 0.01
    assert face_distance(left.descriptor, found("obama.jpg")[0].descriptor) < MATCH_DISTANCE
    assert face_distance(right.descriptor, found("biden.jpg")[0].descriptor) < MATCH_DISTANCE


def test_no_face_in_a_picture_without_one(model: FaceModel) -> None:
    ramp = np.linspace(0, 255, 640, dtype=np.float32)
    gradient = np.stack([np.tile(ramp, (480, 1)), np.tile(ramp[::-1], (480, 1)), np.full((480, 640), 90.0)], -1)
    assert model.find(Image.fromarray(gradient.astype(np.uint8))) == []
    assert model.find(Image.new("L", (300, 200), 200)) == []  # not RGB: converted


def test_a_mirrored_picture_has_its_face_box_mirrored(model: FaceModel, found: Callable[[str], list[Face]]) -> None:
    (face,) = found("obama.jpg")
    (mirrored,) = model.find(ImageOps.mirror(portrait("obama.jpg")))
    x0, y0, x1, y1 = face.box
    assert np.allclose(mirrored.box, (1 - x1, y0, 1 - x0, y1), atol=0.03)
    assert face_distance(face.descriptor, mirrored.descriptor) < MATCH_DISTANCE


def test_two_faces_of_one_picture_never_join_one_person() -> None:
    d = [np.zeros(128, np.float32)] * 3
    # both nearest to person 7: the nearer keeps it, the other takes its next candidate under the threshold
    assert assign_faces(d[:2], [True, True], [[(7, 0.3, False), (8, 0.4, True)], [(7, 0.2, False)]]) == [8, 7]
    # ... or, with none left, starts a person
    assert assign_faces(d[:2], [True, True], [[(7, 0.3, False)], [(7, 0.2, True)]]) == ["new", 7]
    # three faces, two candidates each, all wanting person 1 first
    three = [[(1, 0.1, False), (2, 0.2, False)], [(1, 0.15, False), (2, 0.3, False)], [(1, 0.2, True)]]
    got = assign_faces(d, [True, True, True], three)
    assert got == [1, 2, "new"]
    people = [g for g in got if isinstance(g, int)]
    assert len(people) == len(set(people))
    # a candidate at or beyond the threshold is no match
    assert assign_faces(d[:1], [True], [[(3, MATCH_DISTANCE, True)]]) == ["new"]
    with pytest.raises(ValueError):
        assign_faces(d[:2], [True], [[], []])


def test_unusable_faces_join_people_but_never_start_one(model: FaceModel, found: Callable[[str], list[Face]]) -> None:
    d = [np.zeros(128, np.float32)] * 2
    assert assign_faces(d, [False, False], [[(4, 0.3, False)], []]) == [4, None]
    (face,) = found("obama2.jpg")
    tiny = portrait("obama2.jpg").resize((60, 115), Image.Resampling.LANCZOS)
    small = model.describe(tiny, face.box)
    assert small is not None and small.pixels < F.MIN_FACE_PIXELS and not small.usable
    blurred = portrait("obama2.jpg").filter(ImageFilter.GaussianBlur(0.03 * face.pixels))
    soft = model.describe(blurred, face.box)
    assert soft is not None and soft.pixels >= F.MIN_FACE_PIXELS and soft.sharpness < F.MIN_SHARPNESS
    assert not soft.usable and face.usable
    assert assign_faces([small.descriptor, soft.descriptor], [small.usable, soft.usable], [[], []]) == [None, None]
    unsure = Face(face.box, F.MIN_SCORE / 2, face.descriptor, face.landmarks, face.pixels, face.sharpness)
    assert not unsure.usable  # a low detection score: likely no face at all


def test_describe_on_a_given_box_matches_the_detected_face(
    model: FaceModel, found: Callable[[str], list[Face]]
) -> None:
    for name in ("obama3.jpg", "biden.jpg"):
        (face,) = found(name)
        x0, y0, x1, y1 = face.box
        w, h = x1 - x0, y1 - y0
        loose = (x0 - 0.15 * w, y0 - 0.25 * h, x1 + 0.15 * w, y1 + 0.1 * h)  # a head box, as apps draw them
        given = model.describe(portrait(name), loose)
        assert given is not None
        assert given.box == pytest.approx(loose)
        assert face_distance(given.descriptor, face.descriptor) < 0.15
        assert given.score > 0  # HOG confirmed a face there
    assert model.describe(portrait("obama.jpg"), (0.5, 0.5, 0.5, 0.6)) is None
