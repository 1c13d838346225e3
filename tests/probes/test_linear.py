"""Linear probes: agreement with scikit-learn, the batched grid, validation-only selection."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_digits, make_classification
from sklearn.exceptions import NotFittedError as SklearnNotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from explorer.errors import ExplorerError
from explorer.probes.linear import LinearProbe, fit_linear_grid, sklearn_C
from explorer.probes.metrics import validation_split


def _split(X, y, seed=0):
    return train_test_split(X, y, test_size=0.3, random_state=seed, stratify=y)


@pytest.fixture(scope="module")
def digits():
    """sklearn's 8x8 digits as raw pixels (64 features, 10 classes), 70/30 stratified."""
    X, y = load_digits(return_X_y=True)
    return _split(X.astype(np.float32), y)


@pytest.fixture(scope="module")
def hard():
    """A synthetic 4-class task that a linear model gets only ~70-80% right."""
    X, y = make_classification(
        n_samples=1200,
        n_features=40,
        n_informative=8,
        n_redundant=4,
        n_classes=4,
        n_clusters_per_class=2,
        class_sep=1.6,
        flip_y=0.03,
        random_state=0,
    )
    return _split(X.astype(np.float32), y)


def _sklearn(Xtr, ytr, reg):
    """The reference: StandardScaler + lbfgs LogisticRegression run to a tight optimum."""
    scaler = StandardScaler().fit(Xtr)
    clf = LogisticRegression(C=sklearn_C(reg, len(ytr)), max_iter=10_000, tol=1e-10)
    return scaler, clf.fit(scaler.transform(Xtr), ytr)


@pytest.mark.parametrize("data", ["digits", "hard"])
@pytest.mark.parametrize("reg", [1e-4, 1e-2])
def test_linear_probe_agrees_with_sklearn(data, reg, request):
    Xtr, Xte, ytr, yte = request.getfixturevalue(data)
    scaler, ref = _sklearn(Xtr, ytr, reg)
    ref_acc = ref.score(scaler.transform(Xte), yte)
    probe = LinearProbe(reg).fit(Xtr, ytr)
    acc = probe.score(Xte, yte)
    assert probe.converged_, f"{data} reg={reg}: did not converge in {probe.n_iter_} iterations"
    assert abs(acc - ref_acc) <= 0.01, (
        f"{data} reg={reg}: ours {acc:.4f} vs sklearn {ref_acc:.4f} test top-1"
    )
    assert ref_acc < 0.99, f"{data}: the task must not be trivially solved ({ref_acc:.3f})"
    dprob = np.abs(probe.predict_proba(Xte) - ref.predict_proba(scaler.transform(Xte))).max()
    assert dprob < 0.05, f"{data} reg={reg}: probabilities differ from sklearn by {dprob:.4f}"


def test_linear_probe_estimator_shape(digits):
    Xtr, Xte, ytr, yte = digits
    probe = LinearProbe(reg=1e-3)
    assert probe.reg == 1e-3 and not hasattr(probe, "coef_"), "__init__ only stores arguments"
    with pytest.raises(ExplorerError, match="not fitted yet; call fit"):
        probe.predict(Xte)
    with pytest.raises(SklearnNotFittedError):
        probe.predict_proba(Xte)
    labels = np.array([3, 7, 11])[ytr % 3]  # arbitrary label values map through classes_
    assert probe.fit(Xtr, labels) is probe, "fit must return self"
    assert probe.coef_.shape == (3, 64) and probe.intercept_.shape == (3,), "coef_ is (C, D)"
    assert set(np.unique(probe.predict(Xte))) <= {3, 7, 11}, "predict returns original labels"
    proba = probe.predict_proba(Xte)
    assert np.allclose(proba.sum(1), 1, atol=1e-5), "probabilities must sum to one"


