"""Sweep timesteps × blocks: compute with progress and ETA, read the curves and the heatmap."""

import streamlit as st

from explorer import defaults as D
from explorer.heads import HEADS
from explorer.paths import RANDOM_PREFIX
from explorer.results import accuracy_view
from explorer.sweep import SweepPlan, describe_best, summary_lines
from explorer.ui import common, downloads, figures, services, state

ctx = common.context()
st.title("Sweep timesteps × blocks")
with common.guard():
    ws = services.workspace(ctx)
    cat, T = ws.catalogue, ws.num_timesteps
    names, labels = [lay.name for lay in cat], common.label_of(cat)
    path = services.sweep_path(ctx)
    table = services.load_sweep(ctx)

    c = st.columns([3, 5])
    t_opts = common.timestep_options(T)
    ts = state.choices("sweep_ts", "ts", t_opts, D.timestep_defaults(T), parse=int)(
        c[0].multiselect, "Timesteps", options=t_opts
    )
    blocks = state.choices("sweep_blocks", "blocks", names, common.spread(names, 5))(
        c[1].multiselect, "Blocks", options=names, format_func=labels.get
    )
    c = st.columns([2, 2, 3, 1.5])
    pools = state.choices("sweep_pools", "pools", D.APP_POOLS, [D.DEFAULT_POOL])(
        c[0].multiselect, "Pooling", options=list(D.APP_POOLS), format_func=common.POOL_LABELS.get
    )
    heads = state.choices("sweep_heads", "heads", HEADS, ["linear"])(
        c[1].multiselect, "Heads", options=list(HEADS)
    )
    with c[2]:
        base = state.flag("sweep_base", "baselines", True)(
            st.toggle,
            f"Baselines: raw pixels and {ctx.random_model}",
            help="The raw-pixel probe and the same U-Net with random weights: what training added.",
        )
    controls = (
        [services.workspace(ctx, ctx.random_model)]
        if base and not ctx.model.startswith(RANDOM_PREFIX)
        else []
    )
    n_img = len(ws.train.indices) + len(ws.test.indices)
    st.caption(
        f"{len(ts)} timesteps × {len(blocks)} blocks × {len(pools)} poolings × {len(heads)} heads: "
        f"{len(ts) * (1 + len(controls))} feature passes over {n_img} images (one pass serves every block). "
        f"Results are saved as they arrive to `{path}`."
    )
    go = c[3].button(
        "Compute", type="primary", key="sweep_run", disabled=not (ts and blocks and pools and heads)
    )
    if go:
        plan = SweepPlan(
            sorted(ts),
            [n for n in names if n in blocks],
            list(pools),
            list(heads),
            pixels=base,
            controls=controls,
        )
        table, n_new, secs = services.sweep(ws, plan, path, table)  # the user's own table
        st.success(f"Sweep finished in {secs:.0f}s: {n_new} results.")

    shipped = services.shipped_sweep(ctx) if table.empty else None
    if shipped is not None:  # the built-in pair: open on the shipped sweep, with its provenance
        (st.info if shipped.fresh else st.warning)(shipped.label(), icon="📦")
        table, path = shipped.table, shipped.csv
    if table.empty:
        st.info(
            "No results yet for this model, dataset and limits: choose timesteps and blocks, then Compute."
        )
    else:
        wide = accuracy_view(table)
        wide = wide.assign(t=wide["t"].astype(float))
        mine = wide[wide["model"] == ws.model_name]
        c = st.columns([2, 2, 4])
        h_opts = sorted(mine["head"].unique()) or list(HEADS)
        view_head = state.choice("sweep_vhead", "vhead", h_opts, h_opts[0])(
            c[0].selectbox, "Show head", options=h_opts
        )
        p_opts = sorted(mine[mine["head"] == view_head]["pool"].unique()) or ["1"]
        view_pool = state.choice("sweep_vpool", "vpool", p_opts, p_opts[0])(
            c[1].selectbox, "Show pooling", options=p_opts, format_func=common.POOL_LABELS.get
        )
        cur = mine[(mine["head"] == view_head) & (mine["pool"] == view_pool)]
        baselines = figures.sweep_baselines(wide, view_head, view_pool, ctx.random_model)
        if cur.empty:
            st.info("No rows for this head and pooling yet.")
        else:
            fig_heat = figures.sweep_heatmap(cur, baselines)
            fig_t = figures.accuracy_vs_timestep(cur, baselines)
            fig_b = figures.accuracy_vs_block(cur, baselines)
            st.plotly_chart(fig_heat, key="sweep_heat")
            c1, c2 = st.columns(2)
            c1.plotly_chart(fig_t, key="sweep_vs_t")
            c2.plotly_chart(fig_b, key="sweep_vs_block")
            st.markdown("\n".join(f"- {line}" for line in summary_lines(cur, ctx.random_model)))

            st.subheader("Open a cell in Explore")
            by_val = cur["val_top1"].notna().any()
            cells = cur.sort_values(  # ties: smaller t, then earlier block (as best_on_validation)
                ["val_top1" if by_val else "top1", "t", "layer_index"], ascending=[False, True, True]
            )
            opts = [
                f"t={int(r.t)} · {labels.get(r.layer, r.layer)} · {100 * r.top1:.1f}%"
                for r in cells.itertuples()
            ]
            k = st.selectbox(
                "Cell (best on validation first)" if by_val else "Cell (highest test top-1 first)",
                range(len(opts)),
                format_func=opts.__getitem__,
                key="sweep_cell",
            )
            if st.button("Open in Explore →", key="sweep_open"):
                r = cells.iloc[int(k)]
                common.open_in_explore(ctx, int(r["t"]), r["layer"], view_pool, view_head)
            common.export_panel(
                {"sweep_heatmap": fig_heat, "accuracy_vs_t": fig_t, "accuracy_vs_block": fig_b},
                {"sweep_results": table},
                key="sweep_export",
            )
        st.markdown("**Best settings**")
        st.code(describe_best(table) or "–", language=None)
        with st.expander(f"All {len(wide)} results ({path.name})"):
            st.dataframe(wide, hide_index=True)
    downloads.report_download(table, ws)  # the self-contained HTML report (explorer report)
