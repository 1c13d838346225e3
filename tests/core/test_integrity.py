"""Cache integrity and numeric guards: damaged entries are caught, moved aside and recomputed;
legacy entries adopted; float16 overflow kept in float32; model NaNs named; kill-and-resume."""

from __future__ import annotations

import json
import logging
import os
import random
import subprocess
import sys

import numpy as np
import pytest
import torch

from explorer.cli import main
from explorer.errors import ExplorerError
from explorer.features import cache_admin, request_memo
from explorer.features.capture import extract_features
from explorer.features.extract import ensure_features, load_features
from explorer.features.keys import Selection, feature_key
from explorer.features.pixels import ensure_pixels
from explorer.features.store import FeatureStore
from explorer.models.layers import build_catalogue
from explorer.models.loader import load_model


@pytest.fixture
def model(tiny_model_dir):
    return load_model(str(tiny_model_dir))


@pytest.fixture
def store(tmp_path) -> FeatureStore:
    return FeatureStore(tmp_path / "store")


def _one(model, ds, store, t=90, layer_idx=5):
    sel = Selection.of(ds, "test")
    cat = build_catalogue(model.denoiser)
    rep = ensure_features(
        model,
        ds,
        sel,
        timesteps=[t],
        layers=[cat[layer_idx - 1]],
        pools=["2"],
        store=store,
        batch_size=8,
        progress=False,
    )
    key = feature_key(model, ds, sel, t, cat[layer_idx - 1].name, "2", 0)
    return rep, key


def _damage(path, how):
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "zero-length":
        path.write_bytes(b"")
    else:  # one bit flipped in the array data, same size
        b = bytearray(data)
        b[-3] ^= 0x04
        path.write_bytes(bytes(b))
        st = os.stat(path)
        os.utime(
            path, ns=(st.st_atime_ns, st.st_mtime_ns + 1)
        )  # a fresh stat, as after a real change


@pytest.mark.parametrize("how", ["truncated", "bit-flipped", "zero-length"])
def test_damaged_entry_is_caught_moved_aside_and_recomputed(
    model, tiny_dataset, store, how, caplog
):
    rep, key = _one(model, tiny_dataset, store)
    assert rep.computed == 1
    npy, manifest = store.paths(key)
    good = npy.read_bytes()
    assert json.loads(manifest.read_text())["checksum"].startswith("sha256:"), (
        "manifest must carry a checksum"
    )
    _damage(npy, how)
    with caplog.at_level(logging.WARNING, logger="explorer.features.store"):
        assert not store.has(key), f"a {how} entry must not be served"
    assert any("damaged" in r.getMessage() and key in r.getMessage() for r in caplog.records), (
        caplog.text
    )
    moved = sorted(p.suffix for p in store.quarantine_dir.iterdir())
    assert moved == [".json", ".npy", ".txt"], (
        f"the damaged entry should sit in quarantine: {moved}"
    )
    assert not npy.exists() and not manifest.exists()
    rep, _ = _one(model, tiny_dataset, store)
    assert rep.computed == 1 and rep.cached == 0, f"the damaged entry must be recomputed: {rep}"
    assert npy.read_bytes() == good, "the recomputed entry must equal the original"


def test_load_never_serves_a_damaged_entry(model, tiny_dataset, store):
    _, key = _one(model, tiny_dataset, store)
    sel = Selection.of(tiny_dataset, "test")
    assert store.check(key) == ("ok", "")
    _damage(store.paths(key)[0], "bit-flipped")
    with pytest.raises(KeyError):
        load_features(model, tiny_dataset, sel, t=90, layer="mid_block", pool_name="2", store=store)


def test_legacy_entry_is_adopted_not_recomputed(model, tiny_dataset, store):
    _, key = _one(model, tiny_dataset, store)
    npy, manifest = store.paths(key)
    meta = json.loads(manifest.read_text())
    for k in ("checksum", "bytes"):
        meta.pop(k)
    manifest.write_text(json.dumps(meta))  # as the previous code wrote it
    FeatureStore._verified.clear()
    before = npy.stat().st_mtime_ns
    report = cache_admin.verify(store=store)
    assert (report.ok, report.adopted, report.damaged) == (0, 1, []), report
    adopted = json.loads(manifest.read_text())
    assert adopted["checksum"].startswith("sha256:") and "adopted" in adopted, adopted
    assert npy.stat().st_mtime_ns == before, "adoption must not rewrite the array"
    rep, _ = _one(model, tiny_dataset, store)
    assert (rep.computed, rep.cached) == (0, 1), f"an adopted entry is served from cache: {rep}"
    again = cache_admin.verify(store=store)
    assert (again.ok, again.adopted) == (1, 0), again


