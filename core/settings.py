"""The one settings object. Read once from the environment, with `.env` as the documented defaults.

The real environment wins over `.env`; relative paths are relative to the project root, whatever
the working directory. Every variable, its default and what it does: docs/configuration.md.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

from dotenv import dotenv_values

from core.errors import BadRequest

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# Every variable `load_settings` reads, with its default as `.env` and docs/configuration.md write
# it. An empty value counts as unset.
DEFAULTS: dict[str, str] = {
    "IMAGE_DIR": "img",
    "SCAN_INTERVAL": "300",
    "WATCH": "auto",
    "VIDEO_FRAMES": "16",
    "OCR": "auto",
    "FACES": "on",
    "DATA_DIR": ".data",
    "DATABASE_URL": "",
    "CLIP_MODEL": "openai/clip-vit-base-patch32",
    "DEVICE": "auto",
    "PRECISION": "auto",
    "TEXT_TOWER": "auto",
    "IMAGE_TOWER": "auto",
    "BATCH_SIZE": "auto",
    "MAX_IMAGE_PIXELS": "100000000",
    "HOST": "127.0.0.1",
    "PORT": "8000",
    "API_TOKEN": "",
    "ALLOW_REMOTE_WITHOUT_TOKEN": "0",
    "UPLOAD_MAX_MB": "20",
    "TRANSCODE_CACHE_MB": "2048",
    "SEARCH_EF": "100",
    "HNSW_EF_CONSTRUCTION": "64",
    "CORS_ORIGINS": "",
    "PG_SHARED_BUFFERS": "auto",
    "PG_EFFECTIVE_CACHE_SIZE": "auto",
    "PG_MAINTENANCE_WORK_MEM": "auto",
    "PG_WORK_MEM": "auto",
    "PG_PARALLEL_WORKERS": "auto",
}


class SettingsError(BadRequest):
    """A setting with a value that cannot work; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    image_dirs: tuple[Path, ...]  # IMAGE_DIR: one folder, or several separated by os.pathsep
    data_dir: Path
    database_url: str  # empty: the embedded Postgres under data_dir
    clip_model: str  # a model id or a local folder
    device: str  # auto | cpu | cuda
    precision: str  # auto | int8 | float32 | bfloat16 | float16
    batch_size: int  # 0: auto (32 on a CPU, 128 on a GPU)
    max_image_pixels: int
    scan_interval: float  # seconds between full rescans of folders where file events do not arrive
    watch: str  # auto (file events, except on network mounts) | poll (rescan every folder)
    video_frames: int  # the most frames of one video that are embedded
    host: str
    port: int
    upload_max_bytes: int
    search_ef: int  # hnsw.ef_search; pages deeper than this use an exact scan
    hnsw_ef_construction: int  # how hard the HNSW graph's build looks for neighbours (recall at a million)
    cors_origins: tuple[str, ...]
    api_token: str  # empty: no authentication
    allow_remote_without_token: bool  # the explicit opt-out of the loopback-only rule
    # the embedded server's memory and workers (core.store.pg_sizing); "" / 0: sized for the machine
    pg_shared_buffers: str = ""
    pg_effective_cache_size: str = ""
    pg_maintenance_work_mem: str = ""
    pg_work_mem: str = ""
    pg_parallel_workers: int = 0
    ocr: str = "auto"  # auto | on | off: reading the text in pictures (`core.models.ocr.read_picture`)
    text_tower: str = "auto"  # auto (compiled where it passed its check, `core.models.text_onnx`) | torch
    image_tower: str = "auto"  # auto (compiled on a CPU where it passed its check, `core.models.image_onnx`) | torch
    faces: bool = True  # FACES: finding faces and grouping them into people (`flows.face_pass`)
    transcode_cache_bytes: int = 2048 * 1024 * 1024  # videos converted for browsers (`api.transcodes`)

    @property
    def image_dir(self) -> Path:
        """The first folder (the only one, usually)."""
        return self.image_dirs[0]

    @property
    def embedded_database(self) -> bool:
        return not self.database_url

    @property
    def pg_data_dir(self) -> Path:
        return self.data_dir / "postgres"

    @property
    def state_dir(self) -> Path:
        return self.data_dir / "cocoindex"

    @property
    def thumbnail_dir(self) -> Path:
        return self.data_dir / "thumbnails"

    @property
    def transcode_dir(self) -> Path:
        return self.data_dir / "transcodes"

    @property
    def compiled_text_dir(self) -> Path | None:
        """Where compiled text towers are kept; None where queries go through transformers: asked
        for, or a device or precision chosen by hand (the compiled tower runs on the CPU, in int8)."""
        if self.text_tower != "auto" or self.device == "cuda" or self.precision not in ("auto", "int8"):
            return None
        return self.data_dir / "text-towers"

    @property
    def compiled_image_dir(self) -> Path | None:
        """Where compiled image towers are kept; None where pictures go through transformers:
        asked for, on a GPU, or a floating-point precision chosen by hand."""
        if self.image_tower != "auto" or self.device == "cuda" or self.precision not in ("auto", "int8"):
            return None
        return self.data_dir / "image-towers"

    def with_overrides(self, **changes: object) -> Settings:
        if "image_dir" in changes:
            changes["image_dirs"] = (changes.pop("image_dir"),)
        return replace(self, **changes)  # type: ignore[arg-type]


