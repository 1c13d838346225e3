"""The converters' one completeness check: every checkpoint key used, every parameter set."""

from __future__ import annotations

from explorer.errors import ExplorerError


def check_complete(
    state: dict, used: set[str], target: dict, out: dict, bad: list[str], mismatch: str
) -> None:
    """Raise one ExplorerError, `mismatch: ...`, listing checkpoint keys of `state` not `used`,
    `target` parameters missing from `out`, keys of `out` the model lacks and shape mismatches
    (`bad`); nothing when the conversion is complete."""
    unused = sorted(set(state) - used)
    unset = sorted(set(target) - set(out))
    extra = sorted(set(out) - set(target))
    parts = [
        f"{what} ({len(keys)}): {short(keys)}"
        for what, keys in (
            ("checkpoint keys not used", unused),
            ("model parameters not set", unset),
            ("converted keys the model lacks", extra),
            ("shape mismatches", bad),
        )
        if keys
    ]
    if parts:
        raise ExplorerError(f"{mismatch}: " + "; ".join(parts))


def short(keys: list[str], n: int = 8) -> str:
    """The first `n` keys, then how many more."""
    return ", ".join(keys[:n]) + (f", ... and {len(keys) - n} more" if len(keys) > n else "")