def test_legacy_entry_with_wrong_shape_is_damaged(model, tiny_dataset, store):
    _, key = _one(model, tiny_dataset, store)
    _, manifest = store.paths(key)
    meta = json.loads(manifest.read_text())
    meta.pop("checksum")
    meta["shape"] = [meta["shape"][0] + 1, meta["shape"][1]]
    manifest.write_text(json.dumps(meta))
    FeatureStore._verified.clear()
    assert store.check(key)[0] == "damaged" and not store.exists(key)


def test_request_memo_does_not_answer_from_a_damaged_entry(model, tiny_dataset, store):
    _, key = _one(model, tiny_dataset, store)
    request_memo.record(store, "r1", {"test": [key]}, {"images": {"test": 12}})
    assert request_memo.lookup(store, "r1") is not None
    _damage(store.paths(key)[0], "truncated")
    assert request_memo.lookup(store, "r1") is None, "the memo answered from a damaged entry"


def test_cli_cache_verify_and_clear(model, tiny_dataset, store, capsys):
    _, key = _one(model, tiny_dataset, store)
    ensure_pixels(model, tiny_dataset, Selection.of(tiny_dataset, "test"), "2", store=store)
    (store.root / "results").mkdir(exist_ok=True)
    (store.root / "results" / "x.npz").write_bytes(b"1")
    (store.root / "embeddings").mkdir(exist_ok=True)
    (store.root / "embeddings" / "u.npy").write_bytes(b"1")
    _damage(store.paths(key)[0], "zero-length")
    FeatureStore._verified.clear()
    assert main(["cache", "verify", "--cache-dir", str(store.root)]) == 0
    out = capsys.readouterr().out
    assert (
        f"damaged: {key}: empty array file" in out
        and "2 feature entries: 1 ok" in out
        and "1 damaged" in out
    ), out
    assert main(["cache", "clear", "--results", "--cache-dir", str(store.root)]) == 0
    assert not (store.root / "results").exists() and (store.root / "embeddings" / "u.npy").exists()
    assert len(store.entries()) == 1, "clearing results must keep features"
    assert main(["cache", "clear", "--cache-dir", str(store.root)]) == 0
    assert store.entries() == [] and not (store.root / "embeddings").exists(), (
        "default clear removes everything"
    )
    assert "cleared features" in capsys.readouterr().out


def _huge(model, scale):
    with torch.no_grad():
        model.denoiser.conv_in.weight.mul_(scale)
        model.denoiser.conv_in.bias.mul_(scale)
    return model


def test_float16_overflow_is_stored_in_float32(model, tiny_dataset, store):
    _huge(model, 1e6)  # conv_in outputs far beyond float16's 65504
    rep, key = _one(model, tiny_dataset, store, layer_idx=1)
    m = store.manifest(key)
    assert m["dtype"] == "float32" and m["float16_overflow"] is True and m["widened_at_row"] == 0, m
    got = np.asarray(store.load(key))
    assert got.dtype == np.float32 and np.isfinite(got).all() and np.abs(got).max() > 65504, (
        got.dtype
    )
    sel = Selection.of(tiny_dataset, "test")
    x0 = model.preprocess(tiny_dataset.images(sel.indices))
    mem = extract_features(
        model,
        x0,
        timesteps=[90],
        layers=[build_catalogue(model.denoiser)[0]],
        pools=["2"],
        indices=sel.indices,
        batch_size=8,
    )[(90, "conv_in", "2")]
    assert mem.dtype == np.float32 and np.array_equal(mem, got), (
        "the store must keep exactly the float32 values"
    )
    assert store.check(key)[0] == "ok"


