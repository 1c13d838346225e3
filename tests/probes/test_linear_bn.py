"""`linear-bn`: REPA's probe protocol (BatchNorm without affine, then the linear grid)."""

from __future__ import annotations

import numpy as np
import pytest

from explorer.probes.linear import BN_EPS, fit_linear_grid
from explorer.probes.registry import describe_heads, parse_head
from explorer.results import ResultStore


def _tasks():
    rng = np.random.default_rng(0)
    tasks = {}
    for key, scale in (("a", 1.0), ("b", 30.0)):
        y = np.arange(120) % 3
        centres = np.random.default_rng(7).normal(size=(3, 10))
        x = (centres[y] + rng.normal(size=(120, 10))) * scale
        x[:, 3] = 2.5  # a constant feature: BatchNorm divides by sqrt(eps), the scaler by 1
        x = x.astype(np.float32)
        tasks[key] = (x[:90], y[:90], x[90:], y[90:])
    return tasks


def _by_hand(x_train: np.ndarray, x: np.ndarray) -> np.ndarray:
    """BatchNorm1d(affine=False) in eval mode with the train split's population statistics."""
    xt = x_train.astype(np.float64)
    mean, var = xt.mean(0), xt.var(0)  # ddof=0: population variance
    return ((x - mean) / np.sqrt(var + BN_EPS)).astype(np.float32)


def test_linear_bn_is_a_listed_head():
    head = parse_head("linear-bn")
    assert head.name == "linear-bn" and head.label == "linear-bn"
    assert head.params == parse_head("linear").params, "the same grid parameters as linear"
    assert "linear-bn: REPA's probe" in describe_heads(), "listed with its description"
    assert "pool 1" in head.spec.description, "the description says REPA pools with pool 1"


def test_linear_bn_equals_the_grid_on_hand_standardised_features():
    tasks = _tasks()
    head = parse_head("linear-bn:regs=1e-3/1e-2/1e-1")
    got = head.fit(tasks, n_classes=3, device="cpu")
    train = {k: (_by_hand(t[0], t[0]), t[1]) for k, t in tasks.items()}
    test = {k: (_by_hand(t[0], t[2]), t[3]) for k, t in tasks.items()}
    # already standardised: the scaler's mean is ~0 and std ~1 (exactly 1 where var + eps = 1)
    ref = fit_linear_grid(train, test, regs=(1e-3, 1e-2, 1e-1), n_classes=3, device="cpu")
    for k in tasks:
        g, r = got[k], ref[k]
        assert g.head == "linear-bn" and r.head == "linear"
        assert g.extra["reg"] == r.extra["reg"], "the same reg is chosen on validation"
        assert g.extra["val_top1_by_reg"] == pytest.approx(r.extra["val_top1_by_reg"], abs=1e-9)
        np.testing.assert_array_equal(g.predictions, r.predictions)
        assert g.top1 == pytest.approx(r.top1, abs=1e-12)


def test_batchnorm_differs_from_the_scaler_only_by_eps():
    tasks = _tasks()
    bn = parse_head("linear-bn:regs=1e-2").fit(tasks, n_classes=3, device="cpu")
    lin = parse_head("linear:regs=1e-2").fit(tasks, n_classes=3, device="cpu")
    assert {r.head for r in bn.values()} == {"linear-bn"}
    assert {r.head for r in lin.values()} == {"linear"}
    assert bn["b"].top1 == pytest.approx(lin["b"].top1, abs=0.05), "large variances: near equal"


def test_linear_bn_has_its_own_cache_key():
    bn, lin = parse_head("linear-bn"), parse_head("linear")
    assert bn.params == lin.params
    key_bn = ResultStore.key(bn.name, ["tr"], ["te"], bn.params)
    key_lin = ResultStore.key(lin.name, ["tr"], ["te"], lin.params)
    assert key_bn != key_lin, "linear-bn never serves or overwrites a linear result"


def test_standardise_is_checked():
    from explorer.errors import ExplorerError

    x, y = np.zeros((6, 2), np.float32), np.arange(6) % 2
    with pytest.raises(ExplorerError, match="standardise must be one of scaler, batchnorm"):
        fit_linear_grid({"a": (x, y)}, {"a": (x, y)}, standardise="layernorm")
