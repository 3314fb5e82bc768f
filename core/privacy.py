"""The libraries' own reports home, switched off: CocoIndex's usage report, Hugging Face's telemetry
and ONNX Runtime's (which, since 1.29, posts to Microsoft from Linux too, every few seconds once a
session exists). Each library reads its switch once, when it is imported or starts, so `reports_off`
runs before those imports: first thing in `main.py` and `flows`, and where onnxruntime is loaded.
The project's venv sets the same switches as the interpreter starts (no-usage-reports.pth), which
is what covers CocoIndex's own `cocoindex` command: it imports cocoindex before any of our code."""

from __future__ import annotations

import os

SWITCHES = ("COCOINDEX_DISABLE_USAGE_TRACKING", "HF_HUB_DISABLE_TELEMETRY", "ORT_DISABLE_TELEMETRY")


def reports_off() -> None:
    """Set each switch to 1 unless the environment gives it a value: `0` opts in. An empty value
    counts as none (CocoIndex and Hugging Face would read it as "on")."""
    for name in SWITCHES:
        os.environ[name] = os.environ.get(name) or "1"
