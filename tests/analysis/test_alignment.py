"""Alignment metrics against formulas written out here as plain loops, their invariances, the
batched map against one call per cell, and the bootstrap interval."""

from __future__ import annotations

import numpy as np
import pytest

from explorer.analysis import alignment as al
from explorer.analysis.cka import linear_cka
from explorer.errors import ExplorerError


@pytest.fixture(scope="module")
def feats():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(70, 12))
    y = x @ rng.normal(size=(12, 9)) + 0.8 * rng.normal(size=(70, 9))  # related to x
    z = rng.normal(size=(70, 15))  # unrelated
    return x, y, z


# --- the definitions, written independently as loops --------------------------------------------


def unit_rows(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def song_hsic(a, b):
    """Song et al.'s unbiased HSIC of two n x n kernels, from its definition."""
    n = len(a)
    a, b = a.copy(), b.copy()
    np.fill_diagonal(a, 0)
    np.fill_diagonal(b, 0)
    one = np.ones(n)
    value = (
        np.trace(a @ b)
        + (one @ a @ one) * (one @ b @ one) / ((n - 1) * (n - 2))
        - 2 / (n - 2) * one @ a @ b @ one
    )
    return value / (n * (n - 3))


def neighbours(gram, k):
    """Each row's k largest entries, the row itself excluded, by a plain sort."""
    n = len(gram)
    return [
        sorted((j for j in range(n) if j != i), key=lambda j: -gram[i, j])[:k] for i in range(n)
    ]


def naive_cknna(x, y, k):
    """Huh et al.'s CKNNA: unbiased HSIC of the kernels kept only where j is among i's k
    nearest neighbours in both sources, over the same for each source with itself."""
    x, y = unit_rows(x), unit_rows(y)
    kx, ky = x @ x.T, y @ y.T

    def similarity(k1, k2):
        n1, n2 = neighbours(k1, k), neighbours(k2, k)
        a, b = np.zeros_like(k1), np.zeros_like(k2)
        for i in range(len(k1)):
            for j in n1[i]:
                if j in n2[i]:
                    a[i, j], b[i, j] = k1[i, j], k2[i, j]
        return song_hsic(a, b)

    return similarity(kx, ky) / np.sqrt(similarity(kx, kx) * similarity(ky, ky))


def naive_mutual_knn(x, y, k):
    x, y = unit_rows(x), unit_rows(y)
    a, b = neighbours(x @ x.T, k), neighbours(y @ y.T, k)
    return np.mean([len(set(a[i]) & set(b[i])) / k for i in range(len(x))])


def naive_cka(x, y):
    """Debiased linear CKA: unbiased HSIC of the linear kernels of the centred features."""
    xc, yc = x - x.mean(0), y - y.mean(0)
    kx, ky = xc @ xc.T, yc @ yc.T
    return song_hsic(kx, ky) / np.sqrt(song_hsic(kx, kx) * song_hsic(ky, ky))


# --- agreement with the definitions -------------------------------------------------------------


@pytest.mark.parametrize("k", [2, 5, 10])
def test_cknna_matches_the_definition(feats, k):
    x, y, z = feats
    for a, b in ((x, y), (x, z), (y, z)):
        assert al.cknna(a, b, k) == pytest.approx(naive_cknna(a, b, k), abs=1e-6)


@pytest.mark.parametrize("k", [1, 5, 10])
def test_mutual_knn_matches_the_definition(feats, k):
    x, y, z = feats
    for a, b in ((x, y), (x, z)):
        assert al.mutual_knn(a, b, k) == pytest.approx(naive_mutual_knn(a, b, k), abs=1e-6)


def test_cka_matches_the_definition_and_explorers_cka(feats):
    x, y, z = feats
    for a, b in ((x, y), (x, z)):
        assert al.cka(a, b) == pytest.approx(naive_cka(a, b), abs=1e-6)
        assert al.cka(a, b) == pytest.approx(linear_cka(a, b, debiased=True), abs=1e-10)


def test_a_source_with_itself_is_one(feats):
    x, y, _ = feats
    for a in (x, y):
        assert al.cka(a, a) == pytest.approx(1.0, abs=1e-10)
        assert al.cknna(a, a, 10) == pytest.approx(1.0, abs=1e-10)
        assert al.mutual_knn(a, a, 10) == 1.0


def test_invariant_to_feature_scaling(feats):
    x, y, _ = feats
    rng = np.random.default_rng(3)
    per_image = rng.uniform(0.1, 10, size=(len(x), 1))  # a positive scale per image
    assert al.cka(3.7 * x, y) == pytest.approx(al.cka(x, y), abs=1e-10)
    for fn in (al.cknna, al.mutual_knn):
        assert fn(3.7 * x, y, 5) == pytest.approx(fn(x, y, 5), abs=1e-10)
        assert fn(per_image * x, y, 5) == pytest.approx(fn(x, y, 5), abs=1e-10)
    q, _ = np.linalg.qr(rng.normal(size=(12, 12)))
    assert al.cknna(x @ q, y, 5) == pytest.approx(al.cknna(x, y, 5), abs=1e-10), "rotation"


def test_related_beats_unrelated(feats):
    x, y, z = feats
    for metric in al.METRICS:
        assert al.alignment(x, y, metric, 5) > al.alignment(x, z, metric, 5) + 0.1, metric


# --- the k-NN search ----------------------------------------------------------------------------


def test_knn_tiles_and_float32_give_the_same_graph(feats, monkeypatch):
    x = feats[0]
    whole = al.knn(x, 6)
    tiled = al.knn(x, 6, block=9)  # 8 row blocks, ragged last one
    np.testing.assert_array_equal(tiled.idx, whole.idx)
    np.testing.assert_allclose(tiled.vals, whole.vals, atol=1e-12)
    monkeypatch.setattr(al, "EXACT_WORK", 0)  # the float32 path of large inputs
    single = al.knn(x, 6, block=16)
    np.testing.assert_array_equal(single.idx, whole.idx)
    np.testing.assert_allclose(single.vals, whole.vals, atol=1e-5)
    assert not (whole.idx == np.arange(len(x))[:, None]).any(), "never the image itself"


# --- maps ---------------------------------------------------------------------------------------


def test_map_equals_one_call_per_cell_and_prepares_each_source_once(feats, monkeypatch):
    x, y, z = feats
    calls = []
    real = al.knn
    monkeypatch.setattr(al, "knn", lambda a, *args, **kw: calls.append(1) or real(a, *args, **kw))
    rows, cols = [x, y], [x, y, z]  # x and y in both lists: the same arrays, prepared once
    maps = al.alignment_map(rows, cols, al.METRICS, k=5, n_boot=0)
    assert len(calls) == 3, "one k-NN graph per distinct source, reused by every cell"
    monkeypatch.setattr(al, "knn", real)
    for m in al.METRICS:
        want = al.naive_map(rows, cols, m, k=5)
        np.testing.assert_allclose(maps[m].value, want, atol=1e-10, err_msg=m)
        assert np.isnan(maps[m].ci_low).all(), "n_boot=0: no interval"
    for m in al.METRICS:
        np.testing.assert_allclose(np.diag(maps[m].value[:, :2]), 1.0, err_msg=m)


def test_map_computes_only_the_cells_asked(feats):
    x, y, z = feats
    want = np.array([[True, False], [False, True]])
    maps = al.alignment_map([x, y], [y, z], ("cka",), n_boot=0, want=want)
    v = maps["cka"].value
    assert np.isnan(v[0, 1]) and np.isnan(v[1, 0])
    assert v[0, 0] == pytest.approx(al.cka(x, y)) and v[1, 1] == pytest.approx(al.cka(y, z))


def test_a_small_and_a_large_source_meet_in_one_precision():
    """One source under the exact-size limit (float64) and one past it (float32), as a block
    and the raw pixels are: the map still equals the core's CKA."""
    rng = np.random.default_rng(5)
    small = rng.normal(size=(300, 20))
    side = int(np.ceil(np.sqrt(al.EXACT_WORK / 300))) + 1  # 300 * side^2 > EXACT_WORK
    large = np.hstack([small @ rng.normal(size=(20, side)), rng.normal(size=(300, 4))])
    res = al.alignment_map([small], [large], ("cka",), n_boot=20)["cka"]
    assert res.value[0, 0] == pytest.approx(al.cka(small, large), abs=1e-5)
    assert res.ci_low[0, 0] <= res.value[0, 0] <= res.ci_high[0, 0]


def test_bootstrap_interval(feats):
    x, y, _ = feats
    maps = al.alignment_map([x], [x, y], al.METRICS, k=5, n_boot=200, seed=1)
    for m, res in maps.items():
        assert res.ci_low[0, 0] == pytest.approx(1.0) and res.ci_high[0, 0] == pytest.approx(1.0), (
            f"{m}: a source against itself is 1 in every resample"
        )
        lo, v, hi = res.ci_low[0, 1], res.value[0, 1], res.ci_high[0, 1]
        assert lo < v < hi and hi - lo < 0.6, (m, lo, v, hi)
    again = al.alignment_map([x], [x, y], al.METRICS, k=5, n_boot=200, seed=1)
    assert again["cknna"].ci_low[0, 1] == maps["cknna"].ci_low[0, 1], "seeded"
    # more images, narrower interval (the same relation, 4x the images)
    rng = np.random.default_rng(5)
    big_x = rng.normal(size=(280, 12))
    big_y = big_x @ rng.normal(size=(12, 9)) + 0.8 * rng.normal(size=(280, 9))
    big = al.alignment_map([big_x], [big_y], ("cka",), n_boot=200)["cka"]
    small = maps["cka"]
    assert big.ci_high[0, 0] - big.ci_low[0, 0] < small.ci_high[0, 1] - small.ci_low[0, 1]


def test_cka_interval_is_close_to_a_full_bootstrap():
    """The first-order interval against recomputing CKA on each resample (distinct rows)."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(300, 6))
    y = x @ rng.normal(size=(6, 5)) + 1.5 * rng.normal(size=(300, 5))
    w = al.bootstrap_weights(300, 300, seed=4) + 1  # counts
    full = []
    for counts in w:  # each resample recomputed from scratch
        idx = np.repeat(np.arange(300), counts.astype(int))
        full.append(linear_cka(x[idx], y[idx]))  # plain CKA: duplicates are fine for it
    res = al.alignment_map([x], [y], ("cka",), n_boot=300, seed=4)["cka"]
    spread_full = np.percentile(full, 97.5) - np.percentile(full, 2.5)
    spread = res.ci_high[0, 0] - res.ci_low[0, 0]
    assert 0.6 < spread / spread_full < 1.6, (spread, spread_full)


# --- bad input ----------------------------------------------------------------------------------


def test_bad_input_is_one_line(feats):
    x, y, _ = feats
    with pytest.raises(ExplorerError, match="unknown metric 'ckna'.*did you mean cknna"):
        al.parse_metrics("cka,ckna")
    assert al.parse_metrics("CKA, mknn") == ("cka", "mutual_knn")
    with pytest.raises(ExplorerError, match="at least 1"):
        al.mutual_knn(x, y, 0)
    with pytest.raises(ExplorerError, match="at least 2 for cknna"):
        al.cknna(x, y, 1)
    with pytest.raises(ExplorerError, match="need more than 70 images"):
        al.cknna(x, y, 70)
    with pytest.raises(ExplorerError, match="same images"):
        al.alignment_map([x], [y[:50]], ("cka",))
    with pytest.raises(ExplorerError, match="same images"):
        al.cknna(x, y[:50], 5)
