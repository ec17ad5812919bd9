"""One fact, one name: no two tags of a run or version may hold the same value unless they are
listed here as the same fact recorded twice on purpose."""

from __future__ import annotations

import re
from collections.abc import Mapping

# (tag, tag) pairs that may share a value, and why
ALLOWED_SAME_VALUE = {
    frozenset({"mlflow.user", "owner.host"}): "a user named like the machine is no duplicate",
}
QUANTITY = re.compile(r"^(-?\d+(\.\d+)?|true|false)$")  # counts and flags, not identifiers


def repeated_facts(tags: Mapping[str, str]) -> list[tuple[str, str, str]]:
    """(tag, tag, value) for every two tags holding one identifying value (not a number or a
    flag) that are not an allowed pair."""
    found = []
    items = sorted((k, v) for k, v in tags.items() if v and not QUANTITY.match(v))
    for i, (key, value) in enumerate(items):
        for other, other_value in items[i + 1 :]:
            if value == other_value and frozenset({key, other}) not in ALLOWED_SAME_VALUE:
                found.append((key, other, value))
    return found
