"""Similarity: linear CKA between blocks at one timestep, and between timesteps at one block;
"Compare with" adds the block × block alignment map (CKA, CKNNA, mutual k-NN) between this
model and another source (its random-weights control, another model or a reference encoder)."""

import pandas as pd
import streamlit as st

from explorer import defaults as D
from explorer import figures
from explorer.analysis.alignment import METRICS
from explorer.analysis.cka import neighbour_mean
from explorer.settings import Setting
from explorer.ui import common, services, state

IMAGES = list(D.SIMILARITY_IMAGES)


def controls(ws0):
    """Timestep, block, pool, image count, debiasing and the timesteps; returns them."""
    cat, T = ws0.catalogue, ws0.num_timesteps
    names, labels = [lay.name for lay in cat], common.label_of(cat)
    wide, small = common.control_rows(2, 3)  # one row from 1280 px windows up, else two
    t = state.integer("sim_t", "t", D.default_t(T), 0, T - 1)(
        wide.slider, "Timestep (blocks × blocks)", min_value=0, max_value=T - 1
    )
    first = D.default_block([lay.stage for lay in cat])
    block = common.layer_choice(cat, "sim_block", "block", default_index=first)(
        wide.selectbox, "Block (timesteps × timesteps)", options=names, format_func=labels.get
    )
    with small:
        pool = common.pool_control(state.choice("sim_pool", "pool", D.APP_POOLS, D.DEFAULT_POOL))
        n = state.choice("sim_n", "n", IMAGES, D.DEFAULT_SIMILARITY_IMAGES, parse=int)(
            st.selectbox, "Images", options=IMAGES, help="Test images used (fewer is faster)."
        )
        debiased = state.flag("sim_debiased", "debiased", False)(
            st.toggle,
            "Debiased",
            help="Debiased CKA: the unbiased HSIC estimator, less inflated on few images.",
        )
    t_opts = common.timestep_options(T)
    ts = state.choices(
        "sim_ts", "ts", t_opts, D.timestep_defaults(T, D.SIMILARITY_TIMESTEPS), parse=int
    )(st.multiselect, "Timesteps for the timesteps × timesteps map", options=t_opts)
    return int(t), block, pool, int(n), debiased, sorted(int(x) for x in ts)


def compare_controls() -> tuple[str, str]:
    """ "Compare with" (this model only, random weights, or a typed model/encoder spec) and the
    alignment metric; returns (choice, typed spec) and the metric."""
    options = list(services.COMPARE_WITH)
    row = common.grid(common.CONTROL_MIN, 3)
    choice = state.choice("sim_with", "with", options, "self")(
        row.selectbox,
        "Compare with",
        options=options,
        format_func=services.COMPARE_WITH.get,
        help="Another source's blocks against this model's, on the same test images.",
    )
    typed = ""
    if choice == "other":
        typed = state.Bound("sim_other", "other", "")(
            row.text_input,
            "Model or encoder",
            placeholder="ddpm-fashion-mnist, a folder, encoder:FOLDER",
            help="A model spec as in the sidebar (a built-in name, a folder or a hub id), "
            "or a reference encoder folder.",
        )
    metric = state.choice("sim_metric", "metric", METRICS, "cka")(
        row.selectbox,
        "Alignment metric",
        options=list(METRICS),
        format_func=figures.ALIGN_METRICS.get,
    )
    return services.reference_spec(common.context(), choice, typed or ""), metric


def cross_map(ctx, ws, spec: str | None, t: int, pool: str, metric: str):
    """The model × other-source block map at `t` (None when comparing with this model only)."""
    if spec is None:
        return None, None
    table = services.alignment(ctx, ws, spec, t, pool, metric, common.policy())
    fig = figures.alignment_heatmap(
        table, metric, width=common.FULL_WIDTH, present=common.present()
    )
    common.plot(fig, key="sim_cross")
    st.caption(
        f"Rows: this model's blocks; columns: {spec}'s, on the same {int(table['images'].iloc[0])} "
        "test images. Hover a cell for its 95% bootstrap interval over the images."
    )
    return fig, table


def timesteps_map(ws, col, block: str, pool: str, times: list[int], debiased: bool, title: str):
    """The timesteps × timesteps CKA map in `col` (None with fewer than two timesteps)."""
    if len(times) < 2:
        col.info("Pick at least two timesteps for the timesteps × timesteps map.")
        return None
    settings = [Setting(x, block, pool) for x in times]
    m = services.cka(ws, settings, debiased, f"Features of {block} at {len(times)} timesteps…")
    fig = figures.cka_heatmap(
        m, [f"t={x}" for x in times], title, width=common.FIGURE_MIN, present=common.present()
    )
    common.plot(fig, key="sim_times", where=col)
    return fig


ctx = common.context()
st.title("Representation similarity (CKA)")
with common.guard():
    ws0 = services.workspace(ctx)
    t, block, pool, n, debiased, times = controls(ws0)
    spec, metric = compare_controls()
    cat, names = ws0.catalogue, [lay.name for lay in ws0.catalogue]
    ws = services.workspace(ctx, test_limit=min(n, ctx.test_limit) if ctx.test_limit else n)
    kind = "debiased " if debiased else ""
    st.caption(
        f"Linear {kind}CKA on {len(ws.test.indices)} test images of {ws.dataset.name}, "
        f"features pooled {common.POOL_LABELS[pool]}. 1 = the same representation up to rotation and scale."
    )
    m_blocks = services.cka(
        ws,
        [Setting(t, name, pool) for name in names],
        debiased,
        f"Features of every block at t={t}…",
    )
    fig_b = figures.cka_heatmap(
        m_blocks,
        [f"{lay.index:02d}" for lay in cat],
        f"{kind}CKA between blocks at t={t}",
        width=common.FIGURE_MIN,
        present=common.present(),
    )
    row = common.grid(common.FIGURE_MIN, 2)  # side by side from 1280 px windows up
    common.plot(fig_b, key="sim_blocks", where=row)
    label = common.label_of(cat)[block]
    fig_t = timesteps_map(
        ws, row, block, pool, times, debiased, f"{kind}CKA between timesteps at {label}"
    )
    near = neighbour_mean(m_blocks)
    st.caption(f"Neighbouring blocks: mean CKA {near:.2f}" if near is not None else "")
    tables = {
        "cka_blocks": pd.DataFrame(m_blocks, index=names, columns=names).reset_index(names="block")
    }
    figs = {"cka_blocks": fig_b} | ({"cka_timesteps": fig_t} if fig_t is not None else {})
    fig_x, table_x = cross_map(ctx, ws, spec, t, pool, metric)
    if fig_x is not None:
        figs, tables = figs | {"alignment": fig_x}, tables | {"alignment": table_x}
    common.export_panel(figs, tables, key="sim_export")
