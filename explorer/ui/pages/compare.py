"""Compare two settings side by side: two blocks, two timesteps, or trained vs random weights."""

import streamlit as st

from explorer import defaults as D
from explorer import figures
from explorer.probes.combine import fused_gain
from explorer.probes.metrics import SideBySide, side_by_side, worst_class
from explorer.probes.registry import HEADS, parse_head
from explorer.settings import Fused, Setting
from explorer.ui import common, services, state

MODES = {
    "blocks": "Two blocks",
    "timesteps": "Two timesteps",
    "random": "Trained vs random weights",
}


def choose_settings(ws) -> tuple[str, Setting, Setting, str, str]:
    """Draw the controls; returns (mode, setting A, setting B, head, embedding method)."""
    cat, T = ws.catalogue, ws.num_timesteps
    names, labels = [lay.name for lay in cat], common.label_of(cat)
    mode = state.choice("compare_mode", "mode", list(MODES), "blocks")(
        st.radio, "What differs", options=list(MODES), format_func=MODES.get, horizontal=True
    )
    two_t, two_b = mode == "timesteps", mode == "blocks"
    pick_t = state.integer("compare_t", "t", D.default_t(T), 0, T - 1)
    pick_t2 = state.integer("compare_t2", "t2", min(D.COMPARE_T2, T - 1), 0, T - 1)
    first = D.default_block([lay.stage for lay in cat])
    pick_b = common.layer_choice(cat, "compare_block", "block", default_index=first)
    pick_b2 = common.layer_choice(
        cat, "compare_block2", "block2", default_index=D.compare_block(len(cat))
    )
    block_kw = dict(options=names, format_func=labels.get)
    c, small = common.control_rows(3, 3)  # two rows below 1920 px windows
    t_a = pick_t(c.slider, "Timestep A" if two_t else "Timestep", min_value=0, max_value=T - 1)
    if two_t:
        t_b = pick_t2(c.slider, "Timestep B", min_value=0, max_value=T - 1)
        b_a = b_b = pick_b(c.selectbox, "Block", **block_kw)
    else:
        t_b = t_a
        b_a = pick_b(c.selectbox, "Block A" if two_b else "Block", **block_kw)
        b_b = pick_b2(c.selectbox, "Block B", **block_kw) if two_b else b_a
    with small:
        pool = common.pool_control(
            state.choice("compare_pool", "pool", D.APP_POOLS, D.DEFAULT_POOL)
        )
        head = common.head_control(state.choice("compare_head", "head", HEADS, D.DEFAULT_HEAD))
        method = common.embedding_control("compare")
    return mode, Setting(int(t_a), b_a, pool), Setting(int(t_b), b_b, pool), head, method


def headline(cmp: SideBySide) -> None:
    """Four metrics and one caption, every number from `cmp`."""
    ra, rb = cmp.a, cmp.b
    m = common.grid(common.METRIC_MIN, 4)
    m.metric("Top-1 A", common.pct(ra.top1), help=common.ci_text(ra.ci_low, ra.ci_high))
    m.metric(
        "Top-1 B",
        common.pct(rb.top1),
        delta=f"{cmp.top1_delta:+.2f} points",
        delta_description="vs A",
        help=common.ci_text(rb.ci_low, rb.ci_high),
    )
    m.metric(
        "Worst class, B",
        common.pct(worst_class(rb)),
        delta=f"{cmp.worst_delta:+.1f} points",
        delta_description="vs A",
    )
    m.metric("Classes better in B", f"{cmp.classes_better} of {len(cmp.classes)}")
    st.caption(
        f"A: {common.ci_text(ra.ci_low, ra.ci_high)} · B: {common.ci_text(rb.ci_low, rb.ci_high)} · "
        + cmp.paired.words("B", "A")
    )


def side_figures(sides, cmp: SideBySide, labels: dict, method: str, y) -> dict:
    """Per-class bars and an embedding for each side, then the per-class difference."""
    figs = {}
    row = common.grid(common.FIGURE_MIN, 2)  # A beside B from 1280 px windows up
    for (side, w, s), r in zip(sides, (cmp.a, cmp.b), strict=True):
        title = f"{side}: {w.model_name} · t={s.t} · {labels.get(s.layer, s.layer)} · pool {s.pool}"
        with row.cell():
            st.markdown(f"**{title}**")
            figs[f"per_class_{side}"] = figures.per_class_bars(
                cmp.classes, r.per_class, r.top1, title=f"Per-class accuracy, {side}"
            )
            common.plot(figs[f"per_class_{side}"], key=f"compare_bars_{side}")
            xy, shown = services.embedding(w, s, method)  # PCA while a first UMAP computes
            figs[f"embedding_{side}"] = figures.embedding_scatter(
                xy,
                y,
                cmp.classes,
                r.predictions,
                title=f"{common.EMBED[shown]}, {side}",
                marker_size=5,
            )
            common.plot(figs[f"embedding_{side}"], key=f"compare_emb_{side}")
    figs["per_class_delta"] = figures.per_class_delta(cmp.classes, cmp.a.per_class, cmp.b.per_class)
    common.plot(figs["per_class_delta"], key="compare_delta")
    return figs


def numbers(cmp: SideBySide, figs: dict) -> None:
    """The summary and per-class tables, and the export panel."""
    summary, per_class = cmp.summary_table(), cmp.per_class_table()
    with st.expander("Numbers"):
        st.dataframe(summary, hide_index=True)
        st.dataframe(per_class, hide_index=True)
    common.export_panel(
        figs, {"compare_summary": summary, "compare_per_class": per_class}, key="compare_export"
    )


def fused_column(ws, sa, sb, head: str, ra, rb, y) -> None:
    """Optional third column: A and B fused (concatenated; a token set for head `fusion`)."""
    if not st.toggle("Add A+B fused as a third column", key="compare_fused") or sa == sb:
        return
    if (spec := parse_head(head).spec).maps and not spec.sets:
        return st.info(f"The {head} head reads one map: fuse with linear, knn, mlp or fusion.")
    f = Fused((sa, sb))
    gain = fused_gain(ra, rb, services.evaluate(ws, [f], head, "A+B: extracting…")[f], y)
    row = common.grid(common.METRIC_MIN, 3)
    for name, r in (("A", ra), ("B", rb), ("A+B (fused)", gain.fused)):
        row.metric(name, common.pct(r.top1), help=common.ci_text(r.ci_low, r.ci_high))
    st.caption(gain.words())


ctx = common.context()
st.title("Compare two settings")
with common.guard():
    ws = services.workspace(ctx)
    mode, sa, sb, head, method = choose_settings(ws)
    ws_a = services.workspace(ctx, ctx.base_model) if mode == "random" else ws
    ws_b = services.workspace(ctx, ctx.random_model) if mode == "random" else ws
    sides = [("A", ws_a, sa), ("B", ws_b, sb)]
    ra, rb = (
        services.evaluate(w, [s], head, f"Side {side}: extracting t={s.t}, {s.layer}…")[s]
        for side, w, s in sides
    )
    y = ws.labels("test")
    cmp = side_by_side(ra, rb, y, ws.dataset.class_names)  # the same images: paired B - A
    headline(cmp)
    if mode != "random":  # one model: its two settings can be fused
        fused_column(ws, sa, sb, head, ra, rb, y)
    figs = side_figures(sides, cmp, common.label_of(ws.catalogue), method, y)
    numbers(cmp, figs)
