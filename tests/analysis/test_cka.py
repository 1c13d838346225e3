"""Linear CKA: invariances, a hand-computed case, the debiased estimator, the K x K matrix."""

from __future__ import annotations

import numpy as np
import pytest

from explorer.analysis.cka import cka_matrix, linear_cka, neighbour_mean
from explorer.errors import ExplorerError


@pytest.fixture(scope="module")
def feats():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 12))
    y = x @ rng.normal(size=(12, 7)) + 0.5 * rng.normal(size=(60, 7))  # related to x
    z = rng.normal(size=(60, 20))  # unrelated
    return x, y, z


def _song_hsic(kx, ky):
    """Song et al. (2012) unbiased HSIC straight from its definition, times n(n-3)."""
    n = len(kx)
    kx, ky = kx.copy(), ky.copy()
    np.fill_diagonal(kx, 0)
    np.fill_diagonal(ky, 0)
    one = np.ones(n)
    return (
        np.trace(kx @ ky)
        + (one @ kx @ one) * (one @ ky @ one) / ((n - 1) * (n - 2))
        - 2 / (n - 2) * one @ kx @ ky @ one
    )


@pytest.mark.parametrize("debiased", [False, True])
def test_self_similarity_is_one(feats, debiased):
    x, y, _ = feats
    for a in (x, y):
        v = linear_cka(a, a, debiased=debiased)
        assert v == pytest.approx(1.0, abs=1e-10), f"CKA(X, X) = {v} (debiased={debiased})"


@pytest.mark.parametrize("debiased", [False, True])
def test_invariances(feats, debiased):
    x, y, _ = feats
    q, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(12, 12)))
    base = linear_cka(x, y, debiased=debiased)
    rotated = linear_cka(x @ q, y, debiased=debiased)
    scaled = linear_cka(3.7 * x + 2.0, y, debiased=debiased)  # isotropic scale + shift
    assert rotated == pytest.approx(base, abs=1e-10), f"orthogonal transform: {rotated} vs {base}"
    assert scaled == pytest.approx(base, abs=1e-10), f"isotropic scaling: {scaled} vs {base}"
    stretch = np.geomspace(0.01, 100, 12)  # a non-isotropic scaling must change CKA
    stretched = linear_cka(x * stretch, y, debiased=debiased)
    assert abs(stretched - base) > 0.05, f"non-isotropic scaling left CKA at {stretched}"


def test_related_beats_unrelated(feats):
    x, y, z = feats
    related, unrelated = linear_cka(x, y), linear_cka(x, z)
    assert related > 0.5, f"y is a noisy linear map of x, CKA should be high: {related}"
    assert unrelated < related - 0.3, f"unrelated features scored {unrelated} vs {related}"
    d_unrelated = linear_cka(x, z, debiased=True)
    assert abs(d_unrelated) < unrelated / 2, (
        f"debiasing must shrink chance similarity: {d_unrelated}"
    )


def test_hand_computed_four_points():
    x = np.array([[1.0], [2.0], [3.0], [4.0]])
    y = np.array([[1.0], [3.0], [2.0], [4.0]])
    # Centred: x = (-1.5, -.5, .5, 1.5), y = (-1.5, .5, -.5, 1.5).
    # With 1-D features CKA = (x.y)^2 / (|x|^2 |y|^2) = 4^2 / (5 * 5) = 16/25 = 0.64.
    assert linear_cka(x, y) == pytest.approx(0.64, abs=1e-12), "hand value 16/25"
    # Debiased, n = 4, K = x x^T and L = y y^T with zeroed diagonals (Song et al.):
    #   tr(KL) = (x.y)^2 - sum x_i^2 y_i^2 = 16 - 10.25 = 5.75
    #   1'K1 = (sum x)^2 - |x|^2 = -5, likewise 1'L1 = -5  -> 25 / ((n-1)(n-2)) = 25/6
    #   (K1)_i = -x_i^2, (L1)_i = -y_i^2 -> 2/(n-2) * 1'KL1 = 10.25
    #   HSIC_xy ~ 5.75 + 25/6 - 10.25 = -1/3
    #   HSIC_xx ~ (25 - 10.25) + 25/6 - 10.25 = 26/3, and HSIC_yy = 26/3 too
    # so debiased CKA = (-1/3) / (26/3) = -1/26.
    assert linear_cka(x, y, debiased=True) == pytest.approx(-1 / 26, abs=1e-12), "hand -1/26"


def test_debiased_matches_song_estimator(feats):
    x, y, _ = feats
    xc, yc = x - x.mean(0), y - y.mean(0)
    kx, ky = xc @ xc.T, yc @ yc.T
    ref = _song_hsic(kx, ky) / np.sqrt(_song_hsic(kx, kx) * _song_hsic(ky, ky))
    got = linear_cka(x, y, debiased=True)
    assert got == pytest.approx(ref, abs=1e-10), f"feature-space debiased {got} vs Song {ref}"


@pytest.mark.parametrize("debiased", [False, True])
def test_cka_matrix(feats, debiased):
    x, y, z = feats
    sets = [x, y.astype(np.float16), z]
    gram = cka_matrix(sets, debiased=debiased)
    feature = cka_matrix(sets, debiased=debiased, max_gram_gb=0)  # force the other path
    assert gram.shape == (3, 3), f"expected (3, 3), got {gram.shape}"
    assert np.allclose(gram, gram.T), "CKA matrix must be symmetric"
    assert np.allclose(np.diag(gram), 1.0, atol=1e-6), f"diagonal must be ones: {np.diag(gram)}"
    assert np.allclose(gram, feature, atol=1e-5), (
        f"Gram and feature paths differ:\n{gram}\n{feature}"
    )
    pair = linear_cka(x, y.astype(np.float16), debiased=debiased)
    assert gram[0, 1] == pytest.approx(pair, abs=1e-5), f"matrix {gram[0, 1]} vs pair {pair}"


def test_errors():
    with pytest.raises(ExplorerError, match="same examples"):
        linear_cka(np.zeros((5, 2)), np.zeros((6, 2)))
    with pytest.raises(ExplorerError, match="at least 4"):
        linear_cka(np.ones((3, 2)), np.ones((3, 2)), debiased=True)
    with pytest.raises(ExplorerError, match="row counts differ"):
        cka_matrix([np.zeros((5, 2)), np.zeros((6, 2))])


def test_neighbour_mean_reads_the_first_off_diagonal():
    m = np.array([[1.0, 0.8, 0.1], [0.8, 1.0, 0.6], [0.1, 0.6, 1.0]])
    assert neighbour_mean(m) == pytest.approx(0.7)
    assert neighbour_mean(np.ones((1, 1))) is None
