"""End to end on the built-in model and data (`-m slow`): the CLI fills the store with the right entries."""

from __future__ import annotations

import numpy as np
import pytest

from explorer.cli import main
from explorer.data import load_dataset
from explorer.data.builtin import DEBIAN_FASHION_DIR, is_idx_folder
from explorer.features.extract import load_features
from explorer.features.keys import Selection
from explorer.features.sizes import pooled_dim
from explorer.features.store import FeatureStore
from explorer.models.layers import build_catalogue
from explorer.models.loader import load_model
from explorer.paths import BUILTIN_MODEL_DIRS

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (BUILTIN_MODEL_DIRS["ddpm-digits"] / "config.json").exists(),
        reason="ddpm-digits not shipped",
    ),
]


def _nearest_centroid_accuracy(train_x, train_y, test_x, test_y) -> float:
    mu, sd = train_x.mean(0), train_x.std(0) + 1e-6
    train_x, test_x = (train_x - mu) / sd, (test_x - mu) / sd
    classes = np.unique(train_y)
    centroids = np.stack([train_x[train_y == c].mean(0) for c in classes])
    pred = classes[((test_x[:, None, :] - centroids[None]) ** 2).sum(-1).argmin(1)]
    return float((pred == test_y).mean())


@pytest.mark.timeout(300)
def test_extract_digits_with_the_builtin_model(tmp_path, capsys):
    cache = tmp_path / "cache"
    argv = [
        "extract",
        "--model",
        "ddpm-digits",
        "--dataset",
        "digits",
        "--limit",
        "200",
        "--timesteps",
        "10,150",
        "--layers",
        "all",
        "--cache-dir",
        str(cache),
    ]
    assert main(argv) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    model, ds = load_model("ddpm-digits"), load_dataset("digits")
    cat = build_catalogue(model.denoiser)
    assert len(cat) == 13, f"ddpm-digits should have 13 probe points, has {len(cat)}"
    n = 2 * 2 * len(cat)
    assert out.count(f"{n // 2} computed") == 2, (
        f"each split should compute {n // 2} entries:\n{out}"
    )

    store = FeatureStore(cache)
    manifests = store.entries()
    assert len(manifests) == n, f"{len(manifests)} entries, expected {n}"
    by_setting = {(m["split"], m["t"], m["layer"]): m for m in manifests}
    for split in ("train", "test"):
        for t in (10, 150):
            for lay in cat:
                m = by_setting[(split, t, lay.name)]
                assert m["shape"] == [200, pooled_dim(lay, "2")], (split, t, lay.name, m["shape"])
                assert m["layer_index"] == lay.index and m["model"] == "ddpm-digits", m
                arr = store.load(m["key"])
                assert arr.shape == (200, lay.channels * 4) and np.isfinite(arr).all(), (
                    lay.name,
                    arr.shape,
                )

    # the trained model's bottleneck features carry class information
    tr, te = Selection.of(ds, "train", 200), Selection.of(ds, "test", 200)
    feats = {
        s.split: np.asarray(
            load_features(model, ds, s, t=10, layer="mid_block", pool_name="2", store=store),
            dtype=np.float32,
        )
        for s in (tr, te)
    }
    acc = _nearest_centroid_accuracy(
        feats["train"], ds.labels[tr.indices], feats["test"], ds.labels[te.indices]
    )
    assert acc > 0.5, f"nearest-centroid accuracy on mid_block t=10 is only {acc:.2f} (chance 0.10)"

    assert main(argv) == 0
    assert capsys.readouterr().out.count(f"0 computed, {n // 2} from cache") == 2, (
        "an identical run must compute nothing"
    )


@pytest.mark.timeout(300)
@pytest.mark.skipif(
    not (DEBIAN_FASHION_DIR.is_dir() and is_idx_folder(DEBIAN_FASHION_DIR)),
    reason="Debian's dataset-fashion-mnist is not installed",
)
def test_extract_fashion_mnist_resized_to_the_model(tmp_path, capsys):
    cache = tmp_path / "cache"
    argv = [
        "extract",
        "--model",
        "ddpm-digits",
        "--dataset",
        "fashion-mnist",
        "--splits",
        "test",
        "--limit",
        "100",
        "--timesteps",
        "90",
        "--layers",
        "mid,-1",
        "--pool",
        "1,max",
        "--cache-dir",
        str(cache),
    ]
    assert main(argv) == 0, capsys.readouterr().err
    manifests = FeatureStore(cache).entries()
    assert len(manifests) == 4, f"2 layers x 2 poolings expected, got {len(manifests)}"
    assert {m["dataset"] for m in manifests} == {"fashion-mnist"}, manifests
    assert all(
        m["shape"][0] == 100 and m["preprocess"].startswith("v1-square16-c1") for m in manifests
    ), manifests
