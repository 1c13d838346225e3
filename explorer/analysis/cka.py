"""Linear CKA (Kornblith et al. 2019) between feature sets, plain or debiased.

Plain CKA is `||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)` on column-centred features.
The debiased variant swaps each HSIC for Song et al.'s unbiased estimator, as Nguyen et al.
(2021) recommend when N is not much larger than D; it can be slightly negative.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from explorer.errors import ExplorerError


def _centred(x: np.ndarray, dtype=np.float64) -> np.ndarray:
    """`(N, D)` -> column-centred copy in `dtype` (means taken in float64)."""
    x = np.asarray(x)
    if x.ndim != 2:
        raise ExplorerError(f"CKA takes (N, D) feature matrices, got shape {x.shape}")
    return (x - x.mean(0, dtype=np.float64)).astype(dtype, copy=False)


def _check_n(n: int, debiased: bool) -> None:
    if n < (4 if debiased else 2):
        raise ExplorerError(f"CKA needs at least {4 if debiased else 2} examples, got {n}")


def _debias(xty: float, rows_x: np.ndarray, rows_y: np.ndarray, n: int) -> float:
    """Song et al.'s unbiased linear HSIC (times n(n-3)) from feature-space quantities.

    `xty` is `||Xc^T Yc||_F^2`; `rows_*` are the squared row norms `(N,)` of Xc and Yc.
    """
    return float(
        xty - n / (n - 2) * rows_x @ rows_y + rows_x.sum() * rows_y.sum() / ((n - 1) * (n - 2))
    )


def linear_cka(x: np.ndarray, y: np.ndarray, *, debiased: bool = False) -> float:
    """Linear CKA between `x` `(N, D1)` and `y` `(N, D2)`, rows being the same N examples."""
    xc, yc = _centred(x), _centred(y)
    n = xc.shape[0]
    if yc.shape[0] != n:
        raise ExplorerError(f"CKA compares the same examples: got {n} and {yc.shape[0]} rows")
    _check_n(n, debiased)
    xy = float(np.sum((xc.T @ yc) ** 2))
    xx = float(np.sum((xc.T @ xc) ** 2))
    yy = float(np.sum((yc.T @ yc) ** 2))
    if debiased:
        rx, ry = np.einsum("ij,ij->i", xc, xc), np.einsum("ij,ij->i", yc, yc)
        xy, xx, yy = _debias(xy, rx, ry, n), _debias(xx, rx, rx, n), _debias(yy, ry, ry, n)
    return xy / np.sqrt(xx * yy)


def _gram(x: np.ndarray, debiased: bool) -> np.ndarray:
    """Centred linear Gram `(N, N)`; debiased: Kornblith's unbiased centring (zero diagonal).

    With it, `<G_x, G_y>` is proportional to the unbiased HSIC, so CKA is the cosine
    between the flattened Grams in both variants.
    """
    xc = _centred(x)
    g = xc @ xc.T
    if debiased:
        n = len(g)
        np.fill_diagonal(g, 0.0)
        means = g.sum(0) / (n - 2)
        means -= means.sum() / (2 * (n - 1))
        g -= means[:, None]
        g -= means[None, :]
        np.fill_diagonal(g, 0.0)
    return g


def cka_matrix(
    features: Sequence[np.ndarray], *, debiased: bool = False, max_gram_gb: float = 1.0
) -> np.ndarray:
    """Pairwise linear CKA `(K, K)` between K feature sets `(N, D_k)` on the same N examples.

    Each set is centred (and its Gram built) once. When the K Grams `(N, N)` fit in
    `max_gram_gb` (float32) they are compared by one matrix product; otherwise every pair
    goes through the feature-space formula, costing `N * D_i * D_j` per pair.
    """
    k = len(features)
    if k == 0:
        return np.zeros((0, 0))
    ns = {np.asarray(f).shape[0] for f in features}
    if len(ns) != 1:
        raise ExplorerError(f"CKA compares the same examples: row counts differ {sorted(ns)}")
    n = ns.pop()
    _check_n(n, debiased)
    if k * n * n * 4 <= max_gram_gb * 2**30:
        grams = np.stack([_gram(f, debiased).astype(np.float32).ravel() for f in features])
        prod = (grams @ grams.T).astype(np.float64)
    else:
        cs = [_centred(f, np.float32) for f in features]
        rows = [np.einsum("ij,ij->i", c, c, dtype=np.float64) for c in cs]
        prod = np.empty((k, k))
        for i in range(k):
            for j in range(i, k):
                v = float(np.sum((cs[i].T @ cs[j]).astype(np.float64) ** 2))
                prod[i, j] = prod[j, i] = _debias(v, rows[i], rows[j], n) if debiased else v
    norms = np.sqrt(np.diag(prod))
    return prod / np.outer(norms, norms)


def neighbour_mean(matrix: np.ndarray) -> float | None:
    """Mean CKA between consecutive entries (the first off-diagonal of a `(K, K)` matrix); None if K < 2."""
    above = np.diag(np.asarray(matrix, dtype=float), 1)
    return float(np.mean(above)) if len(above) else None
