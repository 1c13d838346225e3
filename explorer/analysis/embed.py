"""2-D embeddings of features: PCA (instant), UMAP on PCA-50 and aligned UMAP, cached on disk.

UMAP results are cached as `.npy` under `cache_dir()/"embeddings"`, named by
sha256(cache_key, data shape, parameters): the caller's `cache_key` must identify the
features (e.g. the feature store's key). Writes are atomic (temporary file + rename).
"""

from __future__ import annotations

import hashlib
import json
import threading
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
from sklearn.decomposition import PCA

from explorer.atomic import atomic_write
from explorer.errors import ExplorerError
from explorer.paths import cache_dir

EMBED_VERSION = 1  # bump when the computation changes, so old cache entries are ignored


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


def _cached(
    path: Path | None, shape: tuple[int, ...], compute: Callable[[], np.ndarray]
) -> np.ndarray:
    """Load `path` if it holds an array of `shape`, else compute it and write it atomically."""
    if path is not None and path.exists():
        try:
            arr = np.load(path)
            if arr.shape == shape:
                return arr
        except (OSError, ValueError):
            pass  # a damaged entry is recomputed and replaced
    arr = np.ascontiguousarray(compute(), dtype=np.float32)
    if path is not None:

        def save(tmp: Path) -> None:
            with tmp.open("wb") as f:  # a file object: np.save would add ".npy" to a bare path
                np.save(f, arr)

        atomic_write(path, save)
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
    path = _cache_file(kind, key, params, cache_root)
    try:
        arr = np.load(path)
    except (OSError, ValueError):
        return None
    return arr if arr.shape == shape else None


def _umap_kwargs(n: int, n_neighbors: int, min_dist: float, seed: int) -> dict:
    # UMAP needs n_neighbors < N; clamping keeps tiny selections working
    return dict(n_neighbors=max(2, min(n_neighbors, n - 1)), min_dist=min_dist, random_state=seed)


def _fit_umap(x: np.ndarray, kwargs: dict) -> np.ndarray:
    import umap

    with warnings.catch_warnings():  # umap warns that a seed forces one thread: intended
        warnings.simplefilter("ignore", UserWarning)
        return umap.UMAP(n_components=2, n_jobs=1, **kwargs).fit_transform(x)


def _umap_params(
    shape, n_neighbors: int = 15, min_dist: float = 0.1, seed: int = 0, pca_dim: int | None = 50
) -> dict:
    return dict(
        n=int(shape[0]),
        d=int(shape[1]),
        n_neighbors=n_neighbors,
        min_dist=min_dist,
        seed=seed,
        pca_dim=pca_dim,
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
) -> np.ndarray:
    """UMAP `(N, 2)` float32 of `x` `(N, D)`, after PCA to `pca_dim` dims (None: no PCA).

    Deterministic in `seed`. With a `cache_key` the result is stored under
    `cache_dir(cache_root)/"embeddings"` and later calls with the same key, data shape and
    parameters load it instead of recomputing.
    """
    x = _as_matrix(x)
    params = _umap_params(x.shape, n_neighbors, min_dist, seed, pca_dim)
    path = None if cache_key is None else _cache_file("umap", cache_key, params, cache_root)

    def compute() -> np.ndarray:
        return _fit_umap(
            _reduce(x, pca_dim, seed), _umap_kwargs(len(x), n_neighbors, min_dist, seed)
        )

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
    x: np.ndarray, *, cache_key: str, cache_root: Path | None = None, background: bool = True
) -> tuple[np.ndarray, str]:
    """`((N, 2) float32, method)`: the cached UMAP of `x` `(N, D)` when it is on disk, else
    its PCA, with the UMAP (default parameters, cached as `umap_embed` caches it) started in
    a background thread, so nobody waits for numba's first compilation. `method` says which
    one was returned ("umap" or "pca"); call again to pick up the UMAP once `umap_pending`
    is False. A failed background run is raised here, once. `background=False` computes
    the UMAP now instead."""
    x = _as_matrix(x)
    path = _cache_file("umap", cache_key, _umap_params(x.shape), cache_root)
    done = cached_only("umap", cache_key, _umap_params(x.shape), (len(x), 2), cache_root)
    if done is not None:
        return done, "umap"
    if not background:
        return umap_embed(x, cache_key=cache_key, cache_root=cache_root), "umap"
    with _jobs_lock:
        job = _jobs.get(str(path))
        if job is not None and job.done():
            del _jobs[str(path)]
            if job.exception() is not None:
                raise job.exception()
            return job.result(), "umap"
        if job is None:
            xc = np.array(x, copy=True)  # the caller's array may be a memory map that goes away
            _jobs[str(path)] = _pool.submit(
                umap_embed, xc, cache_key=cache_key, cache_root=cache_root
            )
    return pca_embed(x), "pca"


def umap_pending(shape: tuple[int, int], *, cache_key: str, cache_root: Path | None = None) -> bool:
    """Whether a background UMAP of `(N, D)` features under `cache_key` is still running."""
    path = _cache_file("umap", cache_key, _umap_params(shape), cache_root)
    with _jobs_lock:
        job = _jobs.get(str(path))
    return job is not None and not job.done()


def wait_for_umaps(timeout: float | None = None) -> None:
    """Block until every background UMAP started so far has finished (for tests and scripts)."""
    from concurrent.futures import wait

    with _jobs_lock:
        jobs = list(_jobs.values())
    wait(jobs, timeout=timeout)
