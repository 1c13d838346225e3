"""2-D embeddings of features: PCA (instant), UMAP on PCA-50 and aligned UMAP, cached on disk.

UMAP results are cached as `.npy` under `cache_dir()/"embeddings"`, named by
sha256(cache_key, data shape, parameters): the caller's `cache_key` must identify the
features (e.g. the feature store's key). Writes are atomic (temporary file + rename), with a
checksum beside each file: a damaged entry is recomputed, never served.

Big sets: UMAP is fitted on a stratified subsample of at most `UMAP_FIT_CAP` rows and the
other rows are placed with `umap.UMAP.transform`; the subsample policy is part of the cache
name of such an entry (an entry of a set no larger than the cap, fitted whole, keeps its name).
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
from sklearn.decomposition import PCA

from explorer.errors import ExplorerError
from explorer.features.checked import read_checked, write_checked
from explorer.paths import cache_dir

EMBED_VERSION = 1  # bump when the computation changes, so old cache entries are ignored
UMAP_FIT_CAP = 20_000  # UMAP is fitted on at most this many rows; the rest are transformed


def _as_matrix(x: np.ndarray, what: str = "features") -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2:
        raise ExplorerError(f"{what} must be a (N, D) matrix, got shape {x.shape}")
    if x.shape[0] < 3:
        raise ExplorerError(f"{what} need at least 3 rows to embed, got {x.shape[0]}")
    return x.astype(np.float32, copy=False)


def pca_embed(x: np.ndarray, n: int = 2, *, seed: int = 0) -> np.ndarray:
    """First `n` principal components `(N, n)` float32 of `x` `(N, D)`."""
    x = _as_matrix(x)
    k = min(n, *x.shape)
    out = np.zeros((len(x), n), dtype=np.float32)
    out[:, :k] = PCA(n_components=k, random_state=seed).fit_transform(x)
    return out


def _reduce(x: np.ndarray, pca_dim: int | None, seed: int) -> np.ndarray:
    """PCA to `pca_dim` dims before UMAP (denoises and speeds up the neighbour search)."""
    if pca_dim is None or x.shape[1] <= pca_dim:
        return x
    return pca_embed(x, min(pca_dim, len(x)), seed=seed)


def _cache_file(kind: str, key: str, params: dict, cache_root: Path | None) -> Path:
    blob = json.dumps(
        {"kind": kind, "key": key, "version": EMBED_VERSION, **params}, sort_keys=True
    )
    folder = cache_dir(cache_root) / "embeddings"
    return folder / f"{kind}-{hashlib.sha256(blob.encode()).hexdigest()[:40]}.npy"


def _parse(data: bytes, shape: tuple[int, ...], finite: bool = False) -> np.ndarray | None:
    """The float array of `shape` held in the bytes of a cached `.npy` (and finite, if asked);
    None if it is not one."""
    try:
        arr = np.load(io.BytesIO(data), allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    if arr.shape != shape or not np.issubdtype(arr.dtype, np.floating):
        return None
    return arr if not finite or np.isfinite(arr).all() else None


def _load(path: Path, shape: tuple[int, ...]) -> np.ndarray | None:
    """The cached array of `shape` at `path` when it is there and intact (its checksum matches);
    None when missing or damaged (`explorer.features.checked`: never served, recomputed)."""
    data = read_checked(path, lambda b: _parse(b, shape, finite=True) is not None)
    return None if data is None else _parse(data, shape)


def _cached(
    path: Path | None, shape: tuple[int, ...], compute: Callable[[], np.ndarray]
) -> np.ndarray:
    """Load `path` if it holds an intact array of `shape`, else compute it and write it
    atomically with its checksum."""
    if path is not None and (arr := _load(path, shape)) is not None:
        return arr
    arr = np.ascontiguousarray(compute(), dtype=np.float32)
    if path is not None:
        buf = io.BytesIO()
        np.save(buf, arr)
        write_checked(path, buf.getvalue())
    return arr


def cached_matrix(
    kind: str,
    key: str,
    params: dict,
    shape: tuple[int, ...],
    compute: Callable[[], np.ndarray],
    cache_root: Path | None = None,
) -> np.ndarray:
    """A derived float32 array of `shape` (a CKA matrix, say) cached like a UMAP: under
    `embeddings/<kind>-<sha256(key, params)>.npy`, recomputed when missing or damaged."""
    return _cached(_cache_file(kind, key, params, cache_root), shape, compute)


def cached_only(
    kind: str, key: str, params: dict, shape: tuple[int, ...], cache_root: Path | None = None
) -> np.ndarray | None:
    """The cached array of `cached_matrix`'s arguments, or None when it is not on disk (no compute)."""
    return _load(_cache_file(kind, key, params, cache_root), shape)


