"""GPU check: CUDA extraction with mixed precision agrees with the CPU, early exit is exact,
and throughput against a bare forward pass. Runs on synthetic images (no dataset needed).

Usage: python benchmarks/gpu_check.py [--model ddpm-digits] [--n 2048] [--batch 512]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch

from explorer.data.base import ImageDataset, fingerprint_arrays, stratified_split
from explorer.device import autocast_dtype, describe
from explorer.extract import forward_features, image_noise
from explorer.features import Selection, ensure_features, feature_key
from explorer.layers import build_catalogue
from explorer.models import load_model
from explorer.store import FeatureStore


def rate(fn, n: int, repeat: int = 3) -> float:
    fn()
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return n / best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="ddpm-digits")
    ap.add_argument("--n", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=512)
    a = ap.parse_args()
    assert torch.cuda.is_available(), "no CUDA device"
    dev = torch.device("cuda")
    gpu, cpu = load_model(a.model, device=dev), load_model(a.model, device="cpu")
    ac = autocast_dtype(dev)
    print(f"{a.model} on {describe(dev)}, autocast {ac}, torch {torch.__version__}")
    cat = build_catalogue(gpu.unet)
    rng = np.random.default_rng(0)
    size, ch = gpu.resolution, gpu.unet.config.in_channels
    imgs = rng.integers(0, 256, (a.n, size, size, ch), dtype=np.uint8)
    labels = rng.integers(0, 10, a.n)
    x0 = gpu.preprocess(imgs[:256])
    noise = image_noise(np.arange(256), 0, tuple(x0.shape[1:]))

    f32 = forward_features(cpu.unet, cpu.scheduler, x0, noise, timestep=90, layers=cat, pools=["2"])
    mixed = forward_features(
        gpu.unet, gpu.scheduler, x0, noise, timestep=90, layers=cat, pools=["2"], autocast=ac
    )
    worst = min(
        torch.nn.functional.cosine_similarity(f32[k].float(), mixed[k].float(), dim=1).min().item()
        for k in f32
    )
    print(
        f"mixed precision vs CPU fp32: worst per-image cosine similarity over {len(cat)} layers = {worst:.5f}"
    )
    shallow = cat[:3]
    e = forward_features(
        gpu.unet, gpu.scheduler, x0, noise, timestep=90, layers=shallow, pools=["2"], autocast=ac
    )
    f = forward_features(
        gpu.unet,
        gpu.scheduler,
        x0,
        noise,
        timestep=90,
        layers=shallow,
        pools=["2"],
        autocast=ac,
        stop_early=False,
    )
    print(f"early exit == full pass on CUDA: {all(torch.equal(e[k], f[k]) for k in e)}")

    xb = gpu.preprocess(imgs[: a.batch]).to(dev)
    nb = image_noise(np.arange(a.batch), 0, tuple(xb.shape[1:])).to(dev)
    t = torch.full((a.batch,), 90, device=dev)

    def bare():
        with torch.inference_mode(), torch.autocast("cuda", dtype=ac):
            gpu.unet(gpu.scheduler.add_noise(xb, nb, t), t)

    ours = rate(
        lambda: forward_features(
            gpu.unet,
            gpu.scheduler,
            xb,
            nb,
            timestep=90,
            layers=cat,
            pools=["1", "2", "max"],
            autocast=ac,
        ),
        a.batch,
    )
    base = rate(bare, a.batch)
    print(
        f"throughput: all {len(cat)} layers x 3 poolings {ours:,.0f} img/s vs bare forward {base:,.0f} img/s "
        f"({ours / base:.2f}x)"
    )

    ds = ImageDataset(
        "synthetic",
        labels,
        [str(i) for i in range(10)],
        stratified_split(labels),
        fingerprint_arrays(imgs, labels),
        array=imgs,
    )
    with tempfile.TemporaryDirectory() as tmp:
        store = FeatureStore(tmp)
        sel = Selection.of(ds, "train")
        t0 = time.perf_counter()
        rep = ensure_features(
            gpu,
            ds,
            sel,
            timesteps=[10, 90, 150],
            layers=cat,
            pools=["2"],
            store=store,
            batch_size=a.batch,
            progress=False,
        )
        dt = time.perf_counter() - t0
        m = store.manifest(feature_key(gpu, ds, sel, 90, cat[-1].name, "2", 0))
        print(
            f"ensure_features on CUDA: {rep.computed} entries, {len(sel.indices) * 3 / dt:,.0f} img-timesteps/s "
            f"end to end, manifest precision {m['precision']}"
        )


if __name__ == "__main__":
    main()
