"""Linear probes: multinomial logistic regression on standardised features, many heads at once.

Every head minimises `mean_n CE(x_n W + b, y_n) + reg / 2 * ||W||^2` (bias unpenalised) on
features standardised with train statistics. That is scikit-learn's
`LogisticRegression(C=1 / (reg * N_train))` after a `StandardScaler`; `sklearn_C` converts.

Optimisation is full-batch L-BFGS, run per head but batched (the DINOv2 pattern: features
stacked once, every head trained by the same few kernels). A bank holds the settings of one
feature dim, stacked `(G, N, D + 1)` with a ones column for the bias, and all their heads
`(G, R, C, D + 1)` (R regs) advance together with two `bmm`s per iteration. Each head keeps
its own curvature history, step size and stopping test, so its solution does not depend on
which heads share the bank, and it stops where scikit-learn's per-setting L-BFGS stops.
Finished heads leave the batch, so a bank costs about what its heads cost one by one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch

from explorer.errors import ExplorerError
from explorer.models.device import resolve_device
from explorer.probes.base import ProbeEstimator
from explorer.probes.metrics import (
    ProbeResult,
    as_device_tensor,
    check_fitted,
    check_xy,
    standardise_stats,
    validation_split,
)

DEFAULT_REGS = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
HEAD = "linear"
BN_HEAD = "linear-bn"  # REPA's protocol: BatchNorm without affine, then the same linear head
BN_EPS = 1e-6  # BatchNorm's eps in REPA's probe
STANDARDISE = ("scaler", "batchnorm")
_HISTORY = 10  # L-BFGS memory (pairs kept per head)
_C1 = 1e-4  # Armijo sufficient-decrease constant
_MAX_LS = 25  # line-search trials per iteration
_FTOL = 1e-7  # a relative loss decrease this small is at float32 resolution ...
_STALL = 5  # ... and this many such iterations in a row end a head (cf. scipy's ftol)


def sklearn_C(reg: float, n_train: int) -> float:
    """scikit-learn's `C` for the same objective as `reg` on `n_train` examples."""
    return 1.0 / (reg * n_train)


# ---------------------------------------------------------------------------------------------
# 1. The batched objective and a per-head L-BFGS
# ---------------------------------------------------------------------------------------------


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-head inner product of two `(G, R, C, D1)` tensors -> `(G, R)`."""
    return (a * b).sum((2, 3))


def _heads(v: torch.Tensor) -> torch.Tensor:
    """`(G, R)` -> `(G, R, 1, 1)` to scale every head's parameters."""
    return v[:, :, None, None]


