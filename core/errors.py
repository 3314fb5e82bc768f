"""Errors a user can act on. The command line prints their message as one line, never a traceback."""


class UserError(Exception):
    """The message says what is wrong and what to do about it."""
