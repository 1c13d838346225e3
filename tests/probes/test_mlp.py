"""MLP probe: learns what a linear probe cannot, early-stops on train-only validation."""

from __future__ import annotations

import numpy as np
import pytest

from explorer.errors import ExplorerError
from explorer.probes.linear import LinearProbe
from explorer.probes.mlp import MLPProbe, fit_mlp


@pytest.fixture(scope="module")
def xor():
    """Label = sign(x0 * x1) in 8-D, with 6 noise dims: linearly inseparable (~50% linear)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1000, 8)).astype(np.float32) * 3 + 5  # off-centre, off-scale
    y = ((x[:, 0] - 5) * (x[:, 1] - 5) > 0).astype(np.int64)
    return x[:800], y[:800], x[800:], y[800:]


def test_mlp_beats_linear_on_xor(xor):
    xtr, ytr, xte, yte = xor
    res = fit_mlp(xtr, ytr, xte, yte, hidden=64, epochs=40, batch_size=64, lr=3e-3, device="cpu")
    linear = LinearProbe(1e-3, device="cpu").fit(xtr, ytr).score(xte, yte)
    assert res.top1 > 0.9, f"MLP should solve XOR, got {res.top1:.3f}"
    assert linear < 0.7, f"sanity: a linear probe should fail XOR, got {linear:.3f}"
    assert res.head == "mlp" and 1 <= res.extra["best_epoch"] <= res.extra["epochs_run"], (
        f"bad training report: {res.extra}"
    )
    assert 0.0 <= res.extra["val_top1"] <= 1.0, f"val accuracy must be reported: {res.extra}"


def test_mlp_estimator_shape_and_determinism(xor):
    xtr, ytr, xte, _ = xor
    probe = MLPProbe(hidden=16, epochs=3, device="cpu")
    assert not hasattr(probe, "model_"), "__init__ only stores arguments"
    with pytest.raises(ExplorerError, match="not fitted yet"):
        probe.predict(xte)
    labels = np.where(ytr == 1, 7, 2)
    assert probe.fit(xtr, labels) is probe, "fit must return self"
    p1 = probe.predict_proba(xte)
    assert p1.shape == (200, 2) and np.allclose(p1.sum(1), 1, atol=1e-5), "proba is (N, C)"
    assert set(np.unique(probe.predict(xte))) <= {2, 7}, "predict returns original labels"
    p2 = MLPProbe(hidden=16, epochs=3, device="cpu").fit(xtr, labels).predict_proba(xte)
    assert np.allclose(p1, p2, atol=1e-6), "same seed must give the same model"


def test_mlp_early_stopping_stops(xor):
    xtr, ytr, _, _ = xor
    rng = np.random.default_rng(1)
    noise_labels = rng.integers(0, 2, len(ytr))  # nothing to learn: val acc plateaus at once
    probe = MLPProbe(hidden=16, epochs=200, patience=3, device="cpu").fit(xtr, noise_labels)
    assert probe.epochs_run_ < 200, f"early stopping never fired ({probe.epochs_run_} epochs)"
    assert probe.epochs_run_ - probe.best_epoch_ >= 3, "must stop only after `patience` epochs"
