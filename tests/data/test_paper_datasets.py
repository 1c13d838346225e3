"""The paper's datasets: split files on ImageFolder trees, and ADM's resizing of file images."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from explorer.data import load_dataset
from explorer.data.preprocess import Preprocess, adm_resize
from explorer.errors import ExplorerError


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EXPLORER_CACHE", str(tmp_path / "cache"))


def _tree(root, layout=("a", "b"), n=4, sub=""):
    rng = np.random.default_rng(0)
    for cls in layout:
        d = root / sub / cls
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)).save(
                d / f"{cls}_{i}.png"
            )
    return root


def _names(ds, split):
    return sorted(ds.loader.paths[i].rsplit("/", 1)[-1] for i in ds.splits[split])


def test_train_and_test_files_choose_exactly_the_listed_images(tmp_path):
    root = _tree(tmp_path / "flat")
    (root / "train.txt").write_text("# 1% style\na/a_0.png 0\nb_0.png\n./b/b_1.png\n\n")
    (root / "test.txt").write_text("a_3.png\nb/b_3.png\n")
    ds = load_dataset(str(root))
    assert _names(ds, "train") == ["a_0.png", "b_0.png", "b_1.png"], (
        "paths, bare names and ./ paths"
    )
    assert _names(ds, "test") == ["a_3.png", "b_3.png"]
    assert len(ds) == 5, "images in neither list are left out"
    assert [ds.class_names[c] for c in ds.labels[ds.splits["test"]]] == ["a", "b"], "class = folder"
    plain = load_dataset(str(_tree(tmp_path / "plain")))
    assert plain.fingerprint != ds.fingerprint, "the split is part of the dataset's identity"


def test_train_file_with_a_val_folder_keeps_val_as_test(tmp_path):
    root = _tree(tmp_path / "imnet", sub="train")
    _tree(root, sub="val", n=2)
    (root / "train.txt").write_text("a_1.png\nb_2.png\n")  # ImageNet 1%-style: bare file names
    ds = load_dataset(str(root))
    assert _names(ds, "train") == ["a_1.png", "b_2.png"], "train is the listed subset"
    assert len(ds.splits["test"]) == 4, "test is the whole val/ folder"
    only_train = _tree(tmp_path / "flat2")
    (only_train / "train.txt").write_text("a/a_0.png\nb/b_0.png\n")
    ds = load_dataset(str(only_train))
    assert len(ds.splits["train"]) == 2 and len(ds.splits["test"]) == 6, "flat: the rest is test"


@pytest.mark.parametrize(
    "text, message",
    [
        ("a/zzz.png\n", "1 entries name no readable image (e.g. 'a/zzz.png')"),
        ("a_0.png\na_0.png\n", "lists some images twice"),
    ],
)
def test_bad_split_files_are_one_line_errors(tmp_path, text, message):
    root = _tree(tmp_path / "bad")
    (root / "train.txt").write_text(text)
    with pytest.raises(ExplorerError) as e:
        load_dataset(str(root))
    assert message in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_overlapping_and_ambiguous_entries(tmp_path):
    root = _tree(tmp_path / "o")
    (root / "train.txt").write_text("a_0.png\n")
    (root / "test.txt").write_text("a/a_0.png\n")
    with pytest.raises(ExplorerError, match="in both train and test"):
        load_dataset(str(root))
    amb = _tree(tmp_path / "amb")
    (amb / "b" / "more").mkdir()
    (amb / "b" / "more" / "a_0.png").write_bytes((amb / "a" / "a_0.png").read_bytes())
    (amb / "train.txt").write_text("a_0.png\n")  # in a/ and in b/more/
    with pytest.raises(ExplorerError, match="not unique"):
        load_dataset(str(amb))


def _adm_by_hand(img: np.ndarray, size: int) -> np.ndarray:
    """ADM's resize, computed independently: numpy 2x2 means for BOX, then PIL bicubic, then crop."""
    x = img.astype(np.float64)
    while min(x.shape[:2]) >= 2 * size:
        h, w = x.shape[0] // 2 * 2, x.shape[1] // 2 * 2
        x = x[:h, :w].reshape(h // 2, 2, w // 2, 2, -1).mean((1, 3))
    x = np.floor(x + 0.5).astype(np.uint8)
    s = size / min(x.shape[:2])
    nw, nh = round(x.shape[1] * s), round(x.shape[0] * s)
    y = np.asarray(Image.fromarray(x).resize((nw, nh), Image.Resampling.BICUBIC))
    top, left = (nh - size) // 2, (nw - size) // 2
    return y[top : top + size, left : left + size]


def test_adm_resize_matches_an_independent_computation():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (200, 136, 3), dtype=np.uint8)  # 136 -> 68 -> 34 (< 2*32), bicubic
    ours = adm_resize(img, 32)
    ref = _adm_by_hand(img, 32)
    assert ours.shape == (32, 32, 3) and ours.dtype == np.uint8
    diff = np.abs(ours.astype(int) - ref.astype(int))
    assert diff.max() <= 3 and diff.mean() < 1.5, "box halving, bicubic, centre crop (PIL rounds)"
    shifted = _adm_by_hand(img[2:], 32)  # a crop two rows off is far: the geometry is pinned
    assert np.abs(ours.astype(int) - shifted.astype(int)).mean() > 10, "the test can tell"
    smooth = np.tile(np.linspace(0, 255, 136, dtype=np.float64), (200, 1))
    smooth = np.repeat(smooth[..., None], 3, 2).astype(np.uint8)
    bil = Preprocess(32, 3)(smooth[None])[0].permute(1, 2, 0).numpy()  # the array path
    adm = (Preprocess(32, 3)([smooth])[0].permute(1, 2, 0).numpy() + 1) * 127.5
    assert np.abs(adm - _adm_by_hand(smooth, 32)).max() <= 2.5, (
        "file images go through ADM's resize"
    )
    assert bil.shape == (32, 32, 3), "arrays keep the bilinear path"
    gray = adm_resize(rng.integers(0, 256, (40, 90), dtype=np.uint8), 16)
    assert gray.shape == (16, 16, 1), "grayscale keeps one channel"
    up = adm_resize(rng.integers(0, 256, (8, 12, 3), dtype=np.uint8), 32)
    assert up.shape == (32, 32, 3), "small images are scaled up by bicubic alone"


