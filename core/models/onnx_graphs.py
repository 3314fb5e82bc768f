"""What the compiled towers (`core.models.text_onnx`, `core.models.image_onnx`) share: the key of a
checkpoint's compiled folder, a folder written whole or not at all, a quiet exporter, and an
onnxruntime session that lets its cores go when it is idle.

A compiled folder holds one graph and `compiled.json`, its manifest: whether it passed its check
(`usable`), which graph (`kind`: int8 or float32), and, where it failed, why. It lives under
DATA_DIR, keyed by a digest of the checkpoint's files, so a changed checkpoint compiles again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from core.privacy import reports_off

MANIFEST = "compiled.json"
_WEIGHT_SUFFIXES = (".json", ".txt", ".model", ".safetensors", ".bin")


def key_of(name: str, folder: str, version: int) -> str:
    """A digest of the checkpoint's files (names, sizes, times) and the compiler's version."""
    digest = hashlib.sha256(f"{version}\0{name}\0{folder}\n".encode())
    for path in sorted(Path(folder).iterdir()):
        if path.suffix in _WEIGHT_SUFFIXES:
            st = path.stat()
            digest.update(f"{path.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:20]


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The manifest of a compiled folder, or None where there is none (yet) or it is damaged."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and "usable" in manifest else None


def publish(work: Path, target: Path, manifest: dict[str, Any]) -> None:
    """Move the finished `work` folder, manifest written last, into `target`, replacing whatever an
    older compiler left there; `work` is made again, empty, for the caller's clean-up."""
    (work / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    shutil.rmtree(target, ignore_errors=True)
    try:
        os.replace(work, target)
    except OSError:
        if read_manifest(target) is None:
            raise
        return  # another process published the same checkpoint's graph meanwhile: theirs stands
    work.mkdir()


class _FromRootLogger(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return False


@contextmanager
def quiet() -> Iterator[None]:
    """The exporter's tracer warnings and the quantizer's advice (logged on the root logger itself)
    say nothing a user can act on; each compiler's check is what tells whether the graph is right."""
    root = logging.getLogger()
    drop = _FromRootLogger()
    root.addFilter(drop)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        root.removeFilter(drop)


def open_session(graph: Path, threads: int) -> Any:
    """An onnxruntime session on the CPU with `threads` compute threads, which sleep rather than
    spin between calls: the indexer's other work (decoding, text reading, faces) needs the cores."""
    reports_off()  # before onnxruntime loads
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])


def unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32)
    return (v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)).astype(np.float32)
