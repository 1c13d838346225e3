"""The estimator bases the probes share, and the minibatch training loop of the torch probes.

- `ProbeEstimator`: scikit-learn's `BaseEstimator` and `ClassifierMixin` (so `clone`,
  `get_params`/`set_params` work and `is_classifier` is True: cross-validation stratifies),
  plus `predict`/`score` from `predict_proba` and `classes_`.
- `estimator_init`: the `__init__` of every probe, built from its arguments' defaults.
- `TorchProbe`: one `fit` flow for minibatch-trained heads (MLP, attention, CNN, fusion):
  labels to codes, a stratified validation split of train, a seeded model, early stopping;
  `scorer` turns one into a head function scored on test.
- `train_classifier`: AdamW/Adam with a cosine schedule, or the reference code's plain SGD
  with step decay (x`gamma` every `step` epochs).
"""

from __future__ import annotations

import copy
import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from torch import nn

from explorer.errors import ExplorerError
from explorer.models.device import resolve_device
from explorer.probes.metrics import (
    ProbeResult,
    as_device_tensor,
    check_fitted,
    fit_val_split,
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
    optimizer: str = "adamw",
    step: int = 7,
    gamma: float = 0.1,
) -> TrainReport:
    """Minibatch training on cross-entropy; keeps the best-val-accuracy weights.

    `optimizer` "adamw" or "adam": a per-step cosine schedule from `lr`; "sgd": plain SGD (no
    momentum, as the paper's released code) with lr x`gamma` every `step` epochs.
    x `(N, ...)` any float dtype on the model's device (batches are cast to float32, then
    `prep`ed); y `(N,)` int64. With a validation set, training stops after `patience` epochs
    without a better val top-1 and the best epoch's weights are restored; without one, the
    last epoch's weights are kept.
    """
    gen = torch.Generator().manual_seed(seed)
    steps = epochs * math.ceil(len(x) / batch_size)
    per_step = optimizer != "sgd"
    if optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=lr, weight_decay=weight_decay)
        sched = torch.optim.lr_scheduler.StepLR(opt, step, gamma)
    elif optimizer in ("adam", "adamw"):
        cls = torch.optim.AdamW if optimizer == "adamw" else torch.optim.Adam
        opt = cls(model.parameters(), lr=lr, weight_decay=weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / max(steps, 1)))
        )
    else:
        raise ExplorerError(f"unknown optimizer '{optimizer}'; choose from sgd, adam, adamw")
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
            if per_step:
                sched.step()
        if not per_step:
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


