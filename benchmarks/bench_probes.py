"""Time `fit_linear_grid` against scikit-learn fitted one setting and one reg at a time.

Both sides run the same protocol on the same features: a stratified 10% validation split
of train, one fit per reg, the best val top-1 picks the reg (ties -> stronger), a refit on
all of train, test top-1. Features are synthetic: shared labels, class means of varying
strength, float16 like the feature cache.

    python benchmarks/bench_probes.py --settings 40 --n 3000
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from explorer.probes import DEFAULT_REGS, fit_linear_grid, sklearn_C, validation_split


def make_settings(n_settings: int, n: int, n_test: int, dims: list[int], classes: int, seed: int):
    """`(train, test)` dicts of `(X float16, y int64)`; every setting shares the labels."""
    rng = np.random.default_rng(seed)
    y_train, y_test = rng.integers(0, classes, n), rng.integers(0, classes, n_test)
    train, test = {}, {}
    for s in range(n_settings):
        d = dims[s % len(dims)]
        means = rng.normal(size=(classes, d)) * rng.uniform(0.05, 0.3)
        scale = rng.uniform(0.5, 3.0, size=d)  # unequal scales and offsets, as in real features
        offset = rng.normal(size=d)
        for y, out in ((y_train, train), (y_test, test)):
            x = (means[y] + rng.normal(size=(len(y), d))) * scale + offset
            out[f"t{s:03d}/d{d}"] = (x.astype(np.float16), y)
    return train, test


def sklearn_one_by_one(train, test, regs, max_iter: int, tol: float) -> dict[str, float]:
    """The naive baseline: LogisticRegression (lbfgs) per setting and per reg."""
    accs = {}
    for key, (xtr, ytr) in train.items():
        xte, yte = test[key]
        scaler = StandardScaler().fit(xtr.astype(np.float32))
        ztr, zte = (
            scaler.transform(xtr.astype(np.float32)),
            scaler.transform(xte.astype(np.float32)),
        )
        fit_idx, val_idx = validation_split(ytr, 0.1, seed=0)
        val = {}
        for reg in regs:
            clf = LogisticRegression(C=sklearn_C(reg, len(fit_idx)), max_iter=max_iter, tol=tol)
            clf.fit(ztr[fit_idx], ytr[fit_idx])
            val[reg] = clf.score(ztr[val_idx], ytr[val_idx])
        best = max(regs, key=lambda r: (val[r], r))
        clf = LogisticRegression(C=sklearn_C(best, len(ytr)), max_iter=max_iter, tol=tol)
        clf.fit(ztr, ytr)
        accs[key] = clf.score(zte, yte)
    return accs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--settings", type=int, default=40)
    ap.add_argument("--n", type=int, default=3000, help="train examples per setting")
    ap.add_argument("--n-test", type=int, default=1000)
    ap.add_argument("--dims", default="64,128,256", help="feature dims, cycled over settings")
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--no-baseline", action="store_true", help="time fit_linear_grid alone")
    ap.add_argument("--max-iter", type=int, default=500, help="L-BFGS iterations, both sides")
    ap.add_argument("--tol", type=float, default=1e-6, help="max |gradient| to stop, both sides")
    args = ap.parse_args()

    dims = [int(d) for d in args.dims.split(",")]
    train, test = make_settings(args.settings, args.n, args.n_test, dims, args.classes, seed=0)
    print(
        f"{args.settings} settings, N_train={args.n}, N_test={args.n_test}, D in {dims}, "
        f"{args.classes} classes, regs={DEFAULT_REGS}, tol={args.tol}, "
        f"device={args.device}, torch threads={torch.get_num_threads()}"
    )

    warm = {"warm-up": next(iter(train.values()))}  # CUDA context, kernels: not timed
    fit_linear_grid(warm, warm, regs=DEFAULT_REGS[:2], device=args.device, max_iter=5)
    t0 = time.perf_counter()
    ours = fit_linear_grid(
        train, test, regs=DEFAULT_REGS, device=args.device, max_iter=args.max_iter, tol=args.tol
    )
    t_ours = time.perf_counter() - t0

    unconverged = sum(not r.extra["converged"] for r in ours.values())
    print(
        f"fit_linear_grid      : {t_ours:8.1f} s  ({len(train) * len(DEFAULT_REGS)} heads, "
        f"{unconverged} refits unconverged)"
    )
    if args.no_baseline:
        return
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        naive = sklearn_one_by_one(train, test, DEFAULT_REGS, args.max_iter, args.tol)
    t_naive = time.perf_counter() - t0

    diffs = np.array([ours[k].top1 - naive[k] for k in train])
    print(f"sklearn one by one   : {t_naive:8.1f} s")
    print(f"speed-up (naive/ours): {t_naive / t_ours:8.1f}x")
    print(
        f"test top-1, ours - sklearn: max |diff| {np.abs(diffs).max() * 100:.2f} points, "
        f"mean {diffs.mean() * 100:+.2f}; ours mean top-1 "
        f"{np.mean([r.top1 for r in ours.values()]) * 100:.1f}%"
    )


if __name__ == "__main__":
    main()
