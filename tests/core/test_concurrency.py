"""Concurrency: threads sharing one model get exactly their serial features; processes racing
on one store compute each entry once and leave it intact."""

from __future__ import annotations

import textwrap
import threading

import numpy as np
import pytest
import torch

from explorer.features.capture import forward_features, image_noise
from explorer.models.layers import build_catalogue
from explorer.models.loader import LoadedModel
from tests.core.racing import race_two_workers

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
    out = forward_features(
        model.denoiser, model.scheduler, x0, noise, timestep=t, layers=layers, pools=pools
    )
    return {k: v.numpy().copy() for k, v in out.items()}


def test_threads_sharing_a_model_get_their_serial_features(model):
    cat = build_catalogue(model.denoiser)
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
                catalogues.append(build_catalogue(model.denoiser))
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
            assert r.keys() == serial[i].keys(), (
                f"thread {i}: keys {sorted(r)} != {sorted(serial[i])}"
            )
            for k in r:
                assert r[k].tobytes() == serial[i][k].tobytes(), (
                    f"thread {i} {k}: features differ from the serial run"
                )
    leftover = [n for n, m in model.denoiser.named_modules() if m._forward_hooks]
    assert not leftover and not model.denoiser.training, f"hooks left behind: {leftover}"


def test_a_plain_forward_in_another_thread_is_not_captured(model):
    """A thread that opened no capture runs the whole model even while another thread captures."""
    from explorer.features.capture import capture

    cat = build_catalogue(model.denoiser)
    x = torch.zeros(2, 1, 16, 16)
    t = torch.zeros(2, dtype=torch.long)
    out = {}
    with capture(model.denoiser, [cat[0]], ["1"]) as store:  # would stop any pass at conv_in
        th = threading.Thread(target=lambda: out.setdefault("y", model.denoiser(x, t).sample))
        th.start()
        th.join()
    assert "y" in out and out["y"].shape == (2, 1, 16, 16), "the other thread's pass was stopped"
    assert store == {}, f"the other thread's pass was recorded here: {list(store)}"


_RACER = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    import numpy as np, torch
    torch.set_num_threads(1)
    import explorer.features.extract as F
    import explorer.features.job as J
    import explorer.features.pixels as P
    from explorer.features.keys import Selection
    from explorer.data.base import ImageDataset
    from explorer.models.layers import build_catalogue
    from explorer.models.loader import load_model
    from explorer.features.store import FeatureStore

    model_dir, store_dir, data, barrier, me = sys.argv[1:]
    d = np.load(data)
    ds = ImageDataset(name="tiny", labels=d["labels"], class_names=["a", "b", "c"],
                      splits={"train": d["train"], "test": d["test"]}, fingerprint=str(d["fp"]), array=d["images"])
    model = load_model(model_dir)
    cat = build_catalogue(model.denoiser)
    puts = []
    real_put = P._put_pixels
    def slow_put(*a, **k):  # widen the window between "missing?" and "written"
        puts.append(1)
        time.sleep(0.5)
        return real_put(*a, **k)
    P._put_pixels = slow_put
    real_fwd = J.capture_pass
    def slow_fwd(*a, **k):
        time.sleep(0.1)
        return real_fwd(*a, **k)
    J.capture_pass = slow_fwd
    (Path(barrier) / me).touch()
    deadline = time.time() + 120
    while len(list(Path(barrier).iterdir())) < 2 and time.time() < deadline:
        time.sleep(0.005)
    store = FeatureStore(store_dir)
    sel = Selection.of(ds, "train")
    px = np.asarray(P.ensure_pixels(model, ds, sel, "2", store=store))
    rep = F.ensure_features(model, ds, sel, timesteps=[90], layers=[cat[4]], pools=["2"], store=store,
                            batch_size=16, progress=False)
    print(json.dumps({"pixel_puts": len(puts), "computed": rep.computed, "cached": rep.cached,
                      "px": px.tobytes().hex()}))
""")


@pytest.mark.timeout(300)
def test_two_processes_race_on_one_pixel_and_one_feature_entry(
    tiny_model_dir, tiny_dataset, tmp_path
):
    from explorer.features.capture import extract_features
    from explorer.features.extract import load_features
    from explorer.features.keys import Selection
    from explorer.features.pixels import ensure_pixels
    from explorer.features.store import FeatureStore
    from explorer.models.loader import load_model

    ds = tiny_dataset
    store_dir = tmp_path / "raced"
    results = race_two_workers(_RACER, tiny_model_dir, ds, store_dir, tmp_path)
    assert sum(r["pixel_puts"] for r in results) == 1, (
        f"the pixel entry must be written once: {results}"
    )
    assert sorted(r["computed"] for r in results) == [0, 1], (
        f"the feature entry must be computed once: {results}"
    )
    assert results[0]["px"] == results[1]["px"], "both processes must read the same pixel entry"

    store = FeatureStore(store_dir)
    assert len(store.entries()) == 2 and all("checksum" in m for m in store.entries()), (
        store.entries()
    )
    assert all(store.check(k)[0] == "ok" for k in store.entry_keys()), (
        "raced entries must verify intact"
    )
    model = load_model(str(tiny_model_dir))
    sel = Selection.of(ds, "train")
    fresh = FeatureStore(tmp_path / "fresh")
    assert (
        bytes.fromhex(results[0]["px"])
        == np.asarray(ensure_pixels(model, ds, sel, "2", store=fresh)).tobytes()
    )
    cat = build_catalogue(model.denoiser)
    x0 = model.preprocess(ds.images(sel.indices))
    mem = extract_features(
        model, x0, timesteps=[90], layers=[cat[4]], pools=["2"], indices=sel.indices, batch_size=16
    )[(90, "mid_block", "2")]
    disk = load_features(
        model, ds, sel, t=90, layer="mid_block", pool_name="2", seed=0, store=store
    )
    assert np.asarray(disk).tobytes() == mem.tobytes(), (
        "the raced feature entry is not what a serial run writes"
    )
