"""Compare two settings side by side: two blocks, two timesteps, or trained vs random weights."""

import numpy as np
import pandas as pd
import streamlit as st

from explorer import defaults as D
from explorer.heads import HEADS
from explorer.probes.metrics import compare_results
from explorer.ui import common, figures, services, state
from explorer.workspace import Setting

MODES = {
    "blocks": "Two blocks",
    "timesteps": "Two timesteps",
    "random": "Trained vs random weights",
}
EMBED = {"pca": "PCA (instant)", "umap": "UMAP"}

ctx = common.context()
st.title("Compare two settings")
with common.guard():
    ws = services.workspace(ctx)
    cat, T = ws.catalogue, ws.model.num_timesteps
    names, labels = [lay.name for lay in cat], common.label_of(cat)
    classes = [str(c) for c in ws.dataset.class_names]
    mode = state.choice("compare_mode", "mode", list(MODES), "blocks")(
        st.radio, "What differs", options=list(MODES), format_func=MODES.get, horizontal=True
    )

    two_t, two_b = mode == "timesteps", mode == "blocks"
    pick_t = state.integer("compare_t", "t", D.default_t(T), 0, T - 1)
    pick_t2 = state.integer("compare_t2", "t2", min(D.COMPARE_T2, T - 1), 0, T - 1)
    first = D.default_block([lay.stage for lay in cat])
    pick_b = common.layer_choice(cat, "compare_block", "block", default_index=first)
    pick_b2 = common.layer_choice(cat, "compare_block2", "block2", default_index=D.compare_block(len(cat)))
    block_kw = dict(options=names, format_func=labels.get)
    c = st.columns(3)
    t_a = pick_t(c[0].slider, "Timestep A" if two_t else "Timestep", min_value=0, max_value=T - 1)
    if two_t:
        t_b = pick_t2(c[1].slider, "Timestep B", min_value=0, max_value=T - 1)
        b_a = b_b = pick_b(c[2].selectbox, "Block", **block_kw)
    else:
        t_b = t_a
        b_a = pick_b(c[1].selectbox, "Block A" if two_b else "Block", **block_kw)
        b_b = pick_b2(c[2].selectbox, "Block B", **block_kw) if two_b else b_a
    c = st.columns(3)
    with c[0]:
        pool = common.pool_control(state.choice("compare_pool", "pool", D.APP_POOLS, D.DEFAULT_POOL))
    with c[1]:
        head = common.head_control(state.choice("compare_head", "head", HEADS, D.DEFAULT_HEAD))
    with c[2]:
        method = state.choice("compare_proj", "proj", list(EMBED), "umap")(
            st.radio, "Embedding", options=list(EMBED), format_func=EMBED.get, horizontal=True
        )

    ws_a = services.workspace(ctx, ctx.base_model) if mode == "random" else ws
    ws_b = services.workspace(ctx, ctx.random_model) if mode == "random" else ws
    sa, sb = Setting(int(t_a), b_a, pool), Setting(int(t_b), b_b, pool)
    sides = [("A", ws_a, sa), ("B", ws_b, sb)]
    results = {}
    for side, w, s in sides:
        results[side] = services.evaluate(
            w, [s], head, f"Side {side}: extracting t={s.t}, {s.layer}…"
        )[s]
    ra, rb = results["A"], results["B"]
    y = ws.labels("test")

    d = 100 * (rb.top1 - ra.top1)
    worst = lambda r: float(np.nanmin(r.per_class))  # noqa: E731
    m = st.columns(4)
    m[0].metric("Top-1 A", common.pct(ra.top1), help=common.ci_text(ra.ci_low, ra.ci_high))
    m[1].metric(
        "Top-1 B",
        common.pct(rb.top1),
        delta=f"{d:+.2f} points vs A",
        help=common.ci_text(rb.ci_low, rb.ci_high),
    )
    m[2].metric(
        "Worst class, B",
        common.pct(worst(rb)),
        delta=f"{100 * (worst(rb) - worst(ra)):+.1f} points vs A",
    )
    better = int(np.nansum(rb.per_class > ra.per_class))
    m[3].metric("Classes better in B", f"{better} of {len(classes)}")
    paired = compare_results(rb, ra, y)  # the same test images: a paired bootstrap of B - A
    st.caption(
        f"A: {common.ci_text(ra.ci_low, ra.ci_high)} · B: {common.ci_text(rb.ci_low, rb.ci_high)} · "
        + paired.words("B", "A")
    )

    figs = {}
    cols = st.columns(2)
    for (side, w, s), col in zip(sides, cols, strict=True):
        r = results[side]
        title = f"{side}: {w.model.name} · t={s.t} · {labels.get(s.layer, s.layer)} · pool {pool}"
        with col:
            st.markdown(f"**{title}**")
            figs[f"per_class_{side}"] = figures.per_class_bars(
                classes, r.per_class, r.top1, title=f"Per-class accuracy, {side}"
            )
            st.plotly_chart(figs[f"per_class_{side}"], key=f"compare_bars_{side}")
            xy, shown = services.embedding(w, s, method)  # PCA while a first UMAP computes
            figs[f"embedding_{side}"] = figures.embedding_scatter(
                xy, y, classes, r.predictions, title=f"{EMBED[shown]}, {side}", marker_size=5
            )
            st.plotly_chart(figs[f"embedding_{side}"], key=f"compare_emb_{side}")
    figs["per_class_delta"] = figures.per_class_delta(classes, ra.per_class, rb.per_class)
    st.plotly_chart(figs["per_class_delta"], key="compare_delta")

    summary = pd.DataFrame(
        {
            "metric": ["top1", "ci_low", "ci_high", "worst_class"],
            "A": [ra.top1, ra.ci_low, ra.ci_high, worst(ra)],
            "B": [rb.top1, rb.ci_low, rb.ci_high, worst(rb)],
        }
    ).assign(**{"B - A": lambda f: f["B"] - f["A"]})
    intervals = pd.DataFrame(  # the paired-bootstrap 95% interval of B - A over the same images
        {"metric": ["paired_low", "paired_high"], "B - A": [paired.low, paired.high]}
    )
    summary = pd.concat([summary, intervals], ignore_index=True)
    per_class = pd.DataFrame(
        {
            "class": classes,
            "A": ra.per_class,
            "B": rb.per_class,
            "B - A": rb.per_class - ra.per_class,
        }
    )
    with st.expander("Numbers"):
        st.dataframe(summary, hide_index=True)
        st.dataframe(per_class, hide_index=True)
    common.export_panel(
        figs, {"compare_summary": summary, "compare_per_class": per_class}, key="compare_export"
    )
