"""Compare two settings side by side: trained vs random weights, two blocks, two timesteps, or
two models on the same images."""

import html

import streamlit as st

from explorer import defaults as D
from explorer import figures
from explorer.probes.combine import fused_gain
from explorer.probes.metrics import SideBySide, side_by_side, worst_class
from explorer.probes.registry import HEADS, parse_head
from explorer.settings import Fused, Setting
from explorer.ui import common, compare_parts, services, state
from explorer.ui.points import view as points

MODES = {
    "random": "Trained vs random weights",
    "blocks": "Two blocks",
    "timesteps": "Two timesteps",
    "models": "Two models",
}
FIRST_MODE = "random"  # what training added: the README's first comparison (and the warm view's)


def choose_settings(ws) -> tuple[str, Setting, Setting, str, str]:
    """Draw the controls; returns (mode, setting A, setting B, head, embedding method)."""
    cat, T = ws.catalogue, ws.num_timesteps
    names, labels = [lay.name for lay in cat], common.label_of(cat)
    mode = state.choice("compare_mode", "mode", list(MODES), FIRST_MODE)(
        st.radio, "What differs", options=list(MODES), format_func=MODES.get, horizontal=True
    )
    two_t, two_b = mode == "timesteps", mode == "blocks"
    first = D.default_block([lay.stage for lay in cat])
    pick_b = common.layer_choice(cat, "compare_block", "block", default_index=first)
    pick_b2 = common.layer_choice(
        cat, "compare_block2", "block2", default_index=D.compare_block(len(cat))
    )
    block_kw = dict(options=names, format_func=labels.get)
    c, small = common.control_rows(3, 3)  # two rows below 1920 px windows
    with c.cell():
        t_a = common.timestep_control("compare_t", "t", T, "Timestep A" if two_t else "Timestep")
    if two_t:
        with c.cell():
            t_b = common.timestep_control(
                "compare_t2", "t2", T, "Timestep B", default=min(D.COMPARE_T2, T - 1)
            )
        b_a = b_b = pick_b(c.selectbox, "Block", **block_kw)
    else:
        t_b = t_a
        block_a = "Block A" if two_b or mode == "models" else "Block"
        b_a = pick_b(c.selectbox, block_a, **block_kw)
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


def side_title(side: str, role: str, s: Setting, labels: dict) -> str:
    """One line over each column, the same shape for A and B (so the columns line up); the
    full text is in its tooltip when the column is too narrow."""
    text = f"{side} · {role} · t={s.t} · {labels.get(s.layer, s.layer)} · pool {s.pool}"
    return f"<div class='dfe-side' title='{html.escape(text)}'>{html.escape(text)}</div>"


def side_figures(sides, cmp: SideBySide, method: str, y, delta_title: str) -> dict:
    """Per-class bars and an embedding for each side, then the per-class difference."""
    figs, clouds = {}, []
    row = common.grid(common.FIGURE_MIN, 2)  # A beside B from 1280 px windows up
    for (side, w, s, role), r in zip(sides, (cmp.a, cmp.b), strict=True):
        with row.cell():
            st.html(side_title(side, role, s, common.label_of(w.catalogue)))
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
            clouds.append((xy, f"{common.EMBED[shown]}, {side}"))  # drawn linked, below
    w = sides[0][1]
    st.caption("The same images in both: a box or lasso in one view selects them in the other.")
    chosen = points.linked_pair(
        w.dataset, clouds[0][0], clouds[1][0], (clouds[0][1], clouds[1][1]), y, cmp.classes,
        w.test.indices, key="compare_points",
    )  # fmt: skip
    points.selection_panel(
        w.dataset, chosen, y, cmp.classes, w.test.indices, cmp.b.predictions, key="compare_sel"
    )
    paired = compare_parts.per_class_paired(cmp, y)
    figs["per_class_delta"] = figures.per_class_delta(
        cmp.classes, cmp.a.per_class, cmp.b.per_class, title=delta_title, intervals=paired
    )
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
    common.used_counts(ws)
    mode, sa, sb, head, method = choose_settings(ws)
    common.story_banner(ctx, "compare", head, sa.pool)
    if mode == "random":  # B − A is what training added: positive when training helped
        sides = [
            ("A", services.workspace(ctx, ctx.random_model), sa, "random weights"),
            ("B", services.workspace(ctx, ctx.base_model), sb, "trained"),
        ]
        delta_title = "Per-class gain from training, trained − random (points)"
    elif mode == "models":
        picked = compare_parts.other_model(ctx, ws, sa)
        if picked is None:
            st.stop()
        ws_b, sb = picked
        sides = [("A", ws, sa, ws.model_name), ("B", ws_b, sb, ws_b.model_name)]
        delta_title = f"Per-class change, {ws_b.model_name} − {ws.model_name} (points)"
    else:
        sides = [("A", ws, sa, ws.model_name), ("B", ws, sb, ws.model_name)]
        delta_title = "Per-class change, B − A (points)"
    ra, rb = (
        services.evaluate(w, [s], head, f"Side {side}: extracting t={s.t}, {s.layer}…")[s]
        for side, w, s, _ in sides
    )
    y = ws.labels("test")
    cmp = side_by_side(ra, rb, y, ws.dataset.class_names)  # the same images: paired B - A
    headline(cmp)
    if mode in ("blocks", "timesteps"):  # one model: its two settings can be fused
        fused_column(ws, sa, sb, head, ra, rb, y)
    figs = side_figures(sides, cmp, method, y, delta_title)
    numbers(cmp, figs)
