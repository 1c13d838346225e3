"""The cost of thread-safe capture: per-context hook dispatch vs the old per-call hooks.

The old `capture` registered plain forward hooks for the duration of one call, which any
other thread's pass on the same model also fired (wrong features, spurious early exits).
The new one (`explorer.models.hooks.listen`) dispatches by ContextVar. Measured here, same images:

1. serial: `forward_features` with the new capture vs a re-creation of the old one
2. parallel: the new capture with N threads on one model vs the same calls run serially
   (the old capture cannot be timed this way: it raises or returns wrong arrays)

Timings alternate A and B; prints medians and the median ratio (new/old; parallel/serial).

Usage: python benchmarks/bench_capture_safety.py [--model ddpm-fashion-mnist] [--n 64] [--threads 3]
"""

from __future__ import annotations

import argparse
import contextlib
import threading
import time

import numpy as np
import torch

import explorer.features.capture as ex
from explorer.models.layers import build_catalogue, first_tensor
from explorer.models.loader import load_model


@contextlib.contextmanager
def old_capture(unet, layers, pools, *, stop_early=True):
    """The pre-fix capture: plain hooks registered per call (not thread-safe)."""
    modules = dict(unet.named_modules())
    store = {}
    deepest = max(layers, key=lambda lay: lay.index) if stop_early else None
    handles = []

    def make_hook(lay):
        def hook(_m, _i, output):
            fmap = first_tensor(output)
            for how in pools:
                store[(lay.name, how)] = ex.pool(fmap, how).float()
            if deepest is not None and lay.index == deepest.index:
                raise ex._StopForward

        return hook

    was_training = unet.training
    try:
        unet.eval()
        handles = [modules[lay.hook].register_forward_hook(make_hook(lay)) for lay in layers]
        yield store
    finally:
        for h in handles:
            h.remove()
        unet.train(was_training)


def paired(fa, fb, repeat: int) -> tuple[float, float, float]:
    """Median times of `fa` and `fb` run alternately (fair on a busy machine), and the median ratio."""
    fa(), fb()
    ta, tb = [], []
    for _ in range(repeat):
        for f, out in ((fa, ta), (fb, tb)):
            t0 = time.perf_counter()
            f()
            out.append(time.perf_counter() - t0)
    return float(np.median(ta)), float(np.median(tb)), float(np.median(np.array(ta) / np.array(tb)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="ddpm-fashion-mnist")
    ap.add_argument("--n", type=int, default=64, help="images per forward pass")
    ap.add_argument("--calls", type=int, default=6, help="forward_features calls per timing")
    ap.add_argument("--threads", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--torch-threads", type=int, default=1)
    a = ap.parse_args()

    torch.set_num_threads(a.torch_threads)
    model = load_model(a.model)
    cat = build_catalogue(model.denoiser)
    x0 = (
        torch.rand(a.n, model.denoiser.config.in_channels, model.resolution, model.resolution) * 2
        - 1
    )
    noise = ex.image_noise(np.arange(a.n), 0, tuple(x0.shape[1:]))
    jobs = [(10, cat, ["2"]), (500, cat[: len(cat) // 2], ["1", "max"]), (150, cat[-3:], ["4"])]

    def run(job):
        t, layers, pools = job
        return ex.forward_features(
            model.denoiser, model.scheduler, x0, noise, timestep=t, layers=layers, pools=pools
        )

    def serial():
        for i in range(a.calls):
            run(jobs[i % len(jobs)])

    def serial_old():
        real = ex.capture
        ex.capture = old_capture
        try:
            serial()
        finally:
            ex.capture = real

    def parallel():
        def work(k):
            for i in range(k, a.calls * a.threads, a.threads):
                run(jobs[i % len(jobs)])

        ths = [threading.Thread(target=work, args=(k,)) for k in range(a.threads)]
        for th in ths:
            th.start()
        for th in ths:
            th.join()

    def serial_all():
        for i in range(a.calls * a.threads):
            run(jobs[i % len(jobs)])

    new, old, r1 = paired(serial, serial_old, a.repeat)
    par, ser, r2 = paired(parallel, serial_all, a.repeat)
    print(
        f"model {a.model}, {a.n} images/pass, {a.calls} calls, torch threads {torch.get_num_threads()}"
    )
    print(f"serial   new capture {new:.3f}s  old capture {old:.3f}s  median ratio new/old {r1:.3f}")
    print(
        f"{a.threads} threads on one model {par:.3f}s  same calls serially {ser:.3f}s  "
        f"median ratio parallel/serial {r2:.3f}"
    )


if __name__ == "__main__":
    main()
