"""Two models side by side, linked: a block of one model to the block of the other at the same
depth (fraction of the forward pass), a level t of one to the other's level with the same log
SNR (the noise axis every family shares). Pure (no Streamlit).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def linked_block(index: int, n_from: int, n_to: int) -> int:
    """The position among `n_to` blocks at the same fraction of depth as position `index` of
    `n_from` (first to first, last to last): `linked_block(6, 13, 9) == 4`."""
    if n_from <= 1 or n_to <= 1:
        return 0
    return int(round(index / (n_from - 1) * (n_to - 1)))


def depth_text(index: int, n: int) -> str:
    """ "block 7 of 13 (50% deep)"."""
    frac = 0.0 if n <= 1 else index / (n - 1)
    return f"block {index + 1} of {n} ({100 * frac:.0f}% deep)"


def linked_t(t: int, log_snr_from: Callable[[int], float], log_snr_to: np.ndarray) -> int:
    """The level of the other model whose log SNR is closest to that of level `t` of this one;
    `log_snr_to` `(T_to,)` holds the other model's log SNR at every level (±inf at the ends
    compare as the largest/smallest finite values)."""
    target = float(log_snr_from(int(t)))
    other = np.asarray(log_snr_to, dtype=np.float64)
    finite = other[np.isfinite(other)]
    if not finite.size:
        return 0
    lo, hi = finite.min(), finite.max()
    other = np.clip(np.nan_to_num(other, posinf=hi, neginf=lo), lo, hi)
    target = float(np.clip(np.nan_to_num(target, posinf=hi, neginf=lo), lo, hi))
    return int(np.argmin(np.abs(other - target)))
