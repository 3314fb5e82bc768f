"""What the decoders say about a file, in Sightline's log: one line per file, never raw on stderr.

Decoders speak two ways. Pillow and its plugins call `warnings.warn` ("Truncated File Read",
"Corrupt EXIF data", "Invalid APNG"); libtiff, a C library inside Pillow, prints its errors to
stderr itself ("ZIPDecode: Decoding error at scanline 0") unless someone gives it a handler.

`listening(name)` hears both while one file is decoded and logs what was said as one line under
`sightline.media`: at debug level when the file was decoded all the same, as a warning beside the
failure when it was not; a file decoded again that says the same again (for its text, its faces)
gets no second line. Files are decoded on several threads at once, and `warnings.catch_warnings`
swaps module-wide state that another thread may be restoring at that very moment (a warning lands in
the wrong list, or on the terminal); so what is heard goes to a list of the decoding thread's own,
and the module-wide parts (a `showwarning` hook, a filter that lets the decoders' warnings through
every time rather than once per process, libtiff's handler) are put in place once and re-checked
on every file, since a test harness's own `catch_warnings` may have taken them away in between.
Outside a file's decoding, a warning goes where it went before.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import platform
import threading
import warnings
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from PIL import Image

log = logging.getLogger("sightline.media")

# the modules whose warnings are about a file being decoded: Pillow, its plugins, LibRaw's binding,
# and Sightline's own readers (Pillow often attributes a warning to its caller)
_DECODER_MODULES = r"(PIL|pillow_heif|pillow_jxl|rawpy|core\.media)(\.|$)"
_MOST_MESSAGES = 5
_local = threading.local()
_REMEMBERED = 4096
_logged: OrderedDict[tuple[str, str], None] = OrderedDict()
_lock = threading.Lock()
_hooked: dict[str, Any] = {"previous": None}
# libtiff's TIFFErrorHandler: void (*)(const char *module, const char *fmt, va_list ap); a va_list
# reaches a function as a pointer on these machines (x86-64 and AArch64 pass the structure by address)
_TIFF_HANDLER = ctypes.CFUNCTYPE(None, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p)
_PILLOWS_NAME = "tempfile.tif"
_VA_LIST_BY_ADDRESS = platform.machine().lower() in ("x86_64", "amd64", "aarch64", "arm64")


def heard(message: str) -> None:
    """Note what a decoder said about the file this thread is decoding (logged at debug level when
    no file is being decoded)."""
    said: list[str] | None = getattr(_local, "said", None)
    if said is None:
        log.debug("a decoder said: %s", message)
    else:
        said.append(message)


@contextmanager
def listening(name: str) -> Iterator[None]:
    """Hear what the decoders say while `name` is decoded in this thread; log it as one line."""
    _hook_warnings()
    hear_libtiff()
    said: list[str] = []
    outer = getattr(_local, "said", None)
    _local.said = said
    failure: BaseException | None = None
    try:
        yield
    except BaseException as exc:
        failure = exc
        raise
    finally:
        _local.said = outer
        line = one_line(said) if said else ""
        if line and _first_time(name, line):
            if failure is None:
                log.debug("%s: decoded; the decoder said: %s", name, line)
            else:
                log.warning("%s: %s; the decoder said: %s", name, failure, line)


def _first_time(name: str, line: str) -> bool:
    """Whether this file's decoder said this for the first time lately: a file decoded again (for its
    text, its faces, a thumbnail) and saying the same gets no second line."""
    with _lock:
        if (name, line) in _logged:
            _logged.move_to_end((name, line))
            return False
        _logged[(name, line)] = None
        if len(_logged) > _REMEMBERED:
            _logged.popitem(last=False)
        return True


def one_line(said: list[str]) -> str:
    """Each thing said once, in order, on one line; at most a few, then how many more."""
    distinct = list(dict.fromkeys(" ".join(m.split()) for m in said if m.strip()))
    more = len(distinct) - _MOST_MESSAGES
    return "; ".join(distinct[:_MOST_MESSAGES]) + (f" (and {more} more)" if more > 0 else "")


def _hook_warnings() -> None:
    if warnings.showwarning is not _show:
        _hooked["previous"] = warnings.showwarning
        warnings.showwarning = _show
    if not any(f[0] == "always" and f[3] is not None and f[3].pattern == _DECODER_MODULES for f in warnings.filters):
        # last: it stands in for Python's default (show a warning once per place in the code) and
        # overrides no filter anyone set (`-W ignore`, the default that ignores DeprecationWarning)
        warnings.filterwarnings("always", module=_DECODER_MODULES, append=True)


def _show(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    if getattr(_local, "said", None) is None:  # no file is being decoded on this thread
        previous = _hooked["previous"] or warnings._showwarning_orig  # type: ignore[attr-defined]
        previous(message, category, filename, lineno, file, line)
        return
    if issubclass(category, Image.DecompressionBombWarning):
        # the picture is far larger than it should be: refused, not decoded with a note
        raise Image.DecompressionBombError(str(message))
    heard(str(message))


@functools.cache
def hear_libtiff() -> bool:
    """Give libtiff (the copy Pillow's decoders use) an error handler that hears instead of printing
    to stderr; whether it could. Pillow silences libtiff's warnings itself, not its errors."""
    path = _libtiff_path()
    if path is None:
        return False
    try:
        libtiff = ctypes.CDLL(path)  # the library already mapped: the same one Pillow calls
        libtiff.TIFFSetErrorHandler.argtypes = [_TIFF_HANDLER]
        libtiff.TIFFSetErrorHandler.restype = ctypes.c_void_p
        libtiff.TIFFSetWarningHandler.argtypes = [_TIFF_HANDLER]
        libtiff.TIFFSetWarningHandler.restype = ctypes.c_void_p
        libtiff.TIFFSetErrorHandler(_ON_LIBTIFF)
        libtiff.TIFFSetWarningHandler(_ON_LIBTIFF)
    except (OSError, AttributeError):
        return False
    return True


def _libtiff_path() -> str | None:
    """Where the libtiff that Pillow's `_imaging` uses is: the one this process mapped from the
    folder of libraries Pillow's wheels carry (or the only one it mapped, for a Pillow built on
    the system's), or on macOS that folder's. None where it is linked in (Windows) or unclear."""
    from PIL import _imaging

    pillow = Path(_imaging.__file__).resolve().parent
    carried = (pillow.parent / "pillow.libs", pillow / ".dylibs")  # Linux's and macOS's wheels
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        maps = ""
    mapped = set()
    for line in maps.splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and Path(fields[5]).name.startswith("libtiff"):
            mapped.add(fields[5])
    for path in sorted(mapped):
        if Path(path).parent in carried:
            return path
    if len(mapped) == 1:
        return mapped.pop()
    dylibs = sorted(carried[1].glob("libtiff*.dylib")) if not mapped else []
    return str(dylibs[0]) if dylibs else None


@functools.cache
def _vsnprintf() -> Any:
    libc = ctypes.CDLL(None)
    libc.vsnprintf.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_void_p]
    libc.vsnprintf.restype = ctypes.c_int
    return libc.vsnprintf


def _libtiff_said(module: bytes | None, fmt: bytes | None, args: int | None) -> None:
    try:
        text = (fmt or b"").decode(errors="replace")
        if _VA_LIST_BY_ADDRESS and fmt:
            buffer = ctypes.create_string_buffer(1024)
            _vsnprintf()(buffer, len(buffer), fmt, args)
            text = buffer.value.decode(errors="replace")
        where = (module or b"").decode(errors="replace")
        where = "" if where == _PILLOWS_NAME else where  # the name Pillow gives every file it hands libtiff
        heard(f"libtiff: {where}: {text}" if where else f"libtiff: {text}")
    except Exception:  # noqa: BLE001 (an exception must not cross back into C)
        return


_ON_LIBTIFF = _TIFF_HANDLER(_libtiff_said)
