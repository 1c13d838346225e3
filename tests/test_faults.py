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
    """(table, cache) of one uninterrupted sweep."""
    from explorer.results import load_table

    base = tmp_path_factory.mktemp("reference")
    answer = fork_server.run(sweep_args(tiny_dir, base / "cache", base / "ref.csv"))
    assert answer["status"] == 0, answer
    return load_table(base / "ref.csv"), base / "cache"


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
        full.astype({"t": float}), on=KEYS, how="left", suffixes=("", "_full"), indicator=True
    )
    assert (m["_merge"] == "both").all(), f"{what}: rows the full run does not have"
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
    shutil.copytree(reference[1], cache)
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


# --- 5. the cache on a full disk -------------------------------------------------------------


class FullDisk:
    """The cache's disk with `room` bytes left: every byte the feature store allocates (array
    files, reserved whole when created) or writes (progress, manifests, memos) counts, and the
    write that would pass `room` fails with ENOSPC, as a full disk fails it. `flush_fails_at`:
    the n-th flush of a memory-mapped entry fails instead (as msync may on a full disk);
    `manifest_fails_at`: the n-th manifest written as an entry is committed fails."""

    def __init__(
        self,
        mp: pytest.MonkeyPatch,
        room: float,
        flush_fails_at: int | None = None,
        manifest_fails_at: int | None = None,
    ):
        import errno
        import os
        from pathlib import Path

        import explorer.features.store as store_module

        self.room, self.used, self.flushes, self.manifests = room, 0, 0, 0
        real_write, real_allocate, real_flush = (
            store_module.atomic_write,
            os.posix_fallocate,
            np.memmap.flush,
        )

        def charge(n: int) -> None:
            if self.used + n > self.room:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            self.used += n

        def atomic_write(path, data):
            path = Path(path)
            if (
                path.parent.parent.name == "features"
                and path.parent.name != "partial"
                and path.suffix == ".json"
            ):
                self.manifests += 1  # an entry's manifest, written as it is committed
                if self.manifests == manifest_fails_at:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            if isinstance(data, str | bytes):
                charge(len(data.encode() if isinstance(data, str) else data))
                return real_write(path, data)

            def write(tmp, fill=data):
                fill(tmp)
                charge(os.path.getsize(tmp))

            return real_write(path, write)

        def allocate(fd, offset, length):
            charge(length)
            return real_allocate(fd, offset, length)

        def flush(mm):
            self.flushes += 1
            if self.flushes == flush_fails_at:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real_flush(mm)

        mp.setattr(store_module, "atomic_write", atomic_write)
        mp.setattr(os, "posix_fallocate", allocate)
        mp.setattr(np.memmap, "flush", flush)


def extract_args(model, cache) -> list[str]:
    return [
        "extract", "--model", str(model), "--dataset", "digits", "--limit", "24",
        "--timesteps", "10,300", "--layers", "1,5,9", "--pool", "1,2", "--batch-size", "8",
        "--cache-dir", str(cache),
    ]  # fmt: skip


def features_of(root) -> dict[str, bytes]:
    from explorer.features.store import FeatureStore

    store = FeatureStore(root)
    return {k: store.paths(k)[0].read_bytes() for k in store.entry_keys()}


@pytest.fixture(scope="module")
def disk_use(tiny_dir, tmp_path_factory):
    """(bytes an uninterrupted extract allocates and writes in the store, its entries)."""
    cache = tmp_path_factory.mktemp("full-disk") / "cache"
    with pytest.MonkeyPatch.context() as mp:
        import explorer.features.job as job

        mp.setattr(job, "CHECKPOINT_SECONDS", 0.0)  # a progress write after every batch
        disk = FullDisk(mp, room=float("inf"))
        assert main(extract_args(tiny_dir, cache)) == 0
    entries = features_of(cache)
    assert len(entries) == 2 * 2 * 3 * 2, "2 splits x 2 t x 3 layers x 2 pools"
    return disk.used, entries


