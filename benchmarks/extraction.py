"""Figures 1-3: the extraction pass on the built-in model (one batch of real images).

1. every layer in one pass vs one full pass per layer (target >= 0.8 * L x);
2. our pass (hooks + pooling of every layer) vs a bare forward cut at the deepest layer (<= 1.10x);
3. early exit at block k vs the full pass, next to block k's share of the FLOPs (within 0.1).
"""

from __future__ import annotations

import contextlib

import torch

from benchmarks.common import Context, best_of, figure, paired
from explorer.features.capture import forward_features

T = 90  # a middle timestep: the cost of a pass does not depend on t
POOLS = ["2"]


class _Cut(Exception):
    """Ends the bare forward pass at the deepest layer."""


def _batch(ctx: Context) -> dict:
    """One batch of test images `x0 (B, C, H, W)`, noise, and the model's call arguments."""
    if "batch" not in ctx._cache:
        from explorer.features.keys import Selection

        model, ds = ctx.loaded_model(), ctx.loaded_dataset()
        n = ctx.size(256, 32)
        sel = Selection.of(ds, "test", n)
        x0 = model.adapter.encode(model.preprocess(ds.images(sel.indices)))
        gen = torch.Generator().manual_seed(0)
        noise = torch.randn(x0.shape, generator=gen).to(x0.device)
        kw = model.adapter.net_kwargs(len(x0), None)
        ctx._cache["batch"] = dict(x0=x0, noise=noise, net_kwargs=kw)
    return ctx._cache["batch"]


def _ours(ctx: Context, layers, stop_early: bool = True):
    m, b = ctx.loaded_model(), _batch(ctx)
    return forward_features(
        m.denoiser,
        m.scheduler,
        b["x0"],
        b["noise"],
        timestep=T,
        layers=layers,
        pools=POOLS,
        stop_early=stop_early,
        net_kwargs=b["net_kwargs"],
    )


@torch.inference_mode()
def _bare(ctx: Context, cut_at=None) -> None:
    """The model's own forward on the same inputs: no capture, no pooling; stopped right after
    layer `cut_at` (a `LayerSpec`) by one plain forward hook, or run whole when None."""
    m, b = ctx.loaded_model(), _batch(ctx)
    t = torch.full((len(b["x0"]),), T, dtype=torch.long, device=b["x0"].device)
    xt = m.scheduler.add_noise(b["x0"], b["noise"], t)
    handle = None
    if cut_at is not None:

        def stop(*_):
            raise _Cut

        handle = m.denoiser.get_submodule(cut_at.hook).register_forward_hook(stop)
    try:
        with contextlib.suppress(_Cut):
            m.denoiser(xt, t, **b["net_kwargs"])
    finally:
        if handle is not None:
            handle.remove()


def fig1_one_pass(ctx: Context) -> dict:
    cat = ctx.catalogue()
    n_layers = len(cat)
    one = best_of(lambda: _ours(ctx, cat), ctx.size(3, 1))
    per = best_of(lambda: [_ours(ctx, [lay], stop_early=False) for lay in cat], 1, warmup=False)
    ratio, goal = per / one, 0.8 * n_layers
    return figure(
        "1",
        f"all {n_layers} layers in one pass vs one pass per layer",
        ratio,
        "×",
        f"≥ 0.8·L = {goal:.1f}×",
        ratio >= goal,
        f"{len(_batch(ctx)['x0'])} images, t={T}, pool 2: one pass {one:.3f} s, "
        f"{n_layers} passes {per:.3f} s",
    )


def fig2_capture_cost(ctx: Context) -> dict:
    cat = ctx.catalogue()
    deepest = max(cat, key=lambda lay: lay.index)
    got = paired(
        {"ours": lambda: _ours(ctx, cat), "bare": lambda: _bare(ctx, deepest)}, ctx.size(7, 1)
    )
    ours, bare = got["ours"], got["bare"]
    ratio = ours / bare
    return figure(
        "2",
        "our pass (hooks + pooling, all layers) vs a bare forward cut at the deepest layer",
        ratio,
        "×",
        "≤ 1.10×",
        ratio <= 1.10,
        f"ours {ours:.3f} s, bare {bare:.3f} s (deepest layer {deepest.index}: {deepest.name})",
    )


def flops_to(ctx: Context, cut_at=None) -> int:
    """FLOPs of the bare forward up to `cut_at` (whole pass for None), by `FlopCounterMode`."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        _bare(ctx, cut_at)
    return counter.get_total_flops()


def early_exit_shares(ctx: Context, picks, rounds: int) -> tuple[dict, float, int]:
    """`({layer index: (time share, FLOPs share)}, full-pass seconds, full-pass FLOPs)`: our
    pass stopped right after each of `picks`, against the full pass, timed in turn."""
    cat = ctx.catalogue()
    fns = {0: lambda: _ours(ctx, cat, stop_early=False)}
    fns |= {lay.index: (lambda lay=lay: _ours(ctx, [lay])) for lay in picks}
    got = paired(fns, rounds)
    full_f = flops_to(ctx)
    shares = {lay.index: (got[lay.index] / got[0], flops_to(ctx, lay) / full_f) for lay in picks}
    return shares, got[0], full_f


def fig3_early_exit(ctx: Context) -> dict:
    cat = ctx.catalogue()
    picks = sorted(
        {cat[len(cat) // 4], cat[len(cat) // 2], cat[(3 * len(cat)) // 4]}, key=lambda x: x.index
    )
    shares, full_s, full_f = early_exit_shares(ctx, picks, ctx.size(5, 1))
    worst = max(abs(t - f) for t, f in shares.values())
    parts = [f"block {k}: time {t:.2f} vs FLOPs {f:.2f}" for k, (t, f) in shares.items()]
    return figure(
        "3",
        "early exit at block k vs the full pass: |time share − FLOPs share|, worst k",
        worst,
        "",
        "≤ 0.10",
        worst <= 0.10,
        "; ".join(parts) + f"; full pass {full_s:.3f} s, {full_f / 1e9:.2f} GFLOP",
    )


FIGURES = {"1": fig1_one_pass, "2": fig2_capture_cost, "3": fig3_early_exit}