def _umap_kwargs(n: int, n_neighbors: int, min_dist: float, seed: int) -> dict:
    # UMAP needs n_neighbors < N; clamping keeps tiny selections working
    return dict(n_neighbors=max(2, min(n_neighbors, n - 1)), min_dist=min_dist, random_state=seed)


def _fit_umap(x: np.ndarray, kwargs: dict) -> np.ndarray:
    import umap

    with warnings.catch_warnings():  # umap warns that a seed forces one thread: intended
        warnings.simplefilter("ignore", UserWarning)
        return umap.UMAP(n_components=2, n_jobs=1, **kwargs).fit_transform(x)


def fit_cap(cap: int | None = None) -> int:
    """The UMAP fit cap in use: `cap`, or `UMAP_FIT_CAP` (read at call time) when None."""
    cap = UMAP_FIT_CAP if cap is None else int(cap)
    if cap < 3:
        raise ExplorerError(f"the UMAP fit cap must be at least 3 points, got {cap}")
    return cap


def stratified_subsample(labels: np.ndarray | None, n: int, cap: int, seed: int = 0) -> np.ndarray:
    """Sorted positions `(min(n, cap),)` int64 of a subsample of `n` rows.

    With `labels` `(n,)`, each class keeps its share of the rows (largest remainders fill
    the last places, and every class present keeps at least one row while `cap` allows);
    without, a uniform sample. Deterministic in `seed`; all rows when `n <= cap`.
    """
    if n <= cap:
        return np.arange(n, dtype=np.int64)
    rng = np.random.default_rng(seed)
    if labels is None:
        return np.sort(rng.choice(n, size=cap, replace=False)).astype(np.int64)
    labels = np.asarray(labels)
    if labels.shape != (n,):
        raise ExplorerError(f"{labels.shape[0] if labels.ndim else 0} labels for {n} rows")
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts * cap / n
    quota = np.floor(exact).astype(np.int64)
    if len(classes) <= cap:
        quota = np.maximum(quota, 1)
    order = np.argsort(-(exact - np.floor(exact)), kind="stable")  # largest remainders first
    for i in order:
        if quota.sum() >= cap:
            break
        if quota[i] < counts[i]:
            quota[i] += 1
    while quota.sum() > cap:  # the at-least-one rule overfilled: trim the largest classes
        quota[np.argmax(quota)] -= 1
    picks = [
        rng.choice(np.flatnonzero(labels == c), size=int(q), replace=False)
        for c, q in zip(classes, quota, strict=True)
    ]
    return np.sort(np.concatenate(picks)).astype(np.int64)


def fit_note(n: int, cap: int | None = None, stratified: bool = True) -> str | None:
    """One line saying that a UMAP of `n` points was fitted on a subsample (None when it was not)."""
    cap = fit_cap(cap)
    if n <= cap:
        return None
    kind = "stratified (class-balanced) " if stratified else "random "
    return (
        f"UMAP fitted on a {kind}subsample of {cap:,} of the {n:,} points (at most {cap:,}); "
        f"the other {n - cap:,} were placed with UMAP.transform."
    )


def _fit_policy(n: int, cap: int, stratified: bool) -> dict:
    """The cache-name part of the subsample policy; empty when all `n` rows are fitted."""
    if n <= cap:
        return {}
    return {"fit": {"policy": "stratified" if stratified else "uniform", "cap": cap}}