class ProbeEstimator(ClassifierMixin, BaseEstimator):
    """A scikit-learn classifier: `__init__` only stores its (named) arguments; subclasses
    define `fit` and `predict_proba` (setting `classes_`), and get `predict` and `score` here.

    scikit-learn's `ClassifierMixin` makes `is_classifier` True (so `cross_val_score` and
    `GridSearchCV` with an integer `cv` use `StratifiedKFold`) and tags it a classifier.
    """

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predicted labels `(N,)`, taken from `classes_`."""
        codes = self.predict_proba(X).argmax(1)  # raises "not fitted yet" before classes_ is read
        return self.classes_[codes]

    def score(self, X: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None) -> float:
        """Top-1 accuracy in [0, 1] (weighted by `sample_weight` `(N,)` when given)."""
        correct = self.predict(X) == np.asarray(y)
        return float(np.average(correct, weights=sample_weight))


def estimator_init(
    defaults: Mapping[str, Any], positional: tuple[str, ...] = ()
) -> Callable[..., None]:
    """A scikit-learn `__init__` that only stores its arguments as attributes of the same names.

    Its signature (read by `get_params`, `clone` and `repr`) lists `defaults` in order, each
    annotated with its default's type, keyword-only but for the leading `positional` names:
    `estimator_init({"hidden": 512, "lr": 1e-3}, ("hidden",))` is
    `__init__(self, hidden: int = 512, *, lr: float = 1e-3)`.
    """
    kind = inspect.Parameter
    params = [kind("self", kind.POSITIONAL_OR_KEYWORD)] + [
        kind(
            name,
            kind.POSITIONAL_OR_KEYWORD if name in positional else kind.KEYWORD_ONLY,
            default=value,
            annotation=type(value).__name__,
        )
        for name, value in defaults.items()
    ]
    signature = inspect.Signature(params, return_annotation="None")

    def __init__(self, *args, **kwargs) -> None:
        try:
            bound = signature.bind(self, *args, **kwargs)
        except TypeError as e:  # as Python words it: "MLPProbe.__init__() got an unexpected ..."
            raise TypeError(f"{type(self).__name__}.__init__() {e}") from None
        bound.apply_defaults()
        for name in defaults:
            setattr(self, name, bound.arguments[name])

    __init__.__signature__ = signature
    return __init__


def early_stopping_defaults(
    epochs: int, batch_size: int, lr: float, weight_decay: float, patience: int, **more: Any
) -> dict[str, Any]:
    """The training arguments of an early-stopped `TorchProbe`, in `__init__` order: these five,
    `val_fraction` 0.1, then `more`, `device` "auto" and `seed` 0."""
    return {
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "weight_decay": weight_decay,
        "patience": patience,
        "val_fraction": 0.1,
        **more,
        "device": "auto",
        "seed": 0,
    }


class TorchProbe(ProbeEstimator):
    """`fit`/`predict_proba` for minibatch-trained torch heads.

    Subclasses set `__init__ = estimator_init(...)` with their own arguments and `epochs,
    batch_size, lr, weight_decay, patience, val_fraction, device, seed` (see
    `early_stopping_defaults`), and define `_check(X, y)` (validated arrays),
    `_build(x, fit_idx, n_classes)` (a fresh `nn.Module`; may fit preprocessing state such as
    `mean_`), if batches need it `_prep(xb)`, if they do not train with AdamW `_train_options()`,
    and for results `_result_extra()`. `fit` holds out a stratified `val_fraction` of train for
    early stopping (best epoch kept). Learned: `classes_`, `model_`, `best_epoch_`,
    `epochs_run_`, `val_top1_`.
    """

    def _check(self, X: np.ndarray, y: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
        raise NotImplementedError

    def _build(self, x: torch.Tensor, fit_idx: torch.Tensor, n_classes: int) -> nn.Module:
        raise NotImplementedError

    def _prep(self, xb: torch.Tensor) -> torch.Tensor:
        return xb

    def _train_options(self) -> dict:
        """Optimiser settings for `train_classifier` (defaults: AdamW, cosine, early stopping)."""
        return {"weight_decay": self.weight_decay, "patience": self.patience, "optimizer": "adamw"}

    def _result_extra(self) -> dict:
        """Learned details a head's `ProbeResult.extra` reports (after its shown parameters)."""
        return {}

    def fit(self, X: np.ndarray, y: np.ndarray):
        X, y = self._check(X, y)
        dev = resolve_device(self.device)
        self.classes_, codes = np.unique(y, return_inverse=True)
        fit_idx, val_idx = fit_val_split(codes, self.val_fraction, self.seed)
        x = as_device_tensor(X, dev)  # kept in its dtype (float16 halves memory); cast per batch
        yt = torch.as_tensor(codes, dtype=torch.int64, device=dev)
        fi, vi = (torch.as_tensor(i, device=dev) for i in (fit_idx, val_idx))
        torch.manual_seed(self.seed)
        self.model_ = self._build(x, fi, len(self.classes_)).to(dev)
        report = train_classifier(
            self.model_,
            x[fi],
            yt[fi],
            x[vi],
            yt[vi],
            epochs=self.epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            seed=self.seed,
            prep=self._prep,
            **self._train_options(),
        )
        self.best_epoch_ = report.best_epoch
        self.epochs_run_ = report.epochs_run
        self.val_top1_ = report.val_top1
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Class probabilities `(N, C)` float32, columns ordered as `classes_`."""
        check_fitted(self, "model_")
        X, _ = self._check(X, None)
        dev = next(self.model_.parameters()).device
        logits = predict_logits(self.model_, as_device_tensor(X, dev), prep=self._prep)
        return logits.softmax(1).cpu().numpy()


def scorer(cls: type[TorchProbe], head: str, shown: tuple[str, ...]):
    """The head function `fit(x_train, y_train, x_test, y_test, *, n_classes=None, **params)`.

    It fits a `cls(**params)` on train and scores it on test as `head`; `extra` holds the
    `shown` parameters, the probe's `_result_extra()`, the best epoch, the epochs run and the
    validation top-1.
    """

    def fit(
        x_train: np.ndarray,
        y_train: np.ndarray,
        x_test: np.ndarray,
        y_test: np.ndarray,
        *,
        n_classes: int | None = None,
        **params,
    ) -> ProbeResult:
        probe = cls(**params).fit(x_train, y_train)
        extra = {name: getattr(probe, name) for name in shown} | probe._result_extra()
        extra |= {
            "best_epoch": probe.best_epoch_,
            "epochs_run": probe.epochs_run_,
            "val_top1": probe.val_top1_,
        }
        return ProbeResult.from_predictions(head, y_test, probe.predict(x_test), n_classes, extra)

    fit.__doc__ = f"Fit a `{cls.__name__}(**params)` on train and score it on test (head `{head}`)."
    return fit
