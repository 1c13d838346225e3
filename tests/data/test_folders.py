"""Path datasets: ImageFolder trees (with scan cache), CIFAR batches, and load_dataset errors."""

from __future__ import annotations

import importlib.util
import io
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from explorer.data import folders, load_dataset
from explorer.data.folders import load_path
from explorer.errors import ExplorerError

COLORS = {"ant": (255, 0, 0), "bee": (0, 255, 0), "cat": (0, 0, 255)}


@pytest.fixture(autouse=True)
def _hermetic_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EXPLORER_CACHE", str(tmp_path / "cache"))


def png_bytes(color=(0, 0, 0), size=(8, 6), mode="RGB", fmt="PNG") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, format=fmt)
    return buf.getvalue()


def noisy_png_bytes(size=(64, 64), seed=0) -> bytes:
    """An incompressible PNG, so cutting it in half cuts its pixel data."""
    arr = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def make_image_folder(root: Path, per_class: int = 5, classes=("ant", "bee", "cat")) -> Path:
    for cls in classes:
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            (root / cls / f"{i}.png").write_bytes(png_bytes(COLORS[cls]))
    return root


# ---------------------------------------------------------------- ImageFolder


def test_image_folder_basic(tmp_path):
    root = make_image_folder(tmp_path / "pets")
    (root / "bee" / "sub").mkdir()
    (root / "bee" / "sub" / "deep.JPG").write_bytes(png_bytes(COLORS["bee"], fmt="JPEG"))
    ds = load_dataset(str(root))
    assert ds.name == "pets", f"name is the folder's name, got {ds.name}"
    assert ds.source == str(root.resolve()), f"source is the absolute path, got {ds.source}"
    assert ds.class_names == ["ant", "bee", "cat"], (
        f"classes are the sorted folders, got {ds.class_names}"
    )
    assert len(ds) == 16, f"15 png + 1 nested upper-case .JPG expected, got {len(ds)}"
    assert np.bincount(ds.labels).tolist() == [5, 6, 5], (
        f"labels follow folders: {np.bincount(ds.labels)}"
    )
    train, test = ds.splits["train"], ds.splits["test"]
    assert len(train) + len(test) == len(ds), "the split covers the dataset"
    assert not np.intersect1d(train, test).size, "train and test are disjoint"
    assert set(ds.labels[test]) == {0, 1, 2}, "the stratified test split has every class"
    assert ds.skipped == [], f"nothing is skipped in a clean folder: {ds.skipped}"
    images = ds.images(test)
    assert len(images) == len(test), "one image per index"
    for img, label in zip(images, ds.labels[test], strict=True):
        assert img.shape == (6, 8, 3) and img.dtype == np.uint8, (
            f"(H, W, 3) uint8, got {img.shape} {img.dtype}"
        )
        color = COLORS[ds.class_names[label]]
        assert np.abs(img[3, 4].astype(int) - color).max() <= 8, (
            f"pixel {img[3, 4]} should be {color}"
        )


