"""Explore's "Across timesteps" view: one block's aligned UMAP over several t, animated.

`timelapse_figure` is pure (arrays in, a plotly figure with one animation frame per t
out); `view` is the Streamlit part the Explore page calls in one line, with the same
embeddings as linked images-as-points panels under the animation (`linked_across_t`). Below
`WEBGL_MIN_POINTS` points the scatter is SVG, whose points glide from frame to frame; above,
WebGL, whose frames are redrawn without the glide. A test split larger than
`TIMELAPSE_MAX_POINTS` is shown as a stratified subsample (aligned UMAP has no transform).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from explorer.defaults import SWEEP_TIMESTEPS
from explorer.figures import WEBGL_MIN_POINTS, class_colors
from explorer.settings import Setting
from explorer.ui import common, services, state
from explorer.workspace import Workspace

DEFAULT_TIMESTEPS = SWEEP_TIMESTEPS  # the app's one set, for 1000 steps; scaled to the model's T
PROBE = "linear"  # the accuracy beside the animation: the cheap probe, whatever head Explore shows
TIMELAPSE_MAX_POINTS = 5_000  # test points animated at most (K aligned UMAPs, K frames of them)


def _frame_args(duration: int) -> dict:
    return dict(
        frame=dict(duration=duration, redraw=True),  # redraw after the glide: the title follows
        mode="immediate",
        fromcurrent=True,
        transition=dict(duration=int(0.7 * duration), easing="cubic-in-out"),
    )


def _range(v: np.ndarray) -> list[float]:
    lo, hi = float(np.min(v)), float(np.max(v))
    pad = 0.05 * (hi - lo) or 1.0
    return [lo - pad, hi + pad]


def timelapse_figure(
    embeddings: np.ndarray,
    timesteps: Sequence[int],
    labels: np.ndarray,
    class_names: Sequence[str],
    accuracy: Sequence[tuple[float, float, float]] | None = None,
    title: str = "Aligned UMAP across timesteps",
    positions: np.ndarray | None = None,
) -> go.Figure:
    """Animated scatter of `(K, N, 2)` aligned embeddings, one frame per timestep, with a slider
    and a play button. Points carry their test position (`positions` `(N,)`, default 0..N-1)
    as plotly `ids` (the same in every frame), so each one glides to its place at the next t
    (SVG, under `WEBGL_MIN_POINTS` points; WebGL redraws above). `accuracy` holds K
    `(top1, ci_low, ci_high)` fractions: drawn beside the scatter, the frame's t marked."""
    emb = np.asarray(embeddings, dtype=float)
    ts = [int(t) for t in timesteps]
    labels = np.asarray(labels)
    if emb.ndim != 3 or emb.shape[0] != len(ts) or emb.shape[2] != 2:
        raise ValueError(f"embeddings must be (K={len(ts)}, N, 2), got {emb.shape}")
    if len(labels) != emb.shape[1]:
        raise ValueError(f"{len(labels)} labels for {emb.shape[1]} points")
    pos = np.arange(len(labels)) if positions is None else np.asarray(positions, dtype=np.int64)
    if pos.shape != labels.shape:
        raise ValueError(f"{len(pos)} positions for {len(labels)} points")
    trace = go.Scattergl if len(labels) >= WEBGL_MIN_POINTS else go.Scatter
    acc = None if accuracy is None else 100 * np.asarray(accuracy, dtype=float).reshape(len(ts), 3)
    colors = class_colors(len(class_names))
    groups = [(c, np.flatnonzero(labels == c)) for c in range(len(class_names))]
    groups = [(c, idx) for c, idx in groups if len(idx)]

    def points(k: int) -> list[go.Scatter]:
        return [
            trace(
                x=emb[k, idx, 0],
                y=emb[k, idx, 1],
                ids=[str(i) for i in pos[idx]],
                customdata=pos[idx],
                mode="markers",
                name=str(class_names[c]),
                legendgroup=str(c),
                marker=dict(
                    color=colors[c], size=6 if len(pos) <= 5_000 else 3, line=dict(width=0)
                ),
                hovertemplate=f"#%{{customdata}} · {class_names[c]} · t={ts[k]}<extra></extra>",
            )
            for c, idx in groups
        ]

    def now(k: int) -> go.Scatter:
        return go.Scatter(
            x=[ts[k]],
            y=[acc[k, 0]],
            mode="markers",
            marker=dict(size=14, color="#d62728", symbol="circle-open", line=dict(width=3)),
            showlegend=False,
            hovertemplate=f"t={ts[k]}: {acc[k, 0]:.1f}%<extra></extra>",
        )

    def heading(k: int) -> str:
        extra = "" if acc is None else f" · {PROBE} probe {acc[k, 0]:.1f}%"
        return f"<b>{title} · t={ts[k]}{extra}</b>"  # bold, as Streamlit's theme draws titles

    cols = 2 if acc is not None else 1
    fig = make_subplots(
        rows=1,
        cols=cols,
        column_widths=[0.7, 0.3] if cols == 2 else None,
        horizontal_spacing=0.08,
        subplot_titles=(None, "Top-1 (test) by t, 95% CI") if cols == 2 else None,
    )
    for tr in points(0):
        fig.add_trace(tr, row=1, col=1)
    moving = list(range(len(groups)))
    if acc is not None:
        fig.add_trace(
            go.Scatter(
                x=ts,
                y=acc[:, 0],
                mode="lines+markers",
                line=dict(color="#444"),
                error_y=dict(
                    type="data",
                    symmetric=False,
                    array=acc[:, 2] - acc[:, 0],
                    arrayminus=acc[:, 0] - acc[:, 1],
                ),
                showlegend=False,
                hovertemplate="t=%{x}: %{y:.1f}%<extra></extra>",
            ),
            row=1,
            col=2,
        )
        fig.add_trace(now(0), row=1, col=2)
        moving.append(len(groups) + 1)
        fig.update_xaxes(title="timestep t", row=1, col=2)
        fig.update_yaxes(title="top-1 (%)", row=1, col=2)
    fig.frames = [
        go.Frame(
            name=str(t),
            data=points(k) + ([now(k)] if acc is not None else []),
            traces=moving,
            layout=dict(title=dict(text=heading(k))),
        )
        for k, t in enumerate(ts)
    ]
    steps = [dict(label=str(t), method="animate", args=[[str(t)], _frame_args(0)]) for t in ts]
    fig.update_layout(
        title=dict(text=heading(0)),
        height=560,
        legend=dict(itemsizing="constant"),
        sliders=[
            dict(
                active=0,
                steps=steps,
                currentvalue=dict(prefix="t = ", xanchor="right"),
                x=0.12,
                len=0.88,
                y=0,
                pad=dict(t=40),
            )
        ],
        updatemenus=[
            dict(
                type="buttons",
                direction="left",
                showactive=False,
                x=0,
                y=0,
                xanchor="left",
                yanchor="top",
                pad=dict(t=50),
                buttons=[
                    dict(label="▶ Play", method="animate", args=[None, _frame_args(900)]),
                    dict(label="❚❚", method="animate", args=[[None], _frame_args(0)]),
                ],
            )
        ],
        margin=dict(l=10, r=10, t=60, b=10),
        template="plotly_white",
        font=dict(size=12),
    )
    fig.update_xaxes(range=_range(emb[..., 0]), showticklabels=False, row=1, col=1)
    fig.update_yaxes(range=_range(emb[..., 1]), showticklabels=False, row=1, col=1)
    return fig


