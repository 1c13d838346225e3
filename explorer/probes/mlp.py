"""MLP probe: one hidden layer on standardised features (trained by `TorchProbe`'s shared flow).

The paper's released MLP head is Linear-ReLU-Linear on the raw pooled features, trained with
plain SGD and step decay; here `optimizer="sgd"` gives that optimiser (lr x0.1 every 7 epochs),
`"adamw"` (default) or `"adam"` a cosine schedule. The hidden size is `hidden`.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from explorer.errors import ExplorerError
from explorer.probes.base import TorchProbe, early_stopping_defaults, estimator_init, scorer
from explorer.probes.metrics import check_xy, standardise_stats


class _MLP(nn.Module):
    def __init__(self, d: int, hidden: int, n_classes: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(d, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, n_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class MLPProbe(TorchProbe):
    """One-hidden-layer MLP on standardised features (scikit-learn estimator shape).

    `fit(X (N, D), y (N,))` holds out a stratified `val_fraction` of train for early
    stopping and keeps the best epoch. Learned: `classes_`, `mean_`/`scale_ (D,)`,
    `model_`, `best_epoch_`, `val_top1_`.
    """

    __init__ = estimator_init(
        {
            "hidden": 512,
            "dropout": 0.2,
            **early_stopping_defaults(100, 256, 1e-3, 1e-2, 10, optimizer="adamw"),
        },
        positional=("hidden",),
    )

    def _train_options(self) -> dict:
        return {**super()._train_options(), "optimizer": self.optimizer}

    def _check(self, X: np.ndarray, y: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
        if y is not None:
            return check_xy(X, y, "X")
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != len(self.mean_):
            raise ExplorerError(
                f"X must be (N, {len(self.mean_)}) like the fitted data, got {X.shape}"
            )
        return X, None

    def _build(self, x: torch.Tensor, fit_idx: torch.Tensor, n_classes: int) -> nn.Module:
        self.mean_, self.scale_ = standardise_stats(x[fit_idx].float())
        return _MLP(x.shape[1], self.hidden, n_classes, self.dropout)

    def _prep(self, xb: torch.Tensor) -> torch.Tensor:
        return (xb - self.mean_) / self.scale_


fit_mlp = scorer(MLPProbe, "mlp", ("hidden", "optimizer"))  # the head `mlp`
