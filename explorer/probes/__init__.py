"""Probes on frozen features: pure functions of numpy arrays, returning `ProbeResult`s.

- `fit_linear_grid`: many linear heads at once, reg chosen on validation, scored on test.
- `LinearProbe`, `MLPProbe`, `AttentionProbe`: scikit-learn-shaped single probes (`clone`-able);
  the torch probes share `TorchProbe`'s fit flow (`explorer.probes.base`).
- `fit_knn`, `fit_mlp`, `fit_attention`: score one setting on test.
"""

from importlib import import_module

# name -> submodule. Imported on first use (PEP 562), so `explorer.probes.registry` (the head
# names the CLI's help lists) loads without torch, which the torch probes would pull in.
_WHERE = {
    "AttentionHead": "attention",
    "AttentionProbe": "attention",
    "fit_attention": "attention",
    "pool_tokens": "attention",
    "ProbeEstimator": "base",
    "TorchProbe": "base",
    "fit_knn": "knn",
    "knn_predict": "knn",
    "DEFAULT_REGS": "linear",
    "LinearProbe": "linear",
    "fit_linear_grid": "linear",
    "sklearn_C": "linear",
    "NotFittedError": "metrics",
    "ProbeResult": "metrics",
    "bootstrap_ci": "metrics",
    "confusion_matrix": "metrics",
    "per_class_accuracy": "metrics",
    "validation_split": "metrics",
    "MLPProbe": "mlp",
    "fit_mlp": "mlp",
}


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(import_module(f"explorer.probes.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'explorer.probes' has no attribute {name!r}")


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