def test_nan_from_the_model_names_layer_and_timestep(model, tiny_dataset, store):
    with torch.no_grad():
        model.denoiser.mid_block.resnets[0].conv1.weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(ExplorerError, match=r"layer 5 \(mid_block\) at t=90"):
        _one(model, tiny_dataset, store, layer_idx=5)
    assert store.entries() == [], "nothing may be cached from a NaN pass"


_KILL_RUNS = 10

# One process imports torch, diffusers and the explorer once, then forks a child per
# `explorer extract` run (`explorer.cli.main`, exactly what the command runs). It never runs
# a torch op itself, so forking is safe, and each run costs the extraction, not the imports.
# Each request line is JSON {"args": [...], "kill_after": seconds | null}; each answer line
# is JSON {"status": exit status or "killed", "seconds": wall time of the child}.
_FORK_SERVER = r"""
import json, os, signal, sys, time
import torch
torch.set_num_threads(1)
import diffusers  # noqa: F401
import explorer.cli, explorer.features.extract, explorer.models.loader  # noqa: F401

for line in sys.stdin:
    req = json.loads(line)
    t0 = time.time()
    pid = os.fork()
    if pid == 0:
        fd = os.open(os.devnull, os.O_WRONLY)
        os.dup2(fd, 1), os.dup2(fd, 2)
        os._exit(explorer.cli.main(req["args"]))
    if req["kill_after"] is not None:
        time.sleep(req["kill_after"])
        os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    code = "killed" if killed else os.waitstatus_to_exitcode(status)
    print(json.dumps({"status": code, "seconds": time.time() - t0}), flush=True)
"""


@pytest.mark.timeout(600)
def test_sigkill_at_random_moments_then_resume_is_byte_identical(tiny_model_dir, tmp_path):
    """10 `explorer extract` runs, each SIGKILLed at a random moment and re-run to completion."""
    from PIL import Image

    data = tmp_path / "data"
    rng = np.random.default_rng(0)
    for c in range(2):
        (data / f"c{c}").mkdir(parents=True)
        for i in range(16):
            Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(
                data / f"c{c}" / f"{i}.png"
            )
    args = [
        "extract",
        "--model",
        str(tiny_model_dir),
        "--dataset",
        str(data),
        "--timesteps",
        "10,500",
        "--layers",
        "all",
        "--pool",
        "1,2",
        "--batch-size",
        "4",
    ]
    server = subprocess.Popen(
        [sys.executable, "-c", _FORK_SERVER],
        env=dict(os.environ, OMP_NUM_THREADS="1"),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )

    def run(cache, kill_after=None) -> dict:
        server.stdin.write(
            json.dumps({"args": [*args, "--cache-dir", str(cache)], "kill_after": kill_after})
            + "\n"
        )
        server.stdin.flush()
        answer = json.loads(server.stdout.readline())
        if kill_after is None:
            assert answer["status"] == 0, f"explorer extract failed: {answer}"
        return answer

    try:
        full = run(tmp_path / "clean")["seconds"]
        reference = {
            k: (FeatureStore(tmp_path / "clean").paths(k)[0]).read_bytes()
            for k in FeatureStore(tmp_path / "clean").entry_keys()
        }
        assert len(reference) == 2 * 2 * 9 * 2, (
            f"2 splits x 2 t x 9 layers x 2 pools, got {len(reference)}"
        )
        killed, statuses = tmp_path / "killed", []
        pick = random.Random(1)
        for _ in range(_KILL_RUNS):
            statuses.append(run(killed, kill_after=pick.uniform(0.05, 0.95) * full)["status"])
            run(killed)
            store = FeatureStore(killed)
            got = {k: store.paths(k)[0].read_bytes() for k in store.entry_keys()}
            assert got.keys() == reference.keys(), "a resumed run must end with every entry"
            assert all(got[k] == reference[k] for k in reference), (
                "a resumed run differs from an uninterrupted one"
            )
            assert cache_admin.verify(killed).damaged == [], "no entry may be damaged after a kill"
            cache_admin.clear(killed, ["features", "requests"])  # next round starts cold again
        assert statuses.count("killed") >= _KILL_RUNS // 2, (
            f"most runs must really be killed mid-way: {statuses}"
        )
    finally:
        server.stdin.close()
        server.wait(timeout=60)
