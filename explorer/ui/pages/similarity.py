"""Similarity: linear CKA between blocks at one timestep, and between timesteps at one block."""

import pandas as pd
import streamlit as st

from explorer import defaults as D
from explorer import figures
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
    common.export_panel(figs, tables, key="sim_export")
