"""The feature store: compute once, read back exactly, content keys, resume after a kill, two processes."""

from __future__ import annotations

import dataclasses
import json
import textwrap
from pathlib import Path

import numpy as np
import pytest

import explorer.features.job as job
from explorer.data.base import fingerprint_arrays
from explorer.defaults import PIXELS
from explorer.features.capture import extract_features
from explorer.features.extract import ensure_features, load_features
from explorer.features.keys import Selection, feature_key
from explorer.features.pixels import ensure_pixels
from explorer.features.sizes import pooled_dim
from explorer.features.store import FeatureStore
from explorer.models.layers import build_catalogue
from explorer.models.loader import load_model
from tests.core.racing import race_two_workers

POOLS = ["1", "2"]
BATCH = 8  # the tiny dataset's 48 train images -> 6 batches per (t, seed) job


@pytest.fixture
def model(tiny_model_dir):
    return load_model(str(tiny_model_dir))


@pytest.fixture
def cat(model):
    return build_catalogue(model.denoiser)


@pytest.fixture
def store(tmp_path) -> FeatureStore:
    return FeatureStore(tmp_path / "store")


def _ensure(model, ds, sel, cat, store, timesteps=(10,), **kw):
    kw.setdefault("pools", POOLS)
    return ensure_features(
        model,
        ds,
        sel,
        timesteps=list(timesteps),
        layers=cat,
        store=store,
        batch_size=BATCH,
        progress=False,
        **kw,
    )


def _load_all(model, ds, sel, cat, store, timesteps=(10,), pools=POOLS, seed=0) -> dict:
    return {
        (t, lay.name, p): np.asarray(
            load_features(model, ds, sel, t=t, layer=lay.name, pool_name=p, seed=seed, store=store)
        )
        for t in timesteps
        for lay in cat
        for p in pools
    }


class CountingForward:
    """Wraps `explorer.features.job.capture_pass`: counts calls, optionally dies on call `fail_on`."""

    def __init__(self, fail_on: int | None = None):
        self.real, self.calls, self.fail_on = job.capture_pass, 0, fail_on

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.fail_on is not None and self.calls == self.fail_on:
            raise KeyboardInterrupt("simulated kill")
        return self.real(*args, **kwargs)


def test_ensure_writes_then_serves_from_cache(model, tiny_dataset, cat, store):
    sel = Selection.of(tiny_dataset, "train")
    n_keys = 2 * len(cat) * len(POOLS)
    first = _ensure(model, tiny_dataset, sel, cat, store, timesteps=(10, 90))
    assert (first.computed, first.cached) == (n_keys, 0), (
        f"first call should compute all {n_keys}: {first}"
    )
    assert first.forward_passes == 2 * 6, (
        f"2 timesteps x 6 batches expected, got {first.forward_passes}"
    )
    assert first.images == len(sel.indices) == 48, first.images
    assert len(store.entries()) == n_keys, (
        f"{len(store.entries())} entries on disk, expected {n_keys}"
    )

    second = _ensure(model, tiny_dataset, sel, cat, store, timesteps=(10, 90))
    assert (second.computed, second.cached, second.forward_passes) == (0, n_keys, 0), (
        f"second call recomputed: {second}"
    )
    assert "0 computed" in second.summary() and f"{n_keys} from cache" in second.summary(), (
        second.summary()
    )


def test_manifests_describe_the_entries(model, tiny_dataset, cat, store):
    sel = Selection.of(tiny_dataset, "test")
    _ensure(model, tiny_dataset, sel, cat, store)
    by_setting = {(m["layer"], m["pool"]): m for m in store.entries()}
    assert len(by_setting) == len(cat) * len(POOLS), sorted(by_setting)
    for lay in cat:
        for p in POOLS:
            m = by_setting[(lay.name, p)]
            assert m["shape"] == [len(sel.indices), pooled_dim(lay, p)], (lay.name, p, m["shape"])
            assert (m["t"], m["seed"], m["split"], m["layer_index"]) == (
                10,
                0,
                "test",
                lay.index,
            ), m
            assert (
                m["model_fingerprint"] == model.fingerprint
                and m["dataset_fingerprint"] == tiny_dataset.fingerprint
            ), m
            arr = store.load(m["key"])
            assert arr.dtype == np.float16 and list(arr.shape) == m["shape"], (arr.dtype, arr.shape)


