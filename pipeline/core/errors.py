"""Errors: every expected failure derives from :class:`CoconetError` (defined in ``models`` so
the network code shares it); the command line prints it as one line and exits non-zero."""

from models.errors import CoconetError

__all__ = ["CoconetError"]


class InputError(CoconetError, ValueError):
    """A file a stage reads is missing what it needs, or holds something invalid."""


__all__ += ["InputError"]

EXPECTED_ERRORS = (CoconetError, FileNotFoundError)  # what the user can fix: one line, exit 1
__all__ += ["EXPECTED_ERRORS"]