def _fit_and_place(
    x: np.ndarray, idx: np.ndarray, pca_dim: int | None, kwargs: dict, seed: int
) -> np.ndarray:
    """UMAP `(N, 2)` of `x` `(N, D)` fitted on rows `idx` (PCA fitted on them too), the other
    rows placed with `UMAP.transform`."""
    import umap

    fit_rows = x[idx]
    if pca_dim is not None and x.shape[1] > pca_dim:
        pca = PCA(n_components=min(pca_dim, len(idx)), random_state=seed).fit(fit_rows)
        reduce = pca.transform
    else:

        def reduce(rows: np.ndarray) -> np.ndarray:
            return rows

    rest = np.setdiff1d(np.arange(len(x)), idx, assume_unique=True)
    out = np.empty((len(x), 2), dtype=np.float32)
    with warnings.catch_warnings():  # seeded runs are single-threaded: intended
        warnings.simplefilter("ignore", UserWarning)
        model = umap.UMAP(n_components=2, n_jobs=1, **kwargs).fit(reduce(fit_rows))
        out[idx] = model.embedding_
        for start in range(0, len(rest), 20_000):  # bounded memory for the neighbour search
            part = rest[start : start + 20_000]
            out[part] = model.transform(reduce(x[part]))
    return out


def _umap_params(
    shape,
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    seed: int = 0,
    pca_dim: int | None = 50,
    *,
    cap: int | None = None,
    stratified: bool = False,
) -> dict:
    return dict(
        n=int(shape[0]),
        d=int(shape[1]),
        n_neighbors=n_neighbors,
        min_dist=min_dist,
        seed=seed,
        pca_dim=pca_dim,
        **_fit_policy(int(shape[0]), fit_cap(cap), stratified),
    )


def umap_embed(
    x: np.ndarray,
    *,
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    seed: int = 0,
    pca_dim: int | None = 50,
    cache_key: str | None = None,
    cache_root: Path | None = None,
    labels: np.ndarray | None = None,
    cap: int | None = None,
) -> np.ndarray:
    """UMAP `(N, 2)` float32 of `x` `(N, D)`, after PCA to `pca_dim` dims (None: no PCA).

    Above `cap` rows (default `UMAP_FIT_CAP`) PCA and UMAP are fitted on a subsample of
    `cap` rows, stratified by `labels` `(N,)` when given (`stratified_subsample`), and the
    other rows are placed with `UMAP.transform`. Deterministic in `seed`. With a
    `cache_key` the result is stored under `cache_dir(cache_root)/"embeddings"` and later
    calls with the same key, data shape, parameters and subsample policy load it.
    """
    x = _as_matrix(x)
    cap = fit_cap(cap)
    stratified = labels is not None
    params = _umap_params(
        x.shape, n_neighbors, min_dist, seed, pca_dim, cap=cap, stratified=stratified
    )
    path = None if cache_key is None else _cache_file("umap", cache_key, params, cache_root)

    def compute() -> np.ndarray:
        if len(x) <= cap:
            kwargs = _umap_kwargs(len(x), n_neighbors, min_dist, seed)
            return _fit_umap(_reduce(x, pca_dim, seed), kwargs)
        idx = stratified_subsample(labels, len(x), cap, seed)
        kwargs = _umap_kwargs(len(idx), n_neighbors, min_dist, seed)
        return _fit_and_place(x, idx, pca_dim, kwargs, seed)

    return _cached(path, (len(x), 2), compute)


def aligned_umap(
    xs: Sequence[np.ndarray],
    *,
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    seed: int = 0,
    pca_dim: int | None = 50,
    cache_key: str | Sequence[str] | None = None,
    cache_root: Path | None = None,
) -> list[np.ndarray]:
    """Aligned UMAPs `[(N, 2) float32]` of K feature sets `(N, D_k)` on the same N examples.

    Neighbouring sets (e.g. successive timesteps) are tied by the identity relation, so an
    example stays near the same place while a slider moves across them. Each set is
    reduced by its own PCA first. Cached like `umap_embed`; `cache_key` may be one key per
    set (e.g. the feature store's keys, in order), so the same sets in the same order with
    the same parameters re-open the stored layout.
    """
    mats = [_as_matrix(x, f"features[{i}]") for i, x in enumerate(xs)]
    if not mats:
        return []
    n = len(mats[0])
    if any(len(m) != n for m in mats):
        raise ExplorerError(f"aligned UMAP needs the same examples: rows {[len(m) for m in mats]}")
    params = dict(n=n, d=[m.shape[1] for m in mats], n_neighbors=n_neighbors)
    params |= dict(min_dist=min_dist, seed=seed, pca_dim=pca_dim)
    if cache_key is not None and not isinstance(cache_key, str):
        keys = [str(k) for k in cache_key]
        if len(keys) != len(mats):
            raise ExplorerError(
                f"aligned UMAP needs one cache key per set: {len(keys)} for {len(mats)}"
            )
        cache_key = json.dumps(keys)
    path = None if cache_key is None else _cache_file("aligned", cache_key, params, cache_root)

    def compute() -> np.ndarray:
        import umap

        reduced = [_reduce(m, pca_dim, seed) for m in mats]
        kwargs = _umap_kwargs(n, n_neighbors, min_dist, seed)
        if len(reduced) == 1:
            return _fit_umap(reduced[0], kwargs)[None]
        identity = {i: i for i in range(n)}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            model = umap.AlignedUMAP(n_components=2, **kwargs)
            model.fit(reduced, relations=[identity] * (len(reduced) - 1))
        return np.stack(model.embeddings_)

    return list(_cached(path, (len(mats), n, 2), compute))