def test_bad_files_are_skipped_and_named(tmp_path):
    root = make_image_folder(tmp_path / "pets")
    (root / "ant" / "corrupt.png").write_bytes(os.urandom(300))
    full = noisy_png_bytes()
    (root / "bee" / "truncated.png").write_bytes(full[: len(full) // 2])
    (root / "cat" / "empty.jpg").write_bytes(b"")
    jpeg = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(
        jpeg, "JPEG"
    )
    (root / "cat" / "cut.jpeg").write_bytes(jpeg.getvalue()[: len(jpeg.getvalue()) // 2])
    (root / "cat" / "notes.txt").write_text("not an image")
    (root / ".DS_Store").write_bytes(b"\0\1junk")
    (root / "cat" / ".hidden.png").write_bytes(b"junk")
    ds = load_path(root)
    assert len(ds) == 15, f"only the 15 good images are kept, got {len(ds)}"
    names = sorted(s.split(":")[0] for s in ds.skipped)
    assert names == ["ant/corrupt.png", "bee/truncated.png", "cat/cut.jpeg", "cat/empty.jpg"], (
        f"skipped: {ds.skipped}"
    )
    assert all(": " in s and "\n" not in s for s in ds.skipped), (
        f"each skip has a one-line reason: {ds.skipped}"
    )
    assert len(ds.images(np.arange(len(ds)))) == 15, "every kept image reads"


def test_loose_images_at_root_are_reported(tmp_path):
    root = make_image_folder(tmp_path / "pets", classes=("ant", "bee"))
    (root / "stray.png").write_bytes(png_bytes())
    ds = load_path(root)
    assert len(ds) == 10, "the stray image is not part of any class"
    assert any(s.startswith("stray.png") for s in ds.skipped), (
        f"the stray image is reported: {ds.skipped}"
    )


def test_train_test_folders_are_honoured(tmp_path):
    root = tmp_path / "split"
    make_image_folder(root / "train", per_class=4, classes=("ant", "bee"))
    make_image_folder(root / "test", per_class=2, classes=("bee", "cat"))
    ds = load_path(root)
    assert ds.class_names == ["ant", "bee", "cat"], (
        f"classes are the sorted union, got {ds.class_names}"
    )
    assert len(ds.splits["train"]) == 8 and len(ds.splits["test"]) == 4, f"split sizes: {ds.splits}"
    assert set(ds.labels[ds.splits["test"]]) == {1, 2}, "test labels come from test/ (bee, cat)"
    assert set(ds.labels[ds.splits["train"]]) == {0, 1}, "train labels come from train/ (ant, bee)"


def test_gray_folder_stays_one_channel_mixed_goes_rgb(tmp_path):
    gray = tmp_path / "gray"
    for cls in ("a", "b"):
        (gray / cls).mkdir(parents=True)
        for i in range(3):
            (gray / cls / f"{i}.png").write_bytes(png_bytes(100, mode="L"))
    ds = load_path(gray)
    img = ds.images([0])[0]
    assert img.shape == (6, 8, 1), f"an all-L folder gives (H, W, 1), got {img.shape}"
    (gray / "b" / "rgb.png").write_bytes(png_bytes((1, 2, 3)))
    ds = load_path(gray)
    shapes = {im.shape for im in ds.images(np.arange(len(ds)))}
    assert shapes == {(6, 8, 3)}, f"a mixed folder gives RGB for every image, got {shapes}"


def test_scan_cache_is_reused_and_updated(tmp_path, monkeypatch):
    root = make_image_folder(tmp_path / "pets")
    calls = []
    real = folders.check_image

    def counting(path):
        calls.append(Path(path).name)
        return real(path)

    monkeypatch.setattr(folders, "check_image", counting)
    first = load_path(root)
    assert len(calls) == 15, f"the first load verifies every file, got {len(calls)}"
    assert list((tmp_path / "cache" / "scans").glob("*.json")), (
        "the scan is cached under cache_dir()/scans"
    )
    calls.clear()
    second = load_path(root)
    assert calls == [], f"an unchanged folder is not re-verified, but verified {calls}"
    assert second.fingerprint == first.fingerprint, "same files, same fingerprint"

    target = root / "ant" / "0.png"
    target.write_bytes(png_bytes((9, 9, 9)))
    st = target.stat()
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    calls.clear()
    third = load_path(root)
    assert calls == ["0.png"], f"only the changed file is re-verified, got {calls}"
    assert third.fingerprint != first.fingerprint, "changed content must change the fingerprint"
    assert len(list((tmp_path / "cache" / "scans").glob("*.json"))) == 1, (
        "the stale scan entry is replaced"
    )


def test_fingerprint_follows_labels(tmp_path):
    root = make_image_folder(tmp_path / "pets")
    before = load_path(root).fingerprint
    (root / "ant" / "0.png").rename(root / "bee" / "moved.png")
    assert load_path(root).fingerprint != before, (
        "moving a file to another class changes the fingerprint"
    )


def test_loader_pickles_and_caches(tmp_path):
    ds = load_path(make_image_folder(tmp_path / "pets"))
    loader = pickle.loads(pickle.dumps(ds.loader))
    a = loader(np.array([0, 1]))
    b = ds.loader(np.array([0, 1]))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True)), (
        "a pickled loader reads the same"
    )
    reference = b[0].copy()
    b[0][:] = 7  # mutate what the caller got
    again = ds.loader(np.array([0]))[0]
    assert np.array_equal(again, reference), (
        "callers get copies: mutating one leaves the LRU intact"
    )


def test_one_class_is_an_error(tmp_path):
    root = make_image_folder(tmp_path / "solo", classes=("ant",))
    with pytest.raises(ExplorerError, match="at least 2 class") as e:
        load_path(root)
    assert "\n" not in str(e.value), "errors are one line"


def test_no_readable_images_is_an_error(tmp_path):
    root = tmp_path / "junk"
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        (root / cls / "x.png").write_bytes(b"not really a png")
    with pytest.raises(ExplorerError, match="no readable images") as e:
        load_path(root)
    assert "\n" not in str(e.value), "errors are one line"


# ---------------------------------------------------------------- CIFAR


def _dump(path: Path, obj) -> None:
    path.write_bytes(pickle.dumps(obj, protocol=2))


def _cifar_batch(n: int, label_key: bytes, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    data[0] = 0
    data[0, :1024] = 255  # image 0 is pure red: channel planes come first
    return {b"data": data, label_key: [int(i % 3) for i in range(n)], b"batch_label": b"x"}


def test_cifar10_layout(tmp_path):
    folder = tmp_path / "c10" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for i in range(1, 6):
        _dump(folder / f"data_batch_{i}", _cifar_batch(2, b"labels", i))
    _dump(folder / "test_batch", _cifar_batch(3, b"labels", 9))
    _dump(
        folder / "batches.meta",
        {b"label_names": [b"airplane", b"automobile", b"bird"], b"num_vis": 3072},
    )
    ds = load_dataset(str(tmp_path / "c10"))
    assert ds.name == "c10", f"name is the given folder's name, got {ds.name}"
    assert ds.array.shape == (13, 32, 32, 3) and ds.array.dtype == np.uint8, (
        f"bad array {ds.array.shape}"
    )
    assert ds.class_names == ["airplane", "automobile", "bird"], (
        f"names from batches.meta: {ds.class_names}"
    )
    assert len(ds.splits["train"]) == 10 and len(ds.splits["test"]) == 3, (
        "official train/test split"
    )
    red = ds.array[0]
    assert (red[..., 0] == 255).all() and (red[..., 1:] == 0).all(), (
        "(N, 3072) is channel-planar RGB"
    )
    assert ds.fingerprint == load_dataset(str(tmp_path / "c10")).fingerprint, (
        "fingerprint is stable"
    )


def test_cifar100_layout(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    _dump(folder / "train", _cifar_batch(6, b"fine_labels", 1))
    _dump(folder / "test", _cifar_batch(3, b"fine_labels", 2))
    _dump(
        folder / "meta",
        {b"fine_label_names": [b"apple", b"bear", b"cup"], b"coarse_label_names": [b"x"]},
    )
    ds = load_path(folder)
    assert ds.array.shape == (9, 32, 32, 3), f"bad array {ds.array.shape}"
    assert ds.class_names == ["apple", "bear", "cup"], (
        f"fine label names expected, got {ds.class_names}"
    )
    assert ds.labels.tolist() == [0, 1, 2, 0, 1, 2, 0, 1, 2], (
        f"fine labels expected, got {ds.labels}"
    )


class _Evil:
    def __reduce__(self):
        return (print, ("this should never run",))


def test_cifar_refuses_code_in_pickles(tmp_path):
    folder = tmp_path / "c10"
    folder.mkdir()
    for name in ("data_batch_1", "test_batch"):
        _dump(folder / name, _cifar_batch(2, b"labels", 0))
    _dump(folder / "batches.meta", {b"label_names": [_Evil()]})
    with pytest.raises(ExplorerError, match="refusing") as e:
        load_path(folder)
    assert "\n" not in str(e.value), "errors are one line"


# ---------------------------------------------------------------- load_dataset errors


def test_unknown_name_suggests(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ExplorerError, match="fashion-mnist") as e:
        load_dataset("fashon-mnist")
    assert "Did you mean" in str(e.value), f"a close built-in name is suggested: {e.value}"


def test_folder_of_text_files_says_what_is_expected(tmp_path):
    root = tmp_path / "texts"
    (root / "sub").mkdir(parents=True)
    for i in range(3):
        (root / f"{i}.txt").write_text("hello")
        (root / "sub" / f"{i}.txt").write_text("hello")
    with pytest.raises(ExplorerError) as e:
        load_dataset(str(root))
    msg = str(e.value)
    assert msg == (
        f"{root} is not a dataset folder: expected class subfolders of images (ImageFolder), "
        "CIFAR python batches, or Fashion-MNIST IDX files"
    ), f"unexpected message: {msg}"


def test_plain_file_is_not_a_dataset(tmp_path):
    p = tmp_path / "notes.txt"
    p.write_text("x")
    with pytest.raises(ExplorerError, match="not a dataset folder"):
        load_path(p)


@pytest.mark.skipif(
    importlib.util.find_spec("datasets") is not None, reason="`datasets` is installed"
)
def test_hf_folder_without_datasets_says_pip_install(tmp_path):
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "dataset_info.json").write_text("{}")
    (tmp_path / "hf" / "state.json").write_text("{}")
    with pytest.raises(ExplorerError, match="pip install datasets"):
        load_path(tmp_path / "hf")
