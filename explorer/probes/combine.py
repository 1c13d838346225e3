"""Fused settings as probe input: the members' features combined, and the fused probe's gain.

`explorer.settings.Fused` names the members and the mode; `fuse_features` builds the one input
the heads read, and `fused_gain` compares a fused result with its members' on the same images.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from explorer.errors import ExplorerError
from explorer.probes.metrics import PairedDiff, ProbeResult, compare_results


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

    fused: ProbeResult
    vs_a: PairedDiff
    vs_b: PairedDiff

    @property
    def vs_best(self):
        """The difference against the better member (the one fusing must beat)."""
        return self.vs_a if self.vs_a.diff <= self.vs_b.diff else self.vs_b

    def words(self) -> str:
        return f"{self.vs_a.words('A+B', 'A')} · {self.vs_b.words('A+B', 'B')}"


def fused_gain(ra, rb, rf, y_true: np.ndarray) -> FusedGain:
    """Paired comparisons of the fused result `rf` with members' `ra`, `rb` over labels `(N,)`."""
    return FusedGain(rf, compare_results(rf, ra, y_true), compare_results(rf, rb, y_true))
