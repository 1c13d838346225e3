"""The pure figure functions: tidy tables or arrays in, plotly figures (or HTML) out."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from explorer import figures

NAMES = ["cat", "dog", "fox"]


def _wide() -> pd.DataFrame:
    """accuracy_view-like rows of one model/head/pool: 2 blocks x 3 timesteps."""
    rows = []
    for idx, layer in [(3, "down_blocks.1.resnets.0"), (7, "mid_block")]:
        for t in (10, 100, 500):
            top1 = 0.5 + idx / 100 + t / 10000
            rows.append(
                {
                    "model": "m",
                    "dataset": "d",
                    "t": float(t),
                    "layer": layer,
                    "layer_index": idx,
                    "pool": "1",
                    "head": "linear",
                    "top1": top1,
                    "ci_low": top1 - 0.02,
                    "ci_high": top1 + 0.02,
                    "top1_std": 0.0,
                }
            )
    return pd.DataFrame(rows)


def test_class_colors_are_distinct_and_stable():
    for n in (3, 10, 20, 40):
        colors = figures.class_colors(n)
        assert len(colors) == n, f"one colour per class for n={n}"
        assert len(set(colors)) == n, f"colours must be distinct for n={n}"
    assert figures.class_colors(3) == figures.class_colors(10)[:3], (
        "class k keeps its colour whatever n is"
    )


def test_per_class_bars_in_percent_with_class_colours():
    fig = figures.per_class_bars(NAMES, np.array([1.0, 0.5, np.nan]), top1=0.75)
    bar = fig.data[0]
    assert list(bar.y[:2]) == [100.0, 50.0], "per-class accuracy is drawn in percent"
    assert list(bar.marker.color) == figures.class_colors(3), "bars use the class colours"
    assert bar.text[2] == "–", "a class without test images shows a dash, not nan"
    assert "top-1 75.0%" in fig.layout.title.text and not fig.layout.annotations, (
        "the top-1 line is named in the title, never by a label over a bar"
    )


def test_confusion_heatmap_rows_are_true_classes():
    cm = np.array([[8, 2, 0], [0, 5, 5], [0, 0, 10]])
    fig = figures.confusion_heatmap(cm, NAMES)
    z = np.asarray(fig.data[0].z)
    assert np.allclose(z.sum(axis=1), 1.0), "shading is the row-normalised rate"
    assert np.asarray(fig.data[0].text).tolist() == cm.tolist(), "cells show raw counts"


def test_embedding_scatter_traces_per_class_and_selection_round_trip():
    xy = np.arange(12, dtype=float).reshape(6, 2)
    labels = np.array([0, 1, 2, 0, 1, 2])
    pred = np.array([0, 1, 1, 0, 2, 2])
    fig = figures.embedding_scatter(xy, labels, NAMES, pred)
    assert [t.name for t in fig.data] == NAMES, "one trace per class, in class order"
    assert [int(c[0]) for c in fig.data[0].customdata] == [0, 3], (
        "customdata carries test positions"
    )
    assert fig.data[2].customdata[0][1] == "dog", "customdata carries the predicted class name"


def test_most_confused_orders_off_diagonal_cells():
    cm = np.array([[9, 1, 0], [4, 6, 0], [0, 2, 8]])
    assert figures.most_confused(cm, k=2) == [(1, 0, 4), (2, 1, 2)], (
        "largest off-diagonal counts first"
    )
    assert figures.most_confused(np.eye(3, dtype=int) * 5) == [], (
        "a perfect probe has no confusions"
    )


def test_sweep_figures_mark_baselines_and_best_cell():
    wide = _wide()
    # validation prefers (block 3, t=100), not the best test cell (block 7, t=500)
    wide["val_top1"] = [0.6, 0.9, 0.6, 0.6, 0.6, 0.6]
    # paired intervals vs pixels: above 0, straddling 0, below 0, then absent
    wide["vs_pixels"] = [0.02, 0.005, -0.03, np.nan, np.nan, np.nan]
    wide["vs_pixels_low"] = [0.01, -0.01, -0.05, np.nan, np.nan, np.nan]
    wide["vs_pixels_high"] = [0.03, 0.02, -0.01, np.nan, np.nan, np.nan]
    base = {"pixels": 0.52, "random:m best": 0.55}
    heat = figures.sweep_heatmap(wide, base)
    z = np.asarray(heat.data[0].z, dtype=float)
    assert z.shape == (2, 3), "rows = blocks, columns = timesteps"
    assert z[1, 2] == pytest.approx(100 * (0.5 + 0.07 + 0.05)), (
        "cell (mid_block, t=500) holds its top-1 in %"
    )
    assert "pixels 52.0%" in heat.layout.title.text, "baselines are named on the heatmap"
    assert all(t.isdigit() for t in heat.data[0].colorbar.ticktext), (
        "plain ticks on the colour bar: close baselines' labels would overlap there"
    )
    rect = heat.layout.shapes[0]
    assert (rect.x0 + 0.5, rect.y0 + 0.5) == (1, 0), "the cell best on validation is outlined"
    text = heat.data[0].text
    assert text[0][0].endswith("▲"), "an interval above 0 earns the mark"
    assert not any(t.endswith("▲") for t in [*text[0][1:], *text[1]]), (
        "no mark within noise, below pixels, or without an interval (even above the pixel line)"
    )
    assert "best on validation" in heat.layout.title.text and "paired" in heat.layout.title.text
    assert "vs pixels [+1.00, +3.00]: beyond noise" in heat.data[0].customdata[0][0], (
        "hover says it in words"
    )
    assert "within noise" in heat.data[0].customdata[0][1]
    old = figures.sweep_heatmap(_wide(), base)
    assert not old.layout.shapes and "no best marked" in old.layout.title.text, (
        "an old table without validation accuracy gets no box and no ▲"
    )
    assert not any("▲" in t for row in old.data[0].text for t in row)
    vs_t = figures.accuracy_vs_timestep(wide, base)
    curves = [t for t in vs_t.data if t.mode == "lines+markers"]
    assert len(curves) == 2 and list(curves[0].x) == [10, 100, 500], "one curve per block over t"
    assert {t.name for t in vs_t.data if t.mode == "lines"} == {
        "pixels 52.0%",
        "random:m best 55.0%",
    }, "reference lines, named in the legend (never a label over the curves)"
    assert not vs_t.layout.annotations and len(vs_t.layout.shapes) == 2
    vs_b = figures.accuracy_vs_block(wide, base)
    assert [t.name for t in vs_b.data if t.mode == "lines+markers"] == ["t=10", "t=100", "t=500"], (
        "one curve per timestep over blocks"
    )


def test_delta_cka_and_sample_grid():
    d = figures.per_class_delta(NAMES, np.array([0.5, 0.9, 0.7]), np.array([0.6, 0.8, 0.7]))
    assert np.allclose(d.data[0].y, [10, -10, 0]), "delta is B - A in points"
    assert d.data[0].marker.color[1] == "#d62728", "a class that got worse is red"
    m = np.array([[1, 0.5], [0.5, 1]])
    assert np.allclose(figures.cka_heatmap(m, ["a", "b"], "x").data[0].z, m), (
        "CKA values are drawn as given"
    )
    rows = [[np.zeros((8, 8), np.uint8)] * 3, [np.full((8, 8), 255, np.uint8)] * 2]
    grid = figures.sample_grid(rows, ["zero", "one"])
    assert list(grid.layout.yaxis.ticktext) == ["zero", "one"], "class names label the rows"
    assert np.asarray(grid.data[0].z).shape == (20, 30, 3), (
        "2 rows x 3 columns of 8px tiles with 2px gaps"
    )


def test_sweep_baselines_pick_the_best_reference_rows():
    wide = pd.concat(
        [
            _wide(),
            pd.DataFrame(
                [
                    {
                        "model": "pixels",
                        "t": np.nan,
                        "layer": "pixels",
                        "layer_index": 0,
                        "pool": "full",
                        "head": "linear",
                        "top1": 0.4,
                    },
                    {
                        "model": "random:m",
                        "t": 10.0,
                        "layer": "mid_block",
                        "layer_index": 7,
                        "pool": "1",
                        "head": "linear",
                        "top1": 0.3,
                        "val_top1": 0.6,
                    },
                    {
                        "model": "random:m",
                        "t": 100.0,
                        "layer": "mid_block",
                        "layer_index": 7,
                        "pool": "1",
                        "head": "linear",
                        "top1": 0.35,
                        "val_top1": 0.5,
                    },
                    {
                        "model": "random:m",
                        "t": 100.0,
                        "layer": "mid_block",
                        "layer_index": 7,
                        "pool": "2",
                        "head": "linear",
                        "top1": 0.9,
                    },
                ]
            ),
        ]
    )
    base = figures.sweep_baselines(wide, "linear", "1", "random:m")
    assert base == {"pixels": 0.4, "random:m best on val": 0.3}, (
        "pixels for the head; random for head and pooling, chosen on validation (not test)"
    )
    no_val = wide.drop(columns="val_top1")
    assert figures.sweep_baselines(no_val, "linear", "1", "random:m") == {"pixels": 0.4}, (
        "without validation accuracy no random setting is picked (it would be on test)"
    )
    assert figures.sweep_baselines(wide, "knn", "1", "random:m") == {}, "no rows, no baselines"


def test_sample_grid_takes_images_of_any_shape():
    rows = [
        [np.zeros((6, 8), np.uint8), np.zeros((8, 8, 3), np.uint8)],
        [np.zeros((8, 4), np.uint8)],
    ]
    grid = figures.sample_grid(rows, ["wide", "tall"])
    assert np.asarray(grid.data[0].z).shape == (20, 20, 3), "each image sits in an 8x8 cell"


def test_fit_keeps_aspect_and_does_not_enlarge_thumbnails():
    from explorer.ui.services import fit

    img = np.zeros((10, 20, 1), np.uint8)
    assert fit(img, 40).shape == (20, 40, 1), "enlarged so the long side is 40"
    assert fit(img, 40, enlarge=False).shape == (10, 20, 1), (
        "thumbnails stay small (the browser scales)"
    )
    assert fit(np.zeros((200, 100, 3), np.uint8), 64).shape == (64, 32, 3), "large images shrink"


# --- readable at any width ------------------------------------------------------------------------


def test_abbreviate_long_names_at_a_word_boundary():
    assert figures.abbreviate("Ankle boot") == "Ankle boot", "short names are kept"
    assert figures.abbreviate("T-shirt/top") == "T-shirt…", "cut at a separator, marked"
    assert figures.abbreviate("abcdefghijklmnop") == "abcdefghi…", "no separator: cut mid-word"
    assert all(len(figures.abbreviate(n, 8)) <= 8 for n in ("golden retriever", "x" * 30))
    assert figures.short_layer("down_blocks.1.downsamplers.0") == "down1.ds0"
    assert figures.short_layer("up_blocks.0.resnets.1") == "up0.res1"
    assert figures.short_layer("mid_block") == "mid"


def test_confusion_heatmap_drops_cell_numbers_when_cells_get_small():
    names = [f"class {i}" for i in range(10)]
    cm = np.eye(10, dtype=int) * 100
    roomy = figures.confusion_heatmap(cm, names, width=figures.NARROW_WIDTH)
    assert roomy.data[0].texttemplate == "%{text}", "10 classes in 460 px: counts are written"
    many = [f"c{i}" for i in range(40)]
    dense = figures.confusion_heatmap(np.eye(40, dtype=int) * 100, many, width=460)
    assert dense.data[0].texttemplate is None, "40 classes in 460 px: no numbers"
    assert figures.confusion_heatmap(np.eye(40, dtype=int), many, width=1200).data[0].texttemplate
    hundred = figures.confusion_heatmap(np.eye(100, dtype=int), [f"c{i}" for i in range(100)])
    assert hundred.data[0].texttemplate is None, "without a width: numbers up to 20 classes"
    tall = figures.confusion_heatmap(np.eye(60, dtype=int), [f"c{i}" for i in range(60)])
    assert tall.layout.height >= 60 * figures.MIN_CELL_HEIGHT, "many classes: the figure grows"
    assert roomy.layout.height == 450, "10 classes keep the usual height"


def test_confusion_heatmap_abbreviates_long_class_names_with_full_names_in_hover():
    names = ["T-shirt/top", "Trouser", "Ankle boot"]
    fig = figures.confusion_heatmap(np.eye(3, dtype=int), names)
    assert list(fig.layout.xaxis.ticktext) == ["T-shirt…", "Trouser", "Ankle boot"]
    assert list(fig.layout.yaxis.ticktext) == list(fig.layout.xaxis.ticktext)
    assert list(fig.data[0].x) == names and list(fig.layout.xaxis.tickvals) == names, (
        "the data keep the full names, so the hover (%{x}, %{y}) shows them"
    )
    assert "%{x}" in fig.data[0].hovertemplate and "%{y}" in fig.data[0].hovertemplate
    bars = figures.per_class_bars(names, np.array([0.5, 0.6, 0.7]))
    assert list(bars.layout.xaxis.ticktext)[0] == "T-shirt…" and bars.data[0].x[0] == "T-shirt/top"
    assert bars.layout.uniformtext.minsize == figures.MIN_CELL_FONT, "bar labels never shrink"
    plain = figures.confusion_heatmap(np.eye(2, dtype=int), ["cat", "dog"])
    assert plain.layout.xaxis.ticktext is None, "nothing to abbreviate: plain category axis"


def test_sweep_heatmap_fits_a_narrow_figure():
    wide = _wide()
    base = {"pixels": 0.52, "random:m best on val": 0.521}
    heat = figures.sweep_heatmap(wide, base, width=figures.NARROW_WIDTH)
    assert list(heat.layout.yaxis.ticktext) == ["03 · down1.res0", "07 · mid"], "compact rows"
    assert list(heat.data[0].y)[1] == "07 · mid_block", "the hover keeps the full layer name"
    ticks = list(heat.data[0].colorbar.ticktext)
    assert all(t.isdigit() for t in ticks) and len(ticks) <= 6, f"plain, few ticks: {ticks}"
    title = heat.layout.title.text
    lines = title.split("<br>")
    assert len(lines) >= 3 and all(len(x) <= 75 for x in lines), f"notes wrap: {lines}"
    assert heat.layout.margin.t > 80, "the top margin makes room for them"
    assert heat.data[0].texttemplate == "%{text}", "5 timesteps in 460 px: numbers are written"


def test_cka_heatmap_writes_values_only_where_they_fit():
    m = np.eye(13)
    labels = [f"{i:02d}" for i in range(1, 14)]
    assert figures.cka_heatmap(m, labels, "x", width=400).data[0].texttemplate is None
    assert figures.cka_heatmap(m[:6, :6], labels[:6], "x", width=400).data[0].texttemplate
    long = figures.cka_heatmap(
        m, labels, "CKA between timesteps at 07 · mid_block · 128×7×7", width=400
    )
    assert "<br>" in long.layout.title.text, "a long title wraps to the figure's width"


def test_presentation_enlarges_every_font_and_keeps_the_original():
    fig = figures.per_class_bars(NAMES, np.array([1.0, 0.5, 0.7]), top1=0.75)
    big = figures.presentation(fig)
    size = round(figures.FONT * figures.PRESENT_SCALE)
    assert big.layout.font.size == size and big.layout.xaxis.tickfont.size == size
    assert big.layout.yaxis.title.font.size == size and big.layout.title.font.size > size
    assert "top-1 75.0%" in big.layout.title.text, "the top-1 line is named in the title"
    assert fig.layout.xaxis.tickfont.size is None, "the figure given is unchanged (exports)"
    cm = figures.presentation(figures.confusion_heatmap(np.eye(3, dtype=int), NAMES))
    assert cm.data[0].colorbar.tickfont.size == size, "colour bars too"


def test_maps_side_by_side_start_at_one_height_whatever_their_titles_wrap_to():
    m = np.eye(3)
    short = figures.cka_heatmap(m, "abc", "CKA at t=10", width=600)
    long = figures.cka_heatmap(
        m, "abc", "CKA between timesteps at " + "up_blocks.0.resnets.1 " * 3, width=600
    )
    assert long.layout.margin.t > short.layout.margin.t, "a longer title needs more room"
    need = long.layout.margin.t
    figures.same_top(short, long, None)
    assert short.layout.margin.t == long.layout.margin.t == need
