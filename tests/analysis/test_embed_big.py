"""Big sets: UMAP fitted on a stratified subsample of at most the cap, the rest transformed."""

from __future__ import annotations

import numpy as np
import pytest
import umap

from explorer.analysis import embed
from explorer.errors import ExplorerError


def _clusters(n=200, d=60, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(classes), [n // 2] + [(n - n // 2) // (classes - 1)] * (classes - 1))
    y = np.concatenate([y, np.full(n - len(y), classes - 1)])  # unbalanced: class 0 is half
    centres = rng.normal(size=(classes, d)) * 4
    return (centres[y] + rng.normal(size=(n, d))).astype(np.float32), y


class _FakeUMAP:
    """umap.UMAP stand-in recording what is fitted and what is transformed: the first two
    input dims are the coordinates, plus 1000 for transformed rows (so they can be told apart)."""

    calls: list = []

    def __init__(self, **kwargs):
        self.kwargs = kwargs

    def fit(self, x):
        type(self).calls.append(("fit", x.shape, self.kwargs))
        self.embedding_ = np.asarray(x[:, :2], dtype=np.float32)
        return self

    def fit_transform(self, x):
        return self.fit(x).embedding_

    def transform(self, x):
        type(self).calls.append(("transform", x.shape, self.kwargs))
        return np.asarray(x[:, :2], dtype=np.float32) + 1000


@pytest.fixture
def fake_umap(monkeypatch):
    _FakeUMAP.calls = []
    monkeypatch.setattr(umap, "UMAP", _FakeUMAP)
    return _FakeUMAP


def test_stratified_subsample_keeps_class_shares():
    _, y = _clusters(200)
    idx = embed.stratified_subsample(y, 200, 50, seed=0)
    assert len(idx) == 50 and len(set(idx.tolist())) == 50, "50 distinct rows"
    assert np.all(np.diff(idx) > 0), "sorted positions"
    share = np.bincount(y[idx], minlength=4) / 50
    full = np.bincount(y, minlength=4) / 200
    assert np.abs(share - full).max() <= 1 / 50 + 1e-9, f"class shares {share} vs {full}"
    assert np.array_equal(idx, embed.stratified_subsample(y, 200, 50, seed=0)), "deterministic"
    assert not np.array_equal(idx, embed.stratified_subsample(y, 200, 50, seed=1)), "seeded"
    assert np.array_equal(embed.stratified_subsample(y, 200, 500), np.arange(200)), "under cap"


def test_stratified_subsample_keeps_rare_classes_and_exact_size():
    y = np.array([0] * 990 + [1] * 9 + [2])
    idx = embed.stratified_subsample(y, len(y), 20, seed=0)
    assert len(idx) == 20 and set(y[idx].tolist()) == {0, 1, 2}, "every class keeps a row"
    uniform = embed.stratified_subsample(None, 1000, 20, seed=0)
    assert len(uniform) == 20 and len(set(uniform.tolist())) == 20, "no labels: uniform sample"
    with pytest.raises(ExplorerError, match="labels for 1000 rows"):
        embed.stratified_subsample(y[:5], 1000, 20)


def test_umap_fits_the_cap_and_transforms_the_rest(fake_umap, tmp_path):
    x, y = _clusters(200)
    out = embed.umap_embed(x, labels=y, cap=50, pca_dim=None, cache_key="k", cache_root=tmp_path)
    assert out.shape == (200, 2) and np.isfinite(out).all(), "every point gets coordinates"
    kinds = [(c[0], c[1][0]) for c in fake_umap.calls]
    assert kinds == [("fit", 50), ("transform", 150)], f"fit 50, place 150: {kinds}"
    assert fake_umap.calls[0][2]["n_neighbors"] == 15 and fake_umap.calls[0][2]["random_state"] == 0
    idx = embed.stratified_subsample(y, 200, 50, seed=0)
    fitted = np.zeros(200, dtype=bool)
    fitted[idx] = True
    assert np.allclose(out[fitted], x[fitted, :2]), "fitted rows keep their fitted places"
    assert np.allclose(out[~fitted], x[~fitted, :2] + 1000), "other rows come from transform"
    again = embed.umap_embed(x, labels=y, cap=50, pca_dim=None, cache_key="k", cache_root=tmp_path)
    assert np.array_equal(again, out) and len(fake_umap.calls) == 2, "cached: nothing recomputed"


def test_pca_is_fitted_on_the_subsample_too(fake_umap):
    x, y = _clusters(200, d=80)
    out = embed.umap_embed(x, labels=y, cap=50, pca_dim=10)
    assert [c[1] for c in fake_umap.calls] == [(50, 10), (150, 10)], "PCA-10 rows go to UMAP"
    assert out.shape == (200, 2)


def test_the_cache_name_holds_the_subsample_policy(fake_umap, tmp_path):
    x, y = _clusters(200)
    small = embed._umap_params(x.shape, cap=500)
    assert "fit" not in small, "a set under the cap keeps its old cache name (fitted whole)"
    assert small == embed._umap_params(x.shape, cap=500, stratified=True)
    names = set()
    for kw in (dict(cap=50), dict(cap=60), dict(cap=50, labels=y), dict(cap=500)):
        embed.umap_embed(x, pca_dim=None, cache_key="k", cache_root=tmp_path, **kw)
        names = {p.name for p in (tmp_path / "embeddings").glob("umap-*.npy")}
    assert len(names) == 4, f"cap, stratification and whole fits are separate entries: {names}"


def test_default_cap_is_read_at_call_time(fake_umap, monkeypatch):
    assert embed.UMAP_FIT_CAP == 20_000
    monkeypatch.setattr(embed, "UMAP_FIT_CAP", 40)
    x, y = _clusters(100)
    embed.umap_embed(x, labels=y, pca_dim=None)
    assert [c[1][0] for c in fake_umap.calls] == [40, 60]
    with pytest.raises(ExplorerError, match="at least 3"):
        embed.umap_embed(x, cap=2)


def test_fit_note_names_the_subsample():
    assert embed.fit_note(200, cap=500) is None, "no note when everything was fitted"
    note = embed.fit_note(70_000, cap=20_000)
    assert "stratified" in note and "20,000 of the 70,000" in note and "50,000" in note, note
    assert "\n" not in note
    assert "random subsample of 50 of the 200" in embed.fit_note(200, 50, stratified=False)


def test_umap_or_pca_passes_the_labels_to_the_background_fit(fake_umap, tmp_path):
    x, y = _clusters(200)
    xy, shown = embed.umap_or_pca(x, cache_key="bg", cache_root=tmp_path, labels=y)
    assert shown == "pca"
    embed.wait_for_umaps()
    assert not embed.umap_pending(x.shape, cache_key="bg", cache_root=tmp_path, stratified=True)
    xy2, shown2 = embed.umap_or_pca(x, cache_key="bg", cache_root=tmp_path, labels=y)
    assert shown2 == "umap" and xy2.shape == (200, 2)
    direct = embed.umap_embed(x, cache_key="bg", cache_root=tmp_path, labels=y)
    assert np.array_equal(xy2, direct), "the background run wrote umap_embed's entry"
    assert len([c for c in fake_umap.calls if c[0] == "fit"]) == 1, "fitted once"


@pytest.mark.slow
def test_real_umap_places_the_rest_near_their_class():
    """Real umap-learn (numba JIT, tens of seconds cold): cap 50 on 200 points of 4
    separated clusters; transformed points land among the fitted points of their class."""
    x, y = _clusters(200)
    out = embed.umap_embed(x, labels=y, cap=50)
    idx = embed.stratified_subsample(y, 200, 50)
    rest = np.setdiff1d(np.arange(200), idx)
    d = ((out[rest, None] - out[None, idx]) ** 2).sum(-1)
    nearest = y[idx][np.argmin(d, axis=1)]
    agree = float(np.mean(nearest == y[rest]))
    assert agree > 0.95, f"placed points should sit by their own class: {agree:.2f}"
