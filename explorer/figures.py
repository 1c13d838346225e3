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
FONT = 12  # figure text (px); presentation mode multiplies it by PRESENT_SCALE
PRESENT_SCALE = 1.5
_LAYOUT = dict(margin=dict(l=10, r=10, t=50, b=10), template="plotly_white", font=dict(size=FONT))

# --- readable at any width ------------------------------------------------------------------------
# Figures cannot see the browser's width: pages pass `width`, the narrowest the layout gives a
# figure (the app's grids wrap figures onto their own row before they get narrower).
NARROW_WIDTH = 460  # px: the main column of a 800 px window with the sidebar open
MIN_CELL_FONT = 10  # px: numbers in heatmap cells are written only if they get at least this
MIN_CELL_HEIGHT = 18  # px: a heatmap grows taller rather than squeeze its rows below this
NAME_CHARS = 10  # longer class names are abbreviated on axes (the full name is in the hover)
_CHAR = 0.52  # average width of a label's character per px of font size (Source Sans)
_TITLE_CHAR = 0.6  # the same for a (bold) title, with room to spare
_SEPARATORS = " /_-.,:"


def abbreviate(name: str, limit: int = NAME_CHARS) -> str:
    """`name` in at most `limit` characters: cut at a word boundary where one falls in its
    second half, else mid-word, and marked with "…"."""
    name = str(name)
    if len(name) <= limit:
        return name
    head = name[: limit - 1]
    cut = max(head.rfind(s) for s in _SEPARATORS)
    if cut >= limit // 2:
        head = head[:cut]
    return head.rstrip(_SEPARATORS) + "…"


def short_layer(layer: str) -> str:
    """A layer's name compacted for an axis (`down_blocks.1.downsamplers.0` -> `down1.ds0`)."""
    out = str(layer)
    for long, short in (
        ("_blocks.", ""),
        ("resnets.", "res"),
        ("attentions.", "attn"),
        ("downsamplers.", "ds"),
        ("upsamplers.", "us"),
        ("mid_block", "mid"),
        ("transformer", "tf"),
    ):
        out = out.replace(long, short)
    return abbreviate(out, 14)


def _titled(title: str, note: str, width: int | None, present: bool = False) -> tuple[dict, int]:
    """(a title: `title` with `note` in smaller type under it, both wrapped to the figure's
    `width` and hung from the figure's top; the top margin it needs)."""
    font = FONT * (PRESENT_SCALE if present else 1)
    room = (width or 1000) - 20
    lines = _wrap(title, int(room / (_TITLE_CHAR * 1.4 * font))).split("<br>")
    notes = _wrap(note, int(room / (_TITLE_CHAR * font))).split("<br>") if note else []
    text = "<br>".join(lines + [f"<sup>{n}</sup>" for n in notes])
    high = 1.3 * 1.4 * font * (len(lines) + len(notes))  # plotly: 1.3 lines of the title's font
    pad = round(1.4 * font) + 2  # the first line's ascent stays inside the figure
    head = dict(text=text, yref="container", y=1, yanchor="top", pad=dict(t=pad))
    return head, int(high + pad + 12)


def _wrap(text: str, chars: int) -> str:
    """Plain `text` broken into lines of at most `chars` characters with `<br>` (plotly does
    not wrap titles)."""
    import textwrap

    return "<br>".join(textwrap.wrap(text, chars, break_long_words=False)) or text


def _fits(
    columns: int,
    width: int | None,
    cell_chars: int,
    label_chars: int,
    bar_chars: int = 4,
    present: bool = False,
) -> bool:
    """Whether text of `cell_chars` characters fits `columns` heatmap cells at MIN_CELL_FONT
    (plotly shrinks it to fit its cell) in a figure `width` px wide, after the row labels of
    `label_chars` characters, the axis title and the colour bar with ticks of `bar_chars`."""
    if width is None:
        return columns <= 20
    font = FONT * (PRESENT_SCALE if present else 1)
    used = _CHAR * font * (label_chars + bar_chars) + 2.5 * font + 30 + 20
    cell = (width - used) / max(columns, 1)
    return cell >= cell_chars * (1.3 / 2) * MIN_CELL_FONT + 2


