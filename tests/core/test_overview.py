"""The Data & model page's facts: dataset and model descriptions, layer table, cache overview."""

from __future__ import annotations

import numpy as np

from explorer.features.store import FeatureStore
from explorer.models.loader import load_model
from explorer.overview import (
    LAYER_COLUMNS,
    cache_overview,
    class_rows,
    describe_dataset,
    describe_model,
    layer_table,
    size_text,
)
from explorer.settings import Setting
from explorer.workspace import Workspace


def test_size_text():
    assert size_text(0) == "0 KB" and size_text(3 * 1024) == "3 KB"
    assert size_text(2**20) == "1.0 MB" and size_text(5 * 2**20 + 2**19) == "5.5 MB"


def test_class_rows_takes_the_first_per_class_in_order():
    labels = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])
    rows = class_rows(labels, np.array([9, 8, 6, 3, 0, 1, 4]), 3, 2)
    assert [r.tolist() for r in rows] == [[9, 6], [1, 4], [8]]


def test_describe_dataset_and_model(tiny_model_dir, tiny_dataset):
    d = describe_dataset(tiny_dataset, 10, 5)
    assert (
        d["images"] == 60
        and d["classes"] == 3
        and d["class_names"] == ["class0", "class1", "class2"]
    )
    assert d["train_split"] + d["test_split"] == 60 and d["test_split"] == 12
    assert (d["used_train"], d["used_test"], d["source"], d["skipped"]) == (10, 5, "tests", [])
    model = load_model(str(tiny_model_dir))
    m = describe_model(model)
    assert m["timesteps"] == 1000 and m["input"].startswith("1×16×16")
    assert m["parameters"] == sum(p.numel() for p in model.denoiser.parameters())
    assert m["fingerprint"] == model.fingerprint and not m["leaks_label"] and not m["transformer"]
    ws = Workspace(model, tiny_dataset, train_limit=30, test_limit=6)
    facts = ws.describe()
    assert facts["model"] == m and facts["dataset"]["used_test"] == 6
    table = layer_table(ws.catalogue)
    assert len(table) == len(ws.catalogue) == 9 and set(LAYER_COLUMNS) <= set(table.columns)
    first = ws.catalogue[0]
    assert table["features (pool 1 / 2)"][0] == f"{first.channels} / {4 * first.channels}"


def test_cache_overview_counts_entries_and_parts(tmp_path, tiny_model_dir, tiny_dataset):
    root = tmp_path / "cache"
    empty = cache_overview(root)
    assert empty.entries.empty and empty.feature_bytes == 0 and empty.other_bytes == 0
    assert empty.table().empty and empty.other_text() == ""
    ws = Workspace(load_model(str(tiny_model_dir)), tiny_dataset, store=FeatureStore(root))
    ws.ensure([Setting(None, "pixels", "full")])
    (root / "sweeps").mkdir()
    (root / "sweeps" / "a.csv").write_bytes(b"x" * 2048)
    got = ws.cache_overview()
    assert len(got.entries) == 2, "train and test pixel entries"
    assert got.feature_bytes == FeatureStore(root).size_bytes() > 0
    assert (
        got.other["sweeps"] == 2048
        and got.other_bytes >= 2048
        and "sweeps: 2 KB" in got.other_text()
    )
    table = got.table()
    assert list(table.columns)[:2] == ["dataset", "split"], "pixel entries have no model"
    assert table["created"].str.match(r"\d{4}-\d\d-\d\d \d\d:\d\d").all()
    assert list(table["created"]) == sorted(table["created"], reverse=True)
    ws.clear_features()
    assert cache_overview(root).entries.empty and cache_overview(root).other["sweeps"] == 2048
