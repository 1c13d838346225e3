"""What every probe shares: `ProbeResult`, accuracy helpers, the validation split, input checks."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.exceptions import NotFittedError as _SklearnNotFitted

from explorer.errors import ExplorerError

BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0


class NotFittedError(ExplorerError, _SklearnNotFitted):
    """A probe was used before `fit`; caught both as ExplorerError and as sklearn's error."""


def check_fitted(estimator: object, attribute: str = "coef_") -> None:
    """Raise NotFittedError unless `estimator` has its learned `attribute`."""
    if getattr(estimator, attribute, None) is None:
        name = type(estimator).__name__
        raise NotFittedError(f"this {name} is not fitted yet; call fit(X, y) before using it")


def check_xy(X: np.ndarray, y: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    """`X` as a non-empty `(N, D)` array and `y` as its `(N,)` labels, or a one-line error."""
    X = np.asarray(X)
    y = np.asarray(y)
    if X.ndim != 2:
        raise ExplorerError(f"{what} must be a (N, D) feature matrix, got shape {X.shape}")
    if y.shape != (X.shape[0],):
        raise ExplorerError(f"{what} has {X.shape[0]} rows but its labels have shape {y.shape}")
    if X.shape[0] == 0:
        raise ExplorerError(f"{what} is empty")
    return X, y


def as_device_tensor(x: np.ndarray, device: torch.device) -> torch.Tensor:
    """`x` on `device` in its own dtype (float32 conversion then happens on the device).

    On the CPU this may share memory with `x`: callers never write to it.
    """
    with warnings.catch_warnings():  # memmapped caches are read-only; we never write to them
        warnings.simplefilter("ignore", UserWarning)
        return torch.as_tensor(np.asarray(x)).to(device)


def standardise_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-feature (mean, std) `(D,)` float32 of `x` `(N, D)`, computed in float64; std 0 -> 1.

    Matches scikit-learn's StandardScaler (population std, constant features left unscaled).
    """
    var, mean = torch.var_mean(x.to(torch.float64), dim=0, correction=0)
    std = var.sqrt()
    std[std == 0] = 1.0
    return mean.float(), std.float()


def bootstrap_ci(
    correct: np.ndarray,
    *,
    n_resamples: int = BOOTSTRAP_RESAMPLES,
    level: float = 0.95,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[float, float]:
    """Percentile bootstrap interval for top-1 accuracy from `correct` `(N,) bool`.

    Resampling N test examples with replacement, the number correct is exactly
    Binomial(N, k/N), so the resamples are drawn from that law directly: the same
    distribution as index resampling, in O(n_resamples) instead of O(n_resamples * N).
    """
    correct = np.asarray(correct, dtype=bool).ravel()
    n = correct.size
    if n == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = rng.binomial(n, correct.mean(), size=n_resamples) / n
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return float(low), float(high)


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """`(C, C) int64` counts, rows = true class, columns = predicted class."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    flat = np.bincount(y_true * n_classes + y_pred, minlength=n_classes * n_classes)
    return flat.reshape(n_classes, n_classes)


def per_class_accuracy(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """`(C,) float64` recall per class; NaN for classes absent from `y_true`."""
    cm = confusion_matrix(y_true, y_pred, n_classes)
    support = cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diag(cm) / support, np.nan)


def validation_split(
    y: np.ndarray, fraction: float, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Split indices of `y` `(N,)` into (fit, val), `fraction` of every class going to val.

    Each class with at least 2 examples gives at least one to val. Both index arrays are
    sorted; the split depends only on (y, fraction, seed).
    """
    y = np.asarray(y)
    if not 0.0 < fraction < 1.0:
        raise ExplorerError(f"val_fraction ({fraction}) must be between 0 and 1 (exclusive)")
    rng = np.random.default_rng(seed)
    val = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        n_val = min(max(round(fraction * idx.size), 1), idx.size - 1)
        val.append(rng.permutation(idx)[:n_val])
    val_idx = np.sort(np.concatenate(val)) if val else np.empty(0, dtype=np.int64)
    mask = np.ones(y.size, dtype=bool)
    mask[val_idx] = False
    return np.flatnonzero(mask), val_idx.astype(np.int64)


@dataclass
class ProbeResult:
    """One probe's test-set outcome.

    `per_class` is `(C,)` recall (NaN where a class has no test example), `confusion` is
    `(C, C) int64` with rows = true and columns = predicted, `predictions` is `(N_test,)
    int64`, and `extra` holds head-specific details (chosen reg, val accuracy, ...).
    """

    head: str
    top1: float
    ci_low: float
    ci_high: float
    per_class: np.ndarray
    confusion: np.ndarray
    predictions: np.ndarray
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_predictions(
        cls,
        head: str,
        y_true: np.ndarray,
        y_pred: np.ndarray,
        n_classes: int | None = None,
        extra: dict[str, Any] | None = None,
        seed: int = BOOTSTRAP_SEED,
    ) -> ProbeResult:
        """Score `y_pred` `(N,)` against `y_true` `(N,)` over classes `0..n_classes-1`."""
        y_true = np.asarray(y_true, dtype=np.int64)
        y_pred = np.asarray(y_pred, dtype=np.int64)
        if y_true.shape != y_pred.shape:
            raise ExplorerError(
                f"predictions {y_pred.shape} and labels {y_true.shape} differ in shape"
            )
        if n_classes is None:
            n_classes = int(max(y_true.max(initial=-1), y_pred.max(initial=-1))) + 1
        correct = y_true == y_pred
        low, high = bootstrap_ci(correct, seed=seed)
        return cls(
            head=head,
            top1=float(correct.mean()) if correct.size else float("nan"),
            ci_low=low,
            ci_high=high,
            per_class=per_class_accuracy(y_true, y_pred, n_classes),
            confusion=confusion_matrix(y_true, y_pred, n_classes),
            predictions=y_pred,
            extra=dict(extra or {}),
        )

    @property
    def n_test(self) -> int:
        return int(self.predictions.shape[0])

    def summary(self) -> dict[str, Any]:
        """The scalars: head, top1, CI, n_test, and every scalar entry of `extra`."""
        out: dict[str, Any] = {
            "head": self.head,
            "top1": self.top1,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "n_test": self.n_test,
        }
        for k, v in self.extra.items():
            if isinstance(v, (bool, int, float, str, np.integer, np.floating)):
                out[k] = v.item() if isinstance(v, np.generic) else v
        return out


def fit_val_split(
    codes: np.ndarray, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """`(fit_idx, val_idx)`: a stratified validation split of train, or none when `val_fraction` is 0."""
    if val_fraction:
        return validation_split(codes, val_fraction, seed)
    return np.arange(len(codes)), np.empty(0, dtype=np.int64)


# --- paired comparisons ----------------------------------------------------------------------


def paired_bootstrap_diff(
    correct_a: np.ndarray,
    correct_b: np.ndarray,
    *,
    n_resamples: int = BOOTSTRAP_RESAMPLES,
    level: float = 0.95,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[float, float, float]:
    """`(diff, low, high)`: top-1 of A minus top-1 of B on the same test images, with a
    percentile paired-bootstrap interval.

    `correct_a`, `correct_b` are `(N,) bool`, one entry per test image, in the same order.
    Resampling the N images with replacement keeps each image's pair; only the images where
    A and B disagree move the difference, and their counts (A right only, B right only,
    both/neither) are exactly Multinomial(N, p), so the resamples are drawn from that law:
    the same distribution as index resampling in O(n_resamples) instead of O(n_resamples * N).
    """
    a = np.asarray(correct_a, dtype=bool).ravel()
    b = np.asarray(correct_b, dtype=bool).ravel()
    if a.shape != b.shape:
        raise ExplorerError(
            f"a paired comparison needs the same test images: got {a.size} and {b.size} results"
        )
    n = a.size
    if n == 0:
        return float("nan"), float("nan"), float("nan")
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(b & ~a))
    p = np.array([only_a, only_b, n - only_a - only_b], dtype=np.float64) / n
    counts = np.random.default_rng(seed).multinomial(n, p, size=n_resamples)
    diffs = (counts[:, 0] - counts[:, 1]) / n
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(diffs, [alpha, 1.0 - alpha])
    return (only_a - only_b) / n, float(low), float(high)


def significant(low: float, high: float) -> bool:
    """Whether an interval for a difference excludes 0 (NaN bounds: no)."""
    return bool(np.isfinite(low) and np.isfinite(high) and (low > 0 or high < 0))


def difference_words(diff: float, low: float, high: float, a: str, b: str) -> str:
    """One sentence on `a` − `b` in points with its paired 95% interval, saying whether it is noise."""
    if not np.isfinite(diff):
        return f"no paired comparison of {a} and {b} is available."
    span = f"{100 * diff:+.2f} points (paired 95% interval {100 * low:+.2f} to {100 * high:+.2f})"
    if not significant(low, high):
        return f"{a} − {b}: {span}; the interval includes 0, so the difference is within noise."
    verdict = "better" if low > 0 else "worse"
    return f"{a} − {b}: {span}; the interval excludes 0, so {a} is {verdict} than {b}."


@dataclass
class PairedDiff:
    """Top-1 of A minus top-1 of B `(diff, low, high)` over the same test images, in [-1, 1]."""

    diff: float
    low: float
    high: float

    @property
    def significant(self) -> bool:
        return significant(self.low, self.high)

    def words(self, a: str = "A", b: str = "B") -> str:
        return difference_words(self.diff, self.low, self.high, a, b)


def compare_results(a: ProbeResult, b: ProbeResult, y_true: np.ndarray) -> PairedDiff:
    """Paired bootstrap of `a.top1 - b.top1` from both results' predictions `(N,)` on `y_true` `(N,)`."""
    y = np.asarray(y_true, dtype=np.int64)
    if a.predictions.shape != y.shape or b.predictions.shape != y.shape:
        raise ExplorerError(
            f"results on {a.n_test} and {b.n_test} test images cannot be paired over {y.size} labels"
        )
    return PairedDiff(*paired_bootstrap_diff(a.predictions == y, b.predictions == y))


def worst_class(r: ProbeResult) -> float:
    """The lowest per-class recall of `r` (classes without test images ignored)."""
    return float(np.nanmin(r.per_class))


@dataclass
class SideBySide:
    """Two results on the same test images, A and B, and every number that compares them.

    `paired` is B − A (top-1, paired bootstrap); `classes` are the `C` class names.
    """

    a: ProbeResult
    b: ProbeResult
    paired: PairedDiff
    classes: list[str]

    @property
    def top1_delta(self) -> float:
        """Top-1 of B minus A, in points."""
        return 100 * (self.b.top1 - self.a.top1)

    @property
    def worst_delta(self) -> float:
        """Worst-class recall of B minus A, in points."""
        return 100 * (worst_class(self.b) - worst_class(self.a))

    @property
    def classes_better(self) -> int:
        """How many classes have a strictly higher recall in B than in A."""
        return int(np.nansum(self.b.per_class > self.a.per_class))

    def summary_table(self) -> pd.DataFrame:
        """DataFrame: metric, A, B, B − A over top1, CI, worst class, then the paired interval."""
        rows = ["top1", "ci_low", "ci_high", "worst_class"]
        a, b = self.a, self.b
        summary = pd.DataFrame(
            {
                "metric": rows,
                "A": [a.top1, a.ci_low, a.ci_high, worst_class(a)],
                "B": [b.top1, b.ci_low, b.ci_high, worst_class(b)],
            }
        ).assign(**{"B - A": lambda f: f["B"] - f["A"]})
        intervals = pd.DataFrame(
            {"metric": ["paired_low", "paired_high"], "B - A": [self.paired.low, self.paired.high]}
        )
        return pd.concat([summary, intervals], ignore_index=True)

    def per_class_table(self) -> pd.DataFrame:
        """DataFrame: class, A, B, B − A recall per class."""
        a, b = self.a.per_class, self.b.per_class
        return pd.DataFrame({"class": self.classes, "A": a, "B": b, "B - A": b - a})


def side_by_side(
    a: ProbeResult, b: ProbeResult, y_true: np.ndarray, classes: list[str]
) -> SideBySide:
    """Compare `b` against `a` on the same test labels `y_true` `(N,)`; `classes` has `C` names."""
    return SideBySide(a, b, compare_results(b, a, y_true), [str(c) for c in classes])


def per_class_table(r: ProbeResult, classes: list[str]) -> pd.DataFrame:
    """DataFrame: class, accuracy (recall) and support (test images) of each of the `C` classes."""
    return pd.DataFrame(
        {
            "class": [str(c) for c in classes],
            "accuracy": r.per_class,
            "support": r.confusion.sum(axis=1),
        }
    )


def predictions_table(
    r: ProbeResult, y_true: np.ndarray, indices: np.ndarray, classes: list[str]
) -> pd.DataFrame:
    """DataFrame: dataset index, true and predicted class name of each test image `(N,)`."""
    names = [str(c) for c in classes]
    return pd.DataFrame(
        {
            "dataset_index": np.asarray(indices),
            "true": [names[i] for i in np.asarray(y_true)],
            "predicted": [names[i] for i in r.predictions],
        }
    )


def confused_positions(
    r: ProbeResult, y_true: np.ndarray, true: int, predicted: int, k: int
) -> np.ndarray:
    """Test positions `(≤k,)` of images of class `true` predicted as `predicted`, in order."""
    return np.flatnonzero((np.asarray(y_true) == true) & (r.predictions == predicted))[:k]
