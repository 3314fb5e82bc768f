"""Errors a user can cause or fix: the one hierarchy.

Each says in one line what is wrong and what to do. The HTTP API maps the kind to a status code
(`api.errors`), the command line prints the message after `error:` and exits 2 (`main.py`); neither
ever shows a traceback for one of these.
"""

from __future__ import annotations

from typing import Any


class UserError(Exception):
    """The message says what is wrong and what to do about it."""

    def details(self) -> dict[str, Any]:
        """Facts beyond the message that an API client can use (e.g. where in a query)."""
        return {}


class BadRequest(UserError, ValueError):
    """A request or a setting that cannot work as given; fixing it is up to the user."""


class NotFound(UserError, LookupError):
    """What was asked for does not exist (any more)."""


class Unsupported(UserError):
    """Content Sightline cannot use: a file that is not a usable picture."""


class ImageError(Unsupported):
    """A file that cannot be indexed; the message is the one-line reason shown to users."""

    @classmethod
    def too_large(cls, width: int, height: int, limit: int) -> ImageError:
        return cls(
            f"image too large: {width}x{height} pixels is over the limit of {limit:,} "
            "(raise MAX_IMAGE_PIXELS to index it)"
        )


class Conflict(UserError):
    """A change that clashes with what is already there (a name another person has); the message
    says how to do what was meant."""


class TooLarge(UserError):
    """More than a configured limit allows."""


class ReadOnly(UserError):
    """A change asked of a server whose database only reads (a streaming replica): it must be
    asked of a server on the primary, which the message names."""


class Unavailable(UserError, RuntimeError):
    """A part Sightline needs is away or not ready (the database, the model); it may come back."""


def first_line(exc: BaseException) -> str:
    """An exception as one line: the first line of its message, or its type's name."""
    lines = [line.strip() for line in str(exc).strip().splitlines()]
    return lines[0][:300] if lines and lines[0] else type(exc).__name__
