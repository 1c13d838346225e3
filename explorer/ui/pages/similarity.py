"""Similarity: linear CKA between blocks at one timestep, and between timesteps at one block;
"Compare with" (random weights by default) adds two alignment maps (CKA, CKNNA or mutual k-NN,
each with its bootstrap interval): this model's blocks × the other source's blocks at one t, and
this model's blocks × t against one reference block or the input pixels (REPA's figure)."""

import pandas as pd
import streamlit as st

from explorer import defaults as D
from explorer import figures
from explorer.analysis.alignment import METRICS
from explorer.analysis.cka import neighbour_mean
from explorer.settings import Setting
from explorer.ui import common, services, state

IMAGES = list(D.SIMILARITY_IMAGES)
PIXELS_LABEL = "input pixels"


def controls(ws0):
    """Timestep, block, pool, image count, debiasing and the timesteps; returns them."""
    cat, T = ws0.catalogue, ws0.num_timesteps
    names, labels = [lay.name for lay in cat], common.label_of(cat)
    wide, small = common.control_rows(2, 3)  # one row from 1280 px windows up, else two
    with wide.cell():
        t = common.timestep_control("sim_t", "t", T, "Timestep (blocks × blocks)")
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
    ts = common.timesteps_control(
        "sim_ts",
        "ts",
        T,
        "Timesteps (timesteps × timesteps, blocks × timesteps)",
        D.timestep_defaults(T, D.SIMILARITY_TIMESTEPS),
    )
    return int(t), block, pool, int(n), debiased, ts


def compare_controls():
    """ "Compare with" (random weights by default, this model only, or a typed model/encoder
    spec) and the alignment metric; returns (the other source's spec or None, the metric, the
    row to put the reference-block choice in)."""
    options = list(services.COMPARE_WITH)
    row = common.grid(common.CONTROL_MIN, 3)
    choice = state.choice("sim_with", "with", options, "random")(
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
        help="Every metric is computed (and cached) at once: switching is instant.",
    )
    return services.reference_spec(common.context(), choice, typed or ""), metric, row


def reference_block(row, blocks: pd.DataFrame, encoder: bool) -> str:
    """The reference's block for the blocks × timesteps map, from the block map's reference
    columns: the input pixels (default), or a block (an encoder's last by default, as REPA)."""
    order = blocks.drop_duplicates("ref_layer").sort_values("ref_layer_index")
    options = [D.PIXELS, *order["ref_layer"]]
    text = {D.PIXELS: PIXELS_LABEL} | {
        r.ref_layer: f"{r.ref_layer_index:02d} · {r.ref_layer}" for r in order.itertuples()
    }
    default = options[-1] if encoder else D.PIXELS
    return state.choice("sim_ref_block", "ref_block", options, default)(
        row.selectbox,
        "Against (blocks × timesteps)",
        options=options,
        format_func=text.get,
        help="What every block is compared with at each t: this model's input pixels, or one "
        "block of the other source (read at the same t when it is a diffusion model).",
    )


def alignment_maps(ctx, ws, spec: str, row, t: int, pool: str, metric: str, times: list[int]):
    """The blocks × blocks map with `spec` at `t` beside this model's blocks × `times` against
    one reference block or the pixels; returns ({name: figure}, {name: table})."""
    rules = common.policy()
    blocks = services.alignment(ctx, ws, spec, [t], "all", pool, rules)
    encoder = blocks["ref_t"].isna().all()
    against = reference_block(row, blocks, encoder)
    st.subheader(f"Alignment with {spec}")
    figs = {
        "alignment": figures.alignment_heatmap(
            blocks, metric, width=common.FIGURE_MIN, present=common.present()
        )
    }
    tables = {"alignment": blocks}
    if times:
        on = None if against == D.PIXELS else spec
        levels = services.alignment(ctx, ws, on, times, against, pool, rules)
        figs["alignment_levels"] = figures.alignment_heatmap(
            levels, metric, across="levels", width=common.FIGURE_MIN, present=common.present()
        )
        tables["alignment_levels"] = levels
    figures.same_top(*figs.values())
    grid = common.grid(common.FIGURE_MIN, 2)  # side by side from 1280 px windows up
    common.plot(figs["alignment"], key="sim_cross", where=grid)
    if times:
        common.plot(figs["alignment_levels"], key="sim_cross_levels", where=grid)
    else:
        grid.info("Pick timesteps above for the blocks × timesteps map.")
    n_img = int(blocks["images"].iloc[0])
    st.caption(
        f"Rows: this model's blocks; columns: {spec}'s blocks at t={t} (left), and t with "
        f"{PIXELS_LABEL if against == D.PIXELS else against} (right), on the same {n_img} test "
        "images. Hover a cell for its 95% bootstrap interval over the images."
    )
    return figs, tables


def timesteps_map(ws, block: str, pool: str, times: list[int], debiased: bool, title: str):
    """The timesteps × timesteps CKA map (None with fewer than two timesteps)."""
    if len(times) < 2:
        return None
    settings = [Setting(x, block, pool) for x in times]
    m = services.cka(ws, settings, debiased, f"Features of {block} at {len(times)} timesteps…")
    return figures.cka_heatmap(
        m, [f"t={x}" for x in times], title, width=common.FIGURE_MIN, present=common.present()
    )


ctx = common.context()
st.title("Representation similarity (CKA)")
with common.guard():
    ws0 = services.workspace(ctx)
    t, block, pool, n, debiased, times = controls(ws0)
    spec, metric, compare_row = compare_controls()
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
    label = common.label_of(cat)[block]
    fig_t = timesteps_map(
        ws, block, pool, times, debiased, f"{kind}CKA between timesteps at {label}"
    )
    figures.same_top(fig_b, fig_t)
    row = common.grid(common.FIGURE_MIN, 2)  # side by side from 1280 px windows up
    common.plot(fig_b, key="sim_blocks", where=row)
    if fig_t is None:
        row.info("Pick at least two timesteps for the timesteps × timesteps map.")
    else:
        common.plot(fig_t, key="sim_times", where=row)
    near = neighbour_mean(m_blocks)
    st.caption(f"Neighbouring blocks: mean CKA {near:.2f}" if near is not None else "")
    tables = {
        "cka_blocks": pd.DataFrame(m_blocks, index=names, columns=names).reset_index(names="block")
    }
    figs = {"cka_blocks": fig_b} | ({"cka_timesteps": fig_t} if fig_t is not None else {})
    if spec is not None:
        more_figs, more_tables = alignment_maps(ctx, ws, spec, compare_row, t, pool, metric, times)
        figs, tables = figs | more_figs, tables | more_tables
    common.export_panel(figs, tables, key="sim_export")
