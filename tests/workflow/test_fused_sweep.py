"""Fused settings in the sweep: table rows, round trip through the file, DIFT ensembles, the CLI."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from explorer.cli import main
from explorer.features.store import FeatureStore
from explorer.models.loader import load_model
from explorer.results import accuracy_view, load_table
from explorer.settings import Fused, is_fused_text
from explorer.sweep import describe_best
from explorer.workspace import Workspace
from tests.ui.apptest import link_workspace


@pytest.fixture
def ws(tiny_model_dir, tiny_dataset):
    return Workspace(
        load_model(str(tiny_model_dir)), tiny_dataset, store=FeatureStore(), batch_size=32
    )


def test_sweep_table_round_trips_fused_rows(ws, tmp_path):
    out = tmp_path / "r.csv"
    df = ws.sweep(
        [90, 150],
        [4, 7],
        2,
        "linear",
        fuse=["4@150+7@90", [(90, 7), (150, 4, "gap")]],
        baselines=False,
        out=out,
    )
    back = load_table(out)
    fused = back[back["layer"].map(is_fused_text)]
    assert set(fused["layer"]) == {"4@150+7@90", "7@90/2+4@150/1"}
    assert fused["t"].isna().all() and (fused["layer_index"] == -1).all()
    assert set(fused["pool"]) == {"2", "2+1"}
    # plain rows load as before: numeric t, text layer names
    plain = back[~back["layer"].map(is_fused_text)]
    assert back["t"].dtype.kind == "f" and set(plain["t"]) == {90.0, 150.0}
    # the text in the table names the same setting again, and its cached result
    for text, pool in fused[["layer", "pool"]].drop_duplicates().itertuples(index=False):
        f = ws.fused(text, pool)
        top1 = fused[(fused["layer"] == text) & (fused["metric"] == "top1")]["value"].iloc[0]
        assert ws.evaluate([f], "linear")[f].top1 == pytest.approx(top1)
    assert not accuracy_view(back)["layer"].map(is_fused_text).any(), (
        "views of blocks stay as they were"
    )
    assert len(accuracy_view(back, fused=True)) == len(accuracy_view(back)) + 2
    assert "fused 4@150+7@90 (pool 2), linear" in describe_best(df)


def test_tables_without_fused_rows_load_as_before(tmp_path):
    path = tmp_path / "old.csv"
    pd.DataFrame(
        [
            dict(
                model="m",
                dataset="d",
                t=10,
                layer="mid_block",
                layer_index=4,
                pool="2",
                head="linear",
                split="test",
                metric="top1",
                value=0.5,
            )
        ]
    ).to_csv(path, index=False)
    back = load_table(path)
    assert back["t"].dtype.kind in "if" and len(accuracy_view(back)) == 1


def test_dift_ensemble_rows_in_the_sweep(ws):
    acc = ws.sweep([90], [4], 2, "linear", seeds=[0, 1], baselines=False)
    feat = ws.sweep([90], [4], 2, "linear", seeds=[0, 1], baselines=False, seed_average="features")
    draws = lambda d: d[d["metric"] == "draws"]["value"].tolist()  # noqa: E731
    assert draws(acc) == [2.0] and draws(feat) == [1.0]
    assert feat[feat["metric"] == "ensemble"]["value"].tolist() == [2.0]
    mean = Fused((ws.setting(90, 4, 2, 0), ws.setting(90, 4, 2, 1)), "mean")
    top1 = feat[feat["metric"] == "top1"]["value"].iloc[0]
    assert ws.evaluate([mean], "linear")[mean].top1 == pytest.approx(top1)
    assert np.isfinite(top1)


def test_sweep_cli_fuse(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "r.csv"
    rc = main(
        [
            "sweep",
            "--model",
            str(tiny_model_dir),
            "--dataset",
            "digits",
            "--limit",
            "60",
            "--timesteps",
            "90,150",
            "--layers",
            "4,7",
            "--heads",
            "linear",
            "--no-baselines",
            "--fuse",
            "4@150+7@90",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    back = load_table(out)
    assert "4@150+7@90" in set(back["layer"])
    assert (
        main(
            [
                "sweep",
                "--model",
                str(tiny_model_dir),
                "--dataset",
                "digits",
                "--limit",
                "60",
                "--timesteps",
                "90",
                "--layers",
                "4",
                "--heads",
                "linear",
                "--no-baselines",
                "--fuse",
                "4@150",
                "--out",
                str(out),
            ]
        )
        != 0
    )
    assert "one member" in capsys.readouterr().err


@pytest.mark.slow
def test_compare_page_adds_the_fused_setting_as_a_third_column():
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    from explorer.defaults import DEFAULT_POOL
    from explorer.settings import Setting
    from explorer.ui.common import PAGES

    app = str(Path(__file__).resolve().parents[2] / "app.py")
    at = AppTest.from_file(app, default_timeout=600)
    at.query_params.update(
        {
            "model": "ddpm-digits",
            "dataset": "digits",
            "train": "300",
            "test": "100",
            "proj": "pca",
            "mode": "blocks",
            "t": "100",
        }
    )
    at.switch_page(PAGES["compare"])
    at.run()
    assert not at.exception and not [m for m in at.metric if m.label == "A+B (fused)"], (
        "off by default"
    )
    at.toggle(key="compare_fused").set_value(True).run()
    assert not at.exception and not at.error, [e.value for e in [*at.exception, *at.error]]
    a, b = at.selectbox(key="compare_block").value, at.selectbox(key="compare_block2").value
    ws = link_workspace()
    f = Fused((Setting(100, a, DEFAULT_POOL), Setting(100, b, DEFAULT_POOL)))
    r = ws.evaluate([f], "linear")[f]
    shown = [m.value for m in at.metric if m.label == "A+B (fused)"]
    assert shown == [f"{100 * r.top1:.2f}%"], "the third column is the core's fused result"
    assert any("A+B" in c.value and "points" in c.value for c in at.caption), (
        "paired words vs A and B"
    )
