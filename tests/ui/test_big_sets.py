"""Big sets in the app: limits of "all" (sidebar, link, CLI), WebGL point clouds, bounded views,
and the caption naming UMAP's fit subsample."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import pytest
import umap
from PIL import Image
from streamlit.testing.v1 import AppTest

from explorer import figures
from explorer.analysis import embed
from explorer.cli import options
from explorer.ui import sidebar, timelapse

APP = str(Path(__file__).resolve().parents[2] / "app.py")


# --- "all" as a limit ------------------------------------------------------------------------------


def test_limit_text_accepts_all_and_says_why_not():
    assert [sidebar.limit_text(r) for r in ("all", " ALL ", "0", "", "none")] == ["all"] * 5
    assert sidebar.limit_text(" 300 ") == "300"
    for raw, why in [
        ("lots", "not a whole number of images"),
        ("-5", "negative limit -5"),
        ("1e3", "not a whole number"),
        (str(sidebar.MAX_LIMIT + 1), "over the maximum"),
    ]:
        with pytest.raises(ValueError, match=why):
            sidebar.limit_text(raw)


def test_cli_limit_accepts_all():
    p = argparse.ArgumentParser()
    options.data_args(p)
    assert p.parse_args(["--limit", "all"]).limit is None
    assert p.parse_args(["--limit", "ALL"]).limit is None
    assert p.parse_args(["--limit", "500"]).limit == 500
    assert p.parse_args([]).limit is None
    with pytest.raises(SystemExit):
        p.parse_args(["--limit", "lots"])


# --- pure figures ----------------------------------------------------------------------------------


def test_embedding_scatter_is_webgl_and_keeps_every_point():
    rng = np.random.default_rng(0)
    n = 7_000
    xy, y = rng.normal(size=(n, 2)), np.arange(n) % 10
    names = [f"c{i}" for i in range(10)]
    fig = figures.embedding_scatter(xy, y, names, (y + 1) % 10)
    assert all(isinstance(t, go.Scattergl) for t in fig.data), "point clouds are WebGL"
    few = figures.embedding_scatter(xy[:50], y[:50], names)
    assert all(isinstance(t, go.Scattergl) for t in few.data), "small clouds too"
    svg = figures.embedding_scatter(xy[:50], y[:50], names, webgl=False)
    assert all(type(t) is go.Scatter for t in svg.data), "SVG on request"
    positions = sorted(int(c[0]) for t in fig.data for c in t.customdata)
    assert positions == list(range(n)), "every point once, by test position"
    assert fig.data[0].marker.size < 6, "markers shrink for a big cloud"


def test_timelapse_is_svg_when_small_webgl_when_big_and_keeps_test_positions():
    small = timelapse.timelapse_figure(np.zeros((2, 30, 2)), [1, 2], np.arange(30) % 3, "abc")
    assert type(small.data[0]) is go.Scatter, "small: SVG, whose points glide between frames"
    n = figures.WEBGL_MIN_POINTS + 10
    labels = np.arange(n) % 3
    pos = np.arange(n) * 7  # a subsample's test positions
    emb = np.random.default_rng(0).normal(size=(2, n, 2))
    big = timelapse.timelapse_figure(emb, [1, 2], labels, "abc", positions=pos)
    assert all(isinstance(t, go.Scattergl) for t in big.data), "big: WebGL"
    assert all(isinstance(t, go.Scattergl) for t in big.frames[1].data), "frames too"
    assert list(big.data[0].ids[:2]) == ["0", "21"] and list(big.data[0].customdata[:2]) == [0, 21]
    with pytest.raises(ValueError, match="positions"):
        timelapse.timelapse_figure(emb, [1, 2], labels, "abc", positions=pos[:5])


def test_timelapse_animates_a_stratified_subsample_of_a_big_split():
    y = np.arange(12_000) % 10
    assert timelapse.shown_rows(y[:4_000]) is None, "all points under the cap"
    rows = timelapse.shown_rows(y)
    assert len(rows) == timelapse.TIMELAPSE_MAX_POINTS
    assert np.bincount(y[rows]).tolist() == [timelapse.TIMELAPSE_MAX_POINTS // 10] * 10


# --- the app with limit "all" on a small folder dataset -------------------------------------------


def _folder(root: Path, classes=("a", "b", "c"), n: int = 40) -> str:
    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8)).save(
                root / c / f"{i}.png"
            )
    return str(root)


class _FakeUMAP:
    """A quick stand-in for umap.UMAP (numba compiles for tens of seconds on a cold process)."""

    def __init__(self, **kwargs):
        pass

    def fit(self, x):
        self.embedding_ = np.asarray(x[:, :2], dtype=np.float32)
        return self

    def fit_transform(self, x):
        return self.fit(x).embedding_

    def transform(self, x):
        return np.asarray(x[:, :2], dtype=np.float32)


def _errors(at: AppTest) -> list[str]:
    return [e.value for e in at.error] + [str(e.value) for e in at.exception]


def test_explore_with_limit_all_round_trips_and_names_the_umap_subsample(
    tmp_path, tiny_model_dir, monkeypatch
):
    monkeypatch.setattr(umap, "UMAP", _FakeUMAP)
    monkeypatch.setattr(embed, "UMAP_FIT_CAP", 10)
    data = _folder(tmp_path / "imgs")
    at = AppTest.from_file(APP, default_timeout=600)
    link = {"model": str(tiny_model_dir), "dataset": data, "train": "all", "test": "all"}
    at.query_params.update(link | {"t": "10", "proj": "umap"})
    at.run()
    assert not _errors(at), _errors(at)
    assert at.sidebar.text_input(key="side_train").value == "all"
    assert (at.query_params["train"], at.query_params["test"]) == ("all", "all"), "round trip"
    head = next(c.value for c in at.caption if "train /" in c.value)
    assert "96 train / 24 test images" in head, f"the whole splits are used: {head}"

    embed.wait_for_umaps()
    at.run()  # the page picks up the background UMAP
    assert not _errors(at), _errors(at)
    notes = [c.value for c in at.caption if "UMAP fitted on" in c.value]
    assert notes and "subsample of 10 of the 24 points" in notes[0], [c.value for c in at.caption]

    at.sidebar.text_input(key="side_train").set_value("lots").run()
    errs = _errors(at)
    assert len(errs) == 1 and "Train images 'lots': not a whole number of images" in errs[0], errs
    assert "\n" not in errs[0] and at.query_params["train"] == "all", "the link keeps 'all'"
    at.sidebar.text_input(key="side_train").set_value("30").run()
    assert not _errors(at) and at.query_params["train"] == "30"
    at.sidebar.text_input(key="side_train").set_value("0").run()
    assert not _errors(at) and at.query_params["train"] == "all", "0 is written as all"


@pytest.mark.slow
@pytest.mark.parametrize("page", ["explore", "sweep", "compare", "similarity", "data"])
def test_every_page_opens_on_the_whole_digits_set(page, monkeypatch):
    """The built-in digits with train=all&test=all (1,438 / 359 images): every page draws
    without an error and keeps "all" in its link; point clouds are WebGL."""
    from explorer.ui.common import PAGES

    monkeypatch.setattr(umap, "UMAP", _FakeUMAP)
    at = AppTest.from_file(APP, default_timeout=900)
    at.query_params.update({"model": "ddpm-digits", "dataset": "digits"})
    at.query_params.update({"train": "all", "test": "all"})
    if page != "explore":
        at.switch_page(PAGES[page])
    at.run()
    embed.wait_for_umaps()
    at.run()
    assert not _errors(at), f"{page}: {_errors(at)}"
    assert (at.query_params["train"], at.query_params["test"]) == ("all", "all"), page
    if page == "explore":
        assert [m.value for m in at.metric if m.label == "Test images"] == ["359"]
    if page == "data":
        assert any("Using 1,438 train images and 359 test images" in c.value for c in at.caption)
    clouds = [
        t
        for chart in at.get("plotly_chart")
        for t in json.loads(chart.proto.spec)["data"]
        if t.get("mode") == "markers"
    ]
    assert all(t["type"] == "scattergl" for t in clouds), f"{page}: {[t['type'] for t in clouds]}"
    if page in ("explore", "compare"):  # the images-as-points view: one panel per setting
        views = [
            json.loads(e.proto.json_args)
            for e in at.get("component_instance")
            if "explorer_points_view" in e.proto.component_name
        ]
        n = sum(v["n"] * len(v["titles"]) for v in views)
        assert n == 359 * (2 if page == "compare" else 1), f"{page}: every test point drawn ({n})"


class _FakeAligned:
    """umap.AlignedUMAP stand-in: the first two input dims, shifted by the set's position."""

    sizes: list = []

    def __init__(self, **kwargs):
        pass

    def fit(self, xs, relations):
        type(self).sizes.append([len(x) for x in xs])
        self.embeddings_ = [np.asarray(x[:, :2]) + k for k, x in enumerate(xs)]
        return self


