"""Faces in pictures: dlib's detectors, its five-point landmarks and its ResNet face descriptor.

A picture goes in upright (EXIF orientation applied by the caller), as a PIL image; faces come out
with boxes and landmarks as fractions of that picture's width and height, a 128-number descriptor,
a size in pixels, a blur measure and the detector's score. Descriptors of one person lie close
together (euclidean distance, `face_distance`); `assign_faces` is the rule that puts the new faces
of one picture into people.

How a picture is read (the figures behind each choice: `python -m bench.faces_model`, its docstring):
- detection on a copy `DETECT_LONGEST` px long (a smaller picture is enlarged, at most
  `MAX_ENLARGE` times): HOG (`dlib.get_frontal_face_detector`, the default, ~16-24 ms a photo on
  one core, faces from ~10 % of the long side) or dlib's CNN (MMOD) detector (~0.6 s a photo on a
  CPU and no smaller faces: only worth it on a GPU build of dlib);
- landmarks and descriptor from the picture as given: a crop around each face, reduced so the face
  is at most `DETAIL_PIXELS` across (the descriptor reads a 150 px aligned chip; matching is the
  same as from the full picture), so a 24 MP photo is never converted whole. The descriptor is the
  cost: ~60 ms a face on this CPU (dlib-bin is built without BLAS);
- sharpness: the middle of the box (80 % of its side) in grey, resized to `SHARPNESS_PIXELS`
  square; the variance of its Laplacian over its own variance, so brightness and contrast do not
  count, only blur (and smallness: a face under 64 px is enlarged for it, which blurs it).

Nothing is loaded at import: dlib and the model files are loaded by `open_face_model` (once per
process, shared by the models it returns). dlib's objects are not documented as thread-safe: use
one `FaceModel` from one thread at a time.
"""

from __future__ import annotations

import importlib.util
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image

from core.errors import Unavailable

MATCH_DISTANCE = 0.45  # a face joins a person nearer than this (dlib's customary 0.6 is loose)
MIN_FACE_PIXELS = 40  # a smaller face (shorter side of its box) never starts a person
MIN_SHARPNESS = 0.05  # a blurrier face never starts a person
MIN_SCORE = 0.15  # nor does a detection with a lower score (HOG's false faces: a cucumber, a curtain, a shelf)
DETECT_LONGEST = 640  # detection runs on a copy at most this many px on its long side
DETECT_UPSAMPLE = 0  # HOG's upsampling: 1 finds faces down to ~40 px instead of ~80 px, at 4x the time
MAX_ENLARGE = 2.0  # a picture smaller than the detection size is enlarged up to this much (small faces in thumbnails)
CNN_LONGEST = 480  # the CNN detector's copy (measured: it finds faces from ~80 px, like HOG, at 30x the time)
DETAIL_PIXELS = 300  # the face crop for landmarks and descriptor is reduced to this many px wide at most
SHARPNESS_PIXELS = 64  # the middle of the face is measured for blur at this size
GIVEN_SCORE = -1.0  # the score of a face another app marked where HOG sees none (detectors give 0 and up)

_MARGIN = 0.6  # the crop around a box: this many box sizes on each side (room for the aligned, padded chip)
_REFINE_MARGIN = 0.5  # `describe` looks for the face this many box sizes around a given box
_REFINE_PIXELS = 160  # ... in a copy where the given box is this many px (HOG finds faces from 80 px)
_SHARPNESS_SPAN = 0.8  # the part of the box (centred) measured for blur: the face, not its background

_MODEL_FILES = {
    "landmarks": ("pose_predictor_five_point_model_location", "shape_predictor_5_face_landmarks.dat"),
    "descriptor": ("face_recognition_model_location", "dlib_face_recognition_resnet_model_v1.dat"),
    "cnn": ("cnn_face_detector_model_location", "mmod_human_face_detector.dat"),
}
_INSTALL_MODELS = "the face models are not installed: pip install face_recognition_models"

Box = tuple[float, float, float, float]


@dataclass(frozen=True, eq=False)  # eq=False: a numpy field cannot be compared or hashed by value
class Face:
    box: Box  # x0, y0, x1, y1 as fractions (0..1) of the picture as given, clipped to it
    score: float  # HOG's score (0 at its threshold, higher is surer; CNN: its confidence); GIVEN_SCORE
    descriptor: np.ndarray  # 128 float32 from the ResNet descriptor
    landmarks: tuple[tuple[float, float], ...]  # five points (eye corners, nose) as fractions
    pixels: int  # the shorter side of the detector's box, in pixels of the picture as given (before clipping)
    sharpness: float  # var(Laplacian) / var(grey) of the face's middle at 64 px: blur lowers it

    @property
    def usable(self) -> bool:
        """Big, sharp and sure enough to start a person (other faces may only join one)."""
        return self.pixels >= MIN_FACE_PIXELS and self.sharpness >= MIN_SHARPNESS and self.score >= MIN_SCORE


