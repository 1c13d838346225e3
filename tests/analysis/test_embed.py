"""2-D embeddings: PCA, UMAP on PCA-50 with its disk cache, aligned UMAP across settings."""

from __future__ import annotations

import numpy as np
import pytest
import umap
from sklearn.decomposition import PCA

from explorer.analysis.embed import aligned_umap, pca_embed, umap_embed
from explorer.errors import ExplorerError


def _clusters(n=300, d=60, seed=0):
    """3 well-separated Gaussian clusters in `d` dims (d > 50, so PCA-50 runs)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    centres = rng.normal(size=(3, d)) * 4
    return (centres[y] + rng.normal(size=(n, d))).astype(np.float16), y


def _knn_purity(emb, y, k=5):
    """Share of each point's k nearest neighbours in `emb` that share its label."""
    d = ((emb[:, None] - emb[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    nn = np.argsort(d, 1)[:, :k]
    return float(np.mean(y[nn] == y[:, None]))


class _Forbidden:
    """Stands in for umap's classes when a test proves the cache answered."""

    def __init__(self, *args, **kwargs):
        raise AssertionError("UMAP was recomputed although the cache should have answered")


@pytest.fixture(scope="module")
def umap_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache")
    x, y = _clusters()
    emb = umap_embed(x, cache_key="feature-key-1", cache_root=root)
    return x, y, emb, root


def test_pca_embed():
    x, _ = _clusters(100, 8)
    out = pca_embed(x)
    ref = PCA(2, random_state=0).fit_transform(x.astype(np.float32))
    assert out.shape == (100, 2) and out.dtype == np.float32, f"got {out.shape} {out.dtype}"
    assert np.allclose(np.abs(out), np.abs(ref), atol=1e-3), "PCA components differ from sklearn"
    narrow = pca_embed(x[:, :1])
    assert narrow.shape == (100, 2) and np.all(narrow[:, 1] == 0), "1-D input pads with zeros"


def test_umap_embed_separates_clusters(umap_run):
    x, y, emb, _ = umap_run
    assert emb.shape == (300, 2) and emb.dtype == np.float32, f"got {emb.shape} {emb.dtype}"
    assert np.isfinite(emb).all(), "embedding must be finite"
    purity = _knn_purity(emb, y)
    assert purity > 0.95, f"3 separated clusters should stay apart, neighbour purity {purity}"
    again = umap_embed(x)  # uncached, same seed
    assert np.array_equal(again, emb), "same seed must give the same embedding"


def test_umap_cache_hit_skips_computation(umap_run, monkeypatch):
    x, _, emb, root = umap_run
    files = list((root / "embeddings").glob("*"))
    assert sorted(f.suffix for f in files) == [".npy", ".sha256"], (
        f"one .npy, its checksum and no temp files expected: {files}"
    )
    monkeypatch.setattr(umap, "UMAP", _Forbidden)
    cached = umap_embed(x, cache_key="feature-key-1", cache_root=root)
    assert np.array_equal(cached, emb), "the cache must return the stored embedding"
    with pytest.raises(AssertionError, match="recomputed"):
        umap_embed(x, cache_key="feature-key-1", cache_root=root, min_dist=0.5)
    with pytest.raises(AssertionError, match="recomputed"):
        umap_embed(x, cache_key="feature-key-2", cache_root=root)


def test_umap_cache_defaults_to_cache_dir(monkeypatch, tmp_path):
    calls = []

    class _Fake:
        def __init__(self, **kwargs):
            calls.append(kwargs)

        def fit_transform(self, x):
            return np.asarray(x[:, :2], dtype=np.float64)

    monkeypatch.setenv("EXPLORER_CACHE", str(tmp_path))
    monkeypatch.setattr(umap, "UMAP", _Fake)
    x, _ = _clusters(40, 80)
    out = umap_embed(x, cache_key="k", n_neighbors=100)
    assert calls[0]["n_neighbors"] == 39, f"n_neighbors must be clamped below N: {calls[0]}"
    assert out.dtype == np.float32, "embeddings are float32"
    assert len(list((tmp_path / "embeddings").glob("umap-*.npy"))) == 1, "cached in cache_dir()"
    umap_embed(x, cache_key="k", n_neighbors=100)
    assert len(calls) == 1, "second call must load from the cache"


def test_aligned_umap_wiring(monkeypatch, tmp_path):
    seen = {}

    class _FakeAligned:
        def __init__(self, **kwargs):
            seen["kwargs"] = kwargs

        def fit(self, xs, relations):
            seen["dims"] = [x.shape[1] for x in xs]
            seen["relations"] = relations
            self.embeddings_ = [x[:, :2] + i for i, x in enumerate(xs)]
            return self

    monkeypatch.setattr(umap, "AlignedUMAP", _FakeAligned)
    xs = [_clusters(50, 80, seed=s)[0] for s in range(3)]
    out = aligned_umap(xs, cache_key="sweep", cache_root=tmp_path)
    assert len(out) == 3 and all(e.shape == (50, 2) for e in out), "one (N, 2) per set"
    assert seen["dims"] == [50, 50, 50], f"each set must go through PCA first: {seen['dims']}"
    assert len(seen["relations"]) == 2, "K sets need K-1 relations"
    assert all(r == {i: i for i in range(50)} for r in seen["relations"]), "identity relations"
    monkeypatch.setattr(umap, "AlignedUMAP", _Forbidden)
    again = aligned_umap(xs, cache_key="sweep", cache_root=tmp_path)
    assert all(np.array_equal(a, b) for a, b in zip(out, again, strict=True)), "cache hit"
    with pytest.raises(ExplorerError, match="same examples"):
        aligned_umap([xs[0], xs[1][:40]])


@pytest.mark.slow
def test_aligned_umap_keeps_points_in_place():
    """Real AlignedUMAP (~30 s of numba JIT on a cold process): slightly perturbed copies
    of the same features must embed with every point near its previous place."""
    x, y = _clusters(200, 60)
    rng = np.random.default_rng(1)
    xs = [x, (x + 0.1 * rng.normal(size=x.shape)).astype(np.float16)]
    a, b = aligned_umap(xs)
    spread = np.linalg.norm(a - a.mean(0), axis=1).mean()
    moved = np.linalg.norm(a - b, axis=1).mean()
    assert moved < 0.25 * spread, f"points moved {moved:.2f} for a spread of {spread:.2f}"
    assert _knn_purity(b, y) > 0.95, "aligned embedding must still separate the clusters"


def test_embed_rejects_bad_input():
    with pytest.raises(ExplorerError, match=r"\(N, D\)"):
        umap_embed(np.zeros(10))
    with pytest.raises(ExplorerError, match="at least 3 rows"):
        pca_embed(np.zeros((2, 4)))
