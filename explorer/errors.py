"""User-facing errors: one line that says what was wrong and what to do."""

from __future__ import annotations

import difflib


class ExplorerError(Exception):
    """An error caused by user input or the environment, shown as one line, never a traceback."""


def suggest(name: str, choices: list[str], n: int = 3) -> str:
    """`" Did you mean: a, b?"` for the closest of `choices`, or `""` when none is close."""
    close = difflib.get_close_matches(name, choices, n=n, cutoff=0.5)
    return f" Did you mean: {', '.join(close)}?" if close else ""
