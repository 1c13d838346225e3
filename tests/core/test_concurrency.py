"""Concurrency: threads sharing one model get exactly their serial features; processes racing
on one store compute each entry once and leave it intact."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest
import torch

from explorer.extract import forward_features, image_noise
from explorer.layers import build_catalogue
from explorer.models import LoadedModel

# (t, layer indices, pools): different depths, so early exits differ between threads
JOBS = [
    (10, list(range(1, 10)), ["1", "2"]),
    (500, [1, 2, 3], ["max"]),
    (250, [5], ["4", "1"]),
    (900, [2, 7], ["2"]),
]
CALLS = 12


@pytest.fixture(scope="module")
def model(tiny_unet_config) -> LoadedModel:
    from diffusers import DDPMScheduler, UNet2DModel

    torch.manual_seed(0)
    unet = UNet2DModel(**tiny_unet_config).eval()
    return LoadedModel("tiny", unet, DDPMScheduler(num_train_timesteps=1000), "tiny-fp", "local")


def _run(model, cat, job, x0):
    t, idx, pools = job
    noise = image_noise(np.arange(len(x0)), 0, tuple(x0.shape[1:]))
    layers = [cat[i - 1] for i in idx]
    out = forward_features(model.unet, model.scheduler, x0, noise, timestep=t, layers=layers, pools=pools)
    return {k: v.numpy().copy() for k, v in out.items()}


def test_threads_sharing_a_model_get_their_serial_features(model):
    cat = build_catalogue(model.unet)
    x0 = torch.rand(6, 1, 16, 16, generator=torch.Generator().manual_seed(3)) * 2 - 1
    serial = [_run(model, cat, job, x0) for job in JOBS]
    barrier = threading.Barrier(len(JOBS) + 1)
    results: dict[int, list] = {i: [] for i in range(len(JOBS))}
    errors: list[BaseException] = []
    catalogues: list = []

    def worker(i):
        try:
            barrier.wait()
            for _ in range(CALLS):
                results[i].append(_run(model, cat, JOBS[i], x0))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    def catalogue_worker():
        try:
            barrier.wait()
            for _ in range(CALLS):
                catalogues.append(build_catalogue(model.unet))
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(JOBS))]
    threads.append(threading.Thread(target=catalogue_worker))
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=120)
    assert not errors, f"{len(errors)} exceptions in threads, first: {errors[0]!r}"
    assert all(c == cat for c in catalogues) and len(catalogues) == CALLS, (
        "a catalogue built while other threads extract must equal the serial one"
    )
    for i, runs in results.items():
        assert len(runs) == CALLS, f"thread {i} finished {len(runs)}/{CALLS} calls"
        for r in runs:
            assert r.keys() == serial[i].keys(), f"thread {i}: keys {sorted(r)} != {sorted(serial[i])}"
            for k in r:
                assert r[k].tobytes() == serial[i][k].tobytes(), (
                    f"thread {i} {k}: features differ from the serial run"
                )
    leftover = [n for n, m in model.unet.named_modules() if m._forward_hooks]
    assert not leftover and not model.unet.training, f"hooks left behind: {leftover}"


def test_a_plain_forward_in_another_thread_is_not_captured(model):
    """A thread that opened no capture runs the whole model even while another thread captures."""
    from explorer.extract import capture

    cat = build_catalogue(model.unet)
    x = torch.zeros(2, 1, 16, 16)
    t = torch.zeros(2, dtype=torch.long)
    out = {}
    with capture(model.unet, [cat[0]], ["1"]) as store:  # would stop any pass at conv_in
        th = threading.Thread(target=lambda: out.setdefault("y", model.unet(x, t).sample))
        th.start()
        th.join()
    assert "y" in out and out["y"].shape == (2, 1, 16, 16), "the other thread's pass was stopped"
    assert store == {}, f"the other thread's pass was recorded here: {list(store)}"
