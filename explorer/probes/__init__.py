"""Probes on frozen features: pure functions of numpy arrays, returning `ProbeResult`s.

- `fit_linear_grid`: many linear heads at once, reg chosen on validation, scored on test.
- `LinearProbe`, `MLPProbe`, `AttentionProbe`: scikit-learn-shaped single probes (`clone`-able);
  the two torch probes share `TorchProbe`'s fit flow (`explorer.probes.base`).
- `fit_knn`, `fit_mlp`, `fit_attention`: score one setting on test.
"""

from explorer.probes.attention import AttentionHead, AttentionProbe, fit_attention, pool_tokens
from explorer.probes.base import ProbeEstimator, TorchProbe
from explorer.probes.knn import fit_knn, knn_predict
from explorer.probes.linear import DEFAULT_REGS, LinearProbe, fit_linear_grid, sklearn_C
from explorer.probes.metrics import (
    NotFittedError,
    ProbeResult,
    bootstrap_ci,
    confusion_matrix,
    per_class_accuracy,
    validation_split,
)
from explorer.probes.mlp import MLPProbe, fit_mlp

__all__ = [
    "DEFAULT_REGS",
    "AttentionHead",
    "AttentionProbe",
    "LinearProbe",
    "MLPProbe",
    "NotFittedError",
    "ProbeEstimator",
    "ProbeResult",
    "bootstrap_ci",
    "confusion_matrix",
    "fit_attention",
    "fit_knn",
    "fit_linear_grid",
    "fit_mlp",
    "knn_predict",
    "per_class_accuracy",
    "pool_tokens",
    "sklearn_C",
    "TorchProbe",
    "validation_split",
]
