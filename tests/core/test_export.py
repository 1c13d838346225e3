"""Exports: every format read back by the tool that uses it, the CLI, and the Explore downloads."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from explorer import export
from explorer.cli import main
from explorer.errors import ExplorerError
from explorer.export import ExportData
from explorer.features.store import FeatureStore
from explorer.models.loader import load_model
from explorer.settings import Setting
from explorer.workspace import Workspace


def _data(n_test: int = 7, n_train: int = 5, d: int = 6, images: bool = True) -> ExportData:
    rng = np.random.default_rng(0)
    feats = {
        "test": rng.normal(size=(n_test, d)).astype(np.float32),
        "train": rng.normal(size=(n_train, d)).astype(np.float32),
    }
    labels = {"test": np.arange(n_test) % 3, "train": np.arange(n_train) % 3}
    idx = {"test": np.arange(n_test) + 100, "train": np.arange(n_train) + 200}
    thumbs = {
        s: rng.integers(0, 256, size=(len(x), 8, 8, 1), dtype=np.uint8) for s, x in feats.items()
    }
    return ExportData(
        feats,
        labels,
        ["coat", "bag\twith tab", "shoe"],
        {"model": "m", "t": 10, "layer": "mid_block", "pool": "2"},
        idx,
        thumbs if images else {},
    )


def test_npz_round_trip():
    data = _data()
    with np.load(io.BytesIO(export.to_npz(data)), allow_pickle=False) as z:
        for s in ("test", "train"):
            np.testing.assert_array_equal(z[f"features_{s}"], data.features[s])
            np.testing.assert_array_equal(z[f"labels_{s}"], data.labels[s])
            np.testing.assert_array_equal(z[f"index_{s}"], data.indices[s])
        assert list(z["class_names"]) == data.class_names, "class names stored as strings"
        meta = json.loads(str(z["metadata"]))
    assert meta["layer"] == "mid_block" and meta["t"] == 10, "metadata travels with the arrays"
    assert meta["shapes"]["test"] == [7, 6], "the metadata records the shapes"


def test_safetensors_round_trip(tmp_path):
    from safetensors import safe_open
    from safetensors.numpy import load_file

    data = _data()
    (path,) = export.write(data, "safetensors", tmp_path / "f.safetensors")
    tensors = load_file(path)
    np.testing.assert_array_equal(tensors["features_test"], data.features["test"])
    np.testing.assert_array_equal(tensors["labels_train"], data.labels["train"])
    with safe_open(path, framework="numpy") as f:
        meta = json.loads(f.metadata()["explorer"])
    assert meta["class_names"][1] == "bag\twith tab" and meta["model"] == "m", "header metadata"


def test_parquet_round_trip(tmp_path):
    import pyarrow.parquet as pq

    data = _data()
    (path,) = export.write(data, "parquet", tmp_path / "f.parquet")
    df = pd.read_parquet(path)
    assert list(df.columns[:4]) == ["split", "dataset_index", "label", "class"], list(df.columns)
    assert len(df) == 12 and df.shape[1] == 4 + 6, "one row per image, one column per feature"
    test = df[df["split"] == "test"]
    np.testing.assert_array_equal(
        test[[f"f{j}" for j in range(6)]].to_numpy(), data.features["test"]
    )
    assert list(test["dataset_index"]) == list(range(100, 107))
    assert list(test["class"][:3]) == ["coat", "bag\twith tab", "shoe"], "class names per row"
    meta = json.loads(pq.read_schema(path).metadata[b"explorer"])
    assert meta["pool"] == "2", "schema metadata holds the setting"


def test_projector_folder_parses(tmp_path):
    data = _data()
    paths = export.write(data, "projector", tmp_path / "proj")
    assert sorted(p.name for p in paths) == sorted(export.PROJECTOR_FILES)
    tensors = np.loadtxt(tmp_path / "proj" / "tensors.tsv", delimiter="\t")
    np.testing.assert_allclose(
        tensors, np.concatenate([data.features["test"], data.features["train"]]), rtol=1e-5
    )
    lines = (tmp_path / "proj" / "metadata.tsv").read_text().splitlines()
    assert lines[0].split("\t") == ["split", "label", "class", "dataset_index"], "a header row"
    assert len(lines) == 1 + 12, "one metadata row per tensor row (plus the header)"
    assert lines[2].split("\t") == ["test", "1", "bag with tab", "101"], (
        "tabs in names cannot split a row"
    )
    config = (tmp_path / "proj" / "projector_config.pbtxt").read_text()
    assert 'tensor_path: "tensors.tsv"' in config and 'metadata_path: "metadata.tsv"' in config
    assert 'image_path: "sprite.png"' in config and config.count("single_image_dim: 8") == 2
    assert config.count("{") == config.count("}") == 2, "balanced text-proto blocks"
    sprite = np.asarray(Image.open(tmp_path / "proj" / "sprite.png"))
    assert sprite.shape == (4 * 8, 4 * 8), "12 thumbnails in a 4x4 grid of 8x8 cells"
    first_train = data.images["train"][0][..., 0]  # image 7 of the stack: row 1, column 3
    np.testing.assert_array_equal(sprite[8:16, 24:32], first_train)
    np.testing.assert_array_equal(sprite[0:8, 0:8], data.images["test"][0][..., 0])


def test_projector_zip_without_images_has_no_sprite():
    z = zipfile.ZipFile(io.BytesIO(export.to_bytes(_data(images=False), "projector")))
    assert sorted(z.namelist()) == ["metadata.tsv", "projector_config.pbtxt", "tensors.tsv"]
    assert "sprite" not in z.read("projector_config.pbtxt").decode()


def test_sprite_shrinks_to_the_projector_limit():
    canvas, side = export.sprite([np.zeros((64, 64), np.uint8)] * 200, side=1000)
    assert side == export.SPRITE_MAX // 15, "1000-pixel cells in a 15x15 grid shrink to fit"
    assert canvas.shape == (15 * side, 15 * side, 1) and canvas.shape[0] <= export.SPRITE_MAX


def test_bad_inputs_are_one_line_errors(tmp_path):
    with pytest.raises(ExplorerError, match="unknown export format"):
        export.to_bytes(_data(), "hdf5")
    with pytest.raises(ExplorerError, match="do not line up"):
        ExportData({"test": np.zeros((3, 2))}, {"test": np.zeros(2)}, ["a"])
    (tmp_path / "f").write_text("x")
    with pytest.raises(ExplorerError, match="is a file"):
        export.write(_data(), "projector", tmp_path / "f")
    with pytest.raises(ExplorerError, match="is a folder"):
        export.write(_data(), "npz", tmp_path)


def test_from_workspace_matches_the_cache(tiny_model_dir, tiny_dataset, tmp_path):
    ws = Workspace(
        load_model(str(tiny_model_dir)), tiny_dataset, store=FeatureStore(tmp_path / "c")
    )
    s = Setting(10, "mid_block", "2")
    data = export.from_workspace(ws, s, ["train", "test"])
    np.testing.assert_array_equal(
        data.features["test"], np.asarray(ws.features(s, "test"), np.float32)
    )
    np.testing.assert_array_equal(data.labels["train"], ws.labels("train"))
    assert data.metadata["feature_key_test"] == ws.key(s, "test"), (
        "the export names its cache entry"
    )
    assert data.metadata["model_fingerprint"] == ws.model.fingerprint
    thumbs = np.stack(list(data.images["test"]()))
    np.testing.assert_array_equal(thumbs, tiny_dataset.images(ws.test.indices))


def test_projector_sprite_reads_a_split_in_chunks(tiny_model_dir, tmp_path, monkeypatch):
    """A split of any size becomes a sprite without being held whole: the dataset is asked
    for at most THUMB_CHUNK images at a time, and the sprite is the same."""
    from tests.conftest import make_tiny_dataset

    monkeypatch.setattr(export, "THUMB_CHUNK", 16)
    ds = make_tiny_dataset(n=300, classes=3, size=16)
    asked = []
    read = ds.images

    def spy(indices):
        asked.append(len(indices))
        return read(indices)

    monkeypatch.setattr(ds, "images", spy)
    ws = Workspace(load_model(str(tiny_model_dir)), ds, store=FeatureStore(tmp_path / "c"))
    data = export.from_workspace(ws, Setting(10, "mid_block", "2"), ["train", "test"])
    asked.clear()
    files = export.projector_files(data)
    n = len(ws.train.indices) + len(ws.test.indices)
    assert sum(asked) == n and max(asked) <= 16, asked
    got = np.asarray(Image.open(io.BytesIO(files["sprite.png"])))
    whole = np.concatenate([read(ws.train.indices), read(ws.test.indices)])
    want, side = export.sprite(list(whole))
    np.testing.assert_array_equal(got, want[..., 0])
    assert side == 16 and got.shape == (18 * 16, 18 * 16), "300 thumbnails: an 18 x 18 grid"


def test_sprite_from_a_one_pass_iterator_needs_its_count():
    ims = [np.full((8, 8), i, np.uint8) for i in range(5)]
    canvas, side = export.sprite(iter(ims), count=5)
    assert side == 8 and canvas.shape == (24, 24, 1)
    assert canvas[8:16, 0:8].max() == 3 and canvas[16:24].max() == 0, "row-major, rest empty"
    with pytest.raises(ExplorerError, match="more than the 2 images announced"):
        export.sprite(iter(ims), count=2)


@pytest.mark.parametrize("fmt", export.FORMATS)
def test_cli_export_every_format(fmt, tiny_model_dir, tmp_path, capsys):
    out = tmp_path / ("proj" if fmt == "projector" else f"f{export.SUFFIX[fmt]}")
    args = [
        "export",
        "--model",
        str(tiny_model_dir),
        "--dataset",
        "digits",
        "--limit",
        "30",
        "--timestep",
        "10",
        "--layer",
        "mid",
        "--pool",
        "2",
        "--format",
        fmt,
        "--out",
        str(out),
        "--cache-dir",
        str(tmp_path / "cache"),
    ]
    assert main(args) == 0, capsys.readouterr().err
    assert "t=10, mid_block, pool 2" in capsys.readouterr().out
    d = 16 * 2 * 2  # the tiny U-Net's mid block has 16 channels, pooled to 2x2
    if fmt == "npz":
        with np.load(out) as z:
            assert z["features_train"].shape == (30, d) and z["features_test"].shape == (30, d)
    elif fmt == "safetensors":
        from safetensors.numpy import load_file

        assert load_file(out)["features_test"].shape == (30, d)
    elif fmt == "parquet":
        df = pd.read_parquet(out)
        assert df.shape == (60, 4 + d) and set(df["split"]) == {"train", "test"}
    else:
        assert np.loadtxt(out / "tensors.tsv", delimiter="\t").shape == (60, d)
        assert Image.open(out / "sprite.png").size == (8 * 8, 8 * 8), (
            "60 digits (8x8) in an 8x8 grid"
        )


def test_cli_export_bad_input(tiny_model_dir, tmp_path, capsys):
    base = [
        "export",
        "--model",
        str(tiny_model_dir),
        "--dataset",
        "digits",
        "--limit",
        "10",
        "--cache-dir",
        str(tmp_path / "cache"),
    ]
    assert main([*base, "--layer", "nope", "--out", str(tmp_path / "x.npz")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert main([*base, "--timestep", "5000", "--out", str(tmp_path / "x.npz")]) == 2
    assert main([*base, "--splits", "val", "--out", str(tmp_path / "x.npz")]) == 2
    assert not (tmp_path / "x.npz").exists(), "nothing written on bad input"


@pytest.fixture
def deferred(monkeypatch) -> dict:
    """file name -> the callable a deferred `st.download_button` registered (run on click)."""
    from streamlit.runtime.media_file_manager import MediaFileManager

    made, real = {}, MediaFileManager.add_deferred

    def spy(self, fn, mimetype, coordinates, file_name=None, **kw):
        made[file_name] = (fn, mimetype)
        return real(self, fn, mimetype, coordinates, file_name, **kw)

    monkeypatch.setattr(MediaFileManager, "add_deferred", spy)
    return made


def _download_page():
    import numpy as np

    from explorer.export import ExportData
    from explorer.ui.downloads import feature_downloads

    rng = np.random.default_rng(0)
    feature_downloads(
        ExportData(
            {"test": rng.normal(size=(9, 4))},
            {"test": np.arange(9) % 3},
            ["a", "b", "c"],
            {"t": 10},
            images={"test": np.zeros((9, 8, 8, 1), np.uint8)},
        ),
        key="dl",
        name="feats",
    )


def test_download_buttons_produce_every_format(deferred):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_function(_download_page).run()
    assert not at.exception, at.exception
    buttons = at.get("download_button")
    assert len(buttons) == 4, "one button per format"
    assert sorted(deferred) == ["feats.npz", "feats.parquet", "feats.safetensors", "feats.zip"]
    for name, (fn, _mime) in deferred.items():
        data = fn()
        assert isinstance(data, bytes) and len(data) > 100, f"{name} is empty"
    with np.load(io.BytesIO(deferred["feats.npz"][0]()), allow_pickle=False) as z:
        assert z["features_test"].shape == (9, 4), "the button's bytes are the core exporter's"
    names = zipfile.ZipFile(io.BytesIO(deferred["feats.zip"][0]())).namelist()
    assert sorted(names) == sorted(export.PROJECTOR_FILES)