def face_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Euclidean distance between two descriptors, as dlib's ResNet descriptor is meant to be compared."""
    return float(np.linalg.norm(np.asarray(a, dtype=np.float32) - np.asarray(b, dtype=np.float32)))


def _model_path(kind: str) -> str:
    """A model file of `face_recognition_models`, located through the package's own functions, or,
    where importing it fails (0.3.0 imports `pkg_resources`, which setuptools 81+ no longer has),
    in the package's folder found without importing it."""
    function, filename = _MODEL_FILES[kind]
    try:
        import face_recognition_models

        path = Path(getattr(face_recognition_models, function)())
    except ImportError:
        spec = importlib.util.find_spec("face_recognition_models")
        if spec is None or not spec.submodule_search_locations:
            raise Unavailable(_INSTALL_MODELS) from None
        path = Path(next(iter(spec.submodule_search_locations))) / "models" / filename
    if not path.is_file():
        raise Unavailable(f"{_INSTALL_MODELS} (missing {path.name})")
    return str(path)


_loaded: dict[str, Any] = {}
_loading = threading.Lock()


def _dlib() -> Any:
    try:
        import dlib
    except ImportError:
        raise Unavailable("dlib is not installed: pip install dlib-bin") from None
    return dlib


def _load(kind: str) -> Any:
    """One dlib object per process: "hog", "cnn", "landmarks" or "descriptor"."""
    with _loading:
        if kind not in _loaded:
            dlib = _dlib()
            if kind == "hog":
                _loaded[kind] = dlib.get_frontal_face_detector()
            elif kind == "cnn":
                _loaded[kind] = dlib.cnn_face_detection_model_v1(_model_path("cnn"))
            elif kind == "landmarks":
                _loaded[kind] = dlib.shape_predictor(_model_path("landmarks"))
            else:
                _loaded[kind] = dlib.face_recognition_model_v1(_model_path("descriptor"))
        return _loaded[kind]


def _rgb(picture: Image.Image) -> Image.Image:
    return picture if picture.mode == "RGB" else picture.convert("RGB")