def _logits(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """x `(G, N, D1)`, theta `(G, R, C, D1)` -> logits `(G, N, R, C)`."""
    g, n, d1 = x.shape
    r, c = theta.shape[1:3]
    return torch.bmm(x, theta.reshape(g, r * c, d1).transpose(1, 2)).view(g, n, r, c)


def _objective(
    x: torch.Tensor, y: torch.Tensor, onehot: torch.Tensor, theta: torch.Tensor, lam: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Loss `(G, R)` and gradient `(G, R, C, D1)` of every head.

    x `(G, N, D1)` (last column is the bias input), y `(G, N)` int64, onehot `(G, N, 1, C)`,
    theta `(G, R, C, D1)`, lam `(G, R)`.
    """
    g, n, d1 = x.shape
    r, c = theta.shape[1:3]
    # log-softmax by hand: ATen's kernel is ~4x slower on a last dim this short
    z = _logits(x, theta)
    z -= z.amax(-1, keepdim=True)
    z_true = z.gather(-1, y[:, :, None, None].expand(g, n, r, 1)).squeeze(-1)
    e = z.exp_()
    total = e.sum(-1, keepdim=True)
    w = theta[..., :-1]
    loss = (total.squeeze(-1).log() - z_true).mean(1) + 0.5 * lam * w.pow(2).sum((2, 3))
    dlogits = e.div_(total).sub_(onehot).div_(n).view(g, n, r * c)
    # (dlogits^T x) lands in theta's layout and is the faster gemm orientation on CPU
    grad = torch.bmm(dlogits.transpose(1, 2), x).view(g, r, c, d1)
    grad[..., :-1] += _heads(lam) * w
    return loss, grad


def _objective_rows(
    x: torch.Tensor,
    y: torch.Tensor,
    onehot: torch.Tensor,
    theta: torch.Tensor,
    lam: torch.Tensor,
    rows: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`_objective` for the settings in `rows` only (others get loss inf, gradient 0)."""
    if 2 * len(rows) >= x.shape[0]:
        return _objective(x, y, onehot, theta, lam)
    loss = torch.full(lam.shape, float("inf"), device=x.device)
    grad = torch.zeros_like(theta)
    for j in rows.tolist():
        sl = slice(j, j + 1)  # views, so no setting's features are copied
        loss[sl], grad[sl] = _objective(x[sl], y[sl], onehot[sl], theta[sl], lam[sl])
    return loss, grad


@dataclass
class _Solution:
    theta: torch.Tensor  # (G, R, C, D1)
    n_iter: torch.Tensor  # (G, R) int64
    converged: torch.Tensor  # (G, R) bool: stopped by a convergence test, not by max_iter


def _direction(
    grad: torch.Tensor, hist: list, gamma: torch.Tensor, done: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(d, grad·d): d = -H grad by the L-BFGS two-loop recursion per head `(G, R, C, D1)`,
    scaled steepest descent where curvature was lost (uphill), 0 for finished heads."""
    q = grad.clone()
    alphas = []
    for s, yv, rho in reversed(hist):
        a = rho * _dot(s, q)
        q -= _heads(a) * yv
        alphas.append(a)
    q *= _heads(gamma)
    for (s, yv, rho), a in zip(hist, reversed(alphas), strict=True):
        q += _heads(a - rho * _dot(yv, q)) * s
    d = q.neg_()
    gd = _dot(grad, d)
    uphill = gd >= 0  # lost curvature: fall back to scaled steepest descent
    if bool(uphill.any()):
        d = torch.where(_heads(uphill), -_heads(gamma) * grad, d)
        gd = _dot(grad, d)
    d.masked_fill_(_heads(done), 0.0)
    return d, gd


@dataclass
class _Live:
    """The heads still being fitted: batch rows `g_idx` × regs `r_idx` of the full problem.

    x `(G, N, D1)`, y `(G, N)`, onehot `(G, N, 1, C)`; per head `(G, R)`: lam, f, gamma, done,
    stall, n_iter; theta and grad `(G, R, C, D1)`; hist the last (s, y, rho) curvature pairs.
    """

    x: torch.Tensor
    y: torch.Tensor
    onehot: torch.Tensor
    lam: torch.Tensor
    theta: torch.Tensor
    f: torch.Tensor
    grad: torch.Tensor
    gamma: torch.Tensor
    done: torch.Tensor
    stall: torch.Tensor
    n_iter: torch.Tensor
    g_idx: torch.Tensor
    r_idx: torch.Tensor
    hist: list = field(default_factory=list)

    def line_search(self, d: torch.Tensor, gd: torch.Tensor):
        """Backtracking Armijo search along `d`: every head tries t = 1 in one batched
        evaluation, then only the settings with a head still searching are evaluated again.
        Returns (theta, f, grad, accepted) after the search."""
        x, y, onehot, lam, theta, f, grad = (
            self.x,
            self.y,
            self.onehot,
            self.lam,
            self.theta,
            self.f,
            self.grad,
        )
        t = torch.ones_like(f)
        accepted = self.done.clone()
        new_theta, new_f, new_grad = theta, f, grad
        rows = torch.arange(len(x), device=x.device)
        for _ls in range(_MAX_LS):
            trial = theta + _heads(t) * d
            f_t, g_t = _objective_rows(x, y, onehot, trial, lam, rows)
            ok = ~accepted & torch.isfinite(f_t) & (f_t <= f + _C1 * t * gd)
            okh = _heads(ok)
            new_theta = torch.where(okh, trial, new_theta)
            new_grad = torch.where(okh, g_t, new_grad)
            new_f = torch.where(ok, f_t, new_f)
            accepted |= ok
            if bool(accepted.all()):
                break
            rows = (~accepted).any(1).nonzero().squeeze(1)
            # minimiser of the quadratic through f(0), f'(0), f(t), kept in [0.1 t, 0.5 t]
            t_q = -gd * t * t / (2.0 * (f_t - f - gd * t))
            t_q = torch.nan_to_num(t_q, nan=0.5, posinf=0.5, neginf=0.5)
            t = torch.where(accepted, t, torch.minimum(torch.maximum(t_q, 0.1 * t), 0.5 * t))
        return new_theta, new_f, new_grad, accepted

    def step(self, new_theta, new_f, new_grad, accepted, tol: float) -> None:
        """Take the accepted step: count it, store the curvature pair (rho = 0, a no-op, for heads
        with s·y <= 0 or that did not move) and mark heads converged or stalled."""
        active = ~self.done
        self.n_iter += active.long()
        self.done |= ~accepted  # no decrease left at float32 precision
        s = new_theta - self.theta
        yv = new_grad - self.grad
        sy = _dot(s, yv)
        yy = _dot(yv, yv)
        good = accepted & active & (sy > 1e-10 * yy) & (yy > 0)
        rho = torch.where(good, 1.0 / sy.clamp_min(1e-30), torch.zeros_like(sy))
        self.gamma = torch.where(good, sy / yy.clamp_min(1e-30), self.gamma)
        self.hist.append((s, yv, rho))
        if len(self.hist) > _HISTORY:
            self.hist.pop(0)
        f_old, self.theta, self.f, self.grad = self.f, new_theta, new_f, new_grad
        small = accepted & active & (f_old - self.f <= _FTOL * f_old.abs().clamp_min(1.0))
        self.stall = torch.where(small, self.stall + 1, torch.zeros_like(self.stall))
        self.done |= (self.grad.abs().amax((2, 3)) <= tol) | (self.stall >= _STALL)

    def write(self, out: _Solution) -> None:
        """Copy the live heads' state into their places in `out`."""
        ix = (self.g_idx[:, None], self.r_idx[None, :])
        out.theta[ix], out.n_iter[ix], out.converged[ix] = self.theta, self.n_iter, self.done

    def shrink(self, out: _Solution) -> None:
        """Let finished heads leave the batch, so they stop costing matmul columns: a reg once
        every setting is done with it, settings once a quarter of them are done."""
        keep_r = ~self.done.all(0)
        keep_g = ~self.done.all(1)
        drop_g = 4 * int((~keep_g).sum()) >= len(keep_g)
        if bool(self.done.all()) or not (drop_g or bool((~keep_r).any())):
            return
        self.write(out)
        kg = keep_g.nonzero().squeeze(1) if drop_g else slice(None)
        kr = keep_r.nonzero().squeeze(1)

        def sel(v: torch.Tensor) -> torch.Tensor:
            return v[kg][:, kr]

        if drop_g:
            self.x, self.y, self.onehot = self.x[kg], self.y[kg], self.onehot[kg]
        self.g_idx, self.r_idx = self.g_idx[kg], self.r_idx[kr]
        self.lam, self.theta, self.f, self.grad = (
            sel(self.lam),
            sel(self.theta),
            sel(self.f),
            sel(self.grad),
        )
        self.gamma, self.done, self.stall, self.n_iter = (
            sel(self.gamma),
            sel(self.done),
            sel(self.stall),
            sel(self.n_iter),
        )
        self.hist = [(sel(s), sel(yv), sel(rho)) for s, yv, rho in self.hist]


def _start(
    x: torch.Tensor,
    y: torch.Tensor,
    lam: torch.Tensor,
    n_classes: int,
    theta0: torch.Tensor | None,
    tol: float,
) -> _Live:
    """Every head at its warm start (zeros if `theta0` is None), with its loss and gradient."""
    g, n, d1 = x.shape
    r = lam.shape[1]
    dev = x.device
    onehot = torch.zeros(g, n, 1, n_classes, device=dev)
    onehot.scatter_(-1, y[:, :, None, None], 1.0)
    theta = torch.zeros(g, r, n_classes, d1, device=dev) if theta0 is None else theta0.clone()
    f, grad = _objective(x, y, onehot, theta, lam)
    n_iter = torch.zeros(g, r, dtype=torch.int64, device=dev)
    return _Live(
        x,
        y,
        onehot,
        lam,
        theta,
        f,
        grad,
        gamma=1.0 / grad.pow(2).sum((2, 3)).sqrt().clamp_min(1.0),  # first step: length <= 1
        done=grad.abs().amax((2, 3)) <= tol,
        stall=torch.zeros_like(n_iter),
        n_iter=n_iter,
        g_idx=torch.arange(g, device=dev),
        r_idx=torch.arange(r, device=dev),
    )


def lbfgs_heads(
    x: torch.Tensor,
    y: torch.Tensor,
    lam: torch.Tensor,
    n_classes: int,
    *,
    theta0: torch.Tensor | None = None,
    max_iter: int = 500,
    tol: float = 1e-6,
) -> _Solution:
    """Fit every head `(g, r)` independently by L-BFGS with a backtracking Armijo search.

    x `(G, N, D1)` float32 with a ones column last, y `(G, N)` int64 in `[0, n_classes)`,
    lam `(G, R)` L2 strength per head, theta0 `(G, R, C, D1)` warm start (zeros if None).
    A head converges when its largest gradient entry is `<= tol` (as scikit-learn's `tol`)
    or when its loss stops decreasing measurably in float32 (no Armijo step, or `_STALL`
    iterations in a row below `_FTOL` relative); otherwise it stops at `max_iter`.
    Finished heads drop out of the batch: a reg once every setting is done with it, and
    settings once a quarter of them are done (their features are then copied without them).
    """
    live = _start(x, y, lam, n_classes, theta0, tol)
    # live heads are out[g_idx][:, r_idx]; finished ones are written back when they leave
    out = _Solution(live.theta.clone(), live.n_iter.clone(), live.done.clone())
    for _ in range(max_iter):
        if bool(live.done.all()):
            break
        d, gd = _direction(live.grad, live.hist, live.gamma, live.done)
        live.step(*live.line_search(d, gd), tol)
        live.shrink(out)
    live.write(out)
    return out


# ---------------------------------------------------------------------------------------------
# 2. The scikit-learn-shaped single probe
# ---------------------------------------------------------------------------------------------


class LinearProbe(ProbeEstimator):
    """Multinomial logistic regression on standardised features (scikit-learn estimator shape).

    After `fit(X (N, D), y (N,))`: `classes_ (C,)`, `mean_`/`scale_ (D,)` (train statistics),
    `coef_ (C, D)` and `intercept_ (C,)` acting on `(X - mean_) / scale_`, `n_iter_`,
    `converged_`. Equivalent to `StandardScaler` + `LogisticRegression(C=sklearn_C(reg, N))`.
    """

    def __init__(
        self, reg: float = 1e-4, *, max_iter: int = 500, tol: float = 1e-6, device: str = "auto"
    ) -> None:
        self.reg = reg
        self.max_iter = max_iter
        self.tol = tol
        self.device = device

    def fit(self, X: np.ndarray, y: np.ndarray) -> LinearProbe:
        X, y = check_xy(X, y, "X")
        dev = resolve_device(self.device)
        self.classes_, codes = np.unique(y, return_inverse=True)
        xt = as_device_tensor(X, dev).float()
        mean, std = standardise_stats(xt)
        xb = torch.cat([(xt - mean) / std, torch.ones(len(xt), 1, device=dev)], 1)[None]
        yt = torch.as_tensor(codes, dtype=torch.int64, device=dev)[None]
        lam = torch.full((1, 1), float(self.reg), device=dev)
        sol = lbfgs_heads(xb, yt, lam, len(self.classes_), max_iter=self.max_iter, tol=self.tol)
        theta = sol.theta[0, 0].cpu().numpy()  # (C, D + 1)
        self.coef_ = np.ascontiguousarray(theta[:, :-1])
        self.intercept_ = theta[:, -1].copy()
        self.mean_, self.scale_ = mean.cpu().numpy(), std.cpu().numpy()
        self.n_iter_ = int(sol.n_iter[0, 0])
        self.converged_ = bool(sol.converged[0, 0])
        return self

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """Logits `(N, C)` float32."""
        check_fitted(self)
        z = (np.asarray(X, dtype=np.float32) - self.mean_) / self.scale_
        return z @ self.coef_.T + self.intercept_

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Class probabilities `(N, C)` float32, columns ordered as `classes_`."""
        logits = self.decision_function(X)
        logits -= logits.max(1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(1, keepdims=True)


# ---------------------------------------------------------------------------------------------
# 3. The grid: one head per (setting, reg), validation choice, refit, test
# ---------------------------------------------------------------------------------------------


@dataclass
class _Setting:
    key: str
    x_train: np.ndarray  # (N, D)
    y_train: np.ndarray  # (N,) int64
    x_test: np.ndarray
    y_test: np.ndarray
    fit_idx: np.ndarray  # rows of train used to fit during the reg search
    val_idx: np.ndarray  # rows of train held out to choose the reg


def _batchnorm_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, sqrt(var + BN_EPS)) `(D,)` float32 of `x` `(N, D)`: population variance in float64,
    as `BatchNorm1d(affine=False)` normalises in eval mode with the train split's statistics."""
    var, mean = torch.var_mean(x.to(torch.float64), dim=0, correction=0)
    return mean.float(), (var + BN_EPS).sqrt().float()


def _bank_bytes(n: int, d: int, r: int, c: int) -> int:
    """Rough device bytes one setting costs in a bank (features, L-BFGS history, logits)."""
    params = (d + 1) * r * c
    return 4 * (n * (d + 1) + (2 * _HISTORY + 8) * params + 3 * n * r * c)


def _banks(settings: list[_Setting], r: int, c: int, budget: float) -> list[list[_Setting]]:
    """Settings grouped by (N, D, N_fit) so they stack, each group cut to fit `budget` bytes."""
    groups: dict[tuple[int, int, int], list[_Setting]] = {}
    for s in settings:
        groups.setdefault((*s.x_train.shape, len(s.fit_idx)), []).append(s)
    banks = []
    for (n, d, _), members in groups.items():
        per = max(1, int(budget // _bank_bytes(n, d, r, c)))
        banks += [members[i : i + per] for i in range(0, len(members), per)]
    return banks


def fit_linear_grid(
    train: Mapping[str, tuple[np.ndarray, np.ndarray]],
    test: Mapping[str, tuple[np.ndarray, np.ndarray]],
    *,
    regs: tuple[float, ...] = DEFAULT_REGS,
    val_fraction: float = 0.1,
    device: str = "auto",
    seed: int = 0,
    max_iter: int = 500,
    tol: float = 1e-6,
    n_classes: int | None = None,
    max_bank_gb: float = 2.0,
    progress: Callable[[str], None] | None = None,
    standardise: str = "scaler",
) -> dict[str, ProbeResult]:
    """Linear probes for many settings at once, the reg chosen on validation, scored on test.

    `train[key]` and `test[key]` are `(X (N, D) float16/32, y (N,) int64)` per setting; D may
    differ between settings. For each setting, a stratified `val_fraction` of train is held
    out, one head per reg is fitted on the rest and the best val top-1 picks the reg (ties go
    to the stronger reg); that head is then refitted, warm-started, on all of train and scored
    on test. Standardisation uses the whole train split. With one reg the search is skipped.
    `standardise="scaler"` divides by the population std (constant features left unscaled, as
    scikit-learn's StandardScaler); `"batchnorm"` divides by `sqrt(var + 1e-6)`, a BatchNorm
    without affine in eval mode on the train statistics (REPA's probe; results are `linear-bn`).
    Returns `{key: ProbeResult}` with `extra` = reg, val_top1, val_top1_by_reg, C (sklearn's
    equivalent), n_iter, converged.
    """
    if standardise not in STANDARDISE:
        raise ExplorerError(
            f"standardise must be one of {', '.join(STANDARDISE)}, got {standardise!r}"
        )
    if set(train) != set(test):
        raise ExplorerError(
            f"train and test name different settings: {sorted(set(train) ^ set(test))}"
        )
    regs = tuple(float(r) for r in regs)
    if not regs or min(regs) <= 0:
        raise ExplorerError(f"regs must be positive numbers, got {regs}")
    dev = resolve_device(device)
    settings = []
    for key in train:
        xtr, ytr = check_xy(*train[key], f"train[{key!r}]")
        xte, yte = check_xy(*test[key], f"test[{key!r}]")
        if xtr.shape[1] != xte.shape[1]:
            raise ExplorerError(
                f"setting {key!r}: train has {xtr.shape[1]} features but test has {xte.shape[1]}"
            )
        if len(regs) > 1:
            fit_idx, val_idx = validation_split(ytr, val_fraction, seed)
        else:
            fit_idx, val_idx = np.arange(len(ytr)), np.empty(0, dtype=np.int64)
        settings.append(
            _Setting(key, xtr, ytr.astype(np.int64), xte, yte.astype(np.int64), fit_idx, val_idx)
        )
    if not settings:
        return {}
    labels = np.concatenate([np.r_[s.y_train, s.y_test] for s in settings])
    if labels.min() < 0:
        raise ExplorerError("labels must be class indices 0..C-1; found a negative label")
    c = int(labels.max()) + 1 if n_classes is None else int(n_classes)

    results: dict[str, ProbeResult] = {}
    banks = _banks(settings, len(regs), c, max_bank_gb * 2**30)
    for i, bank in enumerate(banks):
        if progress is not None:
            d = bank[0].x_train.shape[1]
            progress(f"linear probes: bank {i + 1}/{len(banks)} ({len(bank)} settings, D={d})")
        results.update(_fit_bank(bank, regs, c, dev, max_iter, tol, standardise))
    return {s.key: results[s.key] for s in settings}


def _fit_bank(
    bank: list[_Setting],
    regs: tuple[float, ...],
    c: int,
    dev: torch.device,
    max_iter: int,
    tol: float,
    standardise: str = "scaler",
) -> dict[str, ProbeResult]:
    """Reg search (if several regs), refit and test for settings that share (N, D, N_fit)."""
    batchnorm = standardise == "batchnorm"
    g = len(bank)
    n, d = bank[0].x_train.shape
    n_fit = len(bank[0].fit_idx)
    # 1. Stack standardised train features; rows ordered fit-then-val so both are views.
    x = torch.empty(g, n, d + 1, device=dev)
    x[:, :, d] = 1.0
    y = torch.empty(g, n, dtype=torch.int64, device=dev)
    stats = []
    for j, s in enumerate(bank):
        xt = as_device_tensor(s.x_train, dev).float()
        mean, std = _batchnorm_stats(xt) if batchnorm else standardise_stats(xt)
        order = torch.as_tensor(np.r_[s.fit_idx, s.val_idx], device=dev)
        x[j, :, :d] = (xt[order] - mean) / std
        y[j] = torch.as_tensor(s.y_train, device=dev)[order]
        stats.append((mean, std))
        del xt

    # 2. Reg search: R heads per setting on the fit rows, scored on the val rows.
    val_acc = None
    best = np.zeros(g, dtype=np.int64)
    theta0 = None
    if len(regs) > 1:
        lam = torch.tensor(regs, device=dev).expand(g, -1).contiguous()
        sol = lbfgs_heads(x[:, :n_fit], y[:, :n_fit], lam, c, max_iter=max_iter, tol=tol)
        pred = _logits(x[:, n_fit:], sol.theta).argmax(-1)  # (G, N_val, R)
        hits = (pred == y[:, n_fit:, None]).sum(1).cpu().numpy()  # (G, R)
        val_acc = hits / (n - n_fit)
        # argmax takes the first maximum, so scan regs strongest-first: ties -> stronger reg
        order = np.argsort(regs)[::-1]
        best = order[val_acc[:, order].argmax(1)]
        rows = torch.arange(g, device=dev)
        theta0 = sol.theta[rows, torch.as_tensor(best, device=dev)][:, None]  # (G, 1, C, D1)
        del sol
    chosen = [regs[i] for i in best]

    # 3. Refit the chosen head of every setting on all of train, warm-started.
    lam = torch.tensor(chosen, device=dev)[:, None]
    sol = lbfgs_heads(x, y, lam, c, theta0=theta0, max_iter=max_iter, tol=tol)
    del x, y

    # 4. Test.
    out = {}
    for j, s in enumerate(bank):
        mean, std = stats[j]
        xte = (as_device_tensor(s.x_test, dev).float() - mean) / std
        logits = xte @ sol.theta[j, 0, :, :-1].T + sol.theta[j, 0, :, -1]
        pred = logits.argmax(1).cpu().numpy()
        extra = {
            "reg": chosen[j],
            "C": sklearn_C(chosen[j], n),
            "n_iter": int(sol.n_iter[j, 0]),
            "converged": bool(sol.converged[j, 0]),
        }
        if val_acc is not None:
            extra["val_top1"] = float(val_acc[j, best[j]])
            extra["val_top1_by_reg"] = dict(zip(regs, val_acc[j].tolist(), strict=True))
            extra["n_val"] = n - n_fit
        head = BN_HEAD if batchnorm else HEAD
        out[s.key] = ProbeResult.from_predictions(head, s.y_test, pred, c, extra)
    return out