def _path(raw: str) -> Path:
    path = Path(raw).expanduser()
    return path if path.is_absolute() else (PROJECT_ROOT / path)


def _paths(raw: str) -> tuple[Path, ...]:
    folders = tuple(_path(part.strip()) for part in raw.split(os.pathsep) if part.strip())
    if not folders:
        raise SettingsError("IMAGE_DIR names no folder")
    return tuple(dict.fromkeys(folders))


def _model(raw: str) -> str:
    # a relative folder that exists under the project root is a local model, not a hub id
    if raw and not Path(raw).is_absolute() and (PROJECT_ROOT / raw).is_dir():
        return str(PROJECT_ROOT / raw)
    return raw


def _raw(values: Mapping[str, str | None], name: str) -> str:
    return values.get(name) or DEFAULTS[name]


def _int(values: Mapping[str, str | None], name: str, lo: int = 1, hi: int | None = None) -> int:
    raw = _raw(values, name)
    try:
        value = int(raw.replace("_", ""))
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a whole number") from None
    if value < lo:
        raise SettingsError(f"{name}={value} must be at least {lo}")
    if hi is not None and value > hi:
        raise SettingsError(f"{name}={value} must be at most {hi}")
    return value


def _is_auto(raw: str | None) -> bool:
    return (raw or "").strip().lower() in ("", "auto", "0")


def _choice(values: Mapping[str, str | None], name: str, allowed: tuple[str, ...]) -> str:
    value = _raw(values, name).strip().lower()
    if value not in allowed:
        raise SettingsError(f"{name}={value!r} must be one of: {', '.join(allowed)}")
    return value


def _runnable(settings: Settings) -> Settings:
    """The settings, unless they ask for what cannot run together."""
    if settings.precision == "int8" and settings.image_tower == "torch":
        raise SettingsError("PRECISION=int8 needs the compiled image tower; set IMAGE_TOWER=auto or another PRECISION")
    if settings.precision == "int8" and settings.device == "cuda":
        raise SettingsError("PRECISION=int8 runs on the CPU; set DEVICE=cpu or PRECISION=auto")
    return settings


def _bool(values: Mapping[str, str | None], name: str) -> bool:
    raw = (values.get(name) or "").strip().lower() or DEFAULTS[name]
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name}={raw!r} must be 1 or 0 (true/false, yes/no, on/off)")


# scheme://host[:port] and nothing else: browsers send exactly that in Origin, so anything with a
# path or a trailing slash would silently never match
_ORIGIN = re.compile(r"^https?://[^/\s?#]+$", re.IGNORECASE)


def _origins(raw: str | None) -> tuple[str, ...]:
    origins = tuple(o.strip() for o in (raw or "").split(",") if o.strip())
    for origin in origins:
        if origin != "*" and not _ORIGIN.match(origin):
            raise SettingsError(
                f"CORS_ORIGINS: {origin!r} is not an origin; write it as scheme://host[:port], "
                "e.g. https://photos.example.org, without a path"
            )
    return origins


