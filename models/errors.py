"""The one base class of every error coconet reports to a user as a single line."""


class CoconetError(Exception):
    """An expected failure (bad input, missing file, invalid params): message, non-zero exit."""
