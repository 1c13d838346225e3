"""Faults: broken models, kill -9 during sweep and cache clear, racing sweeps, a full disk,
damaged derived caches and crafted links to a shared app.

Every case checks what the user sees (one `error:` line on stderr, or a notice in the app),
that no cache entry is left damaged, and that no finished work is lost or served wrong.
Kills and races run in forked children of one helper process (`tests/faults_helpers.py`),
which imports torch and the explorer once, so each run costs its work, not its imports.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from explorer.cli import main
from tests.conftest import save_tiny_model


def error_lines(err: str) -> list[str]:
    """The lines of `err` (split as a terminal shows them: at \\n and \\r) that are error messages."""
    return [line for line in err.splitlines() if line.startswith("error:")]


def image_folder(root, classes: int = 2, n: int = 12, size: int = 16):
    """A tiny ImageFolder tree of gray PNGs under `root`."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(classes):
        (root / f"c{c}").mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8)).save(
                root / f"c{c}" / f"{i}.png"
            )
    return root


# --- 1. a model whose weights are NaN ---------------------------------------------------------


@pytest.fixture
def nan_model_dir(tmp_path):
    folder = save_tiny_model(tmp_path / "nan-model")
    from diffusers import UNet2DModel

    unet = UNet2DModel.from_pretrained(folder)
    with torch.no_grad():
        for p in unet.parameters():
            p.fill_(float("nan"))
    unet.save_pretrained(folder)
    return folder


@pytest.mark.parametrize(
    "command, dataset",
    [
        ("extract", "digits"),
        ("extract-workers", "folder"),  # images decoded in DataLoader worker processes
        ("sweep", "digits"),
    ],
)
def test_nan_weights_give_the_guard_line(nan_model_dir, tmp_path, capsys, command, dataset):
    ds = str(image_folder(tmp_path / "imgs")) if dataset == "folder" else dataset
    common = ["--model", str(nan_model_dir), "--dataset", ds, "--timesteps", "10"]
    common += ["--cache-dir", str(tmp_path / "cache")]
    if command == "sweep":
        argv = ["sweep", *common, "--limit", "20", "--layers", "all", "--no-baselines"]
        argv += ["--heads", "linear", "--out", str(tmp_path / "t.csv")]
    else:
        argv = ["extract", *common, "--limit", "20", "--layers", "all"]
        argv += ["--workers", "2"] if command == "extract-workers" else []
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = error_lines(err)
    assert len(lines) == 1, f"want one error line on stderr, got {lines!r} in {err!r}"
    assert "the model produced NaN/inf at layer 1 (conv_in) at t=10" in lines[0], lines
    assert "Traceback" not in err
    from explorer.features.store import FeatureStore

    assert FeatureStore(tmp_path / "cache").entries() == [], "nothing cached from a NaN pass"


# --- shared: a tiny model, a small sweep and its uninterrupted table -----------------------------

KEYS = ["model", "dataset", "t", "layer", "layer_index", "pool", "head", "split", "metric"]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("faults") / "tiny")


@pytest.fixture(scope="module")
def fork_server():
    from tests.faults_helpers import ForkServer

    with ForkServer() as fs:
        yield fs


def sweep_args(model, cache, out) -> list[str]:
    """A sweep of a few seconds: digits, 2 timesteps x 3 blocks x 2 poolings, linear and k-NN,
    raw pixels and the random-weights control."""
    return [
        "sweep", "--model", str(model), "--dataset", "digits", "--limit", "60",
        "--timesteps", "10,300", "--layers", "2,5,8", "--pools", "1,2",
        "--heads", "linear,knn", "--batch-size", "16", "--cache-dir", str(cache), "--out", str(out),
    ]  # fmt: skip


@pytest.fixture(scope="module")
def reference(tiny_dir, fork_server, tmp_path_factory):
    """(table, seconds, cache) of one uninterrupted sweep."""
    from explorer.results import load_table

    base = tmp_path_factory.mktemp("reference")
    answer = fork_server.run(sweep_args(tiny_dir, base / "cache", base / "ref.csv"))
    assert answer["status"] == 0, answer
    return load_table(base / "ref.csv"), answer["seconds"], base / "cache"


def assert_same_table(got, want, what: str) -> None:
    """Same rows (sorted by the key columns), text equal, numbers within 1e-9."""

    def norm(df):
        df = df.copy()
        df["t"] = df["t"].astype(float)
        df["layer_index"] = df["layer_index"].astype(int)
        return df.sort_values(KEYS, na_position="first").reset_index(drop=True)

    g, w = norm(got), norm(want)
    assert len(g) == len(w), f"{what}: {len(g)} rows, want {len(w)}"
    text = [k for k in KEYS if k not in ("t", "layer_index")]
    assert (g[text].astype(str) == w[text].astype(str)).all().all(), f"{what}: keys differ"
    for col in ("t", "layer_index", "value"):
        a, b = g[col].to_numpy(float), w[col].to_numpy(float)
        assert np.allclose(a, b, rtol=0, atol=1e-9, equal_nan=True), f"{what}: {col} differs"


def assert_rows_within(partial, full, what: str) -> None:
    """Every row of a table written before a kill is a row of the full table, same value."""
    if partial.empty:
        return
    m = partial.astype({"t": float}).merge(
        full.astype({"t": float}), on=KEYS, how="left", suffixes=("", "_full")
    )
    assert m["value_full"].notna().all() or np.isnan(m["value"]).all(), f"{what}: unknown rows"
    ok = np.isclose(m["value"], m["value_full"], rtol=0, atol=1e-9, equal_nan=True)
    assert ok.all(), f"{what}: a row written before the kill differs from the full run"


# --- 2. kill -9 during `explorer sweep`, then run it again ---------------------------------------

