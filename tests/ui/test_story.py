"""The demo tells one story (issue 26): the cell you pick is the one that opens, the same number
on every page with its limits said, one timestep set everywhere, Compare on trained vs random.

Pure parts (the story line, the heatmap's click layer, the curves' colours and legend, the
selection link) run on small tables; the pages run through AppTest on the built-in digits
model with small limits (300 train / 100 test), sharing one cache per module.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from explorer import defaults as D
from explorer import figures, shipped
from explorer.results import accuracy_view
from explorer.ui import selection, services
from explorer.ui.sidebar import UPLOAD_DATASET
from explorer.ui.story import story
from tests.ui.apptest import assert_clean, open_page, plotly_array

SHIPPED_LINE = (
    "Best on validation: block 7, t=10 — 86.9% vs pixels 82.5% (+4.4 [3.8, 5.1]), "
    "full test set (10,000 images)"
)


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("story-cache")


@pytest.fixture(autouse=True)
def _cache(shared_cache, monkeypatch):
    monkeypatch.setenv("EXPLORER_CACHE", str(shared_cache))


def chart(at: AppTest, title: str) -> dict:
    """The plotly figure (JSON) on the page whose title contains `title`."""
    for c in at.get("plotly_chart"):
        spec = json.loads(c.proto.spec)
        text = spec["layout"].get("title", {})
        if title in (text.get("text", "") if isinstance(text, dict) else str(text)):
            return spec
    raise AssertionError(f"no figure titled '{title}' on the page")


# --- pure ------------------------------------------------------------------------------------------


def test_the_story_line_is_the_shipped_sweeps_best_on_validation():
    csv = shipped.TABLES[("ddpm-fashion-mnist", "fashion-mnist")]
    table = services.read_table(csv)
    wide = accuracy_view(table)
    mine = wide[(wide["model"] == "ddpm-fashion-mnist") & (wide["head"] == "linear")]
    best = mine.sort_values(["val_top1", "t", "layer_index"], ascending=[False, True, True]).iloc[0]
    px = wide[(wide["model"] == "pixels") & (wide["head"] == "linear")]["top1"].iloc[0]
    d, lo, hi = (100 * best[f"vs_pixels{s}"] for s in ("", "_low", "_high"))
    expected = (
        f"Best on validation: block {best['layer_index']}, t={int(best['t'])} — "
        f"{100 * best['top1']:.1f}% vs pixels {100 * px:.1f}% ({d:+.1f} [{lo:.1f}, {hi:.1f}]), "
        "full test set (10,000 images)"
    )
    told = story(
        table,
        "ddpm-fashion-mnist",
        head="linear",
        pool="2",
        train_limit=6000,
        test_limit=None,
        test_images=10_000,
    )
    assert told.line() == expected, told.line()
    if shipped.sha256(csv).startswith("sha256:127ba396"):  # the table issue 26 quotes
        assert told.line() == SHIPPED_LINE, told.line()
    assert told.is_setting(int(best["t"]), best["layer"], "2")
    assert not told.is_setting(int(best["t"]) + 1, best["layer"], "2")
    assert told.limits_differ(2000, 1000) and not told.limits_differ(6000, None), (
        "the app's default limits are not the sweep's"
    )
    assert told.limits_text() == "6,000 train / all test images"


def test_one_timestep_set_everywhere():
    assert D.timestep_grid(1000) == list(D.SWEEP_TIMESTEPS) == [10, 50, 90, 150, 300]
    assert D.timestep_defaults(1000) == D.timestep_grid(1000), "the Sweep plan's default"
    view = __import__("explorer.warm", fromlist=["default_view"]).default_view(
        [f"b{i}" for i in range(13)], ["down"] * 6 + ["mid"] + ["up"] * 6, 1000
    )
    assert [s[0] for s in view.sim_times] == D.timestep_grid(1000), "Similarity's t x t map"


def _tiny_sweep() -> pd.DataFrame:
    rows = []
    for t in (10, 50):
        for idx, layer in enumerate(["down_blocks.0", "mid_block", "up_blocks.0"], start=1):
            base = dict(model="m", dataset="d", t=t, layer=layer, layer_index=idx, pool="2")
            acc = 0.5 + 0.1 * idx - t / 1000
            rows += [
                {**base, "head": "linear", "split": "test", "metric": m, "value": v}
                for m, v in (("top1", acc), ("ci_low", acc - 0.02), ("ci_high", acc + 0.02))
            ]
            rows.append({**base, "head": "linear", "split": "val", "metric": "top1", "value": acc})
    return accuracy_view(pd.DataFrame(rows))


def test_heatmap_cells_are_clickable_and_the_selected_one_is_outlined():
    wide = _tiny_sweep()
    fig = figures.sweep_heatmap(wide, {"pixels": 0.55}, selected="50|down_blocks.0")
    layer = [t for t in fig.data if t.type == "scatter" and t.name == "cells"]
    assert layer, "an invisible layer of cell centres takes the clicks (heatmaps report none)"
    ids = {row[1] for row in layer[0].customdata}
    assert ids == {figures.cell_id(t, n) for t, n in zip(wide["t"], wide["layer"], strict=True)}
    assert fig.layout.clickmode == "event+select" and fig.layout.hoverdistance == -1, (
        "a click anywhere picks the nearest cell"
    )
    event = {"selection": {"points": [{"customdata": list(layer[0].customdata[2])}]}}
    assert figures.clicked_cell(event) == layer[0].customdata[2][1]
    assert figures.clicked_cell({"selection": {"points": []}}) is None
    dotted = [s for s in fig.layout.shapes if s.line.dash == "dot"]
    assert len(dotted) == 1, "the selected cell is outlined"
    ticks = fig.data[0].colorbar.ticktext
    assert all("◀" not in t and "<br>" not in t for t in ticks), (
        f"baselines are named in the note, not stacked on the colour bar: {ticks}"
    )


def test_curves_have_distinct_colours_and_a_legend_that_never_covers_the_plot():
    rows = []
    for idx in range(1, 14):
        for t in (10, 50, 90):
            rows.append(dict(t=t, layer=f"block{idx}", layer_index=idx, top1=0.8, ci_low=0.79))
    wide = pd.DataFrame(rows).assign(ci_high=0.81)
    fig = figures.accuracy_vs_timestep(
        wide, {"pixels": 0.8, "random:m best on val": 0.79}, width=400
    )
    colours = [t.line.color for t in fig.data if t.mode == "lines+markers"]
    assert len(colours) == 13 and len(set(colours)) == 13, "13 blocks, 13 colours"
    assert not fig.layout.annotations, "no baseline label drawn over the curves"
    assert fig.layout.legend.yref == "container" and fig.layout.legend.y == 0, "legend at the foot"
    plot = fig.layout.height - fig.layout.margin.t - fig.layout.margin.b
    assert plot >= 280, f"the plot keeps its height under a 15-entry legend: {plot}px"
    snr = figures.accuracy_vs_timestep(wide, log_snr={10: 5.0, 50: 2.0, 90: 1.0}, width=400)
    assert "log SNR" in snr.layout.xaxis.title.text and list(snr.data[0].x) == [5.0, 2.0, 1.0]


def test_the_selection_round_trips_through_the_link_and_marks_wrong_predictions():
    pos = [0, 1, 2, 3, 7, 9, 10]
    assert selection.encode(pos) == "0-3.7.9-10"
    assert selection.decode("0-3.7.9-10", 11) == pos
    with pytest.raises(ValueError, match="outside"):
        selection.decode("5-20", 11)
    html = selection.tiles_html(
        ["data:image/png;base64,x"] * 2, ["T-shirt/top", "Bag"], ["T-shirt/top", "Coat"]
    )
    tiles = html.split("<figure")[1:]
    assert "dfe-wrong" not in tiles[0] and "✓" in tiles[0], "right: green and ✓"
    assert "dfe-wrong" in tiles[1] and "✗" in tiles[1], "wrong: red and ✗"
    assert "white-space: nowrap" in html, "captions never wrap inside a word"


# --- pages (AppTest) ---------------------------------------------------------------------------


def test_timesteps_snap_to_the_shipped_grid_and_a_box_takes_any_other():
    at = open_page()
    assert_clean(at, "explore")
    slider = at.select_slider(key="explore_t")
    assert [int(o) for o in slider.options] == D.timestep_grid(1000), "snapping marks"
    at.number_input(key="explore_t_box").set_value(37).run()
    assert_clean(at, "explore at t=37")
    assert at.query_params["t"] == "37" and at.select_slider(key="explore_t").value == 37
    at.select_slider(key="explore_t").set_value(90).run()
    assert at.number_input(key="explore_t_box").value == 90, "the box follows the slider"
    sweep = open_page("sweep")
    assert [int(t) for t in sweep.multiselect(key="sweep_ts").value] == D.timestep_grid(1000), (
        "the Sweep plan starts on the same set"
    )


def test_the_selected_sweep_cell_is_the_one_that_opens():
    at = open_page("sweep", baselines="0")
    at.multiselect(key="sweep_ts").set_value([10, 50])
    at.multiselect(key="sweep_blocks").set_value(["mid_block", "up_blocks.0.resnets.1"])
    at.button(key="sweep_run").click().run()
    assert_clean(at, "first sweep")
    cells = at.selectbox(key="sweep_cell")
    pick = [o for o in cells.options if o.startswith("t=50 ") and "mid_block" in o]
    assert pick, f"the cell list names cells: {cells.options}"
    cells.set_value("50|mid_block").run()
    assert at.query_params["cell"] == "50|mid_block", "the selection is in the link"
    at.multiselect(key="sweep_ts").set_value([10, 50, 90])  # a new sweep, more cells
    at.button(key="sweep_run").click().run()
    assert_clean(at, "second sweep")
    assert at.selectbox(key="sweep_cell").value == "50|mid_block", "the pick survives a Compute"
    at.button(key="sweep_open").click().run()
    assert_clean(at, "explore opened from the sweep")
    assert at.select_slider(key="explore_t").value == 50, "the cell picked is the one that opens"
    assert at.selectbox(key="explore_block").value == "mid_block"
    assert at.query_params["tl"] == "0", "Across timesteps is off: one setting opens fast"


def test_compare_opens_on_trained_vs_random_with_training_drawn_as_a_gain():
    at = open_page("compare")
    assert_clean(at, "compare")
    assert at.radio(key="compare_mode").value == "random", "trained vs random first"
    delta = chart(at, "gain from training")
    bars = delta["data"][0]
    y = plotly_array(bars["y"])
    assert len(plotly_array(bars["error_y"]["array"])) == len(y) == 10, "an interval per class"
    sides = [h.value for h in at.get("html") if h.value.startswith("<div class='dfe-side'")]
    assert len(sides) == 2 and "random weights" in sides[0] and "trained" in sides[1], sides
    trained = plotly_array(chart(at, "Per-class accuracy, B")["data"][0]["y"])
    random = plotly_array(chart(at, "Per-class accuracy, A")["data"][0]["y"])
    assert np.allclose(y, trained - random, atol=1e-6), (
        "the bars are trained − random: training helped is drawn positive"
    )


def _fake_shipped(tmp_path: Path) -> Path:
    """A shipped-sweep table for the digits pair (made at 300 train / all test images)."""
    rows = []
    for t, acc in ((10, 0.91), (50, 0.89)):
        base = dict(model="ddpm-digits", dataset="digits", t=t, layer="mid_block", layer_index=7)
        rows += [
            {**base, "pool": "2", "head": "linear", "split": s, "metric": "top1", "value": acc}
            for s in ("test", "val")
        ]
    px = dict(model="pixels", dataset="digits", t=None, layer="pixels", layer_index=0)
    rows.append(
        {**px, "pool": "full", "head": "linear", "split": "test", "metric": "top1", "value": 0.85}
    )
    csv = tmp_path / "digits-sweep.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    side = {"sha256": shipped.sha256(csv), "train_images": 300, "test_images": 360}
    shipped.sidecar_path(csv).write_text(json.dumps(side))
    return csv


def test_explore_tells_the_story_and_takes_the_sweeps_limits_in_one_click(tmp_path, monkeypatch):
    monkeypatch.setenv("EXPLORER_CACHE", str(tmp_path / "cache"))  # no sweep of the user's own
    monkeypatch.setitem(shipped.TABLES, ("ddpm-digits", "digits"), _fake_shipped(tmp_path))
    at = open_page(t="50")
    assert_clean(at, "explore")
    line = [m.value for m in at.markdown if "Best on validation" in m.value]
    assert line and "block 7, t=10 — 91.0% vs pixels 85.0%" in line[0], line
    notice = [w.value for w in at.warning if "the sweep used" in w.value]
    assert notice and "300 train / all test images" in notice[0], [w.value for w in at.warning]
    assert at.button(key="explore_open_best"), "t=50 is not the best: a button opens it"
    at.button(key="explore_sweep_limits").click().run()
    assert_clean(at, "explore at the sweep's limits")
    assert at.query_params["test"] == "all" and at.query_params["train"] == "300", (
        "one click sets the sweep's limits"
    )
    assert not [w for w in at.warning if "the sweep used" in w.value], "the notice is gone"
    compare = open_page("compare")
    assert [m for m in compare.markdown if "Best on validation" in m.value], "Compare tells it too"


def _zip_of_colour_images(n_per_class: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for cls, colour in (("red", (220, 30, 30)), ("blue", (30, 30, 220))):
            for i in range(n_per_class):
                png = io.BytesIO()
                Image.new("RGB", (32, 32), colour).save(png, format="PNG")
                z.writestr(f"{cls}/{i}.png", png.getvalue())  # no top folder: named by the file
    return buf.getvalue()


def test_an_upload_is_named_by_its_file_and_warned_about_and_counted():
    at = open_page("data")
    at.sidebar.selectbox(key="side_dataset").set_value(UPLOAD_DATASET).run()
    at.sidebar.file_uploader(key="side_upload").set_value(
        ("my colours.zip", _zip_of_colour_images(6), "application/zip")
    )
    at.run()
    assert not at.exception, f"no exception: {at.exception}"
    said = [s.value for s in at.sidebar.success]
    assert any("12 images extracted from `my colours.zip`" in s for s in said), said
    assert any(h.value == "Dataset: my_colours" for h in at.subheader), (
        f"named by the file: {[h.value for h in at.subheader]}"
    )
    warned = " ".join(w.value for w in at.warning)
    assert "32×32 colour" in warned and "1×16×16 (grayscale)" in warned, warned  # ddpm-digits
    used = " ".join(c.value for c in at.sidebar.caption)
    assert "Using" in used and "all the dataset has" in used, used
    assert "1 images" not in " ".join(c.value for c in at.caption), "singular when one"


def test_two_models_are_linked_by_depth_and_log_snr():
    from explorer.ui.link_models import linked_block, linked_t

    assert linked_block(6, 13, 9) == 4 and linked_block(0, 13, 5) == 0
    assert linked_block(12, 13, 5) == 4, "last to last"
    snr_a = lambda t: 10.0 - t  # noqa: E731 - a toy schedule: log SNR falls with t
    assert linked_t(3, snr_a, np.array([np.inf, 9.0, 7.2, 5.0, -np.inf])) == 2, "7 -> 7.2"
    at = open_page("compare", mode="models", model2="random:ddpm-digits")
    assert_clean(at, "two models")
    linked = [c.value for c in at.caption if c.value.startswith("B is linked to A")]
    assert linked and "block 7 of 13" in linked[0], linked
    sides = [h.value for h in at.get("html") if h.value.startswith("<div class='dfe-side'")]
    assert "random:ddpm-digits" in sides[1] and "ddpm-digits" in sides[0], sides