def test_cli_datasets_lists_builtins_folders_and_splits(tmp_path, monkeypatch, capsys):
    from explorer.cli import main

    data = tmp_path / "data"
    _tree(data / "flowers")
    (data / "flowers" / "train.txt").write_text("a_0.png\n")
    (data / "flowers" / "test.txt").write_text("b_0.png\n")
    _tree(data / "imnet", sub="train")
    _tree(data / "imnet", sub="val")
    _tree(data / "plain")
    (data / "notes").mkdir()
    roots = tmp_path / "roots"
    _tree(roots / "cub")
    monkeypatch.setenv("EXPLORER_DATA_ROOTS", str(roots))
    assert main(["datasets", str(data)]) == 0
    rows = {ln.split("\t")[0]: ln.split("\t")[1:] for ln in capsys.readouterr().out.splitlines()}
    assert rows["digits"][0] == "built-in" and "fashion-mnist" in rows, rows
    assert rows[str(data / "flowers")] == [
        "imagefolder",
        "split files: train=train.txt, test=test.txt",
    ]
    assert rows[str(data / "imnet")] == ["imagefolder", "folders: train/ and val/"]
    assert rows[str(data / "plain")] == ["imagefolder", "fixed stratified 80/20 split"]
    assert str(roots / "cub") in rows, "folders under EXPLORER_DATA_ROOTS are listed"
    assert str(data / "notes") not in rows, "an empty folder is not a dataset"
    assert main(["datasets", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "Traceback" not in err, err