def default_timesteps(T: int) -> list[int]:
    """`DEFAULT_TIMESTEPS` scaled from 1000 steps to the model's `T`."""
    return sorted({min(T - 1, max(0, round(t * T / 1000))) for t in DEFAULT_TIMESTEPS})


def shown_rows(labels: np.ndarray, cap: int | None = None) -> np.ndarray | None:
    """Test positions animated: a stratified subsample of `cap` (default `TIMELAPSE_MAX_POINTS`,
    seed 0) when there are more than `cap` points, else None (all of them)."""
    from explorer.analysis.embed import stratified_subsample  # umap/numba: on use only

    cap = TIMELAPSE_MAX_POINTS if cap is None else cap
    n = len(labels)
    return None if n <= cap else stratified_subsample(labels, n, cap, seed=0)


@st.cache_data(max_entries=16, show_spinner=False)
def _aligned(
    _ws: Workspace, keys: tuple[str, ...], _settings: tuple[Setting, ...], cap: int | None
) -> np.ndarray:
    """`(K, N, 2)`, or `(K, cap, 2)` on `shown_rows` (cached under the keys and the policy)."""
    if cap is None:
        return _ws.aligned_embedding(list(_settings))
    from explorer.analysis.embed import aligned_umap  # umap/numba: on use only

    rows = shown_rows(_ws.labels("test"), cap)
    xs = [np.asarray(_ws.features(s, "test")[rows], dtype=np.float32) for s in _settings]
    key = json.dumps([*keys, f"stratified subsample of {cap}, seed 0"])
    return np.stack(aligned_umap(xs, cache_key=key, cache_root=_ws.store.root))


