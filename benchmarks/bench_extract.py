"""Extraction speed: ours vs the naive ways, measured in one run on the same images.

1. all layers: one forward pass per (t) capturing every layer   vs  one full pass per layer
2. shallow layers: early exit after the deepest requested layer vs  the full pass
3. a cached setting: read from the feature store                vs  computing it again
4. our pass vs a bare forward pass (no hooks): the cost of capturing and pooling

Usage: python benchmarks/bench_extract.py [--model ddpm-digits] [--dataset digits] [--n 256] [--t 90]
       [--device auto]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from explorer.data import load_dataset
from explorer.device import resolve_device
from explorer.extract import forward_features, image_noise
from explorer.features import Selection, ensure_features, load_features
from explorer.layers import build_catalogue
from explorer.models import load_model
from explorer.store import FeatureStore


def timed(fn, repeat: int = 3) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="ddpm-digits")
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--t", type=int, default=90)
    ap.add_argument("--device", default="auto")
    a = ap.parse_args()

    dev = resolve_device(a.device)
    model = load_model(a.model, device=dev)
    ds = load_dataset(a.dataset)
    cat = build_catalogue(model.unet)
    sel = Selection.of(ds, "test", a.n)
    x0 = model.preprocess(ds.images(sel.indices))
    noise = image_noise(sel.indices, 0, tuple(x0.shape[1:]))
    args = dict(timestep=a.t, pools=["2"])
    u, s = model.unet, model.scheduler
    print(f"{a.model} on {dev}, {len(sel.indices)} images, {len(cat)} layers, t={a.t}")

    one_pass = timed(lambda: forward_features(u, s, x0, noise, layers=cat, **args))
    per_layer = timed(
        lambda: [
            forward_features(u, s, x0, noise, layers=[lay], stop_early=False, **args) for lay in cat
        ],
        1,
    )
    print(
        f"all layers:     one pass {one_pass:.3f}s  vs  a pass per layer {per_layer:.3f}s  -> {per_layer / one_pass:.1f}x"
    )

    shallow = [lay for lay in cat if lay.stage == "down"][:3]
    early = timed(lambda: forward_features(u, s, x0, noise, layers=shallow, **args))
    full = timed(
        lambda: forward_features(u, s, x0, noise, layers=shallow, stop_early=False, **args)
    )
    print(
        f"layers 1-3:     early exit {early:.3f}s  vs  full pass {full:.3f}s  -> {full / early:.1f}x"
    )

    t_steps = torch.full((len(x0),), a.t, dtype=torch.long, device=dev)

    def bare():
        with torch.inference_mode():
            u(s.add_noise(x0.to(dev), noise.to(dev), t_steps), t_steps)

    bare_s = timed(bare)
    print(
        f"capture+pool:   ours (all layers) {one_pass:.3f}s  vs  bare forward {bare_s:.3f}s  -> {one_pass / bare_s:.2f}x the bare cost"
    )

    with tempfile.TemporaryDirectory() as tmp:
        store = FeatureStore(tmp)
        t0 = time.perf_counter()
        ensure_features(
            model, ds, sel, timesteps=[a.t], layers=cat, pools=["2"], store=store, progress=False
        )
        compute = time.perf_counter() - t0
        cached = timed(
            lambda: (
                [
                    load_features(
                        model, ds, sel, t=a.t, layer=lay.name, pool_name="2", store=store
                    )[:]
                    for lay in cat
                ]
                and ensure_features(
                    model,
                    ds,
                    sel,
                    timesteps=[a.t],
                    layers=cat,
                    pools=["2"],
                    store=store,
                    progress=False,
                )
            )
        )
        print(
            f"cached setting: read {cached:.4f}s  vs  compute {compute:.3f}s  -> {compute / cached:.0f}x"
        )


if __name__ == "__main__":
    main()
