"""The HTML report: validation pick, figures inline, versions and checksum, workspace extras, CLI."""

from __future__ import annotations

import hashlib
import io
import re

import numpy as np
import pandas as pd
import pytest

from explorer.cli import main
from explorer.defaults import PIXELS
from explorer.errors import ExplorerError
from explorer.features.store import FeatureStore
from explorer.models.loader import load_model
from explorer.report import html_report, write_html_report
from explorer.results import COLUMNS
from explorer.settings import Setting
from explorer.workspace import Workspace
from tests.conftest import make_tiny_dataset


def _rows(model, t, layer, idx, test, val=None, head="linear", pool="2"):
    base = {
        "model": model,
        "dataset": "tiny",
        "t": t,
        "layer": layer,
        "layer_index": idx,
        "pool": pool,
        "head": head,
    }
    out = [
        {**base, "split": "test", "metric": m, "value": v}
        for m, v in (("top1", test), ("ci_low", test - 0.02), ("ci_high", test + 0.02))
    ]
    if val is not None:
        out.append({**base, "split": "val", "metric": "top1", "value": val})
    return out


def _table(model: str = "m") -> pd.DataFrame:
    rows = (
        _rows(model, 10, "mid_block", 4, 0.60, 0.90)
        + _rows(model, 10, "up_blocks.0.resnets.0", 5, 0.80, 0.50)  # best on test, not on val
        + _rows(model, 90, "mid_block", 4, 0.55, 0.70)
        + _rows(model, 90, "up_blocks.0.resnets.0", 5, 0.50, 0.60)
        + _rows("random:" + model, 10, "mid_block", 4, 0.40, 0.45)
        + _rows(PIXELS, None, PIXELS, 0, 0.45, 0.44, pool="full")
    )
    return pd.DataFrame(rows, columns=COLUMNS)


def _scripts(page: str) -> list[str]:
    return re.findall(r"<script[^>]*>", page)


def test_report_is_self_contained_and_picks_on_validation(tmp_path):
    csv = tmp_path / "results.csv"
    _table().to_csv(csv, index=False)
    out = write_html_report(
        _table(), tmp_path / "r.html", source=csv, command="explorer report --sweep x"
    )
    page = out.read_text()
    assert not [s for s in _scripts(page) if "src=" in s], "no external script: plotly.js is inline"
    assert len(page) > 3_000_000 and "Plotly.newPlot" in page, "plotly.js itself is in the page"
    assert page.count('class="plotly-graph-div"') == 3, "heatmap and two curve figures"
    best = re.search(r"<td>m</td><td>linear</td><td>([^<]*)</td>", page)
    assert best and best.group(1) == "t=10, block 4 (mid_block), pool 2", (
        "the validation pick, not test's"
    )
    assert "95% bootstrap interval" in page and "error_y" in page, (
        "the curves carry their intervals"
    )
    assert hashlib.sha256(csv.read_bytes()).hexdigest() in page, "the table's checksum"
    assert "explorer report --sweep x" in page and "torch" in page and "diffusers" in page
    assert "Per-class results and UMAP</h2><p class='missing'>Not available" in page, (
        "says what is missing"
    )


def test_report_rejects_what_the_table_lacks():
    with pytest.raises(ExplorerError, match="no head 'mlp'"):
        html_report(_table(), head="mlp")
    with pytest.raises(ExplorerError, match="nothing to report"):
        html_report(pd.DataFrame(columns=COLUMNS))


