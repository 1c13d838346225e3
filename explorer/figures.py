"""Pure figure functions: tidy tables or arrays in, plotly figures out. No Streamlit here.

Accuracies arrive as fractions (0-1) and are drawn as percentages. Class colours come
from `class_colors`, so the same class has the same colour on every figure and page.
Embedding scatters are drawn with WebGL (`go.Scattergl`), so tens of thousands of points
render without freezing the browser; line charts (a point per t or block) stay SVG.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative, sample_colorscale

from explorer.defaults import PIXELS
from explorer.results import beats, best_on_validation, paired_words

WEBGL_MIN_POINTS = 1_000  # the timelapse turns WebGL from here (SVG below glides between frames)
_BELOW = dict(orientation="h", yanchor="top", y=-0.22, xanchor="left", x=0)
_LAYOUT = dict(margin=dict(l=10, r=10, t=50, b=10), template="plotly_white", font=dict(size=12))


def class_colors(n: int) -> list[str]:
    """`n` distinct colours, fixed per class index."""
    if n <= 10:
        return list(qualitative.Plotly[:n])
    if n <= 26:
        return list(qualitative.Alphabet[:n])
    return sample_colorscale("Turbo", [i / max(n - 1, 1) for i in range(n)])


def _pct(x) -> np.ndarray:
    return 100.0 * np.asarray(x, dtype=float)


def _bars(
    names: Sequence[str],
    y: np.ndarray,
    colors,
    text: list[str],
    hover: str,
    title: str,
    yaxis: dict,
) -> go.Figure:
    """One bar per class, values written above the bars, no legend."""
    fig = go.Figure(
        go.Bar(
            x=list(names),
            y=y,
            marker_color=colors,
            text=text,
            textposition="outside",
            hovertemplate=hover,
        )
    )
    fig.update_layout(
        title=title, yaxis=yaxis, xaxis=dict(type="category"), showlegend=False, **_LAYOUT
    )
    return fig


def _heatmap(
    z: np.ndarray,
    x: Sequence[str],
    y: Sequence[str],
    *,
    title: str,
    text,
    colorbar: dict,
    hover: str,
    colorscale: str = "Viridis",
    zmin: float = 0,
    zmax: float = 1,
    show_text: bool = True,
    xaxis: dict | None = None,
    yaxis: dict | None = None,
    customdata=None,
) -> go.Figure:
    """A heatmap on category axes, rows top to bottom, `text` written in the cells when `show_text`."""
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=list(x),
            y=list(y),
            colorscale=colorscale,
            zmin=zmin,
            zmax=zmax,
            text=text,
            texttemplate="%{text}" if show_text else None,
            colorbar=colorbar,
            customdata=customdata,
            hovertemplate=hover,
        )
    )
    fig.update_layout(
        title=title,
        xaxis=dict(type="category", **(xaxis or {})),
        yaxis=dict(type="category", autorange="reversed", **(yaxis or {})),
        **_LAYOUT,
    )
    return fig


# --- one setting ----------------------------------------------------------------------------------


def per_class_bars(
    class_names: Sequence[str],
    per_class: np.ndarray,
    top1: float | None = None,
    title: str = "Per-class accuracy",
) -> go.Figure:
    """Bars of `(C,)` per-class recall, coloured by class, with the overall top-1 as a line."""
    acc = _pct(per_class)
    fig = _bars(
        class_names,
        acc,
        class_colors(len(class_names)),
        [f"{a:.0f}" if np.isfinite(a) else "–" for a in acc],
        "%{x}: %{y:.1f}%<extra></extra>",
        title,
        dict(title="accuracy (%)", range=[0, 109]),
    )
    if top1 is not None:
        fig.add_hline(
            y=100 * top1,
            line_dash="dash",
            line_color="#444",
            annotation_text=f"top-1 {100 * top1:.1f}%",
            annotation_position="bottom right",
        )
    return fig


def confusion_heatmap(
    confusion: np.ndarray, class_names: Sequence[str], title: str = "Confusion matrix"
) -> go.Figure:
    """`(C, C)` counts, rows = true class, shaded by row-normalised rate, counts written in cells."""
    cm = np.asarray(confusion, dtype=float)
    rate = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    names = [str(c) for c in class_names]
    return _heatmap(
        rate,
        names,
        names,
        title=title,
        text=cm.astype(int),
        colorscale="Blues",
        show_text=len(names) <= 20,
        colorbar=dict(title="rate"),
        hover="true %{y} → predicted %{x}: %{text} (%{z:.0%})<extra></extra>",
        xaxis=dict(title="predicted"),
        yaxis=dict(title="true"),
    )


def _size(marker_size: int, n: int) -> float:
    """Marker size for a cloud of `n` points: smaller as it grows, so 70k points stay readable."""
    if n <= 5_000:
        return marker_size
    return max(2.0, marker_size * (5_000 / n) ** 0.35)


def embedding_scatter(
    xy: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    predictions: np.ndarray | None = None,
    title: str = "UMAP of test features",
    marker_size: int = 6,
    webgl: bool = True,
) -> go.Figure:
    """`(N, 2)` points, one trace per class, WebGL unless `webgl` is False; `customdata`
    holds each point's test position and predicted class name (lasso and box selections
    return them)."""
    labels = np.asarray(labels)
    trace = go.Scattergl if webgl else go.Scatter
    colors = class_colors(len(class_names))
    fig = go.Figure()
    for c, name in enumerate(class_names):
        idx = np.flatnonzero(labels == c)
        if not len(idx):
            continue
        pred = (
            [str(class_names[p]) for p in predictions[idx]]
            if predictions is not None
            else ["?"] * len(idx)
        )
        fig.add_trace(
            trace(
                x=xy[idx, 0],
                y=xy[idx, 1],
                mode="markers",
                name=str(name),
                marker=dict(color=colors[c], size=_size(marker_size, len(xy)), line=dict(width=0)),
                customdata=np.stack([idx, np.array(pred, dtype=object)], axis=1),
                hovertemplate=f"#%{{customdata[0]}} · true {name} · predicted %{{customdata[1]}}<extra></extra>",
            )
        )
    fig.update_layout(
        title=title,
        xaxis=dict(showticklabels=False, title=None),
        dragmode="lasso",
        yaxis=dict(showticklabels=False, title=None, scaleanchor="x"),
        legend=dict(itemsizing="constant"),
        **_LAYOUT,
    )
    return fig


def selected_positions(event) -> list[int]:
    """Test positions of the points in a `st.plotly_chart` selection event (lasso or box)."""
    if not event:
        return []
    sel = (
        event.get("selection", event)
        if isinstance(event, dict)
        else getattr(event, "selection", {})
    )
    points = sel.get("points", []) if isinstance(sel, dict) else []
    out = []
    for p in points:
        cd = p.get("customdata")
        if isinstance(cd, list | tuple) and cd:
            out.append(int(cd[0]))
        elif cd is not None:
            out.append(int(cd))
    return sorted(set(out))


def most_confused(confusion: np.ndarray, k: int = 3) -> list[tuple[int, int, int]]:
    """The `k` largest off-diagonal cells as `(true, predicted, count)`, largest first."""
    cm = np.asarray(confusion).copy()
    np.fill_diagonal(cm, 0)
    order = np.argsort(-cm, axis=None, kind="stable")[:k]
    pairs = [(int(i // cm.shape[1]), int(i % cm.shape[1]), int(cm.flat[i])) for i in order]
    return [p for p in pairs if p[2] > 0]


# --- sweeps ---------------------------------------------------------------------------------------


def block_label(layer_index: int, layer: str) -> str:
    return f"{int(layer_index):02d} · {layer}"


def sweep_baselines(
    wide: pd.DataFrame, head: str, pool: str, random_model: str
) -> dict[str, float]:
    """Reference test top-1s from an accuracy_view table: raw pixels (same head) and the
    random-weights setting (same head and pooling) that is best on validation, where present.
    No random line is drawn from a table without validation accuracy (it would be picked on test)."""
    out = {}
    px = wide[(wide["model"] == PIXELS) & (wide["head"] == head)]
    if not px.empty:
        out[PIXELS] = float(px["top1"].max())
    rnd = wide[(wide["model"] == random_model) & (wide["head"] == head) & (wide["pool"] == pool)]
    best = best_on_validation(rnd)
    if best is not None:
        out[f"{random_model} best on val"] = float(best["top1"])
    return out


def _baseline_lines(fig: go.Figure, baselines: dict[str, float]) -> None:
    styles = {PIXELS: ("#d62728", "dot", "bottom right"), "random": ("#7f7f7f", "dash", "top left")}
    for name, value in baselines.items():
        color, dash, where = styles.get(name.split(":")[0], ("#555", "dashdot", "top right"))
        fig.add_hline(
            y=100 * value,
            line_dash=dash,
            line_color=color,
            annotation_font_color=color,
            annotation_text=f"{name} {100 * value:.1f}%",
            annotation_position=where,
        )


def accuracy_vs_timestep(
    wide: pd.DataFrame,
    baselines: dict[str, float] | None = None,
    title: str = "Accuracy against timestep (one curve per block)",
) -> go.Figure:
    """`wide` (accuracy_view rows of one model/head/pool): x = t, one line per block."""
    fig = go.Figure()
    for (idx, layer), g in wide.sort_values("t").groupby(["layer_index", "layer"], sort=True):
        err = _pct(g["ci_high"] - g["top1"]) if "ci_high" in g else None
        err_lo = _pct(g["top1"] - g["ci_low"]) if "ci_low" in g else None
        fig.add_trace(
            go.Scatter(
                x=g["t"],
                y=_pct(g["top1"]),
                mode="lines+markers",
                name=block_label(idx, layer),
                error_y=dict(type="data", array=err, arrayminus=err_lo, thickness=1, width=2)
                if err is not None
                else None,
                hovertemplate=f"block {int(idx)} · t=%{{x}}: %{{y:.1f}}%<extra></extra>",
            )
        )
    _baseline_lines(fig, baselines or {})
    fig.update_layout(
        title=title, xaxis_title="timestep t", yaxis_title="top-1 (%)", legend=_BELOW, **_LAYOUT
    )
    return fig


def accuracy_vs_block(
    wide: pd.DataFrame,
    baselines: dict[str, float] | None = None,
    title: str = "Accuracy against block (one curve per timestep)",
) -> go.Figure:
    """`wide` rows of one model/head/pool: x = block (forward order), one line per t."""
    fig = go.Figure()
    ticks = wide.drop_duplicates("layer_index").sort_values("layer_index")
    for t, g in wide.sort_values("layer_index").groupby("t", sort=True):
        fig.add_trace(
            go.Scatter(
                x=g["layer_index"],
                y=_pct(g["top1"]),
                mode="lines+markers",
                name=f"t={int(t)}",
                text=g["layer"],
                hovertemplate=f"t={int(t)} · block %{{x}} %{{text}}: %{{y:.1f}}%<extra></extra>",
            )
        )
    _baseline_lines(fig, baselines or {})
    fig.update_layout(
        title=title,
        yaxis_title="top-1 (%)",
        xaxis=dict(
            title="block (forward order: down → mid → up)",
            tickmode="array",
            tickvals=ticks["layer_index"].tolist(),
            ticktext=[str(int(i)) for i in ticks["layer_index"]],
        ),
        legend=_BELOW,
        **_LAYOUT,
    )
    return fig


def _sweep_grid(wide: pd.DataFrame):
    """The heatmap's cells: (t values, block rows, row of each layer_index, top-1 % `(B, T)`,
    beats-pixels `(B, T) bool`, hover notes `(B, T)` of paired differences in words)."""
    ts = sorted(wide["t"].unique())
    blocks = wide.drop_duplicates("layer_index").sort_values("layer_index")
    rows = [block_label(i, n) for i, n in zip(blocks["layer_index"], blocks["layer"], strict=True)]
    pos = {int(i): r for r, i in enumerate(blocks["layer_index"])}
    z = np.full((len(rows), len(ts)), np.nan)
    up = np.zeros(z.shape, dtype=bool)
    notes = np.full(z.shape, "", dtype=object)
    for _, r in wide.iterrows():
        cell = pos[int(r["layer_index"])], ts.index(r["t"])
        z[cell] = 100 * r["top1"]
        up[cell] = bool(beats(r, "vs_pixels"))
        said = [
            paired_words(r, n, ref) for n, ref in (("vs_pixels", "pixels"), ("vs_random", "random"))
        ]
        notes[cell] = "".join(f"<br>{w}" for w in said if w)
    return ts, rows, pos, z, up, notes


def _colour_scale(z: np.ndarray, marks: dict[str, float]) -> tuple[float, float, dict[str, float]]:
    """(low, high, colour-bar ticks): the range covers the cells and the baselines, whose ticks
    are named; the range's end labels are dropped where they would overlap a baseline's."""
    lo = np.nanmin(z) if np.isfinite(z).any() else 0
    hi = np.nanmax(z) if np.isfinite(z).any() else 100
    lo, hi = min([lo, *marks.values()]), max([hi, *marks.values()])
    near = 0.07 * max(hi - lo, 1e-9)
    ends = {f"{v:.0f}": v for v in (lo, hi) if all(abs(v - m) > near for m in marks.values())}
    return lo, hi, ends | {f"◀ {k} {v:.1f}": v for k, v in marks.items()}


def _outline(fig: go.Figure, row: int, col: int) -> None:
    fig.add_shape(
        type="rect",
        x0=col - 0.5,
        x1=col + 0.5,
        y0=row - 0.5,
        y1=row + 0.5,
        line=dict(color="#e31a1c", width=3),
    )


def sweep_heatmap(
    wide: pd.DataFrame,
    baselines: dict[str, float] | None = None,
    title: str = "Top-1 (%) by block and timestep",
) -> go.Figure:
    """Blocks (rows, forward order) × timesteps (columns) of test top-1.

    The cell best on validation top-1 is outlined (none without val_top1); ▲ marks a cell
    whose paired 95% interval against raw pixels (`vs_pixels_low/high`) lies above 0; the
    baselines are named in the title and marked on the colour bar."""
    ts, rows, pos, z, up, notes = _sweep_grid(wide)
    marks = {k: 100 * v for k, v in (baselines or {}).items()}
    lo, hi, ticks = _colour_scale(z, marks)
    text = [
        [
            "" if not np.isfinite(v) else f"{v:.1f}" + ("▲" if u else "")
            for v, u in zip(row, ups, strict=True)
        ]
        for row, ups in zip(z, up, strict=True)
    ]
    best = best_on_validation(wide)
    ref = " · ".join(f"{k} {v:.1f}%" for k, v in marks.items())
    box = (
        "red box = best on validation"
        if best is not None
        else "no validation accuracy: no best marked"
    )
    mark = "▲ beats raw pixels (paired 95% interval above 0); " if up.any() else ""
    fig = _heatmap(
        z,
        [f"t={int(t)}" for t in ts],
        rows,
        zmin=lo,
        zmax=hi,
        text=text,
        customdata=notes,
        title=title + f"<br><sup>{'baselines: ' + ref + '; ' if ref else ''}{mark}{box}</sup>",
        colorbar=dict(title="top-1 %", tickvals=list(ticks.values()), ticktext=list(ticks.keys())),
        hover="%{y} · %{x}: %{z:.2f}%%{customdata}<extra></extra>",
        xaxis=dict(title="timestep"),
        yaxis=dict(title="block"),
    )
    if best is not None:
        _outline(fig, pos[int(best["layer_index"])], ts.index(best["t"]))
    fig.update_layout(margin=dict(l=10, r=10, t=80, b=10))
    return fig


# --- comparisons and similarity -------------------------------------------------------------------


def per_class_delta(
    class_names: Sequence[str],
    a: np.ndarray,
    b: np.ndarray,
    title: str = "Per-class change, B − A (points)",
) -> go.Figure:
    """`(C,)` differences in per-class accuracy, green where B is better."""
    d = _pct(b) - _pct(a)
    fig = _bars(
        class_names,
        d,
        ["#2ca02c" if v >= 0 else "#d62728" for v in d],
        [f"{v:+.1f}" for v in d],
        "%{x}: %{y:+.1f} points<extra></extra>",
        title,
        dict(title="Δ accuracy (points)"),
    )
    fig.add_hline(y=0, line_color="#444")
    return fig


def cka_heatmap(matrix: np.ndarray, labels: Sequence[str], title: str) -> go.Figure:
    """A `(K, K)` CKA matrix with `labels` on both axes."""
    m = np.asarray(matrix, dtype=float)
    labels = [str(x) for x in labels]
    return _heatmap(
        m,
        labels,
        labels,
        title=title,
        text=np.round(m, 2),
        show_text=len(labels) <= 16,
        colorbar=dict(title="CKA"),
        hover="%{y} vs %{x}: %{z:.3f}<extra></extra>",
    )


def sample_grid(
    images_by_class: Sequence[Sequence[np.ndarray]],
    class_names: Sequence[str],
    title: str = "Samples per class",
) -> go.Figure:
    """One row of `(H, W)` or `(H, W, 3)` uint8 images per class (each in an S×S cell, S the
    largest side), class names on the left."""
    tiles = [[np.asarray(im) for im in row] for row in images_by_class]
    s = max(max(im.shape[:2]) for row in tiles for im in row)
    n = max(len(row) for row in tiles)
    gap = 2
    canvas = np.full((len(tiles) * (s + gap), n * (s + gap), 3), 255, dtype=np.uint8)
    for r, row in enumerate(tiles):
        for c, im in enumerate(row):
            rgb = np.repeat(im[..., None], 3, axis=2) if im.ndim == 2 else im[..., :3]
            y, x = r * (s + gap), c * (s + gap)
            canvas[y : y + rgb.shape[0], x : x + rgb.shape[1]] = rgb
    fig = go.Figure(go.Image(z=canvas, hoverinfo="skip"))
    fig.update_layout(
        title=title,
        xaxis=dict(visible=False),
        yaxis=dict(
            tickmode="array",
            tickvals=[r * (s + gap) + s / 2 for r in range(len(tiles))],
            ticktext=[str(c) for c in class_names],
        ),
        **_LAYOUT,
    )
    fig.update_layout(height=max(300, 70 + len(tiles) * 52))
    return fig