@pytest.mark.parametrize(
    "room, flush_fails_at",
    # 99.5%: the last writes; closer is flaky, as timings written in manifests and progress
    # files make a run's total vary by a few bytes from the reference run's
    [(0.0, None), (0.3, None), (0.6, None), (0.95, None), (0.995, None), (None, 3)],
    ids=["first-write", "30%", "60%", "95%", "last-writes", "flush"],
)
def test_full_disk_is_one_line_no_damage_and_a_rerun_completes(
    tiny_dir, disk_use, tmp_path, capsys, monkeypatch, room, flush_fails_at
):
    import explorer.features.job as job
    from explorer.features import cache_admin

    used, want = disk_use
    cache = tmp_path / "cache"
    args = extract_args(tiny_dir, cache)
    monkeypatch.setattr(job, "CHECKPOINT_SECONDS", 0.0)
    with pytest.MonkeyPatch.context() as mp:
        FullDisk(mp, float("inf") if room is None else room * used, flush_fails_at)
        code = main(args)
    err = capsys.readouterr().err
    assert code != 0, "a full disk must fail the command"
    lines = error_lines(err)
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"error: no space left on device under {cache}: free space"), lines
    assert "--cache-dir" in lines[0]
    assert set(entry_states(cache).values()) <= {"whole"}, "no entry is left damaged"
    assert cache_admin.verify(cache).damaged == []

    # space is freed: the same command completes, with an uninterrupted run's features
    assert main(args) == 0, capsys.readouterr().err
    assert features_of(cache) == want
    assert cache_admin.verify(cache).damaged == []


def test_full_disk_while_committing_keeps_the_finished_entry(
    tiny_dir, disk_use, tmp_path, capsys, monkeypatch
):
    """The disk fills as the first entry's manifest is written: its rows, all computed, stay
    a partial entry that the rerun commits, instead of being computed again."""
    import explorer.features.job as job

    passes = []
    real = job.capture_pass
    monkeypatch.setattr(job, "capture_pass", lambda *a, **k: passes.append(1) or real(*a, **k))
    monkeypatch.setattr(job, "CHECKPOINT_SECONDS", 0.0)
    cache = tmp_path / "cache"
    with pytest.MonkeyPatch.context() as mp:
        FullDisk(mp, float("inf"), manifest_fails_at=1)
        assert main(extract_args(tiny_dir, cache)) == 1
    assert "no space left on device" in capsys.readouterr().err
    assert set(entry_states(cache).values()) <= {"whole"}
    first = len(passes)
    assert main(extract_args(tiny_dir, cache)) == 0
    assert features_of(cache) == disk_use[1]
    full_run = 4 * 3  # 2 splits x 2 timesteps, 3 batches of 8 images each
    assert first == 3, "the first run stopped at its first commit, after one job's 3 batches"
    assert len(passes) - first < full_run, "the rerun recomputed the entry it had finished"


def test_a_new_entry_reserves_its_disk_space_at_once(tmp_path, monkeypatch):
    """A memory-mapped array file is sparse: on a full disk, a write into it would kill the
    process with SIGBUS (no message at all). Its blocks are reserved when the entry starts, so
    the full disk is an ENOSPC there, and nothing is left behind."""
    import errno

    from explorer.features.store import FeatureStore

    store = FeatureStore(tmp_path / "cache")
    with pytest.MonkeyPatch.context() as mp:
        disk = FullDisk(mp, room=10_000)
        with pytest.raises(OSError) as caught:
            store.begin("ab" * 12, (1000, 64), {"layer": "x", "t": 1})
    assert caught.value.errno == errno.ENOSPC
    assert disk.used == 0 and list(store.partial_dir.iterdir()) == [], "nothing left behind"
    entry = store.begin("ab" * 12, (10, 4), {"layer": "x", "t": 1})  # room again: it starts
    assert entry.rows_done == 0


# --- 6. damaged derived caches: probe results, UMAPs, CKA matrices, request memos ------------


def flip(path, where) -> None:
    """Flip one bit of `path` at byte `where` (an offset, or a function of the bytes giving one),
    keeping its size, with a fresh mtime as after a real change."""
    import os

    data = bytearray(path.read_bytes())
    at = where(bytes(data)) if callable(where) else where % len(data)
    data[at] ^= 0x01
    path.write_bytes(bytes(data))
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1))