def presentation(fig: go.Figure, scale: float = PRESENT_SCALE) -> go.Figure:
    """A copy of `fig` for a room: every font `scale` times larger (axes, title, legend,
    annotations, text in cells and on bars follow the layout's font)."""
    out = go.Figure(fig)
    size = round((out.layout.font.size or FONT) * scale)
    # set explicitly: a template (the app's theme) may size ticks and titles on its own
    out.update_layout(
        font=dict(size=size),
        title_font_size=round(size * 1.35),
        legend_font_size=size,
        hoverlabel_font_size=size,
        uniformtext_minsize=round(MIN_CELL_FONT * scale),
    )
    out.update_xaxes(tickfont_size=size, title_font_size=size)
    out.update_yaxes(tickfont_size=size, title_font_size=size)
    for a in out.layout.annotations:
        a.font.size = round((a.font.size or FONT) * scale)
    out.update_traces(
        colorbar=dict(tickfont_size=size, title_font_size=size), selector=dict(type="heatmap")
    )
    return out


def _category_axis(names: Sequence[str], limit: int = NAME_CHARS, **kw) -> dict:
    """A category axis over `names` whose tick labels are abbreviated (data and hover keep
    the full names)."""
    names = [str(n) for n in names]
    short = [abbreviate(n, limit) for n in names]
    if short == names:
        return dict(type="category", **kw)
    return dict(type="category", tickmode="array", tickvals=names, ticktext=short, **kw)


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
    """One bar per class, values written above the bars (hidden rather than shrunk below
    MIN_CELL_FONT), long class names abbreviated on the axis, no legend."""
    names = [str(n) for n in names]
    fig = go.Figure(
        go.Bar(
            x=names,
            y=y,
            marker_color=colors,
            text=text,
            textposition="outside",
            hovertemplate=hover,
        )
    )
    fig.update_layout(
        title=title,
        yaxis=yaxis,
        xaxis=_category_axis(names),
        showlegend=False,
        uniformtext=dict(minsize=MIN_CELL_FONT, mode="hide"),
        **_LAYOUT,
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
            x=[str(v) for v in x],
            y=[str(v) for v in y],
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
        xaxis={"type": "category", **(xaxis or {})},
        yaxis={"type": "category", "autorange": "reversed", **(yaxis or {})},
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
    if top1 is not None:  # the line is named in the title: a label on it would sit on a bar
        fig.add_hline(y=100 * top1, line_dash="dash", line_color="#444")
        fig.update_layout(title=f"{title} · top-1 {100 * top1:.1f}% (dashed)")
    return fig


def confusion_heatmap(
    confusion: np.ndarray,
    class_names: Sequence[str],
    title: str = "Confusion matrix",
    *,
    width: int | None = None,
    present: bool = False,
) -> go.Figure:
    """`(C, C)` counts, rows = true class, shaded by row-normalised rate.

    Counts are written in the cells only while they stay readable in a figure `width` px wide
    (the narrowest the page gives it; None: up to 20 classes); the figure grows taller rather
    than squeeze rows below MIN_CELL_HEIGHT; long class names are abbreviated on the axes and
    given in full in the hover."""
    cm = np.asarray(confusion, dtype=float)
    rate = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    names = [str(c) for c in class_names]
    label = max((len(abbreviate(n)) for n in names), default=1)
    digits = len(str(int(cm.max()))) if cm.size else 1
    fig = _heatmap(
        rate,
        names,
        names,
        title=title,
        text=cm.astype(int),
        colorscale="Blues",
        show_text=_fits(len(names), width, digits, label, present=present),
        colorbar=dict(title="rate"),
        hover="true %{y} → predicted %{x}: %{text} (%{z:.0%})<extra></extra>",
        xaxis=_category_axis(names, title="predicted"),
        yaxis=_category_axis(names, title="true"),
    )
    font = FONT * (PRESENT_SCALE if present else 1)
    rows = len(names) * MIN_CELL_HEIGHT * (PRESENT_SCALE if present else 1)
    fig.update_layout(height=int(max(450, rows + 80 + 2 * font + _CHAR * font * label)))
    return fig


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


def block_colors(n: int) -> list[str]:
    """`n` distinct line colours, one per block (24 before any repeats; a Turbo sample beyond)."""
    if n <= len(qualitative.Dark24):
        return list(qualitative.Dark24[:n])
    return sample_colorscale("Turbo", [i / max(n - 1, 1) for i in range(n)])


def _baseline_lines(fig: go.Figure, baselines: dict[str, float]) -> None:
    """Each baseline as a horizontal line named in the legend (never a label over the curves)."""
    styles = {PIXELS: ("#d62728", "dot"), "random": ("#7f7f7f", "dash")}
    for name, value in baselines.items():
        color, dash = styles.get(name.split(":")[0], ("#555", "dashdot"))
        fig.add_hline(y=100 * value, line_dash=dash, line_color=color, line_width=1.5)
        fig.add_trace(  # the legend entry of the line above
            go.Scatter(
                x=[None],
                y=[None],
                mode="lines",
                line=dict(color=color, dash=dash),
                name=f"{abbreviate(name, 30)} {100 * value:.1f}%",
                hoverinfo="skip",
            )
        )


def _legend_below(fig: go.Figure, width: int | None, present: bool, plot_px: int = 300) -> None:
    """The legend under the x axis in rows that fit `width` px, with the figure made taller by
    its rows (the plot keeps `plot_px`): it never covers the plot or the axis title."""
    font = FONT * (PRESENT_SCALE if present else 1)
    names = [str(t.name) for t in fig.data if t.showlegend is not False and t.name]
    item = max((len(n) for n in names), default=4) * _CHAR * font + 46  # symbol + gap
    per_row = max(1, int(((width or 1000) - 20) // item))
    rows = -(-len(names) // per_row)
    legend_px = int(rows * 1.5 * font + 8)
    top = fig.layout.margin.t or 50
    axis_px = int(3.6 * font) + 10  # tick labels and the axis title
    fig.update_layout(
        legend=dict(
            orientation="h",
            yref="container",
            y=0,
            yanchor="bottom",
            x=0,
            xanchor="left",
            entrywidth=int(item),
            tracegroupgap=0,
        ),
        margin=dict(b=legend_px + axis_px + 8),
        height=top + plot_px + legend_px + axis_px + 8,
    )


def accuracy_vs_timestep(
    wide: pd.DataFrame,
    baselines: dict[str, float] | None = None,
    title: str = "Accuracy against timestep",
    *,
    width: int | None = None,
    present: bool = False,
    log_snr: dict[int, float] | None = None,
) -> go.Figure:
    """`wide` (accuracy_view rows of one model/head/pool): x = t, one line per block in its own
    colour; with `log_snr` (t -> log SNR of the model's schedule) x is the log SNR instead
    (the axis every noise family shares; high = clean)."""
    fig = go.Figure()
    groups = list(wide.sort_values("t").groupby(["layer_index", "layer"], sort=True))
    colors = block_colors(len(groups))
    for ((idx, layer), g), color in zip(groups, colors, strict=True):
        err = _pct(g["ci_high"] - g["top1"]) if "ci_high" in g else None
        err_lo = _pct(g["top1"] - g["ci_low"]) if "ci_low" in g else None
        x = g["t"] if log_snr is None else [log_snr.get(int(t), np.nan) for t in g["t"]]
        fig.add_trace(
            go.Scatter(
                x=x,
                y=_pct(g["top1"]),
                customdata=g["t"],
                mode="lines+markers",
                line=dict(color=color),
                marker=dict(color=color),
                name=block_label(idx, short_layer(layer)),  # compact legend; full in hover
                error_y=dict(type="data", array=err, arrayminus=err_lo, thickness=1, width=2)
                if err is not None
                else None,
                hovertemplate=f"block {int(idx)} {layer} · t=%{{customdata}}: %{{y:.1f}}%<extra></extra>",
            )
        )
    _baseline_lines(fig, baselines or {})
    heading, top = _titled(title, "one curve per block", width, present)
    xaxis = (
        dict(title="timestep t")
        if log_snr is None
        else dict(title="log SNR (high = clean)", autorange="reversed")
    )
    fig.update_layout(title=heading, xaxis=xaxis, yaxis_title="top-1 (%)", **_LAYOUT)
    fig.update_layout(margin=dict(t=top))
    _legend_below(fig, width, present)
    return fig


def accuracy_vs_block(
    wide: pd.DataFrame,
    baselines: dict[str, float] | None = None,
    title: str = "Accuracy against block",
    *,
    width: int | None = None,
    present: bool = False,
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
    heading, top = _titled(title, "one curve per timestep", width, present)
    fig.update_layout(
        title=heading,
        yaxis_title="top-1 (%)",
        xaxis=dict(
            title="block (forward order: down → mid → up)",
            tickmode="array",
            tickvals=ticks["layer_index"].tolist(),
            ticktext=[str(int(i)) for i in ticks["layer_index"]],
        ),
        **_LAYOUT,
    )
    fig.update_layout(margin=dict(t=top))
    _legend_below(fig, width, present)
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
    """(low, high, colour-bar ticks): the range covers the cells and the baselines (named in
    the figure's note, not on the bar, where close values would overlap); ticks are whole
    percentages, at most 6 of them."""
    lo = np.nanmin(z) if np.isfinite(z).any() else 0
    hi = np.nanmax(z) if np.isfinite(z).any() else 100
    lo, hi = min([lo, *marks.values()]), max([hi, *marks.values()])
    step = next((s for s in (1, 2, 5, 10, 20, 25, 50) if (hi - lo) / s <= 5), 100)
    ticks = np.arange(np.ceil(lo / step) * step, hi + 1e-9, step)
    return lo, hi, {f"{v:.0f}": float(v) for v in ticks}


def _outline(
    fig: go.Figure, row: int, col: int, color: str = "#e31a1c", dash: str = "solid"
) -> None:
    fig.add_shape(
        type="rect",
        x0=col - 0.5,
        x1=col + 0.5,
        y0=row - 0.5,
        y1=row + 0.5,
        line=dict(color=color, width=3, dash=dash),
    )


def cell_id(t, layer: str) -> str:
    """A sweep cell's id, "10|mid_block": what a click on the heatmap reports."""
    return f"{int(t)}|{layer}"


def clicked_cell(event) -> str | None:
    """The `cell_id` of the heatmap cell a `st.plotly_chart` selection event reports (a click
    picks the nearest cell centre of `sweep_heatmap`'s click layer), else None."""
    if not event:
        return None
    sel = (
        event.get("selection", event)
        if isinstance(event, dict)
        else getattr(event, "selection", {})
    )
    points = sel.get("points", []) if isinstance(sel, dict) else []
    for p in points:
        cd = p.get("customdata")
        if isinstance(cd, list | tuple) and len(cd) >= 2 and str(cd[0]) == "cell":
            return str(cd[1])
    return None


def _click_layer(fig: go.Figure, ts, rows, wide: pd.DataFrame, pos: dict, notes) -> None:
    """An invisible marker at every cell's centre: plotly reports no clicks on a heatmap, but
    a click on this layer selects the nearest cell (hover distance unlimited), and its hover
    text is the cell's."""
    xs, ys, data = [], [], []
    for _, r in wide.iterrows():
        row, col = pos[int(r["layer_index"])], ts.index(r["t"])
        xs.append(f"t={int(r['t'])}")
        ys.append(rows[row])
        data.append(
            ["cell", cell_id(r["t"], r["layer"]), f"{100 * r['top1']:.2f}", notes[row, col]]
        )
    fig.add_trace(
        go.Scatter(
            x=xs,
            y=ys,
            mode="markers",
            marker=dict(size=18, color="rgba(0,0,0,0)", symbol="square"),
            selected=dict(marker=dict(opacity=0)),
            unselected=dict(marker=dict(opacity=0)),
            customdata=data,
            hovertemplate="%{y} · %{x}: %{customdata[2]}%%{customdata[3]}"
            "<br><i>click to select</i><extra></extra>",
            showlegend=False,
            name="cells",
        )
    )
    fig.update_traces(hoverinfo="skip", hovertemplate=None, selector=dict(type="heatmap"))
    fig.update_layout(hovermode="closest", hoverdistance=-1, clickmode="event+select")
    fig.update_xaxes(fixedrange=True)
    fig.update_yaxes(fixedrange=True)


def sweep_heatmap(
    wide: pd.DataFrame,
    baselines: dict[str, float] | None = None,
    title: str = "Top-1 (%) by block and timestep",
    *,
    width: int | None = None,
    present: bool = False,
    selected: str | None = None,
) -> go.Figure:
    """Blocks (rows, forward order) × timesteps (columns) of test top-1; a click on a cell
    selects it (`clicked_cell` reads the event), and the `selected` cell (`cell_id`) is
    outlined with a dashed line.

    The cell best on validation top-1 is outlined (none without val_top1); ▲ marks a cell
    whose paired 95% interval against raw pixels (`vs_pixels_low/high`) lies above 0; the
    baselines are named in the title and marked on the colour bar. Rows are labelled with
    compact layer names (full in the hover); the notes under the title wrap to `width` (the
    narrowest px the page gives the figure), and cells carry numbers while they fit."""
    ts, rows, pos, z, up, notes = _sweep_grid(wide)
    blocks = wide.drop_duplicates("layer_index").sort_values("layer_index")
    short = [
        block_label(i, short_layer(n))
        for i, n in zip(blocks["layer_index"], blocks["layer"], strict=True)
    ]
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
        "red box = best on validation; dotted = selected (click a cell)"
        if best is not None
        else "no validation accuracy: no best marked; dotted = selected (click a cell)"
    )
    mark = "▲ beats raw pixels (paired 95% interval above 0); " if up.any() else ""
    heading, top = _titled(
        title, f"{'baselines: ' + ref + '; ' if ref else ''}{mark}{box}", width, present
    )
    cells = max((len(t) for row in text for t in row), default=1)
    fig = _heatmap(
        z,
        [f"t={int(t)}" for t in ts],
        rows,
        zmin=lo,
        zmax=hi,
        text=text,
        customdata=notes,
        title=heading,
        show_text=_fits(
            len(ts),
            width,
            cells,
            max(map(len, short), default=1),
            max((len(x) for t in ticks for x in t.split("<br>")), default=4),
            present,
        ),
        colorbar=dict(title="top-1 %", tickvals=list(ticks.values()), ticktext=list(ticks.keys())),
        hover="%{y} · %{x}: %{z:.2f}%%{customdata}<extra></extra>",
        xaxis=dict(title="timestep"),
        yaxis=dict(title="block", tickmode="array", tickvals=rows, ticktext=short),
    )
    if best is not None:
        _outline(fig, pos[int(best["layer_index"])], ts.index(best["t"]))
    _click_layer(fig, ts, rows, wide, pos, notes)
    chosen = wide[
        [cell_id(t, n) == selected for t, n in zip(wide["t"], wide["layer"], strict=True)]
    ]
    if len(chosen):
        r = chosen.iloc[0]
        _outline(fig, pos[int(r["layer_index"])], ts.index(r["t"]), "#111111", "dot")
    rows_px = len(rows) * MIN_CELL_HEIGHT * 1.4 * (PRESENT_SCALE if present else 1)
    fig.update_layout(
        margin=dict(l=10, r=10, t=top, b=10), height=int(max(450, top + 70 + rows_px))
    )
    return fig


# --- comparisons and similarity -------------------------------------------------------------------


def per_class_delta(
    class_names: Sequence[str],
    a: np.ndarray,
    b: np.ndarray,
    title: str = "Per-class change, B − A (points)",
    intervals: np.ndarray | None = None,
) -> go.Figure:
    """`(C,)` differences in per-class accuracy, green where B is better; with `intervals`
    `(C, 3)` (diff, low, high as fractions, e.g. a paired bootstrap per class) each bar gets
    its 95% interval as an error bar, and a bar whose interval holds 0 is drawn pale."""
    d = _pct(b) - _pct(a)
    colors = ["#2ca02c" if v >= 0 else "#d62728" for v in d]
    hover = "%{x}: %{y:+.1f} points<extra></extra>"
    if intervals is not None:
        lo, hi = _pct(intervals[:, 1]), _pct(intervals[:, 2])
        noise = (lo <= 0) & (hi >= 0)
        colors = [
            ("#a8dba8" if v >= 0 else "#f2a8a8") if n else c
            for v, n, c in zip(d, noise, colors, strict=True)
        ]
        hover = (
            "%{x}: %{y:+.1f} points [%{customdata[0]:+.1f}, %{customdata[1]:+.1f}]<extra></extra>"
        )
    fig = _bars(
        class_names,
        d,
        colors,
        [f"{v:+.1f}" for v in d],
        hover,
        title,
        dict(title="Δ accuracy (points)"),
    )
    if intervals is not None:
        fig.update_traces(
            error_y=dict(type="data", array=hi - d, arrayminus=d - lo, thickness=1.2, width=3),
            customdata=np.stack([lo, hi], axis=1),
            textposition="none",  # the interval is the bar's label: numbers are in the hover
        )
        note = "bars: 95% paired bootstrap interval per class; pale = within noise"
        heading, top = _titled(title, note, None)
        fig.update_layout(title=heading, margin=dict(t=top))
    fig.add_hline(y=0, line_color="#444")
    return fig


def cka_heatmap(
    matrix: np.ndarray,
    labels: Sequence[str],
    title: str,
    *,
    width: int | None = None,
    present: bool = False,
) -> go.Figure:
    """A `(K, K)` CKA matrix with `labels` on both axes; values written in the cells while they
    fit a figure `width` px wide (None: up to 16 labels), the title wrapped to it."""
    m = np.asarray(matrix, dtype=float)
    labels = [str(x) for x in labels]
    heading, top = _titled(title, "", width, present)
    fig = _heatmap(
        m,
        labels,
        labels,
        title=heading,
        text=np.round(m, 2),
        show_text=len(labels) <= 16
        and _fits(len(labels), width, 4, max(map(len, labels), default=1), 3, present),
        colorbar=dict(title="CKA"),
        hover="%{y} vs %{x}: %{z:.3f}<extra></extra>",
    )
    fig.update_layout(margin=dict(t=top))
    return fig


def same_top(*figs: go.Figure | None) -> None:
    """Give figures drawn side by side the largest of their top margins, so their plots start
    at one height whichever titles wrap to more lines (None entries are skipped)."""
    drawn = [f for f in figs if f is not None]
    top = max((f.layout.margin.t or 0 for f in drawn), default=0)
    for f in drawn:
        f.update_layout(margin=dict(t=top))


ALIGN_METRICS = {"cka": "CKA", "cknna": "CKNNA", "mutual_knn": "mutual k-NN"}


def alignment_heatmap(
    table: pd.DataFrame,
    metric: str,
    *,
    across: str = "blocks",
    width: int | None = None,
    present: bool = False,
) -> go.Figure:
    """A map of `metric` from `align_table`'s tidy table, rows the model's blocks: `across=
    "blocks"` the block × block map (columns the reference's blocks, at one t), `"levels"` the
    block × level map against one reference block (columns the model's t: REPA's figure).
    Values written while they fit `width` px, the bootstrap interval in the hover, the title
    wrapped to the width."""
    rows = table[table["metric"] == metric]
    levels = across == "levels"
    col = "t" if levels else "ref_layer_index"
    value = rows.pivot_table(index="layer_index", columns=col, values="value")
    low = rows.pivot_table(index="layer_index", columns=col, values="ci_low")
    high = rows.pivot_table(index="layer_index", columns=col, values="ci_high")
    names = dict(zip(rows["layer_index"], rows["layer"], strict=False))
    ref_names = dict(zip(rows["ref_layer_index"], rows["ref_layer"], strict=False))
    y = [f"{i:02d}" for i in value.index]
    x = [f"t={int(j)}" if levels else f"{j:02d}" for j in value.columns]
    z = value.to_numpy(dtype=float)
    across_text = x if levels else [ref_names[j] for j in value.columns]
    custom = np.dstack(
        [
            low.to_numpy(dtype=float),
            high.to_numpy(dtype=float),
            np.array([[names[i]] * len(x) for i in value.index], dtype=object),
            np.array([across_text] * len(y), dtype=object),
        ]
    )
    first = rows.iloc[0] if len(rows) else None
    model = "" if first is None else str(first["model"])
    ref = "" if first is None else str(first["reference"])
    at = "" if first is None or pd.isna(first["t"]) else f" at t={int(first['t'])}"
    ref_at = "" if first is None or pd.isna(first["ref_t"]) else f" (t={int(first['ref_t'])})"
    name = ALIGN_METRICS.get(metric, metric)
    if levels:
        block = "" if first is None else str(first["ref_layer"])
        against = "the input pixels" if block == "pixels" else f"{ref}'s {block}"
        same_t = first is not None and not pd.isna(first["ref_t"])
        title = f"{name} of {model}'s blocks with {against}" + (", at each t" if same_t else "")
        x_title = "t (noise level)"
    else:
        title, x_title = f"{name} between {model}{at} and {ref}{ref_at}", abbreviate(ref, 24)
    heading, top = _titled(title, "", width, present)
    fig = _heatmap(
        z,
        x,
        y,
        title=heading,
        text=np.round(z, 2),
        show_text=len(x) <= 16 and _fits(len(x), width, 4, 2, 3, present),
        colorbar=dict(title=name),
        zmin=min(0.0, float(np.nanmin(z))) if z.size else 0.0,
        customdata=custom,
        hover=(
            "%{customdata[2]} vs %{customdata[3]}: %{z:.3f}"
            " [%{customdata[0]:.3f}, %{customdata[1]:.3f}]<extra></extra>"
        ),
        xaxis=dict(title=x_title),
        yaxis=dict(title=abbreviate(model, 24)),
    )
    fig.update_layout(margin=dict(t=top))
    return fig


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
            ticktext=[abbreviate(c, 14) for c in class_names],
        ),
        **_LAYOUT,
    )
    fig.update_layout(height=max(300, 70 + len(tiles) * 52))
    return fig


def timestep_profile(
    profile: pd.DataFrame, block: str, width: int | None = None, present: bool = False
) -> go.Figure:
    """Why this t (`Workspace.timestep_profile` rows): R² of the block's features at each t from
    its clean (t=0) and noisiest features, and the probe's test top-1 (with its interval) on a
    second axis."""
    fig = go.Figure()
    for col, name, dash in (
        ("r2_from_clean", "R² from the clean features (t=0)", None),
        ("r2_from_noisiest", "R² from the noisiest features", "dot"),
    ):
        fig.add_trace(
            go.Scatter(
                x=profile["t"],
                y=profile[col],
                name=name,
                mode="lines+markers",
                line=dict(dash=dash),
                hovertemplate="t=%{x}: R² %{y:.3f}<extra></extra>",
            )
        )
    acc = profile[np.isfinite(profile["top1"].astype(float))]
    fig.add_trace(
        go.Scatter(
            x=acc["t"],
            y=_pct(acc["top1"]),
            name="probe top-1 (test, %)",
            yaxis="y2",
            mode="lines+markers",
            error_y=dict(
                type="data",
                array=_pct(acc["ci_high"] - acc["top1"]),
                arrayminus=_pct(acc["top1"] - acc["ci_low"]),
                thickness=1,
                width=2,
            ),
            hovertemplate="t=%{x}: top-1 %{y:.1f}%<extra></extra>",
        )
    )
    heading, top = _titled(
        f"Timestep profile of {block}",
        "where the image signal fades from the block",
        width,
        present,
    )
    fig.update_layout(
        title=heading,
        xaxis_title="timestep t",
        yaxis=dict(
            title="R² (variance explained)",
            range=[
                min(0.0, float(profile[["r2_from_clean", "r2_from_noisiest"]].min().min())),
                1.02,
            ],
        ),
        yaxis2=dict(title="top-1 (%)", overlaying="y", side="right", automargin=True),
        legend=_BELOW,
        **_LAYOUT,
    )
    fig.update_layout(margin=dict(t=top))
    return fig


def search_rounds(
    rounds: pd.DataFrame, width: int | None = None, present: bool = False
) -> go.Figure:
    """The setting search (`SearchResult.rounds_frame()`): each setting's validation top-1 per
    round (x = round, with its image count), kept settings filled, dropped ones hollow."""
    fig = go.Figure()
    for kept, g in rounds.groupby("kept", sort=True):
        fig.add_trace(
            go.Scatter(
                x=g["round"],
                y=_pct(g["val_top1"]),
                mode="markers",
                name="kept" if kept else "dropped",
                marker=dict(symbol="circle" if kept else "circle-open", size=8),
                text=[
                    f"block {b}, t={t}, pool {p}"
                    for b, t, p in zip(g["block"], g["t"], g["pool"], strict=True)
                ],
                hovertemplate="%{text}: val %{y:.1f}%<extra></extra>",
            )
        )
    ticks = rounds.groupby("round")["images"].first()
    heading, top = _titled("Search rounds", "validation top-1 of each setting", width, present)
    fig.update_layout(
        title=heading,
        xaxis=dict(
            title="round (train images per probe)",
            tickvals=list(ticks.index),
            ticktext=[f"{r} ({int(n)})" for r, n in ticks.items()],
        ),
        yaxis_title="validation top-1 (%)",
        legend=_BELOW,
        **_LAYOUT,
    )
    fig.update_layout(margin=dict(t=top))
    return fig