def test_timelapse_animates_a_subsample_of_a_split_over_its_cap(
    tmp_path, tiny_model_dir, monkeypatch
):
    monkeypatch.setattr(umap, "AlignedUMAP", _FakeAligned)
    monkeypatch.setattr(timelapse, "TIMELAPSE_MAX_POINTS", 12)
    _FakeAligned.sizes = []
    data = _folder(tmp_path / "imgs")
    at = AppTest.from_file(APP, default_timeout=600)
    link = {"model": str(tiny_model_dir), "dataset": data, "train": "all", "test": "all"}
    at.query_params.update(link | {"t": "10", "proj": "pca", "tl": "1"})
    at.query_params["ts"] = ["10", "50"]
    at.run()
    assert not _errors(at), _errors(at)
    assert _FakeAligned.sizes == [[12, 12]], "the aligned UMAP is fitted on the subsample"
    note = [c.value for c in at.caption if "Animated:" in c.value]
    assert note and "subsample of 12 of the 24 test images" in note[0], note
    spec = json.loads(at.get("plotly_chart")[-1].proto.spec)
    ids = sorted(int(i) for t in spec["data"] if t.get("ids") for i in t["ids"])
    assert len(ids) == 12 and max(ids) < 24, f"12 test positions animated: {ids}"
    assert len(set(ids)) == 12