@pytest.fixture
def ws(tiny_dir, tmp_path):
    from explorer.features.store import FeatureStore
    from explorer.models.loader import load_model
    from explorer.workspace import Workspace
    from tests.conftest import make_tiny_dataset

    return Workspace(
        load_model(str(tiny_dir)), make_tiny_dataset(), store=FeatureStore(tmp_path / "cache")
    )


def first_digit_of(text: str):
    """Where, in a file's bytes, the first digit of `text` (as stored: UTF-8 or numpy's UTF-32) is."""

    def find(data: bytes) -> int:
        for enc, width in (("utf-8", 1), ("utf-32-le", 4)):
            at = data.find(text.encode(enc))
            if at >= 0:
                digits = [i for i, c in enumerate(text) if c.isdigit()]
                return at + width * digits[-1]
        raise AssertionError(f"{text!r} is not in the file")

    return find


@pytest.mark.parametrize("where", ["top1 digit", "middle", "last byte"])
def test_damaged_probe_result_is_recomputed_not_served(ws, monkeypatch, where):
    from explorer.probes.registry import parse_head
    from explorer.settings import Setting

    s, head = Setting(10, "mid_block", "2"), parse_head("linear")
    before = ws.evaluate([s], head)[s]
    path = ws.results.path(ws.result_key(head, s))
    flip(
        path,
        {
            "top1 digit": first_digit_of(f'"top1": {before.top1!r}'),  # the file still reads
            "middle": lambda data: len(data) // 2,
            "last byte": -1,
        }[where],
    )
    fits = []
    real_fit = ws._fit
    monkeypatch.setattr(ws, "_fit", lambda *a: fits.append(1) or real_fit(*a))
    after = ws.evaluate([s], head)[s]
    assert fits == [1], "the damaged result was served instead of recomputed"
    assert after.top1 == before.top1 and (after.ci_low, after.ci_high) == (
        before.ci_low,
        before.ci_high,
    )
    for name in ("predictions", "confusion", "per_class"):
        assert np.array_equal(getattr(after, name), getattr(before, name)), name
    assert ws.results.get(ws.result_key(head, s)) is not None, "rewritten whole"


@pytest.fixture
def fake_umap(monkeypatch):
    """UMAP replaced by a cheap deterministic map (the cache, not UMAP, is under test)."""
    from explorer.analysis import embed

    calls = []

    def fit(x, kwargs):
        calls.append(len(x))
        return np.asarray(x[:, :2] * 3.0 + 1.0, dtype=np.float32)

    monkeypatch.setattr(embed, "_fit_umap", fit)
    return calls


@pytest.mark.parametrize("reader", ["umap_embed", "umap_or_pca"])
def test_damaged_umap_is_recomputed_not_served(ws, fake_umap, tmp_path, reader):
    from explorer.analysis import embed
    from explorer.settings import Setting

    s = Setting(10, "mid_block", "2")
    x = np.asarray(ws.features(s, "test"), dtype=np.float32)
    key = ws.key(s, "test")

    def read():
        if reader == "umap_embed":
            return embed.umap_embed(x, cache_key=key, cache_root=ws.store.root)
        xy, how = embed.umap_or_pca(x, cache_key=key, cache_root=ws.store.root, background=False)
        assert how == "umap"
        return xy

    before = read()
    (path,) = (tmp_path / "cache" / "embeddings").glob("umap-*.npy")
    flip(path, -3)  # a value's byte: the file still loads, with one number changed
    after = read()
    assert len(fake_umap) == 2, "the damaged layout was served instead of recomputed"
    assert np.array_equal(after, before)
    assert np.array_equal(read(), before) and len(fake_umap) == 2, "then served from the cache"


