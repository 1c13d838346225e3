"""Why this t: how much of a block's features at each noise level the clean image still explains.

For one block, the features at level t are regressed (ridge, fitted on train images, scored on
test images) on the same block's features at the cleanest level (t=0) and, separately, at the
noisiest (t=T-1). The R² from the clean features falls as noise grows: where it drops is where
the image signal fades from the block; the R² from the noisiest features rises towards the end
(CleanDIFT issue 13's plot). Beside the probe accuracy at each t, it shows why the best t is best.
"""

from __future__ import annotations

import numpy as np

RIDGE_ALPHA = 1.0  # on standardised inputs; relative to the number of fitting images


def ridge_r2(
    x_fit: np.ndarray,
    y_fit: np.ndarray,
    x_eval: np.ndarray,
    y_eval: np.ndarray,
    alpha: float = RIDGE_ALPHA,
) -> float:
    """Share of the variance of `y_eval (N, Dy)` explained by a ridge map from `x_eval (N, Dx)`,
    the map fitted on `(x_fit, y_fit)`: `1 - SSE / SST`, summed over output dimensions
    (variance-weighted R²). Inputs are standardised with the fitting images' statistics."""
    x_fit, y_fit = np.asarray(x_fit, np.float64), np.asarray(y_fit, np.float64)
    x_eval, y_eval = np.asarray(x_eval, np.float64), np.asarray(y_eval, np.float64)
    mx, sx = x_fit.mean(0), x_fit.std(0) + 1e-8
    my = y_fit.mean(0)
    a, b = (x_fit - mx) / sx, y_fit - my
    n, d = a.shape
    lam = alpha * n
    if d <= n:  # primal: (A'A + lam I)^-1 A'B
        w = np.linalg.solve(a.T @ a + lam * np.eye(d), a.T @ b)
    else:  # dual: A'(AA' + lam I)^-1 B
        w = a.T @ np.linalg.solve(a @ a.T + lam * np.eye(n), b)
    pred = ((x_eval - mx) / sx) @ w + my
    sst = ((y_eval - y_eval.mean(0)) ** 2).sum()
    return float(1.0 - ((y_eval - pred) ** 2).sum() / sst) if sst > 0 else float("nan")


def profile_rows(
    feats: dict[int, tuple[np.ndarray, np.ndarray]], clean: int, noisiest: int
) -> np.ndarray:
    """`(K, 2)`: for each level t in `feats` (ascending), R² of its test features from the clean
    level's and from the noisiest level's; `feats[t] = (train (N, D), test (M, D))`."""
    out = []
    for t in sorted(feats):
        tr, te = feats[t]
        row = []
        for src in (clean, noisiest):
            s_tr, s_te = feats[src]
            row.append(ridge_r2(s_tr, tr, s_te, te))
        out.append(row)
    return np.asarray(out, dtype=np.float64)
