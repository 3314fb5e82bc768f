"""Faces (core.models.faces): what dlib finds and how fast, how far apart descriptors of one person
and of two people lie, and the figures behind MATCH_DISTANCE, MIN_FACE_PIXELS and MIN_SHARPNESS.

    python -m bench.faces_model [--photos N] [--cnn-photos N]   # default: every coco-mini photo, CNN on 20

Measured on the 2-core dev machine (shared with other work: load 1.2-3; timings one thread,
dlib-bin 20.0.1 without BLAS, face_recognition_models 0.3.0), `python -m bench.faces_model`:

1. Portraits and variants (HOG, 640 px, upsample 0; 58 pictures: the 6 portraits, mirrored, darker
   (gamma 2.2, half bright), head crop, thumbnail with a 48 px face, blur sigma 1 % and 3 % of the
   face, pasted into a 640 px coco photo with the face 10 % and 6 % of its long side; two pairs side
   by side; a gradient; a coco photo without people):
   - found every face except the six at 6 % of the photo (HOG 640 up 0 needs ~10 %); no face in the
     gradient or the coco photo; no spurious face; side by side: 2 faces, each in its half.
   - distances (min / median / max): same person, variants of one photo 0.029 / 0.209 / 0.581;
     same person, different photos 0.043 / 0.389 / 0.579; two people 0.577 / 0.832 / 0.910. The
     0.58 on both sides are blur-3 % faces (a heavy blur pulls every face to one "blurred face");
     usable faces only: same person max 0.490 (biden darker), two people min 0.682. The six
     originals: Obama to Obama 0.220-0.452 (obama2 to obama3), Obama to Biden 0.811-0.865.
   - grouping, assign_faces picture by picture (a person's distance = its nearest face's), pairwise
     precision / recall: 0.40: 1.000 / 0.936 (3 people); 0.45: 1.000 / 0.936 (3: "biden darker"
     starts its own person, a split a user merges); 0.50 and 0.55: 1.000 / 0.990 (2 people);
     0.60: 1.000 / 1.000. The two blur-3 % faces over the threshold are unusable: in no person.
   - describe() on boxes grown x0.8-1.6 and shifted 10 % (like other apps' regions), distance to
     find()'s descriptor: landmarks straight in the box 0.000 / 0.084 / 0.692 (the 5-point model
     wants dlib's box); HOG's face in and around the box first (what describe does) 0.024 / 0.070 / 0.110.
2. Speed on 239 coco-mini photos (<= 640 px), ms per photo, faces found, faces missed against HOG
   640 up 1: HOG 320/0 5.7 ms, 2 faces (19 missed); 320/1 19.4 ms, 10 (13); 480/0 11.1 ms, 6 (15);
   480/1 42.4 ms, 11 (10); 640/0 17.3 ms, 8 (14); 640/1 69.7 ms, 21; CNN 480/0 642 ms (20 photos,
   1 face; 2 missed). Smallest face found (6 portraits pasted into a 640 px photo, face as a share
   of the long side; all 6 found from): HOG 320/0 20 %, 320/1 10 %, 480/0 15 %, 480/1 8 %,
   640/0 10 %, 640/1 6 % (5 of 6 at 5 %), CNN 480/0 15 %.
   One face: landmarks 0.18 ms, compute_face_descriptor 57.9 ms, crop + landmarks + descriptor +
   sharpness 62.5 ms. find() as set (640/0): 18.9 ms a coco photo on average (8 faces in 239
   photos); 97 ms for a 2908x6000 picture with one face (the 17 MP resize included).
   2b. Strangers: the 21 faces HOG 640/1 finds in coco-mini, 210 pairs: below 0.40: 1 (the same
   man twice in one photo, 0.256), 0.45: 1, 0.50: 2 (+ two different babies at 0.478), 0.55: 5,
   0.60: 12. False faces (a cucumber slice, a curtain, a shelf, a polar bear, a chin) score
   0.01-0.14; real faces 0.22 and up except one turned face at 0.10.
3. describe() on a portrait shrunk until the face is N px (max distance to its full-size
   descriptor; same person, other photos: max; two people: min): 200 px 0.108 / 0.443 / 0.815;
   80 px 0.126 / 0.455 / 0.805; 64 px 0.155 / 0.464 / 0.817; 48 px 0.225 / 0.453 / 0.792;
   40 px 0.276 / 0.501 / 0.788; 32 px 0.344 / 0.528 / 0.772; 24 px 0.464 / 0.588 / 0.710;
   16 px 0.709 / 0.728 / 0.744 (the two sides meet). Blur sigma as a share of the face: 0.5 %
   0.122 / 0.455 / 0.804, sharpness 0.213-0.361; 1 % 0.208 / 0.470 / 0.791, 0.070-0.210;
   1.5 % 0.303 / 0.503 / 0.774, 0.028-0.104; 2 % 0.396 / 0.538 / 0.752, 0.013-0.056;
   3 % 0.566 / 0.572 / 0.715, 0.006-0.019; 4 % 0.695 / 0.655 / 0.712, 0.004-0.008; the sharp
   originals 0.416-0.898. Faces of 40-48 px have sharpness 0.09-0.28 (enlarged to 64 px).

Chosen: MATCH_DISTANCE 0.45 (no two strangers below it, two babies at 0.478 and Obama's farthest
usable pair 0.490 around it: a split is merged by a user, a wrong join grows through the person's
nearest face); MIN_FACE_PIXELS 40 (down to 40 px a face stays within ~0.28 of itself and 0.50 of
the same person's other photos, far from others; at 24 px the sides are 0.59 / 0.71); MIN_SHARPNESS
0.05 (sigma 1 % keeps >= 0.07 and matches, 2 % falls to <= 0.056 and drifts 0.4 from itself);
MIN_SCORE 0.15 (every false face below it); detection HOG 640 px, no upsampling (17 ms: the
budget; upsampling 1 finds faces from 6 % instead of 10 % of the long side at 4x the time).
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter, ImageOps

from core.models import faces as F
from core.settings import PROJECT_ROOT

SHARED = PROJECT_ROOT.parent / "shared" / "data"
PEOPLE_WORDS = re.compile(
    r"\b(man|men|woman|women|person|people|boy|girl|child|children|kids?|player|guy|lady|skier|surfer|he|she|"
    r"they|someone|crowd|baby|rider|couple|family|team|chef|skateboarder|snowboarder|tourists?)\b",
    re.I,
)
THRESHOLDS = (0.4, 0.45, 0.5, 0.55, 0.6)
HOG_CONFIGS = ((320, 0), (320, 1), (480, 0), (480, 1), (640, 0), (640, 1))
Box = tuple[float, float, float, float]


@dataclass
class Sample:
    name: str
    source: str  # the portrait it was made from ("" for none)
    picture: Image.Image
    people: list[str]  # who is in it, left to right


def who(path: Path) -> str:
    return "biden" if path.stem.startswith("biden") else "obama"


def timed(fn: Callable[[], object], repeat: int) -> float:
    """Milliseconds per call, the best of three rounds of `repeat` calls."""
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(repeat):
            fn()
        best = min(best, (time.perf_counter() - start) / repeat)
    return best * 1000


def scaled(picture: Image.Image, factor: float) -> Image.Image:
    size = (max(1, round(picture.width * factor)), max(1, round(picture.height * factor)))
    return picture.resize(size, Image.Resampling.LANCZOS)


def faceless_photo(coco: Path) -> Path:
    """The first coco-mini photo whose five captions mention nobody."""
    for line in (coco / "captions.jsonl").read_text().splitlines():
        row = json.loads(line)
        if not any(PEOPLE_WORDS.search(c) for c in row["captions"]):
            return coco / row["file"]
    raise SystemExit("no coco-mini photo without people")


def pasted(background: Image.Image, portrait: Image.Image, face: Box, fraction: float) -> Image.Image:
    """The portrait's face region (its box grown to twice its size), scaled so the face is `fraction`
    of the background's long side, pasted in the middle of the background."""
    x0, y0, x1, y1 = face
    side = max(x1 - x0, y1 - y0)
    region = portrait.crop(
        (
            max(0, x0 - side / 2),
            max(0, y0 - side / 2),
            min(portrait.width, x1 + side / 2),
            min(portrait.height, y1 + side / 2),
        )
    )
    region = scaled(region, fraction * max(background.size) / side)
    out = background.copy()
    out.paste(region, ((out.width - region.width) // 2, (out.height - region.height) // 2))
    return out


def side_by_side(a: Image.Image, b: Image.Image, height: int = 900) -> Image.Image:
    a, b = scaled(a, height / a.height), scaled(b, height / b.height)
    out = Image.new("RGB", (a.width + b.width, height))
    out.paste(a, (0, 0))
    out.paste(b, (a.width, 0))
    return out


def samples(model: F.FaceModel, portraits: list[Path], background: Image.Image) -> list[Sample]:
    out: list[Sample] = []
    for path in portraits:
        picture = Image.open(path).convert("RGB")
        person, stem = who(path), path.stem
        (box, _score), *_ = model.detect(picture)
        px = min(box[2] - box[0], box[3] - box[1])
        side = max(box[2] - box[0], box[3] - box[1])
        crop = picture.crop(
            (max(0, box[0] - side), max(0, box[1] - side), min(picture.width, box[2] + side), box[3] + side)
        )
        out += [
            Sample(f"{stem}", stem, picture, [person]),
            Sample(f"{stem} mirrored", stem, ImageOps.mirror(picture), [person]),
            Sample(f"{stem} darker", stem, Image.eval(picture, lambda v: int(255 * (v / 255) ** 2.2 * 0.5)), [person]),
            Sample(f"{stem} head crop", stem, crop, [person]),
            Sample(f"{stem} thumbnail (face 48 px)", stem, scaled(picture, 48 / px), [person]),
            Sample(f"{stem} blur 1%", stem, picture.filter(ImageFilter.GaussianBlur(0.01 * px)), [person]),
            Sample(f"{stem} blur 3%", stem, picture.filter(ImageFilter.GaussianBlur(0.03 * px)), [person]),
            Sample(f"{stem} in a photo, face 10%", stem, pasted(background, picture, box, 0.10), [person]),
            Sample(f"{stem} in a photo, face 6%", stem, pasted(background, picture, box, 0.06), [person]),
        ]
    obama = Image.open(next(p for p in portraits if p.stem == "obama")).convert("RGB")
    biden = Image.open(next(p for p in portraits if p.stem == "biden")).convert("RGB")
    out.append(Sample("obama | biden side by side", "", side_by_side(obama, biden), ["obama", "biden"]))
    out.append(Sample("biden | obama side by side", "", side_by_side(biden, obama), ["biden", "obama"]))
    ramp = np.linspace(0, 255, 800, dtype=np.float32)
    gradient = np.stack([np.tile(ramp, (600, 1)), np.tile(ramp[::-1], (600, 1)), np.full((600, 800), 128.0)], -1)
    out.append(Sample("gradient", "", Image.fromarray(gradient.astype(np.uint8)), []))
    out.append(Sample("coco photo without people", "", background, []))
    return out


def labelled(sample: Sample, found: list[F.Face]) -> list[tuple[F.Face, str | None]]:
    """The best-scoring faces get the sample's people, left to right; any more are spurious (None)."""
    best = sorted(found, key=lambda f: -f.score)[: len(sample.people)]
    named: dict[int, str | None] = {
        id(f): p for f, p in zip(sorted(best, key=lambda f: f.box[0] + f.box[2]), sample.people)
    }
    return [(f, named.get(id(f))) for f in found]


def spread(values: list[float]) -> str:
    if not values:
        return "none"
    return f"{min(values):.3f} / {statistics.median(values):.3f} / {max(values):.3f} (n={len(values)})"


def group(faces: list[list[F.Face]], threshold: float) -> list[list[int | None]]:
    """assign_faces picture by picture, a person's distance being its nearest face's."""
    people: dict[int, list[np.ndarray]] = {}
    out: list[list[int | None]] = []
    for picture in faces:
        candidates = []
        for face in picture:
            near = sorted((min(F.face_distance(face.descriptor, d) for d in ds), pid) for pid, ds in people.items())[:5]
            candidates.append([(pid, dist, False) for dist, pid in near])
        result = F.assign_faces(
            [f.descriptor for f in picture], [f.usable for f in picture], candidates, threshold=threshold
        )
        row: list[int | None] = []
        for face, got in zip(picture, result):
            if got == "new":
                got = len(people)
                people[got] = []
            if got is not None:
                people[got].append(face.descriptor)
            row.append(got)
        out.append(row)
    return out


def pairwise(truth: list[str | None], got: list[int | None]) -> tuple[float, float]:
    """Pairwise precision and recall: pairs put in one person that are one person, and pairs of one
    person put in one person (faces left without a person are in none)."""
    together = right = same = 0
    for i, j in itertools.combinations(range(len(truth)), 2):
        one = truth[i] is not None and truth[i] == truth[j]
        joined = got[i] is not None and got[i] == got[j]
        same += one
        together += joined
        right += one and joined
    return (right / together if together else 1.0), (right / same if same else 1.0)


def part_portraits(model: F.FaceModel, portraits: list[Path], background: Image.Image) -> None:
    print(
        f"\n## 1. Portraits and variants ({model.name}, "
        f"detection at {model.detect_longest} px, upsample {model.upsample})"
    )
    found: list[list[tuple[F.Face, str | None]]] = []
    items = samples(model, portraits, background)
    for sample in items:
        faces = labelled(sample, model.find(sample.picture))
        found.append(faces)
        marks = ", ".join(
            f"{who or 'SPURIOUS'} {f.pixels}px score {f.score:.2f} sharp {f.sharpness:.3f}"
            + ("" if f.usable else " unusable")
            for f, who in faces
        )
        missed = len(sample.people) - sum(1 for _, who in faces if who)
        print(f"  {sample.name:40s} expected {len(sample.people)} found {len(faces)} missed {missed}: {marks}")
    flat = [(f, who, s) for faces, s in zip(found, items) for f, who in faces]
    same_photo, same_person, different, spurious = [], [], [], []
    for (f, a, sa), (g, b, sb) in itertools.combinations(flat, 2):
        d = F.face_distance(f.descriptor, g.descriptor)
        if a is None or b is None:
            spurious.append(d)
        elif a != b:
            different.append(d)
        elif sa.source and sa.source == sb.source:
            same_photo.append(d)
        else:
            same_person.append(d)
    print("  distances min / median / max:")
    print(f"    same person, variants of one photo:   {spread(same_photo)}")
    print(f"    same person, different photos:        {spread(same_person)}")
    print(f"    two people:                           {spread(different)}")
    print(f"    involving a spurious detection:       {spread(spurious)}")
    good = [(f, a) for f, a, _ in flat if f.usable and a]
    good_same = [
        F.face_distance(f.descriptor, g.descriptor) for (f, a), (g, b) in itertools.combinations(good, 2) if a == b
    ]
    good_diff = [
        F.face_distance(f.descriptor, g.descriptor) for (f, a), (g, b) in itertools.combinations(good, 2) if a != b
    ]
    print(f"    usable faces only, same person:       {spread(good_same)}")
    print(f"    usable faces only, two people:        {spread(good_diff)}")
    truth = [who for faces in found for _, who in faces]
    print("  grouping (assign_faces, pictures in order, pairwise over found faces):")
    for threshold in THRESHOLDS:
        got = [g for row in group([[f for f, _ in faces] for faces in found], threshold) for g in row]
        p, r = pairwise(truth, got)
        people = len({g for g in got if g is not None})
        print(
            f"    threshold {threshold:.2f}: precision {p:.3f} recall {r:.3f}, "
            f"{people} people, {got.count(None)} faces in none"
        )


def part_describe(model: F.FaceModel, portraits: list[Path]) -> None:
    print("\n## 1b. describe() on boxes drawn like other apps' (grown, shifted): distance to find()'s descriptor")
    changes = ((1.0, 0.0), (1.2, 0.0), (1.4, 0.0), (1.6, 0.0), (1.4, -0.1), (1.0, 0.1), (0.8, 0.0))
    refined: list[float] = []
    direct: list[float] = []
    for path in portraits:
        picture = Image.open(path).convert("RGB")
        w, h = picture.size
        face = model.find(picture)[0]
        x0, y0, x1, y1 = face.box
        cx, cy, bw, bh = (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0
        for grow, dy in changes:
            box = (cx - bw * grow / 2, cy - bh * (grow / 2 - dy), cx + bw * grow / 2, cy + bh * (grow / 2 + dy))
            got = model.describe(picture, box)
            plain = model._face(picture, (box[0] * w, box[1] * h, box[2] * w, box[3] * h), 0.0)
            if got is not None and plain is not None:
                refined.append(F.face_distance(got.descriptor, face.descriptor))
                direct.append(F.face_distance(plain.descriptor, face.descriptor))
    print("  boxes grown x0.8-1.6, shifted +-10%, on the 6 portraits: min / median / max")
    print(f"    landmarks in the given box itself:      {spread(direct)}")
    print(f"    HOG's face in and around the box first: {spread(refined)}  (what describe() does)")


def iou(a: Box, b: Box) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def part_speed(photos: list[Image.Image], cnn_photos: int, portraits: list[Path], background: Image.Image) -> list[int]:
    print(f"\n## 2. Speed on {len(photos)} coco-mini photos (<= 640 px), one thread")
    runs: dict[str, tuple[float, list[list[Box]]]] = {}
    configs: list[tuple[str, F.FaceModel, int]] = [
        (f"HOG {size} px up {up}", F.FaceModel("hog", detect_longest=size, upsample=up), len(photos))
        for size, up in HOG_CONFIGS
    ]
    configs.append((f"CNN {F.CNN_LONGEST} px up 0", F.FaceModel("cnn"), cnn_photos))
    for label, model, count in configs:
        model.detect(photos[0])
        start = time.perf_counter()
        boxes = [[box for box, _ in model.detect(p)] for p in photos[:count]]
        runs[label] = ((time.perf_counter() - start) * 1000 / count, boxes)
    reference = runs["HOG 640 px up 1"][1]
    for label, (ms, boxes) in runs.items():
        n = len(boxes)
        missed = sum(1 for ref, got in zip(reference[:n], boxes) for r in ref if not any(iou(r, g) > 0.3 for g in got))
        extra = sum(1 for ref, got in zip(reference[:n], boxes) for g in got if not any(iou(r, g) > 0.3 for r in ref))
        total = sum(len(b) for b in boxes)
        print(
            f"  {label:18s} {ms:6.1f} ms/photo, {total:3d} faces in {n} photos "
            f"(vs HOG 640 up 1 on them: {missed} missed, {extra} not found there)"
        )
    model = F.open_face_model()
    start = time.perf_counter()
    found = [model.find(p) for p in photos]
    total_ms = (time.perf_counter() - start) * 1000 / len(photos)
    faces = [f for fs in found for f in fs]
    with_faces = sum(1 for fs in found if fs)
    print(
        f"  default find() ({model.name}, {model.detect_longest} px up {model.upsample}): {total_ms:.1f} ms/photo "
        f"with landmarks and descriptors; {len(faces)} faces in {with_faces} photos"
    )
    portrait = Image.open(portraits[0]).convert("RGB")
    (box, _), *_ = model.detect(portrait)
    array = np.asarray(portrait)
    rect = model._dlib.rectangle(*(round(v) for v in box))
    shape = model._landmarks(array, rect)
    landmarks_ms = timed(lambda: model._landmarks(array, rect), 20)
    descriptor_ms = timed(lambda: model._descriptor.compute_face_descriptor(array, shape), 3)
    face_ms = timed(lambda: model._face(portrait, box, 0.0), 3)
    print(
        f"  one face: landmarks {landmarks_ms:.2f} ms, compute_face_descriptor {descriptor_ms:.1f} ms, "
        f"crop + landmarks + descriptor + sharpness {face_ms:.1f} ms"
    )
    big = scaled(Image.open(portraits[-1]).convert("RGB"), 6000 / max(Image.open(portraits[-1]).size))
    big_ms = timed(lambda: model.find(big), 2)
    print(f"  find() on a {big.width}x{big.height} picture (one face): {big_ms:.0f} ms")
    print("  smallest face found, as a share of the photo's long side (6 portraits pasted into a 640 px photo):")
    fractions = (0.04, 0.05, 0.06, 0.08, 0.10, 0.125, 0.15, 0.2)
    faces_in = [(Image.open(p).convert("RGB"), model.detect(Image.open(p).convert("RGB"))[0][0]) for p in portraits]
    print("    " + " " * 18 + "".join(f"{f:>7.3f}" for f in fractions))
    for label, m, _ in configs:
        row = [sum(1 for pic, b in faces_in if m.detect(pasted(background, pic, b, f))) for f in fractions]
        print(f"    {label:18s}" + "".join(f"{n:>7d}" for n in row))
    return [i for i, boxes in enumerate(reference) if boxes]


def part_strangers(photos: list[Image.Image], names: list[str]) -> None:
    """Every face HOG 640 px up 1 finds in coco-mini, compared with every other: distinct people,
    except where one photo shows one person twice."""
    model = F.FaceModel("hog", upsample=1)
    faces = [(name, i, face) for photo, name in zip(photos, names) for i, face in enumerate(model.find(photo))]
    pairs = sorted(
        (F.face_distance(a.descriptor, b.descriptor), an, ai, a, bn, bi, b)
        for (an, ai, a), (bn, bi, b) in itertools.combinations(faces, 2)
    )
    print(f"\n## 2b. Strangers: {len(faces)} faces HOG 640 px up 1 finds in coco-mini, {len(pairs)} pairs")
    if not pairs:
        return
    print(f"  distance min / median / max: {spread([p[0] for p in pairs])}")
    for t in THRESHOLDS:
        below = sum(p[0] < t for p in pairs)
        print(f"    below {t:.2f}: {below} pairs ({100 * below / len(pairs):.1f} %)")
    print("  the nearest pairs (photo#face pixels/score/sharpness):")
    for d, an, ai, a, bn, bi, b in pairs[:5]:
        print(
            f"    {d:.3f}: {an}#{ai} {a.pixels}px/{a.score:.2f}/{a.sharpness:.3f} - "
            f"{bn}#{bi} {b.pixels}px/{b.score:.2f}/{b.sharpness:.3f}"
        )
    print("  every face: photo#face pixels score sharpness usable")
    for name, i, f in faces:
        print(f"    {name}#{i} {f.pixels}px {f.score:.2f} {f.sharpness:.3f} {'usable' if f.usable else '-'}")


def part_small_and_blur(model: F.FaceModel, portraits: list[Path]) -> None:
    print("\n## 3. Small and blurred faces: describe() on the known box of a scaled or blurred portrait")
    originals = {p.stem: Image.open(p).convert("RGB") for p in portraits}
    boxes = {k: model.detect(v)[0][0] for k, v in originals.items()}
    full = {k: model._face(v, boxes[k], 0.0) for k, v in originals.items()}
    descriptors = {k: f.descriptor for k, f in full.items() if f is not None}

    def row(label: str, variant: Callable[[str], tuple[Image.Image, Box]]) -> None:
        own: list[float] = []
        same: list[float] = []
        other: list[float] = []
        sharp: list[float] = []
        detected = 0
        for k in originals:
            pic, box = variant(k)
            w, h = pic.size
            face = model.describe(pic, (box[0] / w, box[1] / h, box[2] / w, box[3] / h))
            if face is None:
                continue
            detected += bool(F.FaceModel("hog", upsample=1).detect(pic)) if label.startswith("face") else 0
            sharp.append(face.sharpness)
            own.append(F.face_distance(face.descriptor, descriptors[k]))
            person = "biden" if k.startswith("biden") else "obama"
            for j, d in descriptors.items():
                if j == k:
                    continue
                (same if j.startswith(person) else other).append(F.face_distance(face.descriptor, d))
        found = f", HOG 640 up 1 finds {detected}/{len(own)}" if label.startswith("face") else ""
        print(
            f"  {label:22s} to itself full-size max {max(own):.3f}; same person other photos max {max(same):.3f}; "
            f"two people min {min(other):.3f}; sharpness {min(sharp):.3f}-{max(sharp):.3f}{found}"
        )

    for px in (200, 120, 80, 64, 48, 40, 32, 24, 16):

        def small(k: str, px: int = px) -> tuple[Image.Image, Box]:
            b = boxes[k]
            factor = px / min(b[2] - b[0], b[3] - b[1])
            return scaled(originals[k], factor), (b[0] * factor, b[1] * factor, b[2] * factor, b[3] * factor)

        row(f"face {px} px", small)
    for share in (0.005, 0.01, 0.015, 0.02, 0.03, 0.04):

        def blurred(k: str, share: float = share) -> tuple[Image.Image, Box]:
            b = boxes[k]
            return originals[k].filter(ImageFilter.GaussianBlur(share * min(b[2] - b[0], b[3] - b[1]))), b

        row(f"blur sigma {100 * share:.1f}% of face", blurred)
    print(
        "  (sharpness of the unblurred originals: " + ", ".join(f"{f.sharpness:.3f}" for f in full.values() if f) + ")"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--photos", type=int, default=0, help="coco-mini photos for speed (0: all)")
    parser.add_argument("--cnn-photos", type=int, default=20, help="of those, how many the CNN detector reads")
    parser.add_argument("--faces", type=Path, default=SHARED / "faces")
    parser.add_argument("--coco", type=Path, default=SHARED / "coco-mini")
    args = parser.parse_args()
    portraits = sorted(args.faces.glob("*.jpg"))
    background = Image.open(faceless_photo(args.coco)).convert("RGB")
    model = F.open_face_model()
    part_portraits(model, portraits, background)
    part_describe(model, portraits)
    part_small_and_blur(model, portraits)
    paths = sorted(args.coco.rglob("*.jpg"))
    paths = paths[: args.photos] if args.photos else paths
    photos = [Image.open(p).convert("RGB") for p in paths]
    with_faces = part_speed(photos, min(args.cnn_photos, len(photos)), portraits, background)
    part_strangers([photos[i] for i in with_faces], [paths[i].stem.lstrip("0") for i in with_faces])


if __name__ == "__main__":
    main()
