"""Cosine k-NN probe: matches a brute-force reference, chunking-invariant, answers every k."""

from __future__ import annotations

import numpy as np
import pytest

from explorer.errors import ExplorerError
from explorer.probes.knn import fit_knn, knn_predict
from explorer.probes.metrics import fit_val_split


def _reference(xtr, ytr, xte, k, temperature, n_classes):
    """Brute force in float64: full similarity matrix, sort, weighted bincount per row."""
    a = xtr / np.linalg.norm(xtr, axis=1, keepdims=True)
    b = xte / np.linalg.norm(xte, axis=1, keepdims=True)
    sims = b @ a.T
    out = []
    for row in sims:
        nn = np.argsort(-row)[:k]
        votes = np.bincount(ytr[nn], weights=np.exp(row[nn] / temperature), minlength=n_classes)
        out.append(votes.argmax())
    return np.array(out)


@pytest.fixture(scope="module")
def blobs():
    """3 overlapping classes on a sphere-ish cloud, so k-NN is good but not perfect."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 16)) * 0.6
    ytr, yte = rng.integers(0, 3, 300), rng.integers(0, 3, 120)
    xtr = (centres[ytr] + rng.normal(size=(300, 16))).astype(np.float32)
    xte = (centres[yte] + rng.normal(size=(120, 16))).astype(np.float32)
    return xtr, ytr, xte, yte


def test_knn_matches_brute_force(blobs):
    xtr, ytr, xte, yte = blobs
    for temperature in (0.07, 1.0):
        preds = knn_predict(xtr, ytr, xte, ks=(1, 10, 20), temperature=temperature, chunk=7)
        for k, p in preds.items():
            ref = _reference(xtr, ytr, xte, k, temperature, 3)
            assert np.array_equal(p, ref), (
                f"k={k} T={temperature}: {np.mean(p != ref):.1%} of predictions differ"
            )


def test_knn_results_and_chunking(blobs):
    xtr, ytr, xte, yte = blobs
    res = fit_knn(xtr, ytr, xte, yte)
    assert sorted(res) == [10, 20], f"one result per k expected, got {sorted(res)}"
    for k, r in res.items():
        assert r.head == f"knn{k}" and r.extra["k"] == k, f"head/k mislabelled: {r.head}"
        assert 0.5 < r.top1 < 1.0, f"k={k}: top1 {r.top1:.3f} should be well above chance 1/3"
    whole = fit_knn(xtr, ytr, xte.astype(np.float16), yte, chunk=10_000)
    small = fit_knn(xtr, ytr, xte.astype(np.float16), yte, chunk=16)
    for k in res:
        assert np.array_equal(whole[k].predictions, small[k].predictions), (
            f"k={k}: chunk size changed predictions"
        )


def test_knn_k_larger_than_train_and_errors(blobs):
    xtr, ytr, xte, _ = blobs
    preds = knn_predict(xtr[:5], ytr[:5], xte, ks=(50,))
    ref = _reference(xtr[:5], ytr[:5], xte, 5, 0.07, 3)
    assert np.array_equal(preds[50], ref), "k beyond N_train must use every train point"
    with pytest.raises(ExplorerError, match="must be"):
        knn_predict(xtr, ytr, xte[:, :4])
    with pytest.raises(ExplorerError, match="positive"):
        knn_predict(xtr, ytr, xte, ks=(0,))


def test_knn_reports_validation_accuracy_on_the_shared_split(blobs):
    xtr, ytr, xte, yte = blobs
    res = fit_knn(xtr, ytr, xte, yte, ks=(10,))[10]
    fit_idx, val_idx = fit_val_split(ytr, 0.1, 0)  # the split the linear and MLP probes hold out
    ref = _reference(xtr[fit_idx], ytr[fit_idx], xtr[val_idx], 10, 0.07, 3)
    assert res.extra["n_val"] == val_idx.size == 30, f"10% of 300 held out, got {res.extra}"
    assert res.extra["val_top1"] == pytest.approx(np.mean(ref == ytr[val_idx])), (
        "val top-1 must be the held-out rows classified by the rest of train"
    )
    full = _reference(xtr, ytr, xte, 10, 0.07, 3)
    assert np.array_equal(res.predictions, full), "test images still vote among all of train"
    none = fit_knn(xtr, ytr, xte, yte, ks=(10,), val_fraction=0)[10]
    assert "val_top1" not in none.extra and np.array_equal(none.predictions, res.predictions)
