"""Built-in datasets: digits, Fashion-MNIST IDX folders, and the checked download."""

from __future__ import annotations

import gzip
import hashlib
import struct
from pathlib import Path

import numpy as np
import pytest

from explorer.data import load_dataset
from explorer.data.builtin import (
    DEBIAN_FASHION_DIR,
    FASHION_CLASSES,
    download_fashion_mnist,
    load_digits,
    load_fashion_mnist,
    load_idx_folder,
    read_idx,
)
from explorer.errors import ExplorerError


@pytest.fixture(autouse=True)
def _hermetic_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EXPLORER_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("FASHION_MNIST_DIR", raising=False)


# ---------------------------------------------------------------- digits


def test_digits_shape_classes_and_split():
    ds = load_digits()
    assert len(ds) == 1797, f"digits has 1797 images, got {len(ds)}"
    assert ds.num_classes == 10, f"digits has 10 classes, got {ds.num_classes}"
    assert ds.array is not None and ds.array.shape == (1797, 8, 8, 1), (
        f"bad array shape {ds.array.shape}"
    )
    assert ds.array.dtype == np.uint8, f"images must be uint8, got {ds.array.dtype}"
    train, test = ds.splits["train"], ds.splits["test"]
    assert len(train) + len(test) == len(ds), "train and test must cover the whole dataset"
    assert not np.intersect1d(train, test).size, "train and test must be disjoint"
    assert set(np.unique(ds.labels[test])) == set(range(10)), (
        "the stratified test split has every class"
    )


def test_digits_fingerprint_is_deterministic():
    a, b = load_digits(), load_digits()
    assert a.fingerprint == b.fingerprint, "two loads of digits must share a fingerprint"
    assert np.array_equal(a.splits["test"], b.splits["test"]), "the split must be fixed"


def test_subset_is_stratified_deterministic_sorted():
    ds = load_digits()
    sub = ds.subset("train", 50)
    assert len(sub) == 50, f"subset(train, 50) must have 50 indices, got {len(sub)}"
    assert np.all(np.diff(sub) > 0), "subset indices must be sorted and unique"
    assert np.isin(sub, ds.splits["train"]).all(), "subset must stay inside its split"
    assert set(ds.labels[sub]) == set(range(10)), "a stratified subset of 50 has all 10 classes"
    assert np.array_equal(sub, ds.subset("train", 50)), "subset must be deterministic"
    counts = np.bincount(ds.labels[sub], minlength=10)
    assert counts.max() - counts.min() <= 1, (
        f"digits is balanced, so the subset should be too: {counts}"
    )
    assert np.array_equal(ds.subset("test"), ds.splits["test"]), "no limit returns the whole split"
    assert np.array_equal(ds.subset("test", 10**6), ds.splits["test"]), (
        "a big limit returns the split"
    )
    with pytest.raises(KeyError):
        ds.subset("nope", 5)


# ---------------------------------------------------------------- IDX / Fashion-MNIST


def _idx_bytes(arr: np.ndarray) -> bytes:
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape)
    return header + arr.tobytes()