# Where the kill lands: a random moment within a step, counted from the sweep's own progress line
# (steps: raw pixels, model t=10, t=300, random-weights control t=10, t=300). By time alone, a
# shared CI box makes "20% of the run" land anywhere, loading included.
KILLS = [(1, "[ 20%]"), (2, "[ 60%]"), (3, "[ 80%]")]


@pytest.mark.parametrize("seed, mark", KILLS)
def test_sweep_killed_then_rerun_gives_the_uninterrupted_table(
    tiny_dir, fork_server, reference, tmp_path, seed, mark
):
    import random

    from explorer.features import cache_admin
    from explorer.results import load_table

    want = reference[0]
    cache, out = tmp_path / "cache", tmp_path / "killed.csv"
    args = sweep_args(tiny_dir, cache, out)
    delay = random.Random(seed).uniform(0.0, 0.3)
    err = tmp_path / "killed.err"
    killed = fork_server.run(args, kill_after=delay, err=err, kill_on=mark)
    where = f"kill {delay:.2f}s after {mark}"
    assert killed["status"] == "killed", f"{where}: the sweep ended first ({killed})"
    assert mark in err.read_text(), f"{where}: the sweep died before it"
    if out.exists():  # what the killed sweep had written is a whole table of correct rows
        assert_rows_within(load_table(out), want, where)
    assert cache_admin.verify(cache).damaged == [], "a kill must not damage a cache entry"
    again = fork_server.run(args, err=tmp_path / "again.err")
    assert again["status"] == 0, (tmp_path / "again.err").read_text()
    assert_same_table(load_table(out), want, f"rerun after a {where}")
    assert cache_admin.verify(cache).damaged == []


# --- 4. two sweeps writing the same --out at once --------------------------------------------


def test_two_sweeps_racing_on_one_out_file_leave_a_whole_table(
    tiny_dir, fork_server, reference, tmp_path
):
    from explorer.features import cache_admin
    from explorer.results import load_table

    out = tmp_path / "out" / "shared.csv"
    out.parent.mkdir()
    args = sweep_args(tiny_dir, tmp_path / "cache", out)  # one cold cache, shared too
    errs = [tmp_path / "a.err", tmp_path / "b.err"]
    answers = fork_server.race([{"args": args, "err": str(e)} for e in errs])
    for answer, err in zip(answers, errs, strict=True):
        text = err.read_text()
        if answer["status"] != 0:  # allowed: a clear one-line refusal
            assert len(error_lines(text)) == 1 and "Traceback" not in text, text
    assert 0 in [a["status"] for a in answers], answers
    assert_same_table(load_table(out), reference[0], "after two sweeps raced on one --out")
    assert sorted(p.name for p in out.parent.iterdir()) == [
        "shared.csv",
        "shared.csv.provenance.json",
    ], "no half-written temporary table is left beside it"
    assert cache_admin.verify(tmp_path / "cache").damaged == []


# --- 3. kill -9 during `explorer cache clear` ------------------------------------------------

# `explorer cache clear` in a child that SIGKILLs itself just before its N-th file deletion: a
# kill -9 at an exact point of the clear, which takes milliseconds.
CLEAR_KILLED_AT = r"""
import os, signal, sys

n, calls = int(sys.argv[1]), [0]


def counted(real):
    def call(*args, **kwargs):
        calls[0] += 1
        if calls[0] == n:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)

    return call


os.unlink, os.rmdir = counted(os.unlink), counted(os.rmdir)
from explorer.cli import main

sys.exit(main(sys.argv[2:]))
"""


def entry_states(root) -> dict[str, str]:
    """Per feature entry: "whole" (manifest, array, checksum ok) or what is wrong with it."""
    from explorer.features.store import FeatureStore, file_checksum

    store, out = FeatureStore(root), {}
    for manifest in sorted(store.dir.glob("??/*.json")):
        npy = manifest.with_suffix(".npy")
        if not npy.exists():
            out[manifest.stem] = "manifest without array"
        else:
            ok = file_checksum(npy) == json.loads(manifest.read_text())["checksum"]
            out[manifest.stem] = "whole" if ok else "checksum mismatch"
    return out


@pytest.mark.parametrize("nth", [1, 4, 9, 25, 60, 150])
def test_cache_clear_killed_leaves_entries_whole_or_gone(reference, tmp_path, nth):
    import shutil
    import subprocess
    import sys

    from explorer.features import cache_admin
    from explorer.results import ResultStore

    cache = tmp_path / "cache"
    shutil.copytree(reference[2], cache)
    before = entry_states(cache)
    assert len(before) > 40 and set(before.values()) == {"whole"}
    results = sorted(p.stem for p in (cache / "results").glob("*.npz"))
    assert results, "the sweep cached probe results"
    clear = ["cache", "clear", "--cache-dir", str(cache)]
    child = subprocess.run([sys.executable, "-c", CLEAR_KILLED_AT, str(nth), *clear])
    assert child.returncode == -9, f"the clear ended before its {nth}th deletion"

    after = entry_states(cache)
    assert set(after.values()) <= {"whole"}, f"half-deleted entries: {after}"
    assert set(after) in (set(), set(before)), "features are cleared all at once or not at all"
    assert cache_admin.verify(cache).damaged == [], "`explorer cache verify` finds no damage"
    rs = ResultStore(cache)
    left = [k for k in results if rs.path(k).exists()]
    assert all(rs.get(k) is not None for k in left), "a probe result left is whole"

    assert main(clear) == 0, "a second clear completes"
    assert not (cache / ".trash").exists(), "and removes what the killed one left"
    assert all(p.files == 0 for p in cache_admin.inventory(cache) if p.name != "uploads")