def test_load_features_equals_in_memory_extraction(model, tiny_dataset, cat, store):
    sel = Selection.of(tiny_dataset, "train", limit=30)
    _ensure(model, tiny_dataset, sel, cat, store, timesteps=(10, 300), seeds=(0, 5))
    x0 = model.preprocess(tiny_dataset.images(sel.indices))
    for seed in (0, 5):
        mem = extract_features(
            model,
            x0,
            timesteps=[10, 300],
            layers=cat,
            pools=POOLS,
            seed=seed,
            indices=sel.indices,
            batch_size=BATCH,
        )
        disk = _load_all(model, tiny_dataset, sel, cat, store, timesteps=(10, 300), seed=seed)
        assert mem.keys() == disk.keys(), "both paths should produce the same settings"
        for k in mem:
            assert np.array_equal(mem[k], disk[k]), (
                f"seed {seed} {k}: cached features differ from extract_features"
            )


def test_load_features_missing_raises_keyerror(model, tiny_dataset, store):
    with pytest.raises(KeyError, match="not cached"):
        load_features(
            model,
            tiny_dataset,
            Selection.of(tiny_dataset, "train"),
            t=10,
            layer="mid_block",
            pool_name="2",
            store=store,
        )


def test_keys_change_with_every_input(model, tiny_dataset, tmp_path, model_factory):
    ds = tiny_dataset
    sel = Selection.of(ds, "train")
    base = dict(t=10, layer="mid_block", pool_name="2", seed=0)

    def key(m=model, d=ds, s=sel, **over):
        kw = base | over
        return feature_key(m, d, s, kw["t"], kw["layer"], kw["pool_name"], kw["seed"])

    ref = key()
    assert key() == key(s=Selection.of(ds, "train")), "the same inputs must give the same key"
    other_model = load_model(str(model_factory(tmp_path / "other", seed=1)))
    pixels = ds.array.copy()
    pixels[0, 0, 0, 0] ^= 1
    other_ds = dataclasses.replace(
        ds, array=pixels, fingerprint=fingerprint_arrays(pixels, ds.labels, extra="tiny")
    )
    variants = {
        "t": key(t=11),
        "layer": key(layer="conv_in"),
        "pool": key(pool_name="1"),
        "seed": key(seed=1),
        "split": key(s=Selection.of(ds, "test")),
        "selection (limit)": key(s=Selection.of(ds, "train", limit=20)),
        "model weights": key(m=other_model),
        "dataset content": key(d=other_ds),
    }
    for what, k in variants.items():
        assert k != ref, f"changing the {what} must change the feature key"
    assert len(set(variants.values())) == len(variants), "every variant should get its own key"
    px = feature_key(model, ds, sel, None, PIXELS, "2", None)
    assert px == feature_key(other_model, ds, sel, None, PIXELS, "2", None), (
        "pixels ignore model weights"
    )