_MEMORY = re.compile(r"^(\d+)\s*(kb|mb|gb|tb)$", re.IGNORECASE)


def _memory(values: Mapping[str, str | None], name: str) -> str:
    """A Postgres memory size such as 2GB or 512MB, written as Postgres wants it; "" for auto."""
    raw = _raw(values, name).strip()
    if _is_auto(raw):
        return ""
    found = _MEMORY.match(raw.replace("_", ""))
    if not found:
        raise SettingsError(f"{name}={raw!r} must be auto or a size with its unit, e.g. 2GB or 512MB")
    unit = found[2].upper()
    return f"{int(found[1])}{'kB' if unit == 'KB' else unit}"


def _token(raw: str | None) -> str:
    token = (raw or "").strip()
    # a header value can carry only visible ASCII; anything else could never be sent back
    if token and not all(33 <= ord(c) <= 126 for c in token):
        raise SettingsError("API_TOKEN may hold only visible ASCII characters (no spaces)")
    return token


def is_loopback_host(host: str) -> bool:
    """True for addresses only this machine can reach: 127.0.0.0/8, ::1 and `localhost`.
    Any other name counts as remote: resolving it would need the network, and it may change."""
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def load_settings(environ: Mapping[str, str] | None = None, env_file: Path | None = None) -> Settings:
    """Build settings from `.env` overlaid with `environ` (default: the process environment)."""
    values: dict[str, str | None] = dict(dotenv_values(env_file or PROJECT_ROOT / ".env"))
    values.update(os.environ if environ is None else environ)
    settings = Settings(
        image_dirs=_paths(_raw(values, "IMAGE_DIR")),
        data_dir=_path(_raw(values, "DATA_DIR")),
        database_url=_raw(values, "DATABASE_URL").strip(),
        clip_model=_model(_raw(values, "CLIP_MODEL").strip()),
        device=_choice(values, "DEVICE", ("auto", "cpu", "cuda")),
        precision=_choice(values, "PRECISION", ("auto", "int8", "float32", "bfloat16", "float16")),
        batch_size=0 if _is_auto(_raw(values, "BATCH_SIZE")) else _int(values, "BATCH_SIZE"),
        max_image_pixels=_int(values, "MAX_IMAGE_PIXELS"),
        scan_interval=float(_int(values, "SCAN_INTERVAL")),
        watch=_choice(values, "WATCH", ("auto", "poll")),
        video_frames=_int(values, "VIDEO_FRAMES"),
        ocr=_choice(values, "OCR", ("auto", "on", "off")),
        faces=_choice(values, "FACES", ("on", "off")) == "on",
        text_tower=_choice(values, "TEXT_TOWER", ("auto", "torch")),
        image_tower=_choice(values, "IMAGE_TOWER", ("auto", "torch")),
        host=_raw(values, "HOST").strip(),
        port=_int(values, "PORT"),
        upload_max_bytes=_int(values, "UPLOAD_MAX_MB") * 1024 * 1024,
        transcode_cache_bytes=_int(values, "TRANSCODE_CACHE_MB") * 1024 * 1024,
        search_ef=_int(values, "SEARCH_EF", lo=10),
        hnsw_ef_construction=_int(values, "HNSW_EF_CONSTRUCTION", lo=32, hi=1000),  # pgvector: 2 m (16) to 1000
        cors_origins=_origins(_raw(values, "CORS_ORIGINS")),
        api_token=_token(_raw(values, "API_TOKEN")),
        allow_remote_without_token=_bool(values, "ALLOW_REMOTE_WITHOUT_TOKEN"),
        pg_shared_buffers=_memory(values, "PG_SHARED_BUFFERS"),
        pg_effective_cache_size=_memory(values, "PG_EFFECTIVE_CACHE_SIZE"),
        pg_maintenance_work_mem=_memory(values, "PG_MAINTENANCE_WORK_MEM"),
        pg_work_mem=_memory(values, "PG_WORK_MEM"),
        pg_parallel_workers=0 if _is_auto(_raw(values, "PG_PARALLEL_WORKERS")) else _int(values, "PG_PARALLEL_WORKERS"),
    )
    return _runnable(settings)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read on first use."""
    return load_settings()