def test_grid_agrees_with_sklearn_protocol(digits, hard):
    """Same val split, same reg grid, refit on all of train: same test accuracy as sklearn."""
    regs = (1e-4, 1e-2)
    data = {"digits": digits, "hard": hard}
    train = {k: (v[0], v[2]) for k, v in data.items()}
    test = {k: (v[1], v[3]) for k, v in data.items()}
    results = fit_linear_grid(train, test, regs=regs, device="cpu")
    assert list(results) == ["digits", "hard"], f"keys must follow the input: {list(results)}"
    for key, (Xtr, Xte, ytr, yte) in data.items():
        fit_idx, val_idx = validation_split(ytr, 0.1, seed=0)
        val = {}
        for reg in regs:
            scaler, ref = _sklearn(Xtr[fit_idx], ytr[fit_idx], reg)
            val[reg] = ref.score(scaler.transform(Xtr[val_idx]), ytr[val_idx])
        scaler, ref = _sklearn(Xtr, ytr, max(regs, key=lambda r: (val[r], r)))
        ref_acc = ref.score(scaler.transform(Xte), yte)
        res = results[key]
        assert abs(res.top1 - ref_acc) <= 0.01, f"{key}: ours {res.top1:.4f} vs {ref_acc:.4f}"
        assert res.extra["reg"] in regs and res.extra["converged"], f"{key}: {res.extra}"
        assert res.confusion.shape == (10, 10), "C is the largest label over all settings + 1"
        assert res.ci_low <= res.top1 <= res.ci_high, f"{key}: CI must bracket top1"
        by_reg = res.extra["val_top1_by_reg"]
        assert res.extra["val_top1"] == max(by_reg.values()), "chosen reg has the best val acc"


def test_grid_heads_do_not_interact(hard):
    """A setting's result is the same alone or batched with others (per-head L-BFGS)."""
    Xtr, Xte, ytr, yte = hard
    rng = np.random.default_rng(0)
    proj = rng.normal(size=(40, 40)).astype(np.float32)
    alone = fit_linear_grid({"a": (Xtr, ytr)}, {"a": (Xte, yte)}, regs=(1e-3, 1e-1))
    train = {"a": (Xtr, ytr), "b": (Xtr @ proj, ytr), "c": (Xtr[:, :10], ytr)}
    test = {"a": (Xte, yte), "b": (Xte @ proj, yte), "c": (Xte[:, :10], yte)}
    batched = fit_linear_grid(train, test, regs=(1e-3, 1e-1))
    assert batched["a"].extra["reg"] == alone["a"].extra["reg"], "same reg must be chosen"
    same = np.mean(batched["a"].predictions == alone["a"].predictions)
    assert same == 1.0, f"batched and alone predictions differ on {1 - same:.1%} of test"
    assert batched["c"].top1 < batched["a"].top1, "fewer features must not score better here"


def test_grid_never_looks_at_test_labels(hard):
    Xtr, Xte, ytr, yte = hard
    regs = (1e-5, 1e-3, 1e-1)
    res = fit_linear_grid({"s": (Xtr, ytr)}, {"s": (Xte, yte)}, regs=regs)["s"]
    shuffled = np.random.default_rng(0).permutation(yte)
    res2 = fit_linear_grid({"s": (Xtr, ytr)}, {"s": (Xte, shuffled)}, regs=regs)["s"]
    assert res.extra["reg"] == res2.extra["reg"], "test labels must not influence the reg"
    assert np.array_equal(res.predictions, res2.predictions), "nor the predictions"
    assert res2.top1 < res.top1 - 0.3, "shuffled test labels must score near chance"


def test_grid_single_reg_skips_search_and_float16(digits):
    Xtr, Xte, ytr, yte = digits
    train = {"f16": (Xtr.astype(np.float16), ytr)}
    res = fit_linear_grid(train, {"f16": (Xte.astype(np.float16), yte)}, regs=(1e-3,))
    assert "val_top1" not in res["f16"].extra, "one reg: no validation search"
    ref = LinearProbe(1e-3).fit(Xtr, ytr).score(Xte, yte)
    assert abs(res["f16"].top1 - ref) <= 0.01, f"float16 input {res['f16'].top1} vs {ref}"


def test_grid_input_errors(digits):
    Xtr, Xte, ytr, yte = digits
    with pytest.raises(ExplorerError, match="different settings"):
        fit_linear_grid({"a": (Xtr, ytr)}, {"b": (Xte, yte)})
    with pytest.raises(ExplorerError, match="64 features but test has 10"):
        fit_linear_grid({"a": (Xtr, ytr)}, {"a": (Xte[:, :10], yte)})
    with pytest.raises(ExplorerError, match="rows but its labels"):
        fit_linear_grid({"a": (Xtr, ytr[:-1])}, {"a": (Xte, yte)})