def test_resume_after_kill_computes_only_the_rest(
    model, tiny_dataset, cat, store, tmp_path, monkeypatch
):
    sel = Selection.of(tiny_dataset, "train")
    keys = [feature_key(model, tiny_dataset, sel, 10, lay.name, p, 0) for lay in cat for p in POOLS]

    killer = CountingForward(fail_on=3)  # dies on the 3rd batch: 2 of 6 batches are done
    monkeypatch.setattr(job, "capture_pass", killer)
    with pytest.raises(KeyboardInterrupt):
        _ensure(model, tiny_dataset, sel, cat, store)
    assert not any(store.has(k) for k in keys), "an unfinished entry must not be visible"
    assert store.entries() == [], (
        f"no manifest may exist for an unfinished entry: {store.entries()}"
    )
    assert not list(store.dir.glob("??/*.json")), (
        "no manifest file may exist for an unfinished entry"
    )
    progress = [json.loads(p.read_text()) for p in store.partial_dir.glob("*.progress.json")]
    assert len(progress) == len(keys), (
        f"every entry should have a progress marker, got {len(progress)}"
    )
    assert {p["rows_done"] for p in progress} == {2 * BATCH}, (
        f"2 batches should be durable: {progress}"
    )

    counter = CountingForward()
    monkeypatch.setattr(job, "capture_pass", counter)
    rep = _ensure(model, tiny_dataset, sel, cat, store)
    assert counter.calls == 4 and rep.forward_passes == 4, (
        f"resume should run the 4 missing batches, ran {counter.calls}"
    )
    assert rep.computed == len(keys), rep
    assert not list(store.partial_dir.glob("*")), "partial files should be gone after commit"

    monkeypatch.setattr(job, "capture_pass", counter.real)
    clean = FeatureStore(tmp_path / "clean")
    _ensure(model, tiny_dataset, sel, cat, clean)
    resumed, fresh = (
        _load_all(model, tiny_dataset, sel, cat, store),
        _load_all(model, tiny_dataset, sel, cat, clean),
    )
    for k in fresh:
        assert np.array_equal(resumed[k], fresh[k]), (
            f"{k}: a resumed entry differs from an uninterrupted run"
        )


def test_unreadable_progress_starts_the_entry_over(
    model, tiny_dataset, cat, store, monkeypatch, tmp_path
):
    sel = Selection.of(tiny_dataset, "train")
    monkeypatch.setattr(job, "capture_pass", CountingForward(fail_on=4))
    with pytest.raises(KeyboardInterrupt):
        _ensure(model, tiny_dataset, sel, cat, store)
    for p in store.partial_dir.glob("*.progress.json"):
        p.write_text("{not json")
    counter = CountingForward()
    monkeypatch.setattr(job, "capture_pass", counter)
    _ensure(model, tiny_dataset, sel, cat, store)
    assert counter.calls == 6, (
        f"with unreadable progress the job must start over (6 batches), ran {counter.calls}"
    )
    monkeypatch.setattr(job, "capture_pass", counter.real)
    clean = FeatureStore(tmp_path / "clean")
    _ensure(model, tiny_dataset, sel, cat, clean)
    a, b = (
        _load_all(model, tiny_dataset, sel, cat, store),
        _load_all(model, tiny_dataset, sel, cat, clean),
    )
    assert all(np.array_equal(a[k], b[k]) for k in a), (
        "restarted entries must equal an uninterrupted run"
    )


_WORKER = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    import numpy as np, torch
    torch.set_num_threads(1)
    import explorer.features.extract as F
    import explorer.features.job as J
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
    real = J.capture_pass
    def slow(*a, **k):  # long enough that the two processes surely overlap
        time.sleep(0.1)
        return real(*a, **k)
    J.capture_pass = slow
    (Path(barrier) / me).touch()
    deadline = time.time() + 120
    while len(list(Path(barrier).iterdir())) < 2 and time.time() < deadline:
        time.sleep(0.005)
    t0 = time.time()
    rep = F.ensure_features(model, ds, F.Selection.of(ds, "train"), timesteps=[10, 90], layers=cat, pools=["1", "2"],
                            store=FeatureStore(store_dir), batch_size=16, progress=False)
    print(json.dumps({"computed": rep.computed, "cached": rep.cached, "passes": rep.forward_passes,
                      "t0": t0, "t1": time.time()}))
