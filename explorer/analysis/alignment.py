"""How alike two feature sources are on the same N images: debiased linear CKA, CKNNA, mutual k-NN.

Pure functions of `(N, D)` arrays (rows: the same images in the same order), and the map
builder `alignment_map`, which compares every source of one list with every source of another
(block x block, block x t), preparing each source once: its k-NN graph and its centred features
and self-similarity are computed once and reused by every cell of the map.

- **CKA** is the debiased linear CKA of `explorer.analysis.cka` (Kornblith et al. 2019 with
  Song et al.'s unbiased HSIC, as Nguyen et al. 2021 recommend). Invariant to orthogonal
  transforms and isotropic scaling of either source.
- **Mutual k-NN** (Huh et al. 2024, "The Platonic Representation Hypothesis"): each image's k
  nearest neighbours (inner product of L2-normalised rows, i.e. cosine; the image itself
  excluded) in each source; the mean over images of the fraction of neighbours shared.
- **CKNNA** (the same paper; REPA reports it): CKA restricted to mutual neighbours. With
  `K = X X^T`, `L = Y Y^T` (normalised rows) and the mask `M_ij = 1` where j is among i's k
  nearest neighbours in *both* sources (i != j), `A = M * K`, `B = M * L`, and
  `CKNNA = HSIC_u(A, B) / sqrt(HSIC_u(K_K, K_K) HSIC_u(L_L, L_L))`, where `K_K` is K on the
  entries of its own k-NN graph and `HSIC_u` is Song et al.'s unbiased estimator (which centres
  the kernels implicitly). This is the authors' code's definition; we drop the `+1e-6` its
  denominator carries, so CKNNA(X, X) is exactly 1. Every quantity is a sum over the at most
  N*k mask entries, so after the k-NN graphs it costs O(N k), not O(N^2).

Normalising rows (`normalize=True`, the authors' default) makes the k-NN metrics invariant to
any positive scaling of each image's features.

**Intervals.** `alignment_map` gives a bootstrap interval over images (`n_boot` resamples of
the N images with replacement, the same resamples for every cell). Each metric is a ratio of
sums over pairs of images (CKA: all pairs; the k-NN metrics: the mask's pairs); a resample
weights image i by its count w_i, and each sum is taken to first order in the weights (its
Hajek projection: `S_w = S + sum_i (w_i - 1) s_i`, with s_i the terms image i takes part in),
with the neighbour graphs and the centring held at their full-sample values. That costs one
`(n_boot, N) x (N, c)` product per cell instead of recomputing the k-NN graphs per resample.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from explorer.analysis.cka import linear_cka
from explorer.errors import ExplorerError

METRICS = ("cka", "cknna", "mutual_knn")
ALIASES = {"mknn": "mutual_knn", "mutual-knn": "mutual_knn", "mutualknn": "mutual_knn"}
DEFAULT_K = 10
DEFAULT_BOOT = 100
BLOCK = 2048  # rows per block of the k-NN search (two (BLOCK, BLOCK) tiles in memory)
EXACT_WORK = 2**27  # N*N*D up to this: the k-NN search runs in float64 (exact ties and values)


def parse_metrics(spec: str | Sequence[str]) -> tuple[str, ...]:
    """ "cka,cknna" -> ("cka", "cknna"); a one-line error naming the metrics for anything else."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    out = []
    for raw in items:
        name = ALIASES.get(str(raw).strip().lower(), str(raw).strip().lower())
        if not name:
            continue
        if name not in METRICS:
            close = difflib.get_close_matches(name, METRICS, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ExplorerError(f"unknown metric '{raw}'{hint}; choose from {', '.join(METRICS)}")
        if name not in out:
            out.append(name)
    if not out:
        raise ExplorerError(f"no metric given; choose from {', '.join(METRICS)}")
    return tuple(out)


def check_k(k, n: int, metric: str = "mutual_knn") -> int:
    """k as an int in [1, N) ([2, N) for CKNNA), else a one-line ExplorerError."""
    try:
        k = int(k)
    except (TypeError, ValueError):
        raise ExplorerError(f"k must be a whole number, not {k!r}") from None
    low = 2 if metric == "cknna" else 1
    if k < low:
        raise ExplorerError(f"k must be at least {low} for {metric}, got {k}")
    if k >= n:
        raise ExplorerError(
            f"k={k} neighbours need more than {k} images, got {n}; use a smaller --k or more images"
        )
    return k


def _mm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """`a @ b` through torch, so it runs on torch's threads (`torch.set_num_threads`), not on
    numpy's BLAS pool, whose spinning threads make small products slow on a busy machine."""
    import torch  # already loaded by the k-NN search; see `_rows`

    return (
        torch.from_numpy(np.ascontiguousarray(a)) @ torch.from_numpy(np.ascontiguousarray(b))
    ).numpy()


def _rows(x: np.ndarray, normalize: bool, dtype):
    import torch  # the k-NN search only: the CLI's help reads METRICS without loading torch

    t = torch.as_tensor(np.asarray(x), dtype=dtype)
    if t.ndim != 2:
        raise ExplorerError(f"alignment takes (N, D) feature matrices, got shape {tuple(t.shape)}")
    if normalize:
        norms = t.norm(dim=1, keepdim=True)
        t = t / torch.where(norms > 0, norms, torch.ones_like(norms))
    return t


@dataclass(frozen=True)
class Neighbours:
    """A source's k-NN graph: `idx (N, k)` nearest first (never the image itself) and `vals
    (N, k)` the inner products there (of normalised rows: cosines)."""

    idx: np.ndarray
    vals: np.ndarray

    @property
    def n(self) -> int:
        return len(self.idx)

    @property
    def k(self) -> int:
        return self.idx.shape[1]


def knn(
    x: np.ndarray, k: int = DEFAULT_K, *, normalize: bool = True, block: int = BLOCK
) -> Neighbours:
    """Each row's `k` nearest rows by inner product (cosine when `normalize`), itself excluded.

    Brute force over tiles of the Gram matrix, each tile computed once for both its row block
    and its column block (the Gram is symmetric: half the products), each row's candidates
    merged by a top-k. Never holds the N x N matrix. float64 for small problems, float32 else.
    """
    import torch  # the k-NN search only: the CLI's help reads METRICS without loading torch

    n = int(np.shape(x)[0])
    k = check_k(k, n)
    d = int(np.shape(x)[1]) if np.ndim(x) == 2 else 0
    dtype = torch.float64 if n * n * max(d, 1) <= EXACT_WORK else torch.float32
    xt = _rows(x, normalize, dtype).contiguous()
    starts = list(range(0, n, block))
    cands: dict[int, list] = {a: [] for a in starts}  # row block -> [(values, indices)]
    with torch.inference_mode():
        for a in starts:
            xa = xt[a : a + block]
            for b in starts[starts.index(a) :]:
                g = xa @ xt[b : b + block].T
                if a == b:
                    g.fill_diagonal_(float("-inf"))
                v, i = g.topk(min(k, g.shape[1]), dim=1)
                cands[a].append((v, i + b))
                if b != a:
                    v, i = g.T.contiguous().topk(min(k, g.shape[0]), dim=1)  # 2x faster
                    cands[b].append((v, i + a))
        idx, vals = [], []
        for a in starts:
            v = torch.cat([c[0] for c in cands[a]], dim=1)
            i = torch.cat([c[1] for c in cands[a]], dim=1)
            top_v, at = v.topk(k, dim=1)
            idx.append(i.gather(1, at))
            vals.append(top_v)
    return Neighbours(torch.cat(idx).numpy().astype(np.int64), torch.cat(vals).double().numpy())


# --- the k-NN metrics from two graphs ---------------------------------------------------------


@dataclass(frozen=True)
class _Mask:
    """The mutual-neighbour entries (i, j) of two graphs, with K_ij and L_ij there."""

    rows: np.ndarray
    cols: np.ndarray
    kv: np.ndarray
    lv: np.ndarray


def _mask(a: Neighbours, b: Neighbours) -> _Mask:
    if a.n != b.n:
        raise ExplorerError(f"alignment compares the same images: got {a.n} and {b.n} rows")
    if a is b:
        rows = np.repeat(np.arange(a.n), a.k)
        return _Mask(rows, a.idx.ravel(), a.vals.ravel(), a.vals.ravel())
    eq = a.idx[:, :, None] == b.idx[:, None, :]  # (N, k_a, k_b): at most one True per (i, p)
    hit = eq.any(2)
    rows, pa = np.nonzero(hit)
    pb = eq[rows, pa].argmax(1)
    return _Mask(rows, a.idx[rows, pa], a.vals[rows, pa], b.vals[rows, pb])


def _hsic_terms(m: _Mask, n: int, influence: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Sums (t1, sum A, sum B, t3) of Song et al.'s unbiased HSIC of the masked kernels `A`, `B`
    (`HSIC * n(n-3) = t1 + sA sB / ((n-1)(n-2)) - 2 t3 / (n-2)`), and each sum's per-image
    influence `(N, 4)` (the terms image i takes part in) when `influence`."""
    keys = m.rows * n + m.cols
    t1_terms = np.zeros(len(keys))  # A_ij B_ji where (j, i) is a mask entry too
    if len(keys):
        order = np.argsort(keys)
        rev = m.cols * n + m.rows
        match = order[np.searchsorted(keys, rev, sorter=order).clip(max=len(keys) - 1)]
        found = keys[match] == rev
        t1_terms[found] = m.kv[found] * m.lv[match[found]]
    col_a = np.bincount(m.cols, m.kv, n)
    row_a = np.bincount(m.rows, m.kv, n)
    col_b = np.bincount(m.cols, m.lv, n)
    row_b = np.bincount(m.rows, m.lv, n)
    sums = np.array([t1_terms.sum(), m.kv.sum(), m.lv.sum(), col_a @ row_b])
    if not influence:
        return sums, None
    infl = np.empty((n, 4))
    infl[:, 0] = np.bincount(m.rows, t1_terms, n) + np.bincount(m.cols, t1_terms, n)
    infl[:, 1] = row_a + col_a
    infl[:, 2] = row_b + col_b
    # t3 = sum over (a, j, b) of A_aj B_jb: image i as a, as j, as b
    infl[:, 3] = (
        np.bincount(m.rows, m.kv * row_b[m.cols], n)
        + col_a * row_b
        + np.bincount(m.cols, m.lv * col_a[m.rows], n)
    )
    return sums, infl


def _hsic(sums: np.ndarray, n: int) -> np.ndarray:
    """HSIC * n(n-3) from `_hsic_terms` sums (last axis), for one or many resamples."""
    t1, sa, sb, t3 = np.moveaxis(np.asarray(sums, dtype=np.float64), -1, 0)
    return t1 + sa * sb / ((n - 1) * (n - 2)) - 2.0 * t3 / (n - 2)


def _ratio(xy, xx, yy):
    den = np.sqrt(np.clip(xx, 0, None) * np.clip(yy, 0, None))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, xy / np.where(den > 0, den, 1.0), np.nan)


def cknna(x: np.ndarray, y: np.ndarray, k: int = DEFAULT_K, *, normalize: bool = True) -> float:
    """CKNNA between `x (N, Dx)` and `y (N, Dy)` (module docstring), k nearest neighbours."""
    n = _same_n(x, y)
    check_k(k, n, "cknna")
    a, b = knn(x, k, normalize=normalize), knn(y, k, normalize=normalize)
    return float(_cknna_parts(a, b, a, b, n, False)[0])


def mutual_knn(
    x: np.ndarray, y: np.ndarray, k: int = DEFAULT_K, *, normalize: bool = True
) -> float:
    """Mean over images of the fraction of their k nearest neighbours shared by `x` and `y`."""
    _same_n(x, y)
    a, b = knn(x, k, normalize=normalize), knn(y, k, normalize=normalize)
    return float(len(_mask(a, b).rows) / (a.n * a.k))


def cka(x: np.ndarray, y: np.ndarray) -> float:
    """Debiased linear CKA (`explorer.analysis.cka.linear_cka`)."""
    _same_n(x, y)
    return float(linear_cka(x, y, debiased=True))


def alignment(
    x: np.ndarray, y: np.ndarray, metric: str, k: int = DEFAULT_K, *, normalize: bool = True
) -> float:
    """One metric ("cka", "cknna", "mutual_knn") between two sources on the same images."""
    (metric,) = parse_metrics(metric)
    if metric == "cka":
        return cka(x, y)
    fn = cknna if metric == "cknna" else mutual_knn
    return fn(x, y, k, normalize=normalize)


def _same_n(x, y) -> int:
    nx, ny = int(np.shape(x)[0]), int(np.shape(y)[0])
    if nx != ny:
        raise ExplorerError(
            f"alignment compares the same images: the sources have {nx} and {ny} images"
        )
    return nx


def _cknna_parts(a, b, self_a, self_b, n, influence):
    """CKNNA's value, and its numerator and denominators' sums and influences (for intervals)."""
    xy = _hsic_terms(_mask(a, b), n, influence)
    xx = self_a if isinstance(self_a, tuple) else _hsic_terms(_mask(a, a), n, influence)
    yy = self_b if isinstance(self_b, tuple) else _hsic_terms(_mask(b, b), n, influence)
    value = _ratio(_hsic(xy[0], n), _hsic(xx[0], n), _hsic(yy[0], n))
    return value, xy, xx, yy


# --- CKA in feature space, with influences ----------------------------------------------------


@dataclass
class _CkaSource:
    """A source centred once: its rows' squared norms and its own debiased HSIC terms."""

    xc: np.ndarray  # (N, D) column-centred
    rows: np.ndarray  # (N,) float64 squared row norms
    self_terms: tuple[np.ndarray, np.ndarray | None]


def _cka_source(x: np.ndarray, influence: bool) -> _CkaSource:
    x = np.asarray(x)
    if x.ndim != 2:
        raise ExplorerError(f"CKA takes (N, D) feature matrices, got shape {x.shape}")
    n, d = x.shape
    dtype = np.float64 if n * d * d <= EXACT_WORK else np.float32
    xc = (x - x.mean(0, dtype=np.float64)).astype(dtype, copy=False)
    rows = np.einsum("ij,ij->i", xc, xc, dtype=np.float64)
    src = _CkaSource(xc, rows, (np.zeros(4), None))
    src.self_terms = _cka_terms(src, src, influence)
    return src


def _cka_terms(a: _CkaSource, b: _CkaSource, influence: bool):
    """(P, Q, Sx, Sy) of the debiased HSIC (`n(n-3) HSIC = P - n/(n-2) Q + Sx Sy/((n-1)(n-2))`,
    `P = ||Xc^T Yc||^2`, `Q = sum_i |x_i|^2 |y_i|^2`, `S = sum_i |x_i|^2`) and their influences.
    Two sources of different precision (one past the exact-size limit) meet in float32."""
    xa, xb = a.xc, b.xc
    if xa.dtype != xb.dtype:
        xa, xb = xa.astype(np.float32), xb.astype(np.float32)
    m = _mm(xa.T, xb)
    p = float(np.sum(m.astype(np.float64) ** 2))
    q = a.rows * b.rows
    sums = np.array([p, q.sum(), a.rows.sum(), b.rows.sum()])
    if not influence:
        return sums, None
    # P = sum_ij K_ij L_ij: image i takes part in row i and column i, 2 x_i^T M y_i in all
    along = np.einsum("ij,ij->i", _mm(xa, m), xb, dtype=np.float64)
    return sums, np.stack([2.0 * along, q, a.rows, b.rows], axis=1)


def _cka_hsic(sums: np.ndarray, n: int) -> np.ndarray:
    p, q, sx, sy = np.moveaxis(np.asarray(sums, dtype=np.float64), -1, 0)
    return p - n / (n - 2) * q + sx * sy / ((n - 1) * (n - 2))


# --- maps --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MapResult:
    """One metric over a map: `value`, `ci_low`, `ci_high`, each `(R, C)` (NaN: not asked)."""

    value: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray


def _resampled(w: np.ndarray, influence: np.ndarray) -> np.ndarray:
    """`(n_boot, c)` first-order changes of c sums under the resamples `w (n_boot, N)`: a small
    product, in numpy's own loop (no thread pool to wake for it)."""
    return np.einsum("bn,nc->bc", w, influence)


def bootstrap_weights(n: int, n_boot: int, seed: int = 0) -> np.ndarray:
    """`(n_boot, n)` resample counts minus one (multinomial over the n images), seeded."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(np.float64) - 1.0


def alignment_map(
    rows: Sequence[np.ndarray],
    cols: Sequence[np.ndarray],
    metrics: str | Sequence[str] = ("cka", "cknna"),
    *,
    k: int = DEFAULT_K,
    normalize: bool = True,
    n_boot: int = DEFAULT_BOOT,
    level: float = 0.95,
    seed: int = 0,
    want: np.ndarray | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, MapResult]:
    """Every metric between each of `rows` (R sources) and each of `cols` (C sources), all
    `(N, D_i)` on the same N images: `{metric: MapResult}` with `(R, C)` arrays.

    Each source is prepared once (k-NN graph, centred features, its self-terms; a source given
    twice as the same array object once), so a cell costs only the pairwise part. `want`
    `(R, C)` bool limits the cells computed (others NaN); `n_boot=0` gives no interval (NaN).
    """
    metrics = parse_metrics(metrics)
    ns = {int(np.shape(x)[0]) for x in [*rows, *cols]}
    if len(ns) > 1:
        raise ExplorerError(
            f"alignment compares the same images: the sources have {sorted(ns)} images"
        )
    n = ns.pop() if ns else 0
    r_count, c_count = len(rows), len(cols)
    want = np.ones((r_count, c_count), bool) if want is None else np.asarray(want, bool)
    if n and any(m != "cka" for m in metrics):
        check_k(k, n, "cknna" if "cknna" in metrics else "mutual_knn")
    if n and n < 4:
        raise ExplorerError(f"alignment needs at least 4 images, got {n}")
    boot = n_boot > 0
    w = bootstrap_weights(n, n_boot, seed) if boot else None
    q = ((1 - level) / 2 * 100, (1 + level) / 2 * 100)
    out = {m: MapResult(*(np.full((r_count, c_count), np.nan) for _ in range(3))) for m in metrics}
    graphs: dict[int, Neighbours] = {}
    self_hsic: dict[int, tuple] = {}
    centred: dict[int, _CkaSource] = {}

    def graph(x):
        if id(x) not in graphs:
            graphs[id(x)] = knn(x, k, normalize=normalize)
        return graphs[id(x)]

    def self_terms(x):
        if id(x) not in self_hsic:
            g = graph(x)
            self_hsic[id(x)] = _hsic_terms(_mask(g, g), n, boot)
        return self_hsic[id(x)]

    def cka_src(x):
        if id(x) not in centred:
            centred[id(x)] = _cka_source(x, boot)
        return centred[id(x)]

    def put(metric, i, j, value, parts):
        """`parts`: [(hsic function, (sums, influence)) for numerator, denominators]."""
        res = out[metric]
        res.value[i, j] = value
        if boot:
            fn = parts[0]
            xy, xx, yy = (fn(s + _resampled(w, f)) for s, f in parts[1:])
            lo, hi = (
                np.nanpercentile(_ratio(xy, xx, yy), q) if np.isfinite(value) else (np.nan,) * 2
            )
            res.ci_low[i, j], res.ci_high[i, j] = lo, hi

    todo = [(i, j) for i in range(r_count) for j in range(c_count) if want[i, j]]
    for done, (i, j) in enumerate(todo, start=1):
        x, y = rows[i], cols[j]
        if "cka" in metrics:
            a, b = cka_src(x), cka_src(y)
            xy = _cka_terms(a, b, boot) if a is not b else a.self_terms
            value = float(
                _ratio(
                    _cka_hsic(xy[0], n),
                    _cka_hsic(a.self_terms[0], n),
                    _cka_hsic(b.self_terms[0], n),
                )
            )
            put("cka", i, j, value, [lambda s: _cka_hsic(s, n), xy, a.self_terms, b.self_terms])
        if "cknna" in metrics:
            ga, gb = graph(x), graph(y)
            value, xy, xx, yy = _cknna_parts(ga, gb, self_terms(x), self_terms(y), n, boot)
            put("cknna", i, j, float(value), [lambda s: _hsic(s, n), xy, xx, yy])
        if "mutual_knn" in metrics:
            ga, gb = graph(x), graph(y)
            msk = _mask(ga, gb)
            total = float(n * ga.k)
            res = out["mutual_knn"]
            res.value[i, j] = len(msk.rows) / total
            if boot:  # shared pairs over all neighbour pairs of x's graph, each to first order
                shared = np.bincount(msk.rows, minlength=n) + np.bincount(msk.cols, minlength=n)
                pairs = ga.k + np.bincount(ga.idx.ravel(), minlength=n)
                both = _resampled(w, np.stack([shared, pairs], axis=1).astype(np.float64))
                dist = (len(msk.rows) + both[:, 0]) / (total + both[:, 1])
                res.ci_low[i, j], res.ci_high[i, j] = np.percentile(dist, q)
        if progress is not None:
            progress(done, len(todo))
    return out


def naive_map(
    rows: Sequence[np.ndarray],
    cols: Sequence[np.ndarray],
    metric: str,
    k: int = DEFAULT_K,
    *,
    normalize: bool = True,
) -> np.ndarray:
    """The same values as `alignment_map(..., n_boot=0)`, one independent call per cell
    (every k-NN graph recomputed per pair): the reference the benchmark times against."""
    return np.array([[alignment(x, y, metric, k, normalize=normalize) for y in cols] for x in rows])
