"""Streaming input: batches decoded in worker processes equal the in-process ones byte for byte,
come in span order, never ask the loader for more than a few batches ahead, and the pixel
baseline is written chunk by chunk; `--workers` reaches the stream from the CLI."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from explorer.data.base import ImageDataset, stratified_split
from explorer.data.folders import load_image_folder
from explorer.data.preprocess import Preprocess
from explorer.defaults import PIXELS
from explorer.errors import ExplorerError
from explorer.features import streaming
from explorer.features.keys import feature_key


def write_folder(root: Path, per_class: int = 12, classes: int = 3, seed: int = 0) -> Path:
    """An ImageFolder of varied sizes, modes and formats (gray and colour, JPEG and PNG)."""
    rng = np.random.default_rng(seed)
    for c in range(classes):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(per_class):
            h, w = (int(v) for v in rng.integers(12, 40, 2))
            if i % 3 == 0:
                im = Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8), mode="L")
            else:
                im = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
            im.save(root / f"class{c}" / f"{i}.{'jpg' if i % 2 else 'png'}")
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_folder(tmp_path_factory.mktemp("stream") / "pets")


@pytest.fixture
def dataset(folder):
    return load_image_folder(folder)


def spans_of(n: int, size: int, start: int = 0) -> list[tuple[int, int]]:
    return [(s, min(s + size, n)) for s in range(start, n, size)]


def test_workers_give_the_in_process_bytes_in_span_order(dataset):
    prep = Preprocess(16, 3)  # mixed gray and colour files, upsized and cropped
    idx = dataset.splits["train"]
    spans = spans_of(len(idx), 5)
    assert len(spans) >= 4, "enough batches to spread over workers"
    inproc = list(streaming.batches(dataset, idx, spans, prep, workers=0))
    pooled = list(streaming.batches(dataset, idx, spans, prep, workers=2))
    assert [s for s, _ in inproc] == spans and [s for s, _ in pooled] == spans, "span order kept"
    for (span, a), (_, b) in zip(inproc, pooled, strict=True):
        ref = prep(dataset.images(idx[span[0] : span[1]]))  # the plain one-call path
        assert a.dtype == b.dtype == torch.float32 and a.shape == (span[1] - span[0], 3, 16, 16)
        assert torch.equal(a, ref), f"in-process batch {span} differs from prep(images)"
        assert torch.equal(b, ref), f"worker batch {span} differs from prep(images)"


def test_resumed_and_unordered_spans_come_back_as_asked(dataset):
    prep = Preprocess(16, 1)
    idx = dataset.splits["train"]
    spans = [(10, 17), (0, 3), (3, 10), (17, 18)]  # a resume would start mid-selection
    got = list(streaming.batches(dataset, idx, spans, prep, workers=2))
    assert [s for s, _ in got] == spans, (
        f"spans yielded in the order given, got {[s for s, _ in got]}"
    )
    for (a, b), x in got:
        assert torch.equal(x, prep(dataset.images(idx[a:b]))), f"rows {a}-{b} are the wrong images"


class LoggingLoader:
    """A picklable loader of synthetic images that appends each request's size to a log file
    (shared by the worker processes), so the test sees every request whatever process made it."""

    def __init__(self, log: str, fail_at: int | None = None):
        self.log, self.fail_at = log, fail_at

    def __call__(self, indices: np.ndarray) -> list[np.ndarray]:
        indices = np.asarray(indices)
        with open(self.log, "a") as f:
            f.write(f"{os.getpid()} {len(indices)}\n")
        if self.fail_at is not None and self.fail_at in indices:
            raise ExplorerError(f"cannot read image {self.fail_at} (the folder changed)")
        return [np.full((20, 24, 3), int(i) % 251, np.uint8) for i in indices]


def logged_dataset(log: Path, n: int, fail_at: int | None = None) -> ImageDataset:
    labels = np.arange(n) % 2
    return ImageDataset(
        name="logged",
        labels=labels,
        class_names=["a", "b"],
        splits=stratified_split(labels),
        fingerprint="logged",
        loader=LoggingLoader(str(log), fail_at),
    )


def requests(log: Path) -> list[int]:
    return [int(line.split()[1]) for line in log.read_text().splitlines()] if log.exists() else []


@pytest.mark.parametrize("workers", [0, 2])
def test_loader_is_asked_for_a_few_batches_at_most(tmp_path, workers):
    n, bs = 400, 20
    log = tmp_path / "requests.log"
    ds = logged_dataset(log, n)
    prep = Preprocess(16, 3)
    idx = np.arange(n)
    spans = spans_of(n, bs)
    # worst case in flight: every worker holds `prefetch` (<= 2) batches besides the one consumed
    ahead = 0 if workers == 0 else workers * 2
    seen = 0
    for k, ((a, b), x) in enumerate(streaming.batches(ds, idx, spans, prep, workers=workers), 1):
        seen += b - a
        asked = requests(log)
        assert max(asked) <= streaming.PREP_CHUNK, f"one request read {max(asked)} images at once"
        assert sum(asked) <= (k + ahead) * bs, (
            f"after {k} batches the loader was asked for {sum(asked)} images; at most "
            f"{(k + ahead) * bs} (the batches consumed plus {ahead} ahead) may be in memory"
        )
        want = (torch.arange(a, b) % 251).float() / 127.5 - 1
        assert torch.equal(x[:, 0, 0, 0], want), f"rows {a}-{b} hold the wrong images"
    assert seen == n and sum(requests(log)) == n, "every image read exactly once"


def test_a_worker_error_is_one_clear_line(tmp_path):
    ds = logged_dataset(tmp_path / "log", 100, fail_at=57)
    with pytest.raises(ExplorerError) as err:
        list(streaming.batches(ds, np.arange(100), spans_of(100, 10), Preprocess(8, 3), workers=2))
    msg = str(err.value)
    assert msg == "cannot read image 57 (the folder changed)", f"the loader's own message: {msg!r}"


def test_workers_default_to_zero_for_arrays_and_a_few_for_files(dataset, tiny_dataset):
    assert streaming.default_workers(tiny_dataset) == 0, "in-memory arrays are read in process"
    assert 1 <= streaming.default_workers(dataset) <= streaming.MAX_AUTO_WORKERS
    with pytest.raises(ExplorerError, match="--workers"):
        list(streaming.batches(dataset, np.arange(4), [(0, 4)], Preprocess(8, 3), workers=-1))


# ---------------------------------------------------------------- the pixel baseline


@pytest.mark.parametrize("pool_name", ["full", "2"])
def test_pixels_are_written_in_chunks_equal_to_the_whole_array(
    tmp_path, tiny_model_dir, dataset, pool_name, monkeypatch
):
    from explorer.features.capture import pool
    from explorer.features.keys import Selection
    from explorer.features.pixels import ensure_pixels
    from explorer.features.store import FeatureStore
    from explorer.models.loader import load_model

    model = load_model(str(tiny_model_dir), device=torch.device("cpu"))
    sel = Selection.of(dataset, "train")
    prep = model.preprocess
    x = prep(dataset.images(sel.indices))  # what the old code held whole in memory
    whole = (x.flatten(1) if pool_name == "full" else pool(x, pool_name)).to(torch.float16).numpy()

    seen = []
    real = streaming.batches

    def spy(ds, idx, spans, prep, **kw):
        seen.extend(spans)
        return real(ds, idx, spans, prep, **kw)

    monkeypatch.setattr(streaming, "batches", spy)
    store = FeatureStore(tmp_path / "cache")
    got = ensure_pixels(model, dataset, sel, pool_name, store=store, batch_size=7, workers=2)
    assert seen == spans_of(len(sel.indices), 7), f"written 7 rows at a time, got spans {seen}"
    assert not isinstance(got, np.memmap) or got.dtype == np.float16
    np.testing.assert_array_equal(np.asarray(got), whole)
    assert got.dtype == np.float16 and got.shape == whole.shape
    key = feature_key(model, dataset, sel, None, PIXELS, pool_name, None)
    assert store.has(key) and store.manifest(key)["images"] == len(sel.indices)
    assert not list(store.partial_dir.glob("*.npy")), "the partial entry was committed"


def test_pixel_batches_shrink_for_big_images(tmp_path, dataset, monkeypatch):
    """A full-resolution baseline of big images is read a bounded number of bytes at a time."""
    import explorer.features.pixels as features
    from explorer.features.keys import Selection
    from explorer.features.pixels import ensure_pixels
    from explorer.features.store import FeatureStore

    class Big:  # a model stand-in: only its preprocess matters to the pixel baseline
        preprocess = Preprocess(256, 3)

    monkeypatch.setattr(features, "PIXEL_BATCH_BYTES", 4 * 3 * 256 * 256 * 5)  # 5 images
    seen = []
    real = streaming.batches
    monkeypatch.setattr(streaming, "batches", lambda *a, **k: seen.extend(a[2]) or real(*a, **k))
    sel = Selection.of(dataset, "test")
    got = ensure_pixels(Big(), dataset, sel, "4", store=FeatureStore(tmp_path / "c"), batch_size=64)
    assert max(b - a for a, b in seen) == 5, f"spans capped at 5 images, got {seen}"
    assert got.shape == (len(sel.indices), 3 * 4 * 4)


# ---------------------------------------------------------------- the CLI


def test_workers_flag_reaches_the_stream_and_changes_no_result(
    tmp_path, tiny_model_dir, folder, monkeypatch
):
    from explorer import cli
    from explorer.features.store import FeatureStore

    asked = []
    real = streaming.batches

    def spy(*a, **k):
        asked.append(k.get("workers"))
        return real(*a, **k)

    monkeypatch.setattr(streaming, "batches", spy)
    arrays = {}
    for workers in ("2", "0"):
        cache = tmp_path / f"cache-w{workers}"
        args = ["extract", "--model", str(tiny_model_dir), "--dataset", str(folder)]
        args += ["--timesteps", "10", "--layers", "1,4", "--pool", "2", "--batch-size", "8"]
        assert cli.main([*args, "--workers", workers, "--cache-dir", str(cache)]) == 0
        store = FeatureStore(cache)
        arrays[workers] = {
            m["layer"] + m["split"]: np.asarray(store.load(m["key"])) for m in store.entries()
        }
    assert set(asked) == {2, 0}, f"--workers reached streaming.batches: {asked}"
    assert arrays["2"].keys() == arrays["0"].keys() and len(arrays["0"]) == 4
    for k, a in arrays["0"].items():
        np.testing.assert_array_equal(arrays["2"][k], a, err_msg=f"{k} depends on --workers")

    assert cli.parse(["extract", "--workers", "auto"]).workers is None
    assert cli.parse(["sweep", "--workers", "3"]).workers == 3
    with pytest.raises(SystemExit):
        cli.parse(["extract", "--workers", "-1"])


KILLED_RUN = """
import os, sys, time
import numpy as np
from explorer.features import streaming
from explorer.data.folders import load_image_folder
from explorer.data.preprocess import Preprocess

