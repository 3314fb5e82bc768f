"""The model the server searches with.

It is whichever model the database says answers searches (`core.store.model_state`), not CLIP_MODEL
as this process read it: the indexer may still be building a newly chosen model, or may have
switched to one since the server started. The model being built is loaded here ahead of time, so
the switch costs searches no wait; a model no longer named is let go.
"""

from __future__ import annotations

import logging
import threading
from time import monotonic
from typing import Any

from core.errors import Unavailable, first_line
from core.models.checkpoints import ModelLoadError
from core.models.embedder import Embedder, Embedders
from core.settings import Settings
from core.store.model_state import CHECK_SECONDS, ModelChoice

log = logging.getLogger("sightline.api")

LOAD_TIMEOUT_SECONDS = 120.0


class ModelUnavailable(Unavailable):
    """No model to search with (yet); the message says why."""


class ServingModels:
    """The embedders searches use: the one in use, loaded, and the one being built, loading."""

    def __init__(self, settings: Settings, embedders: Embedders) -> None:
        self._settings = settings
        self._embedders = embedders
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Event] = {}
        self._models: dict[str, Embedder] = {}
        self._errors: dict[str, str] = {}
        self._choice = ModelChoice(active=None, target=settings.clip_model)
        self._checked_at = -CHECK_SECONDS

    @property
    def choice(self) -> ModelChoice:
        return self._choice

    def due(self) -> bool:
        return monotonic() - self._checked_at >= CHECK_SECONDS

    def recheck_soon(self) -> None:
        self._checked_at = -CHECK_SECONDS

    def observe(self, choice: ModelChoice) -> None:
        """What the database says now: load what it names, let go of what it no longer does."""
        self._checked_at = monotonic()
        self._choice = choice
        wanted = {choice.serving, *([choice.building] if choice.building else [])}
        for name in wanted:
            self._start_loading(name)
        with self._lock:
            gone = [name for name in self._loading if name not in wanted and self._loading[name].is_set()]
            for name in gone:
                del self._loading[name]
                self._errors.pop(name, None)
                if self._models.pop(name, None) is not None:
                    self._embedders.release(name)

    def _start_loading(self, name: str) -> None:
        with self._lock:
            if name in self._loading:
                return
            done = self._loading[name] = threading.Event()
        threading.Thread(target=self._load, args=(name, done), name="load-text-tower", daemon=True).start()

    def _load(self, name: str, done: threading.Event) -> None:
        s = self._settings
        try:
            model = self._embedders.get(name, s.device, s.precision)
            model.warm_text()  # the first search should not pay for loading it
            self._models[name] = model
        except ModelLoadError as exc:
            self._errors[name] = str(exc)
            log.error("%s", exc)
        finally:
            done.set()
        if name in self._models:
            compile_if_wanted(self._models[name])

    def current(self, timeout: float = LOAD_TIMEOUT_SECONDS) -> Embedder:
        """The model searches use, waiting for it to load if it must."""
        name = self._choice.serving
        self._start_loading(name)
        with self._lock:
            done = self._loading.get(name)
        if done is not None and not done.wait(timeout=timeout):
            raise ModelUnavailable("The model is still loading; try again in a moment.")
        if name in self._errors:
            raise ModelUnavailable(self._errors[name])
        model = self._models.get(name)
        if model is None:
            raise ModelUnavailable("The model is not available.")
        return model

    @property
    def loaded(self) -> Embedder | None:
        """The model in use, if it is loaded (never waits)."""
        return self._models.get(self._choice.serving)

    @property
    def error(self) -> str | None:
        return self._errors.get(self._choice.serving)

    def note_build_error(self, models: dict[str, Any]) -> None:
        """Add to a `models_status` answer why this server cannot load the model being built."""
        building = models.get("building")
        if building is not None and building["name"] in self._errors:
            building["error"] = self._errors[building["name"]]


def compile_if_wanted(model: Embedder) -> None:
    """Make the model's compiled text tower where it is wanted and missing, while searches go on
    through transformers (`core.models.text_onnx`); a failure leaves them there, in one line of the log."""
    try:
        if model.needs_compiling():
            log.info("compiling the text tower of %s for queries (once)", model.name)
            model.compile_text()
    except Exception as exc:
        log.warning(
            "the text tower of %s was not compiled (%s); queries go through transformers", model.name, first_line(exc)
        )
