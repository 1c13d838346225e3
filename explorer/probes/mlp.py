"""MLP probe (one hidden layer) and the minibatch training loop it shares with the attention head."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from explorer.device import resolve_device
from explorer.probes.metrics import (
    ClassifierMixin,
    ProbeResult,
    as_device_tensor,
    check_fitted,
    check_xy,
    fit_val_split,
    standardise_stats,
)


@dataclass
class TrainReport:
    best_epoch: int  # 1-based epoch whose weights were kept
    epochs_run: int
    val_top1: float  # NaN without a validation split


def _batches(n: int, batch_size: int, gen: torch.Generator | None) -> list[torch.Tensor]:
    order = torch.randperm(n, generator=gen) if gen is not None else torch.arange(n)
    return list(order.split(batch_size))


@torch.no_grad()
def predict_logits(
    model: nn.Module, x: torch.Tensor, batch_size: int = 1024, prep=None
) -> torch.Tensor:
    """Logits `(N, C)` of `model` over `x` (any dtype, on the model's device), in batches."""
    model.eval()
    outs = []
    for idx in _batches(len(x), batch_size, None):
        xb = x[idx.to(x.device)].float()
        outs.append(model(prep(xb) if prep else xb))
    return torch.cat(outs) if outs else torch.empty(0)


def train_classifier(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    x_val: torch.Tensor | None,
    y_val: torch.Tensor | None,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    patience: int,
    seed: int,
    prep=None,
) -> TrainReport:
    """AdamW with a cosine schedule on cross-entropy; keeps the best-val-accuracy weights.

    x `(N, ...)` any float dtype on the model's device (batches are cast to float32, then
    `prep`ed); y `(N,)` int64. With a validation set, training stops after `patience` epochs
    without a better val top-1 and the best epoch's weights are restored.
    """
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps = epochs * math.ceil(len(x) / batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / max(steps, 1)))
    )
    loss_fn = nn.CrossEntropyLoss()
    best = (-1.0, 0)
    best_state = None
    epoch = 0
    for epoch in range(1, epochs + 1):
        model.train()
        for idx in _batches(len(x), batch_size, gen):
            idx = idx.to(x.device)
            xb = x[idx].float()
            loss = loss_fn(model(prep(xb) if prep else xb), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        if x_val is None or len(x_val) == 0:
            continue
        acc = (predict_logits(model, x_val, prep=prep).argmax(1) == y_val).float().mean().item()
        if acc > best[0]:
            best = (acc, epoch)
            best_state = copy.deepcopy(model.state_dict())
        elif epoch - best[1] >= patience:
            break
    if best_state is None:
        return TrainReport(best_epoch=epoch, epochs_run=epoch, val_top1=float("nan"))
    model.load_state_dict(best_state)
    return TrainReport(best_epoch=best[1], epochs_run=epoch, val_top1=best[0])


class _MLP(nn.Module):
    def __init__(self, d: int, hidden: int, n_classes: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(d, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, n_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class MLPProbe(ClassifierMixin):
    """One-hidden-layer MLP on standardised features (scikit-learn estimator shape).

    `fit(X (N, D), y (N,))` holds out a stratified `val_fraction` of train for early
    stopping and keeps the best epoch. Learned: `classes_`, `mean_`/`scale_ (D,)`,
    `model_`, `best_epoch_`, `val_top1_`.
    """

    def __init__(
        self,
        hidden: int = 512,
        *,
        dropout: float = 0.2,
        epochs: int = 100,
        batch_size: int = 256,
        lr: float = 1e-3,
        weight_decay: float = 1e-2,
        patience: int = 10,
        val_fraction: float = 0.1,
        device: str = "auto",
        seed: int = 0,
    ) -> None:
        self.hidden = hidden
        self.dropout = dropout
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.patience = patience
        self.val_fraction = val_fraction
        self.device = device
        self.seed = seed

    def fit(self, X: np.ndarray, y: np.ndarray) -> MLPProbe:
        X, y = check_xy(X, y, "X")
        dev = resolve_device(self.device)
        self.classes_, codes = np.unique(y, return_inverse=True)
        fit_idx, val_idx = fit_val_split(codes, self.val_fraction, self.seed)
        x = as_device_tensor(X, dev)
        mean, std = standardise_stats(x[torch.as_tensor(fit_idx, device=dev)].float())
        self.mean_, self.scale_ = mean, std
        yt = torch.as_tensor(codes, dtype=torch.int64, device=dev)
        torch.manual_seed(self.seed)
        self.model_ = _MLP(X.shape[1], self.hidden, len(self.classes_), self.dropout).to(dev)
        fi, vi = (torch.as_tensor(i, device=dev) for i in (fit_idx, val_idx))
        report = train_classifier(
            self.model_,
            x[fi],
            yt[fi],
            x[vi],
            yt[vi],
            epochs=self.epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            weight_decay=self.weight_decay,
            patience=self.patience,
            seed=self.seed,
            prep=self._prep,
        )
        self.best_epoch_, self.epochs_run_, self.val_top1_ = (
            report.best_epoch,
            report.epochs_run,
            report.val_top1,
        )
        return self

    def _prep(self, xb: torch.Tensor) -> torch.Tensor:
        return (xb - self.mean_) / self.scale_

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Class probabilities `(N, C)` float32, columns ordered as `classes_`."""
        check_fitted(self, "model_")
        x = as_device_tensor(X, self.mean_.device)
        return predict_logits(self.model_, x, prep=self._prep).softmax(1).cpu().numpy()


def fit_mlp(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    *,
    n_classes: int | None = None,
    **kwargs,
) -> ProbeResult:
    """Fit an `MLPProbe(**kwargs)` on train and score it on test (head `mlp`)."""
    probe = MLPProbe(**kwargs).fit(x_train, y_train)
    pred = probe.predict(x_test)
    extra = {
        "hidden": probe.hidden,
        "best_epoch": probe.best_epoch_,
        "epochs_run": probe.epochs_run_,
        "val_top1": probe.val_top1_,
    }
    return ProbeResult.from_predictions("mlp", y_test, pred, n_classes, extra)
