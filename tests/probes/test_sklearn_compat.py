"""The probes are scikit-learn classifiers: `is_classifier`, tags, stratified cross-validation."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import ClassifierMixin, clone, is_classifier
from sklearn.metrics import accuracy_score
from sklearn.model_selection import (
    GridSearchCV,
    KFold,
    StratifiedKFold,
    check_cv,
    cross_val_score,
)
from sklearn.utils import get_tags

import explorer.probes.metrics as metrics
from explorer.probes.attention import AttentionProbe
from explorer.probes.base import ProbeEstimator
from explorer.probes.fusion import FusionProbe
from explorer.probes.linear import LinearProbe
from explorer.probes.mlp import MLPProbe
from explorer.probes.paper_heads import CNNProbe, PaperAttentionProbe

PROBE_CLASSES = [LinearProbe, MLPProbe, AttentionProbe, FusionProbe, PaperAttentionProbe, CNNProbe]


class RecordingProbe(LinearProbe):
    """A LinearProbe that records the classes of every training set it is fitted on.

    Cross-validation fits clones, so the record lives on the class, not the instance.
    """

    seen: list[np.ndarray] = []

    def fit(self, X, y):
        RecordingProbe.seen.append(np.unique(y))
        return super().fit(X, y)


def _sorted_blobs(n_per_class: int = 12, n_classes: int = 3, d: int = 4):
    """Separable features `(N, d)` float32 with labels `(N,)` sorted by class: 0..0 1..1 2..2."""
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(n_classes), n_per_class)
    centres = 4.0 * np.eye(n_classes, d)
    X = (centres[y] + rng.normal(scale=0.3, size=(len(y), d))).astype(np.float32)
    return X, y


@pytest.mark.parametrize("cls", PROBE_CLASSES, ids=lambda c: c.__name__)
def test_every_probe_is_a_sklearn_classifier(cls):
    probe = cls()
    assert issubclass(cls, ProbeEstimator), f"{cls.__name__} uses the shared base"
    assert isinstance(probe, ClassifierMixin), f"{cls.__name__} has sklearn's ClassifierMixin"
    assert is_classifier(probe), f"is_classifier({cls.__name__}()) is True"
    tags = get_tags(probe)
    assert tags.estimator_type == "classifier", f"{cls.__name__} is tagged a classifier"
    assert tags.classifier_tags is not None and tags.regressor_tags is None
    assert probe.__sklearn_tags__().estimator_type == "classifier"
    assert is_classifier(clone(probe)), "a clone is still a classifier"


def test_home_made_mixin_is_gone():
    assert not hasattr(metrics, "ClassifierMixin"), "only scikit-learn's ClassifierMixin is used"


def test_integer_cv_is_stratified_for_probes():
    X, y = _sorted_blobs()
    est = LinearProbe(device="cpu")
    cv = check_cv(3, y, classifier=is_classifier(est))
    assert isinstance(cv, StratifiedKFold), f"cv=3 on a probe gives {type(cv).__name__}"


def test_cross_val_score_trains_every_fold_on_every_class():
    X, y = _sorted_blobs()
    classes = np.unique(y)

    # Plain KFold over sorted labels leaves a whole class out of a training fold: the data
    # set tells stratified from unstratified splitting.
    RecordingProbe.seen = []
    cross_val_score(RecordingProbe(max_iter=100, device="cpu"), X, y, cv=KFold(3))
    assert any(len(s) < len(classes) for s in RecordingProbe.seen), (
        f"unstratified folds should miss a class: {RecordingProbe.seen}"
    )

    RecordingProbe.seen = []
    scores = cross_val_score(RecordingProbe(max_iter=100, device="cpu"), X, y, cv=3)
    assert len(RecordingProbe.seen) == 3, f"one fit per fold: {RecordingProbe.seen}"
    for seen in RecordingProbe.seen:
        assert np.array_equal(seen, classes), f"a training fold lacks a class: {seen}"
    assert scores.shape == (3,) and np.all(scores == 1.0), f"separable blobs: {scores}"


def test_grid_search_as_in_the_readme_stratifies():
    X, y = _sorted_blobs()
    RecordingProbe.seen = []
    search = GridSearchCV(RecordingProbe(device="cpu"), {"reg": [1e-4, 1e-2]}, cv=3).fit(X, y)
    assert len(RecordingProbe.seen) == 2 * 3 + 1, "3 folds per reg, then the refit"
    for seen in RecordingProbe.seen:
        assert np.array_equal(seen, np.unique(y)), f"a training fold lacks a class: {seen}"
    assert search.best_params_["reg"] in (1e-4, 1e-2)
    assert search.score(X, y) == 1.0


def test_score_is_accuracy_and_predict_uses_classes():
    X, y = _sorted_blobs()
    labels = np.array(["cat", "dog", "eel"])[y]
    probe = LinearProbe(max_iter=100, device="cpu").fit(X, labels)
    pred = probe.predict(X)
    assert pred.dtype == labels.dtype and set(pred) <= set(labels), "labels come from classes_"
    flipped = labels.copy()
    flipped[:6] = "dog"  # 6 of 36 wrong
    score = probe.score(X, flipped)
    assert isinstance(score, float) and score == pytest.approx(30 / 36)
    assert score == pytest.approx(accuracy_score(flipped, pred))
    weights = np.where(np.arange(len(y)) < 6, 0.0, 1.0)
    assert probe.score(X, flipped, sample_weight=weights) == 1.0, "sample_weight is honoured"
