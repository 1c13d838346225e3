"""The CLI's messages on stderr through `logging`: -v shows debug, -q only warnings, -qq only errors.

Results stay on stdout (plain `print`); everything about the run goes to the "explorer" logger.
"""

from __future__ import annotations

import logging
import sys

LOGGER = "explorer"


class _Stderr(logging.StreamHandler):
    """A handler that writes to whatever `sys.stderr` is now (tests swap it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value):
        pass


def setup(verbose: int = 0, quiet: int = 0) -> logging.Logger:
    """Configure the "explorer" logger for a CLI run; returns it. Level: INFO, -v DEBUG, -q WARNING."""
    level = logging.INFO + 10 * (min(quiet, 2) - min(verbose, 1))
    log = logging.getLogger(LOGGER)
    for h in list(log.handlers):
        if isinstance(h, _Stderr):
            log.removeHandler(h)
    handler = _Stderr()
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(handler)
    log.setLevel(level)
    log.propagate = False
    return log


def get(name: str = "cli") -> logging.Logger:
    return logging.getLogger(f"{LOGGER}.{name}")