""")


@pytest.mark.timeout(300)
def test_two_processes_compute_a_key_once(model, tiny_model_dir, tiny_dataset, cat, tmp_path):
    ds = tiny_dataset
    store_dir = tmp_path / "shared-store"
    results = race_two_workers(_WORKER, tiny_model_dir, ds, store_dir, tmp_path)
    n_keys = 2 * len(cat) * 2
    assert all(r["computed"] + r["cached"] == n_keys for r in results), (
        f"each process must account for all: {results}"
    )
    assert sum(r["computed"] for r in results) == n_keys, (
        f"every key must be computed exactly once: {results}"
    )
    assert sum(r["passes"] for r in results) == 2 * 3, f"2 jobs x 3 batches in total, got {results}"
    assert max(r["t0"] for r in results) < min(r["t1"] for r in results), (
        f"the processes did not overlap: {results}"
    )

    shared = FeatureStore(store_dir)
    assert len(shared.entries()) == n_keys and not list(shared.partial_dir.glob("*.npy")), (
        "store left unclean"
    )
    sel = Selection.of(ds, "train")
    x0 = model.preprocess(ds.images(sel.indices))
    mem = extract_features(
        model,
        x0,
        timesteps=[10, 90],
        layers=cat,
        pools=["1", "2"],
        indices=sel.indices,
        batch_size=16,
    )
    disk = _load_all(model, ds, sel, cat, shared, timesteps=(10, 90), pools=["1", "2"])
    assert all(np.array_equal(mem[k], disk[k]) for k in mem), (
        "features written under contention are wrong"
    )


def test_store_entries_size_clear(store):
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    store.put("ab" + "0" * 22, a, {"layer": "x", "pool": "1"})
    store.put("cd" + "1" * 22, a * 2, {"layer": "y", "pool": "2"})
    assert store.has("ab" + "0" * 22) and store.has("cd" + "1" * 22), "put entries must be visible"
    got = store.load("ab" + "0" * 22)
    assert got.dtype == np.float16 and np.array_equal(got, a.astype(np.float16)), got
    assert isinstance(got, np.memmap), "load should memory-map by default"
    assert not isinstance(store.load("ab" + "0" * 22, mmap=False), np.memmap), (
        "mmap=False should read into memory"
    )
    assert {m["layer"] for m in store.entries()} == {"x", "y"}, store.entries()
    m = store.manifest("cd" + "1" * 22)
    assert m["shape"] == [3, 4] and m["dtype"] == "float16" and m["key"] == "cd" + "1" * 22, m
    assert store.size_bytes() >= 2 * a.size * 2, f"size_bytes too small: {store.size_bytes()}"
    store.clear()
    assert store.entries() == [] and not store.has("ab" + "0" * 22), "clear must remove every entry"
    assert store.size_bytes() == 0, f"an empty store should have no bytes, got {store.size_bytes()}"
    store.put("ef" + "2" * 22, a, {})
    assert store.has("ef" + "2" * 22), "the store must stay usable after clear"


def test_corrupt_manifest_is_skipped_by_entries(store):
    store.put("ab" + "0" * 22, np.zeros((2, 2), np.float32), {"layer": "x"})
    bad = store.dir / "zz" / "zz-broken.json"
    bad.parent.mkdir()
    bad.write_text("{oops")
    assert [m["layer"] for m in store.entries()] == ["x"], "an unreadable manifest must be skipped"


def test_progress_callback_and_pixels(model, tiny_dataset, cat, store):
    sel = Selection.of(tiny_dataset, "test")
    seen = []
    ensure_features(
        model,
        tiny_dataset,
        sel,
        timesteps=[10, 20],
        layers=cat[:2],
        pools=["1"],
        store=store,
        batch_size=5,
        progress=lambda done, total: seen.append((done, total)),
    )
    n = len(sel.indices)
    assert seen and seen[-1] == (2 * n, 2 * n), f"progress should end at images x jobs: {seen}"
    assert [d for d, _ in seen] == sorted(d for d, _ in seen), "progress must not go backwards"

    full = ensure_pixels(model, tiny_dataset, sel, "full", store=store)
    pooled = ensure_pixels(model, tiny_dataset, sel, "2", store=store)
    assert full.shape == (n, 16 * 16) and pooled.shape == (n, 4), (full.shape, pooled.shape)
    x0 = model.preprocess(tiny_dataset.images(sel.indices)).flatten(1).numpy().astype(np.float16)
    assert np.array_equal(np.asarray(full), x0), "pixel baseline must be the preprocessed images"


def test_summary_mentions_counts(model, tiny_dataset, cat, store):
    rep = _ensure(
        model, tiny_dataset, Selection.of(tiny_dataset, "test"), cat[:1], store, pools=["1"]
    )
    s = rep.summary()
    assert "1 computed" in s and "0 from cache" in s and str(store.dir) in s, s
    assert rep.seconds >= 0 and Path(rep.location) == store.dir, rep