@pytest.mark.slow  # UMAP's first numba compilation takes ~20 s on 2 cores
def test_report_with_a_workspace_adds_per_class_and_umap(tiny_model_dir, tmp_path):
    ds = make_tiny_dataset(n=150)
    ws = Workspace(load_model(str(tiny_model_dir)), ds, store=FeatureStore(tmp_path / "c"))
    table = _table(ws.model.name)
    page = html_report(table, workspace=ws, compute=False)
    assert "features are not cached" in page, (
        "without compute, a missing setting is named, not computed"
    )
    page = html_report(table, workspace=ws)
    s = Setting(10, "mid_block", "2")
    res = ws.evaluate([s], "linear")[s]
    assert "Per-class accuracy" in page and "UMAP of the test features" in page
    assert f"Test top-1 {100 * res.top1:.2f}%" in page, "the per-class section is the cached probe"
    assert page.count('class="plotly-graph-div"') == 6, (
        "3 sweep figures + per-class, confusion, timestep profile"
    )
    assert page.count("PointsView.mount(") == 1, "the UMAP is drawn as images-as-points"
    assert "Timestep profile of block" in page, "the best block's timestep profile is shown"
    assert ws.model.fingerprint in page and "120 train / 30 test" in page
    again = html_report(table, workspace=ws, compute=False)
    assert "UMAP of the test features" in again, "from the caches once computed"


def test_cli_report(tmp_path, capsys):
    csv = tmp_path / "results.csv"
    _table().to_csv(csv, index=False)
    assert main(["report", "--sweep", str(csv), "--out", str(tmp_path / "r.html")]) == 0
    assert "<!DOCTYPE html>" in (tmp_path / "r.html").read_text()
    assert f"report --sweep {csv}" in (tmp_path / "r.html").read_text(), "the command is recorded"
    capsys.readouterr()
    assert main(["report", "--sweep", str(tmp_path / "missing.csv")]) == 2
    assert (
        main(["report", "--sweep", str(csv), "--pool", "8", "--out", str(tmp_path / "b.html")]) == 2
    )
    err = capsys.readouterr().err
    assert "not found" in err and "no pool '8'" in err and "Traceback" not in err
    assert not (tmp_path / "b.html").exists(), "no file written on bad input"


@pytest.mark.slow  # the real app on the built-in digits model (300 train / 100 test images)
def test_app_pages_offer_feature_downloads_and_the_report(monkeypatch):
    from pathlib import Path

    from streamlit.runtime.media_file_manager import MediaFileManager
    from streamlit.testing.v1 import AppTest

    from explorer.ui import services
    from explorer.ui.common import PAGES

    made, real = {}, MediaFileManager.add_deferred

    def spy(self, fn, mimetype, coordinates, file_name=None, **kw):
        made[file_name] = fn
        return real(self, fn, mimetype, coordinates, file_name, **kw)

    monkeypatch.setattr(MediaFileManager, "add_deferred", spy)
    link = {
        "model": "ddpm-digits",
        "dataset": "digits",
        "train": "300",
        "test": "100",
        "proj": "pca",
        "t": "10",
        "block": "mid_block",
        "pool": "2",
    }
    app = str(Path(__file__).resolve().parents[2] / "app.py")
    at = AppTest.from_file(app, default_timeout=600)
    at.query_params.update(link)
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.exception]
    npz = made["ddpm-digits_t10_mid_block_pool2.npz"]()
    with np.load(io.BytesIO(npz), allow_pickle=False) as z:
        assert z["features_train"].shape[0] == 300 and z["features_test"].shape[0] == 100
    assert all(
        len(made[f"ddpm-digits_t10_mid_block_pool2{s}"]()) > 0
        for s in (".safetensors", ".parquet", ".zip")
    ), "every Explore download has bytes"

    table = _table("ddpm-digits")
    path = services.sweep_path(services.Context("ddpm-digits", "digits", 300, 100))
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(path, index=False)
    at = AppTest.from_file(app, default_timeout=600)
    at.query_params.update(link)
    at.switch_page(PAGES["sweep"])
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.exception]
    page = made["report.html"]()
    assert page.startswith("<!DOCTYPE html>") and "Per-class accuracy" in page, (
        "the report with extras"
    )
    assert "t=10, block 4 (mid_block), pool 2" in page
