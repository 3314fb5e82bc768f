"""Text in pictures: PP-OCRv4 detection and recognition (RapidOCR on onnxruntime, the ONNX files
inside the `rapidocr-onnxruntime` wheel, so it runs offline on a CPU).

A picture goes in upright (decoded by `core.media.pictures`, EXIF orientation applied), as a PIL image or
an RGB array; lines come out with their boxes as fractions of that picture's width and height, so
they hold for the picture as displayed at any size. Nothing is loaded at import: the engine is
made on first use, in the thread that first uses it, so onnxruntime's threads inherit that
thread's priority (`flows.ocr_pass` reads at a low one).

Two ways of reading (measured in bench/ocr.py, figures in docs/text-in-pictures.md):
- `read(..., fine=True)`: RapidOCR's own settings, the picture enlarged for detection to 736 px on
  its short side, and the angle classifier (text upside down): the most words, and three times the
  time on a 640 px photo;
- `read(..., fine=False)`: detection at the picture's own size (at most `READ_LONGEST`), without the
  angle classifier (pictures come upright; it turned more right lines over than wrong ones back).
`glance` is detection alone on a small copy: whether a picture shows any text at all.

The detection and recognition models run in onnxruntime sessions of this module's
(`_session`) rather than RapidOCR's: with onnxruntime's memory arena, which RapidOCR turns off,
and without its memory patterns. Every picture's size is a new shape: without the arena each
detection maps and faults in its buffers afresh (about a third of its time), and a pattern is
planned and kept per shape (memory that only grows). Measured on photos of mixed sizes: 53 ms of
CPU a detection against 76, for 230 MB at most against 190 (bench/RESULTS.md, issue 29).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from core.privacy import reports_off

if TYPE_CHECKING:
    from rapidocr_onnxruntime import RapidOCR

PACKAGE = "rapidocr-onnxruntime"
READ_LONGEST = 1280  # a 12 MP photo is read at this many px on its long side
FINE_SHORTEST = 736  # what RapidOCR enlarges a picture's short side to for detection (its default)
GLANCE_LONGEST = 480  # the small copy `glance` looks at
MIN_CONFIDENCE = 0.5  # lines recognised with less are dropped (RapidOCR's own threshold)


@dataclass(frozen=True)
class TextLine:
    text: str
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 as fractions of the width and height
    confidence: float

    def as_json(self) -> dict[str, Any]:
        return {"text": self.text, "box": list(self.box), "confidence": self.confidence}


def engine_name() -> str:
    """What reads the text, as `picture_text.engine` records it."""
    try:
        version = metadata.version(PACKAGE)
    except metadata.PackageNotFoundError:
        version = "?"
    return f"{PACKAGE} {version} PP-OCRv4"


def _bgr(picture: Image.Image | np.ndarray, longest: int) -> np.ndarray:
    """The picture as the contiguous BGR uint8 array RapidOCR wants, at most `longest` px long."""
    image = picture if isinstance(picture, Image.Image) else Image.fromarray(np.asarray(picture, dtype=np.uint8))
    if image.mode != "RGB":
        image = image.convert("RGB")
    scale = longest / max(image.size)
    if scale < 1:
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.BILINEAR)
    return np.ascontiguousarray(np.asarray(image)[..., ::-1])


def _session(model_path: str, threads: int) -> Any:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.enable_cpu_mem_arena = True
    options.enable_mem_pattern = False
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(
        model_path, options, providers=[("CPUExecutionProvider", {"arena_extend_strategy": "kSameAsRequested"})]
    )


def _model_paths() -> dict[str, str]:
    """The detection and recognition models' files, as the package's own configuration names them."""
    import rapidocr_onnxruntime
    import yaml

    root = Path(rapidocr_onnxruntime.__file__).parent
    config = yaml.safe_load((root / "config.yaml").read_text())
    return {part: str(root / config[part]["model_path"]) for part in ("Det", "Rec")}


def _own_sessions(engine: RapidOCR, paths: dict[str, str], threads: int) -> None:
    """Our sessions in place of RapidOCR's for detection and recognition (see the module's docstring).
    A RapidOCR whose parts are laid out differently keeps its own: slower, but it reads the same."""
    detector, recogniser = getattr(engine.text_det, "infer", None), getattr(engine.text_rec, "session", None)
    for part, path in ((detector, paths["Det"]), (recogniser, paths["Rec"])):
        if part is not None and hasattr(part, "session"):
            part.session = _session(path, threads)


class TextReader:
    """One OCR engine. Not for several threads at once: RapidOCR keeps per-call settings on itself."""

    def __init__(self, threads: int = 1) -> None:
        self.threads = threads  # onnxruntime's threads per model; 1 runs in the caller's thread
        self._engine: RapidOCR | None = None
        self._loading = threading.Lock()
        self._calling = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._engine is not None

    def engine(self) -> RapidOCR:
        with self._loading:
            if self._engine is None:
                import cv2

                reports_off()  # before onnxruntime loads
                from rapidocr_onnxruntime import RapidOCR

                # OpenCV (cropping, resizing; only OCR uses it here) would start a thread per core
                cv2.setNumThreads(self.threads)
                logging.getLogger("RapidOCR").setLevel(logging.WARNING)
                paths = _model_paths()
                self._engine = RapidOCR(
                    det_model_path=paths["Det"],
                    rec_model_path=paths["Rec"],
                    intra_op_num_threads=self.threads,
                    inter_op_num_threads=1,
                    det_limit_type="max",
                    print_verbose=False,
                )
                _own_sessions(self._engine, paths, self.threads)
            return self._engine

    def read(
        self, picture: Image.Image | np.ndarray, *, fine: bool = False, longest: int = READ_LONGEST
    ) -> list[TextLine]:
        """The lines of text in `picture` (upright RGB), top to bottom."""
        pixels = _bgr(picture, longest)
        height, width = pixels.shape[:2]
        with self._calling:
            engine = self.engine()
            detector = engine.text_det
            # "max" never enlarges (below 2000 px RapidOCR detects at the picture's own size)
            detector.limit_type, detector.limit_side_len = ("min", FINE_SHORTEST) if fine else ("max", longest)
            found, _ = engine(pixels, use_cls=fine, text_score=MIN_CONFIDENCE)
        lines = []
        for points, text, confidence in found or []:
            text = str(text).strip()
            if not text:
                continue
            xs, ys = [p[0] for p in points], [p[1] for p in points]
            box = (
                _fraction(min(xs), width),
                _fraction(min(ys), height),
                _fraction(max(xs), width),
                _fraction(max(ys), height),
            )
            lines.append(TextLine(text=text, box=box, confidence=round(float(confidence), 4)))
        return lines

    def glance(self, picture: Image.Image | np.ndarray, *, longest: int = GLANCE_LONGEST) -> bool:
        """Whether detection alone, on a copy at most `longest` px long, finds any text."""
        pixels = _bgr(picture, longest)
        with self._calling:
            engine = self.engine()
            engine.text_det.limit_type, engine.text_det.limit_side_len = "max", longest
            boxes, _ = engine.text_det(pixels)
        return boxes is not None and len(boxes) > 0


def _fraction(value: float, whole: int) -> float:
    return round(min(1.0, max(0.0, float(value) / whole)), 4)


_default: TextReader | None = None


def read_lines(picture: Image.Image | np.ndarray, *, fine: bool = False) -> list[TextLine]:
    """The lines in `picture` through one process-wide reader (loaded on first use)."""
    global _default
    if _default is None:
        _default = TextReader()
    return _default.read(picture, fine=fine)


SMALLEST = 32  # px on the short side: a picture smaller than this holds no legible text
MODES = ("auto", "on", "off")


@dataclass(frozen=True)
class Reading:
    """What one picture says, or why it was not read."""

    lines: list[TextLine]
    skipped: str | None = None  # why `auto` did not read it

    @property
    def text(self) -> str:
        return "\n".join(line.text for line in self.lines)


def read_picture(reader: TextReader, picture: Image.Image | np.ndarray, mode: str) -> Reading:
    """Read `picture` as OCR=`mode` says: `on` reads every picture finely (enlarged for detection);
    `auto` skips pictures too small to hold text and reads the rest at their own size, which
    takes a third of the time and misses the smallest text (bench/ocr.py)."""
    if mode == "on":
        return Reading(reader.read(picture, fine=True))
    width, height = picture.size if isinstance(picture, Image.Image) else picture.shape[1::-1]
    if min(width, height) < SMALLEST:
        return Reading([], skipped=f"too small to hold text ({width}x{height})")
    return Reading(reader.read(picture))