@pytest.mark.parametrize("where", ["a value", "the header"])
def test_damaged_cka_matrix_is_recomputed_not_served(ws, tmp_path, monkeypatch, where):
    import explorer.workspace as workspace_module
    from explorer.settings import Setting

    settings = [
        Setting(10, name, "1") for name in ("conv_in", "mid_block", "up_blocks.1.resnets.0")
    ]
    before = ws.cka(settings)
    (path,) = (tmp_path / "cache" / "embeddings").glob("cka-*.npy")
    flip(path, -5 if where == "a value" else 20)
    calls = []
    real = workspace_module.cka_matrix
    monkeypatch.setattr(
        workspace_module, "cka_matrix", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    after = ws.cka(settings)
    assert calls == [1], "the damaged matrix was served instead of recomputed"
    assert np.array_equal(after, before)


def test_derived_files_from_before_checksums_are_still_served(ws, fake_umap, tmp_path):
    """An older cache has no `.sha256` files: whole files are served (and checksummed then)."""
    from explorer.analysis import embed
    from explorer.probes.registry import parse_head
    from explorer.settings import Setting

    s, head = Setting(10, "mid_block", "2"), parse_head("linear")
    res = ws.evaluate([s], head)[s]
    x = np.asarray(ws.features(s, "test"), dtype=np.float32)
    xy = embed.umap_embed(x, cache_key=ws.key(s, "test"), cache_root=ws.store.root)
    sums = list((tmp_path / "cache").rglob("*.sha256"))
    assert len(sums) == 2
    for p in sums:
        p.unlink()
    again = ws.results.get(ws.result_key(head, s))
    assert again is not None and again.top1 == res.top1, "an old result is still read"
    xy2 = embed.umap_embed(x, cache_key=ws.key(s, "test"), cache_root=ws.store.root)
    assert np.array_equal(xy2, xy) and len(fake_umap) == 1, "an old UMAP is still read"
    assert len(list((tmp_path / "cache").rglob("*.sha256"))) == 2, "and now checksummed"


MEMO_DAMAGE = {
    "an image count": first_digit_of('"images": {"train": 24'),
    "a key name": lambda data: data.find(b'"splits"') + 2,
    "a feature key": lambda data: data.find(b'"train": ["') + 12,
    "cut short": None,
}


@pytest.mark.parametrize("how", list(MEMO_DAMAGE))
def test_damaged_request_memo_is_not_used(tiny_dir, tmp_path, capsys, how):
    from explorer.features import request_memo
    from explorer.features.store import FeatureStore

    cache = tmp_path / "cache"
    args = extract_args(tiny_dir, cache)
    assert main(args) == 0
    first = capsys.readouterr().out
    assert "train: 12 feature sets for 24 images: 12 computed" in first, first
    (memo,) = (cache / "requests").glob("*.json")
    if how == "cut short":
        memo.write_bytes(memo.read_bytes()[:-7])
    else:
        flip(memo, MEMO_DAMAGE[how])
    assert main(args) == 0, "a damaged memo must not break the command"
    out = capsys.readouterr().out
    assert "train: 12 feature sets for 24 images: 0 computed, 12 from cache" in out, out
    assert "test: 12 feature sets for 24 images: 0 computed, 12 from cache" in out, out
    assert request_memo.lookup(FeatureStore(cache), memo.stem) is not None, "recorded again"


# --- 7. a shared app opened with crafted links -----------------------------------------------

APP = str(__import__("pathlib").Path(__file__).resolve().parents[1] / "app.py")
APP_LINK = {"model": "ddpm-digits", "dataset": "digits", "train": "60", "test": "30", "proj": "pca"}
LONG = "a" * 5000
OUTSIDE = "outside the folders this shared app may read"
# (page, key, value, extra link): every query key a page or the sidebar reads
LINKS = [
    # the sidebar: model and dataset must stay under the data roots; limits are numbers
    *[("data", "model", v, {}) for v in (
        "../../etc", "/etc", "org/name", "random:/etc", "random:../../etc", "{outside}/unet",
        "{root}/../outside/unet", "random:", "ddpm-digits\x00", LONG, "~",
    )],
    *[("data", "dataset", v, {}) for v in (
        "../../etc", "/etc", "org/name", "random:/etc", "{outside}/photos",
        "{root}/../outside/photos", "{root}/link-out", "~", "x\ny", LONG,
    )],
    *[("data", "train", v, {}) for v in ("-5", "abc", "1e9", "99999999999999999999", "../../etc")],
    *[("data", "test", v, {}) for v in ("-1", "1.5", "/etc")],
    *[("data", "n", v, {}) for v in ("0", "21", "abc")],
    # Explore
    *[("explore", "t", v, {}) for v in ("-1", "1000", "abc", "1e3", "../../etc")],
    *[("explore", "block", v, {}) for v in ("0", "99", "-1", "../../etc", "org/name", "1234567")],
    *[("explore", "pool", v, {}) for v in ("3", "../../etc")],
    *[("explore", "head", v, {}) for v in ("../../etc", "knn:k=-1", "random:/etc")],
    ("explore", "proj", "/etc", {}),
    ("explore", "tl", "maybe", {}),
    *[("explore", "ts", v, {}) for v in ("abc", "-3", "5000")],
    # Compare, Similarity, Sweep
    ("compare", "mode", "../../etc", {}),
    *[("compare", "t2", v, {"mode": "timesteps"}) for v in ("-1", "abc")],
    ("compare", "block2", "99", {"mode": "blocks"}),  # Compare opens on trained vs random
    *[("similarity", "n", v, {}) for v in ("7", "abc")],
    ("similarity", "debiased", "2", {}),
    ("similarity", "ts", "abc", {}),
    *[("sweep", "ts", v, {}) for v in ("abc", "-1")],
    ("sweep", "blocks", "../../etc", {}),
    ("sweep", "pools", "7", {}),
    ("sweep", "heads", "/etc", {}),
    ("sweep", "baselines", "maybe", {}),
]  # fmt: skip


@pytest.fixture(scope="module")
def app_dirs(tmp_path_factory):
    """(data root, a folder outside it with a dataset and a model, a shared cache)."""
    base = tmp_path_factory.mktemp("shared-app")
    root, outside = base / "roots", base / "outside"
    image_folder(outside / "photos")
    save_tiny_model(outside / "unet")
    root.mkdir()
    (root / "link-out").symlink_to(outside / "photos")  # inside the root, pointing out
    return root, outside, base / "cache"


@pytest.mark.parametrize(
    "page, key, value, extra", LINKS, ids=[f"{p}-{k}={v[:20]!r}" for p, k, v, _ in LINKS]
)
def test_crafted_link_to_a_shared_app_is_a_notice(app_dirs, monkeypatch, page, key, value, extra):
    from streamlit.testing.v1 import AppTest

    from explorer import exposure
    from explorer.analysis import embed
    from explorer.ui import services
    from explorer.ui.common import PAGES

    root, outside, cache = app_dirs
    monkeypatch.setenv("EXPLORER_CACHE", str(cache))  # shared: later links read, not compute
    monkeypatch.setenv(exposure.EXPOSED_ENV, "1")
    monkeypatch.setenv(exposure.ROOTS_ENV, str(root))
    monkeypatch.delenv(exposure.ADMIN_ENV, raising=False)
    monkeypatch.setattr(embed, "_fit_umap", lambda x, kw: np.asarray(x[:, :2], np.float32))
    loaded = []
    for name in ("load_model", "load_dataset"):
        real = getattr(services, name)
        monkeypatch.setattr(
            services, name, lambda spec, *a, _r=real, **k: loaded.append(spec) or _r(spec, *a, **k)
        )
    value = value.format(root=root, outside=outside)
    at = AppTest.from_file(APP, default_timeout=300)
    at.query_params.update({**APP_LINK, **extra, key: value})
    if page != "explore":
        at.switch_page(PAGES[page])
    at.run()

    assert not at.exception, [e.value for e in at.exception]
    notices = [t.value for t in at.toast] + [e.value for e in at.error]
    if key in ("model", "dataset"):
        assert len(notices) == 1, notices
        assert any(w in notices[0] for w in (OUTSIDE, "control characters", "characters long")), (
            notices
        )
        assert OUTSIDE not in notices[0] or f"{key} '{value}' is" in notices[0], "as given"
        assert not at.metric, "nothing was loaded or shown"
    else:
        shown = value.replace("\n", "?")[:20]
        assert any(n.startswith(f"Ignored `{key}={shown}") for n in notices), notices
        assert not at.error, [e.value for e in at.error]
    assert set(loaded) <= {"digits", "ddpm-digits", "random:ddpm-digits"}, loaded
