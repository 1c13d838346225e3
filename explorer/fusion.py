"""Fused settings: several (t, block) settings probed as one.

A `Fused` holds member `Setting`s and a mode:
- `"concat"`: the members' features side by side, `(N, D1 + D2 + ...)`, for linear, k-NN and
  MLP; the `fusion` head (`explorer.probes.fusion`) reads them as one token set instead;
- `"mean"`: DIFT's ensemble, the element-wise mean of members of one shape (typically one
  setting under several noise seeds), `(N, D)`.

Text form (CLI `--fuse`, the sweep table's `layer` column): members joined by `+`, each
`BLOCK@T`, optionally `~SEED` and `/POOL`; a mean starts with `mean:`. Examples:
`"24@150+19@90"`, `"mean:24@150~0+24@150~1"`, `"24@150/map16+19@90/4"`. BLOCK is the block
index or layer name; a member without `/POOL` takes the pool given beside the text.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from explorer.errors import ExplorerError

MODES = ("concat", "mean")
MEAN_PREFIX = "mean:"


@dataclass(frozen=True)
class Fused:
    """Member settings (order matters: it fixes the column order) and how they combine."""

    members: tuple[Any, ...]  # explorer.workspace.Setting
    mode: str = "concat"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ExplorerError(
                f"unknown fusion mode '{self.mode}'; choose from {', '.join(MODES)}"
            )
        if len(self.members) < 2:
            raise ExplorerError("a fused setting needs at least 2 members")
        if len(set(self.members)) != len(self.members):
            raise ExplorerError("a fused setting lists the same setting twice")
        if any(m.is_pixels for m in self.members):
            raise ExplorerError("raw pixels cannot be a member of a fused setting")

    @property
    def is_ensemble(self) -> bool:
        """A mean over noise draws of one (t, layer, pool)."""
        return self.mode == "mean" and len({(m.t, m.layer, m.pool) for m in self.members}) == 1


def is_fused_text(text: str) -> bool:
    """Whether a table's `layer` value is a fused setting's text (it has a `@`)."""
    return isinstance(text, str) and "@" in text


def parse_fused(text: str) -> tuple[list[tuple[str, str, str | None, str | None]], str]:
    """`"24@150~1/2+mid@90"` -> ([(block, t, seed or None, pool or None), ...], mode), unresolved."""
    body = str(text).strip()
    mode = "concat"
    if body.lower().startswith(MEAN_PREFIX):
        body, mode = body[len(MEAN_PREFIX) :], "mean"
    members = []
    for part in body.split("+"):
        part = part.strip()
        rest, _, pool = part.partition("/")
        rest, _, seed = rest.partition("~")
        block, at, t = rest.partition("@")
        if not at or not block.strip() or not t.strip():
            raise ExplorerError(
                f"fused setting '{text}': write members as BLOCK@T joined by '+' "
                f"(e.g. 24@150+19@90), got '{part}'"
            )
        members.append((block.strip(), t.strip(), seed.strip() or None, pool.strip() or None))
    if len(members) < 2:
        raise ExplorerError(f"fused setting '{text}' has one member; join at least two with '+'")
    return members, mode


def format_fused(f: Fused, block_of: Callable[[str], int | str], pool: str | None = None) -> str:
    """The text form of `f`: members as `BLOCK@T` (`~SEED` if not 0, `/POOL` if not `pool`).

    `block_of(layer_name)` gives the block index (or name) written. `parse_fused` reads it back.
    """
    parts = []
    for m in f.members:
        s = f"{block_of(m.layer)}@{m.t}" + (f"~{m.seed}" if m.seed else "")
        parts.append(s + (f"/{m.pool}" if m.pool != pool else ""))
    return (MEAN_PREFIX if f.mode == "mean" else "") + "+".join(parts)


def shared_pool(f: Fused) -> str:
    """The members' pooling when they share one, else their poolings joined by `+`."""
    pools = list(dict.fromkeys(m.pool for m in f.members))
    return pools[0] if len(pools) == 1 else "+".join(pools)


def fuse_features(arrays: Sequence[np.ndarray], mode: str) -> np.ndarray:
    """Member features `[(N, D_i)]` -> `(N, sum D_i)` (concat, dtype kept) or `(N, D)` float32 (mean).

    For "mean" every member must have the same shape (maps `(N, C, h, w)` too).
    """
    arrays = [np.asarray(a) for a in arrays]
    if len({len(a) for a in arrays}) != 1:
        raise ExplorerError(
            f"fused members have different image counts: {[len(a) for a in arrays]}"
        )
    if mode == "concat":
        return np.hstack([a.reshape(len(a), -1) for a in arrays])
    if len({a.shape for a in arrays}) != 1:
        raise ExplorerError(
            "a mean (ensemble) fuses members of one shape, got "
            + ", ".join("x".join(map(str, a.shape[1:])) for a in arrays)
        )
    out = np.zeros(arrays[0].shape, dtype=np.float32)
    for a in arrays:
        out += a.astype(np.float32)
    return out / len(arrays)


@dataclass(frozen=True)
class FusedGain:
    """A fused setting's result against its two members' on the same test images.

    `vs_a`, `vs_b`: fused top-1 minus member A's / B's, paired-bootstrap `PairedDiff`s in [-1, 1].
    """

    fused: Any  # ProbeResult
    vs_a: Any  # PairedDiff
    vs_b: Any

    @property
    def vs_best(self):
        """The difference against the better member (the one fusing must beat)."""
        return self.vs_a if self.vs_a.diff <= self.vs_b.diff else self.vs_b

    def words(self) -> str:
        return f"{self.vs_a.words('A+B', 'A')} · {self.vs_b.words('A+B', 'B')}"


def fused_gain(ra, rb, rf, y_true: np.ndarray) -> FusedGain:
    """Paired comparisons of the fused result `rf` with members' `ra`, `rb` over labels `(N,)`."""
    from explorer.probes.metrics import compare_results

    return FusedGain(rf, compare_results(rf, ra, y_true), compare_results(rf, rb, y_true))