def _laplacian_ratio(grey: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian over the variance of the picture: blur lowers it,
    brightness and contrast do not change it."""
    g = grey.astype(np.float32)
    lap = g[1:-1, :-2] + g[1:-1, 2:] + g[:-2, 1:-1] + g[2:, 1:-1] - 4 * g[1:-1, 1:-1]
    spread = float(g.var())
    return float(lap.var()) / spread if spread > 1e-6 else 0.0


def sharpness(picture: Image.Image, box: Box) -> float:
    """The blur measure of `Face.sharpness` for a box in pixels of the picture."""
    x0, y0, x1, y1 = box
    cx, cy, half = (x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, y1 - y0) * _SHARPNESS_SPAN / 2
    left, top = max(0, round(cx - half)), max(0, round(cy - half))
    right, bottom = min(picture.width, round(cx + half)), min(picture.height, round(cy + half))
    if right - left < 3 or bottom - top < 3:
        return 0.0
    grey = picture.crop((left, top, right, bottom)).convert("L")
    n = SHARPNESS_PIXELS
    method = Image.Resampling.BOX if min(grey.size) >= n else Image.Resampling.BILINEAR
    return _laplacian_ratio(np.asarray(grey.resize((n, n), method)))


class FaceModel:
    """Finds and describes faces. Made by `open_face_model`; `name` is stored with the descriptors."""

    def __init__(
        self,
        detector: Literal["hog", "cnn"] = "hog",
        *,
        detect_longest: int | None = None,
        upsample: int | None = None,
    ) -> None:
        if detector not in ("hog", "cnn"):
            raise ValueError(f"unknown face detector {detector!r}: hog or cnn")
        self.detector = detector
        self.name = face_model_name(detector)
        self.detect_longest = detect_longest or (DETECT_LONGEST if detector == "hog" else CNN_LONGEST)
        self.upsample = DETECT_UPSAMPLE if upsample is None and detector == "hog" else (upsample or 0)
        self._detector = _load(detector)
        self._landmarks = _load("landmarks")
        self._descriptor = _load("descriptor")
        self._dlib = _dlib()

    def detect(self, picture: Image.Image) -> list[tuple[Box, float]]:
        """Detection alone: boxes in pixels of the picture as given (not clipped to it) and their scores."""
        picture = _rgb(picture)
        scale = min(MAX_ENLARGE, self.detect_longest / max(picture.size))
        small = picture
        if abs(scale - 1.0) > 0.05:
            size = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
            small = picture.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0 if scale < 1 else None)
        sx, sy = small.width / picture.width, small.height / picture.height
        array = np.asarray(small)
        found: list[tuple[Any, float]]
        if self.detector == "hog":
            rects, scores, _ = self._detector.run(array, self.upsample, 0.0)
            found = list(zip(rects, scores))
        else:
            found = [(d.rect, d.confidence) for d in self._detector(array, self.upsample)]
        return [
            ((r.left() / sx, r.top() / sy, (r.right() + 1) / sx, (r.bottom() + 1) / sy), float(s)) for r, s in found
        ]

    def find(self, picture: Image.Image) -> list[Face]:
        """Every face the detector finds, best score first."""
        picture = _rgb(picture)
        faces = [self._face(picture, box, score) for box, score in self.detect(picture)]
        return sorted((f for f in faces if f is not None), key=lambda f: -f.score)

    def describe(self, picture: Image.Image, box: Box) -> Face | None:
        """The face in a region another app marked (an XMP face region), box as fractions of the
        picture. Apps draw face boxes larger or smaller than dlib's and the landmark model is
        trained on dlib's, so HOG first looks for the face in and around the region: a face whose
        centre lies in the box, its size 0.4 to 1.5 times the box's, gives the landmarks (and its
        score); with none, the landmarks are sought in the box itself and the score is
        `GIVEN_SCORE`. The Face's box is the given one (clipped to the picture); pixels, sharpness
        and landmarks are those of the face used. None for a box with no area."""
        picture = _rgb(picture)
        w, h = picture.size
        x0, y0, x1, y1 = (min(max(v, 0.0), 1.0) for v in box)
        if (x1 - x0) * w < 4 or (y1 - y0) * h < 4:
            return None
        given = (x0 * w, y0 * h, x1 * w, y1 * h)
        found = self._refine(picture, given)
        face = self._face(picture, found[0] if found else given, found[1] if found else GIVEN_SCORE)
        if face is None:
            return None
        return Face(
            box=(x0, y0, x1, y1),
            score=face.score,
            descriptor=face.descriptor,
            landmarks=face.landmarks,
            pixels=face.pixels,
            sharpness=face.sharpness,
        )

    def _refine(self, picture: Image.Image, given: Box) -> tuple[Box, float] | None:
        """HOG's best face in a crop around a given box, in pixels of the picture, if one fits it."""
        x0, y0, x1, y1 = given
        side = max(x1 - x0, y1 - y0)
        left, top = max(0, int(x0 - _REFINE_MARGIN * side)), max(0, int(y0 - _REFINE_MARGIN * side))
        right = min(picture.width, int(x1 + _REFINE_MARGIN * side) + 1)
        bottom = min(picture.height, int(y1 + _REFINE_MARGIN * side) + 1)
        k = _REFINE_PIXELS / side
        crop = picture.crop((left, top, right, bottom))
        crop = crop.resize((max(1, round(crop.width * k)), max(1, round(crop.height * k))), Image.Resampling.BILINEAR)
        kx, ky = crop.width / (right - left), crop.height / (bottom - top)
        rects, scores, _ = _load("hog").run(np.asarray(crop), 0, 0.0)
        best: tuple[Box, float] | None = None
        for r, score in zip(rects, scores):
            box = (
                r.left() / kx + left,
                r.top() / ky + top,
                (r.right() + 1) / kx + left,
                (r.bottom() + 1) / ky + top,
            )
            cx, cy, size = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2, max(box[2] - box[0], box[3] - box[1])
            fits = x0 <= cx <= x1 and y0 <= cy <= y1 and 0.4 * side <= size <= 1.5 * side
            if fits and (best is None or score > best[1]):
                best = (box, float(score))
        return best

    def _face(self, picture: Image.Image, box: Box, score: float) -> Face | None:
        """Landmarks, descriptor and sharpness for a box in pixels of `picture`, read from a crop
        around it reduced to at most `DETAIL_PIXELS` across the box."""
        dlib = self._dlib
        w, h = picture.size
        x0, y0, x1, y1 = box
        bw, bh = x1 - x0, y1 - y0
        if bw <= 0 or bh <= 0:
            return None
        side = max(bw, bh)
        cx0, cy0 = max(0, int(x0 - _MARGIN * side)), max(0, int(y0 - _MARGIN * side))
        cx1, cy1 = min(w, int(x1 + _MARGIN * side) + 1), min(h, int(y1 + _MARGIN * side) + 1)
        if cx1 - cx0 < 2 or cy1 - cy0 < 2:
            return None
        crop = picture.crop((cx0, cy0, cx1, cy1))
        k = min(1.0, DETAIL_PIXELS / side)
        if k < 1.0:
            crop = crop.resize((max(1, round(crop.width * k)), max(1, round(crop.height * k))), Image.Resampling.BOX)
            kx, ky = crop.width / (cx1 - cx0), crop.height / (cy1 - cy0)
        else:
            kx = ky = 1.0
        array = np.ascontiguousarray(np.asarray(crop))
        rect = dlib.rectangle(
            round((x0 - cx0) * kx), round((y0 - cy0) * ky), round((x1 - cx0) * kx) - 1, round((y1 - cy0) * ky) - 1
        )
        shape = self._landmarks(array, rect)
        descriptor = np.asarray(self._descriptor.compute_face_descriptor(array, shape), dtype=np.float32)
        points = tuple(
            (min(max((p.x / kx + cx0) / w, 0.0), 1.0), min(max((p.y / ky + cy0) / h, 0.0), 1.0)) for p in shape.parts()
        )
        return Face(
            box=(max(x0 / w, 0.0), max(y0 / h, 0.0), min(x1 / w, 1.0), min(y1 / h, 1.0)),
            score=score,
            descriptor=descriptor,
            landmarks=points,
            pixels=round(min(bw, bh)),
            sharpness=sharpness(picture, box),
        )