def view(ws: Workspace, block: str, pool: str, t_now: int, class_names: Sequence[str]) -> None:
    """Explore's "Across timesteps": a toggle, the timesteps (bound to the URL) and, when on,
    the animated aligned UMAP of `block` with the linear probe's accuracy at each t."""
    T = ws.num_timesteps
    st.subheader("Across timesteps")
    on = state.flag("explore_tl", "tl", False)(
        st.toggle,
        "Show this block's aligned UMAP across timesteps",
        help="One UMAP per t, tied point to point, so each image keeps its place as noise grows.",
    )
    ts = common.timesteps_control(
        "explore_tl_ts", "ts", T, "Timesteps", default_timesteps(T), disabled=not on
    )
    if not on:
        st.caption("Off: turning it on extracts the chosen timesteps and fits an aligned UMAP.")
        return
    ts = sorted(int(t) for t in ts)
    if len(ts) < 2:
        st.info("Pick at least two timesteps to watch the embedding change.")
        return
    settings = [Setting(t, block, pool) for t in ts]
    res = services.evaluate(ws, settings, PROBE, f"Extracting {block} at t={ts}…")
    keys = tuple(ws.key(s, "test") for s in settings)
    y = ws.labels("test")
    rows = shown_rows(y)
    cap = None if rows is None else TIMELAPSE_MAX_POINTS
    with st.spinner("Aligned UMAP (first time for these timesteps; cached after)…"):
        emb = _aligned(ws, keys, tuple(settings), cap)
    if rows is not None:
        st.caption(
            f"Animated: a stratified (class-balanced) subsample of {len(rows):,} of the "
            f"{len(y):,} test images (at most {TIMELAPSE_MAX_POINTS:,}); accuracies use all."
        )
        y = y[rows]
    acc = [(res[s].top1, res[s].ci_low, res[s].ci_high) for s in settings]
    fig = timelapse_figure(
        emb, ts, y, class_names, acc, title=f"{block} · pool {pool}", positions=rows
    )
    st.plotly_chart(fig, key=f"explore_tl_{block}_{pool}_{'-'.join(map(str, ts))}")
    linked_across_t(ws, emb, ts, y, class_names, rows, key=f"explore_tl_points_{block}_{pool}")


def linked_across_t(
    ws: Workspace,
    emb: np.ndarray,
    ts: Sequence[int],
    labels: np.ndarray,
    class_names: Sequence[str],
    rows: np.ndarray | None,
    key: str,
) -> None:
    """The same aligned embeddings `(K, N, 2)` as linked images-as-points panels, one per t
    (`rows`: the test positions shown, None for all): a box or lasso in one panel marks the
    same images in every panel, and the selection's classes and CSV follow."""
    from explorer.ui.points import view as points  # the component: on use only

    st.markdown(
        "**Linked across t**: pick *Box* or *Lasso* and drag over images in any panel to see "
        "where the same images sit at every t; zoom in for the images themselves."
    )
    pos = np.arange(len(labels)) if rows is None else np.asarray(rows)
    indices = ws.test.indices[pos]
    chosen = points.linked_views(
        ws.dataset, emb, [f"t={t}" for t in ts], labels, class_names, indices, key=key,
        height=380 if len(ts) > 3 else 460,
    )  # fmt: skip
    points.selection_panel(ws.dataset, chosen, labels, class_names, indices, key=f"{key}_sel")