if __name__ == "__main__":
    ds = load_image_folder(sys.argv[1])
    idx = np.concatenate([ds.splits["train"]] * 50)
    spans = [(s, s + 2) for s in range(0, len(idx) - 1, 2)]
    for k, _ in enumerate(streaming.batches(ds, idx, spans, Preprocess(8, 3), workers=2)):
        if k == 0:
            kids = [int(line.split()[0]) for line in os.popen("ps -e -o pid= -o ppid=")
                    if int(line.split()[1]) == os.getpid()]
            print(" ".join(map(str, kids)), flush=True)
        time.sleep(0.5)
"""


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads the process table from /proc")
def test_workers_and_fork_server_end_when_the_run_is_killed(tmp_path, folder):
    """A run killed by SIGKILL leaves no worker or fork server behind (they would otherwise
    keep each other alive: a worker watches its parent, the fork server, not the run)."""
    import signal
    import subprocess
    import sys
    import time

    script = tmp_path / "run.py"
    script.write_text(KILLED_RUN)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(folder)], stdout=subprocess.PIPE, text=True
    )
    kids = [int(p) for p in proc.stdout.readline().split()]
    tree = kids + [
        int(line.split()[0])
        for line in os.popen("ps -e -o pid= -o ppid=")
        if int(line.split()[1]) in kids
    ]
    assert len(tree) >= 3, f"a fork server and 2 workers were running: {tree}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 60  # a bound for a loaded machine, not a speed claim
    while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in tree):
        time.sleep(0.2)
    left = [p for p in tree if Path(f"/proc/{p}").exists()]
    for p in left:  # never leave them behind, even when the assertion fails
        os.kill(p, signal.SIGKILL)
    assert not left, f"processes outlived the killed run: {left}"