def face_model_name(detector: str = "hog") -> str:
    """The name stored with the faces a model finds: faces found by another are found again."""
    return f"dlib-{detector}-resnet"


def open_face_model(detector: str = "hog") -> FaceModel:
    """The face model with the given detector ("hog": fast on a CPU; "cnn": dlib's MMOD detector,
    finds turned and smaller faces, far slower without a GPU). Raises `Unavailable` when dlib or the
    model files are missing."""
    if detector not in ("hog", "cnn"):
        raise ValueError(f"unknown face detector {detector!r}: hog or cnn")
    return FaceModel("hog" if detector == "hog" else "cnn")


Assignment = int | None | Literal["new"]


def assign_faces(
    faces: list[np.ndarray],
    usable: list[bool],
    candidates: list[list[tuple[int, float, bool]]],
    *,
    threshold: float | None = None,
) -> list[Assignment]:
    """Which person each new face of ONE picture joins.

    `faces[i]` is the descriptor of face i, `usable[i]` whether it may start a person
    (`Face.usable`), `candidates[i]` the nearest existing people for it as (person_id, distance,
    is_named), distance being the face's distance to that person (the caller's vector query).

    The rule:
    - only candidates nearer than `MATCH_DISTANCE` count;
    - a face joins its nearest person, but two faces of one picture never join the same person:
      all (face, person) pairs under the threshold are taken smallest distance first, each face and
      each person at most once, so the nearer face keeps the person and the other one takes its
      next candidate under the threshold (at equal distance a named person goes first);
    - a face left without a person is "new" (it starts a person) when usable, else None (it stays
      a face without a person: too small or too blurred to found a person on).
    Returns one entry per face, in order: a person_id, "new" or None. `threshold` replaces
    `MATCH_DISTANCE` (for measurements).
    """
    limit = MATCH_DISTANCE if threshold is None else threshold
    if not (len(faces) == len(usable) == len(candidates)):
        raise ValueError("faces, usable and candidates must have one entry per face")
    pairs = sorted(
        (distance, not named, i, person)
        for i, options in enumerate(candidates)
        for person, distance, named in options
        if distance < limit
    )
    result: list[Assignment] = [None] * len(faces)
    taken: set[int] = set()
    placed: set[int] = set()
    for _distance, _unnamed, i, person in pairs:
        if i in placed or person in taken:
            continue
        result[i] = person
        placed.add(i)
        taken.add(person)
    for i in range(len(faces)):
        if i not in placed:
            result[i] = "new" if usable[i] else None
    return result
