"""Cosine k-NN probe with DINOv2's weighted vote: one top-max_k search answers every k."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from explorer.errors import ExplorerError
from explorer.models.device import resolve_device
from explorer.probes.metrics import ProbeResult, as_device_tensor, check_xy, fit_val_split

DEFAULT_KS = (10, 20)
TEMPERATURE = 0.07  # DINOv2's vote temperature


def _unit_rows(x: np.ndarray, dev: torch.device) -> torch.Tensor:
    """`(N, D)` -> float32 rows of unit L2 norm on `dev` (all-zero rows stay zero)."""
    t = as_device_tensor(x, dev).float()
    return t / t.norm(dim=1, keepdim=True).clamp_min(1e-12)


def knn_predict(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    *,
    ks: Sequence[int] = DEFAULT_KS,
    temperature: float = TEMPERATURE,
    n_classes: int | None = None,
    device: str = "auto",
    chunk: int = 1024,
) -> dict[int, np.ndarray]:
    """Predicted labels `(N_test,) int64` for every k in `ks`.

    Each of a test row's k most cosine-similar train rows votes for its label with weight
    `exp(sim / temperature)`; the heaviest class wins. Test rows go `chunk` at a time, so
    memory is `chunk * N_train` similarities, and the top `max(ks)` neighbours are found
    once per chunk and reused for every k.
    """
    x_train, y_train = check_xy(x_train, y_train, "x_train")
    if np.asarray(x_test).ndim != 2 or np.asarray(x_test).shape[1] != x_train.shape[1]:
        raise ExplorerError(
            f"x_test must be (N, {x_train.shape[1]}) like x_train, got {np.asarray(x_test).shape}"
        )
    if not ks or min(ks) < 1:
        raise ExplorerError(f"ks must be positive neighbour counts, got {tuple(ks)}")
    dev = resolve_device(device)
    c = int(y_train.max()) + 1 if n_classes is None else int(n_classes)
    train = _unit_rows(x_train, dev)
    labels = torch.as_tensor(np.asarray(y_train, dtype=np.int64), device=dev)
    max_k = min(max(ks), len(train))
    preds: dict[int, list[torch.Tensor]] = {k: [] for k in ks}
    for start in range(0, len(x_test), chunk):
        query = _unit_rows(x_test[start : start + chunk], dev)
        sims, idx = (query @ train.T).topk(max_k, dim=1)  # (B, max_k), most similar first
        weights = (sims / temperature).exp()
        neighbour_labels = labels[idx]
        for k in ks:
            kk = min(k, max_k)
            votes = torch.zeros(len(query), c, device=dev)
            votes.scatter_add_(1, neighbour_labels[:, :kk], weights[:, :kk])
            preds[k].append(votes.argmax(1))
    empty = torch.empty(0, dtype=torch.int64)
    return {k: (torch.cat(p) if p else empty).cpu().numpy() for k, p in preds.items()}


def fit_knn(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    *,
    ks: Sequence[int] = DEFAULT_KS,
    temperature: float = TEMPERATURE,
    n_classes: int | None = None,
    device: str = "auto",
    chunk: int = 1024,
    val_fraction: float = 0.1,
    seed: int = 0,
) -> dict[int, ProbeResult]:
    """Cosine k-NN scored on test: `{k: ProbeResult}` with head `knn{k}` (see `knn_predict`).

    Test images vote among all of train. For model selection, a stratified `val_fraction` of
    train (the split the other probes hold out) is also classified by the rest of train;
    its top-1 is `extra["val_top1"]` (with `n_val`), absent when `val_fraction` is 0.
    """
    x_train, y_train = check_xy(x_train, y_train, "x_train")
    x_test, y_test = check_xy(x_test, y_test, "x_test")
    if n_classes is None:
        n_classes = int(max(np.max(y_train), np.max(y_test))) + 1
    kw = dict(ks=ks, temperature=temperature, n_classes=n_classes, device=device, chunk=chunk)
    preds = knn_predict(x_train, y_train, x_test, **kw)
    extra = {k: {"k": k, "temperature": temperature} for k in preds}
    fit_idx, val_idx = fit_val_split(y_train, val_fraction, seed)
    if val_idx.size:
        val = knn_predict(x_train[fit_idx], y_train[fit_idx], x_train[val_idx], **kw)
        for k, p in val.items():
            extra[k] |= {
                "val_top1": float(np.mean(p == y_train[val_idx])),
                "n_val": int(val_idx.size),
            }
    return {
        k: ProbeResult.from_predictions(f"knn{k}", y_test, p, n_classes, extra[k])
        for k, p in preds.items()
    }