# --- UMAP without the wait: PCA now, UMAP from a background thread ------------------------------

_jobs: dict[str, Future] = {}  # cache file -> the thread computing it (one per entry, per process)
_jobs_lock = threading.Lock()
_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="umap")  # one at a time: 2-core CPUs


def umap_or_pca(
    x: np.ndarray,
    *,
    cache_key: str,
    cache_root: Path | None = None,
    background: bool = True,
    labels: np.ndarray | None = None,
) -> tuple[np.ndarray, str]:
    """`((N, 2) float32, method)`: the cached UMAP of `x` `(N, D)` when it is on disk, else
    its PCA, with the UMAP (default parameters, cached as `umap_embed` caches it) started in
    a background thread, so nobody waits for numba's first compilation. `method` says which
    one was returned ("umap" or "pca"); call again to pick up the UMAP once `umap_pending`
    is False. A failed background run is raised here, once. `background=False` computes
    the UMAP now instead. `labels` `(N,)` stratify the fit subsample of a set over the cap."""
    x = _as_matrix(x)
    params = _umap_params(x.shape, stratified=labels is not None)
    path = _cache_file("umap", cache_key, params, cache_root)
    done = cached_only("umap", cache_key, params, (len(x), 2), cache_root)
    if done is not None:
        return done, "umap"
    if not background:
        return umap_embed(x, cache_key=cache_key, cache_root=cache_root, labels=labels), "umap"
    with _jobs_lock:
        job = _jobs.get(str(path))
        if job is not None and job.done():
            del _jobs[str(path)]
            if job.exception() is not None:
                raise job.exception()
            return job.result(), "umap"
        if job is None:
            xc = np.array(x, copy=True)  # the caller's array may be a memory map that goes away
            yc = None if labels is None else np.array(labels, copy=True)
            _jobs[str(path)] = _pool.submit(
                umap_embed, xc, cache_key=cache_key, cache_root=cache_root, labels=yc
            )
    return pca_embed(x), "pca"


def cached_umap(
    shape: tuple[int, int],
    *,
    cache_key: str,
    cache_root: Path | None = None,
    stratified: bool = False,
) -> np.ndarray | None:
    """The `(N, 2)` UMAP `umap_or_pca` cached for `(N, D)` features under `cache_key`, read
    without the features (only their shape); None when it is not on disk."""
    params = _umap_params(shape, stratified=stratified)
    return cached_only("umap", cache_key, params, (int(shape[0]), 2), cache_root)


def umap_pending(
    shape: tuple[int, int],
    *,
    cache_key: str,
    cache_root: Path | None = None,
    stratified: bool = False,
) -> bool:
    """Whether a background UMAP of `(N, D)` features under `cache_key` is still running
    (`stratified`: it was started with labels, as `umap_or_pca(..., labels=...)`)."""
    params = _umap_params(shape, stratified=stratified)
    path = _cache_file("umap", cache_key, params, cache_root)
    with _jobs_lock:
        job = _jobs.get(str(path))
    return job is not None and not job.done()


def wait_for_umaps(timeout: float | None = None) -> None:
    """Block until every background UMAP started so far has finished (for tests and scripts)."""
    from concurrent.futures import wait

    with _jobs_lock:
        jobs = list(_jobs.values())
    wait(jobs, timeout=timeout)