def write_idx_folder(folder: Path, n_train: int = 20, n_test: int = 10) -> dict[str, np.ndarray]:
    """A tiny gzipped Fashion-MNIST-layout folder; returns the arrays written."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": (np.arange(n_train) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": (np.arange(n_test) % 10).astype(np.uint8),
    }
    for stem, arr in arrays.items():
        (folder / f"{stem}.gz").write_bytes(gzip.compress(_idx_bytes(arr)))
    return arrays


def test_idx_folder_loads_with_official_split(tmp_path):
    arrays = write_idx_folder(tmp_path / "fm")
    ds = load_fashion_mnist(tmp_path / "fm")
    assert len(ds) == 30, f"20 train + 10 test images expected, got {len(ds)}"
    assert ds.array.shape == (30, 28, 28, 1), f"bad shape {ds.array.shape}"
    assert np.array_equal(ds.splits["train"], np.arange(20)), "train split = the train file"
    assert np.array_equal(ds.splits["test"], np.arange(20, 30)), "test split = the t10k file"
    assert np.array_equal(ds.array[20:, ..., 0], arrays["t10k-images-idx3-ubyte"]), (
        "pixels must round-trip"
    )
    assert ds.class_names == FASHION_CLASSES, "10 labels means the Fashion-MNIST class names"
    assert ds.fingerprint == load_fashion_mnist(tmp_path / "fm").fingerprint, (
        "fingerprint is stable"
    )


def test_idx_folder_by_path_through_load_dataset(tmp_path):
    write_idx_folder(tmp_path / "myidx")
    ds = load_dataset(str(tmp_path / "myidx"))
    assert ds.name == "myidx", f"a path dataset is named after its folder, got {ds.name}"
    assert len(ds) == 30, "the IDX folder is detected by path"


def test_fashion_mnist_env_dir(tmp_path, monkeypatch):
    write_idx_folder(tmp_path / "env")
    monkeypatch.setenv("FASHION_MNIST_DIR", str(tmp_path / "env"))
    ds = load_fashion_mnist()
    assert ds.source == str(tmp_path / "env"), (
        f"FASHION_MNIST_DIR is looked at first, got {ds.source}"
    )


def test_truncated_idx_file_says_so(tmp_path):
    folder = tmp_path / "fm"
    arrays = write_idx_folder(folder)
    raw = _idx_bytes(arrays["train-images-idx3-ubyte"])
    (folder / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(raw[:-100]))
    with pytest.raises(ExplorerError, match="truncated") as e:
        load_idx_folder(folder)
    assert "\n" not in str(e.value), "errors are one line"


def test_cut_gzip_is_an_explorer_error(tmp_path):
    folder = tmp_path / "fm"
    write_idx_folder(folder)
    gz = folder / "t10k-images-idx3-ubyte.gz"
    gz.write_bytes(gz.read_bytes()[:40])  # the gzip stream ends early
    with pytest.raises(ExplorerError, match="re-download") as e:
        read_idx(gz)
    assert "\n" not in str(e.value), "errors are one line"


def test_not_idx_magic(tmp_path):
    p = tmp_path / "x-idx3-ubyte"
    p.write_bytes(b"hello world, not idx")
    with pytest.raises(ExplorerError, match="not an unsigned-byte IDX"):
        read_idx(p)


@pytest.mark.slow
@pytest.mark.skipif(
    not DEBIAN_FASHION_DIR.is_dir(), reason="dataset-fashion-mnist is not installed"
)
def test_real_debian_fashion_mnist():
    ds = load_fashion_mnist(DEBIAN_FASHION_DIR)
    assert len(ds) == 70000, f"Fashion-MNIST has 70000 images, got {len(ds)}"
    assert ds.num_classes == 10, f"Fashion-MNIST has 10 classes, got {ds.num_classes}"
    assert set(np.unique(ds.labels)) == set(range(10)), "labels are 0..9"
    assert len(ds.splits["train"]) == 60000 and len(ds.splits["test"]) == 10000, (
        "official 60k/10k split"
    )
    assert ds.array.shape[1:] == (28, 28, 1), f"28x28 grayscale, got {ds.array.shape}"


# ---------------------------------------------------------------- download


def _served(tmp_path: Path) -> tuple[str, dict[str, str]]:
    """A local folder standing in for the download server, as (file:// base URL, md5s)."""
    server = tmp_path / "server"
    write_idx_folder(server)
    md5s = {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in server.iterdir()}
    return server.as_uri() + "/", md5s


def test_download_with_good_md5(tmp_path):
    url, md5s = _served(tmp_path)
    target = tmp_path / "dl"
    download_fashion_mnist(target, base_url=url, files=md5s)
    assert sorted(p.name for p in target.iterdir()) == sorted(md5s), (
        "exactly the four files, no .part left"
    )
    assert len(load_idx_folder(target)) == 30, "the downloaded folder loads"
    before = {p.name: p.stat().st_mtime_ns for p in target.iterdir()}
    download_fashion_mnist(
        target, base_url="file:///nonexistent/", files=md5s
    )  # all present: no fetch
    assert before == {p.name: p.stat().st_mtime_ns for p in target.iterdir()}, (
        "valid files are kept"
    )


def test_download_with_wrong_md5_leaves_nothing(tmp_path):
    url, md5s = _served(tmp_path)
    bad = dict(md5s)
    first = next(iter(bad))
    bad[first] = "0" * 32
    target = tmp_path / "dl"
    with pytest.raises(ExplorerError, match="checksum mismatch") as e:
        download_fashion_mnist(target, base_url=url, files=bad)
    assert "\n" not in str(e.value), "errors are one line"
    assert list(target.iterdir()) == [], (
        f"nothing may be left behind, found {list(target.iterdir())}"
    )


def test_download_offline_message(tmp_path):
    with pytest.raises(ExplorerError, match="offline") as e:
        download_fashion_mnist(tmp_path / "dl", base_url=(tmp_path / "missing").as_uri() + "/")
    assert "dataset-fashion-mnist" in str(e.value), "the error says how to get the data instead"
    assert list((tmp_path / "dl").iterdir()) == [], "no partial file is left"
