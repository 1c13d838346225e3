"""Sweep timesteps × blocks: compute with progress and ETA, read the curves and the heatmap."""

import streamlit as st

from explorer import defaults as D
from explorer import figures
from explorer.probes.registry import HEADS
from explorer.results import accuracy_view, ranked_cells, sweep_slice
from explorer.sweep import describe_best, plan_for, summary_lines
from explorer.ui import common, downloads, search_panel, services, state

HEAT_KEY, CELL_KEY, CLICKED = "sweep_heat", "sweep_cell", "_sweep_clicked"
HEAT_N = "_sweep_heat_n"  # bumped when the list picks a cell: the heatmap's old click is dropped
X_AXES = {"t": "native level (t)", "log_snr": "log SNR"}


def plan_controls(ctx, ws, path):
    """Timesteps, blocks, pools, heads and baselines; returns the plan when Compute is clicked."""
    cat, T = ws.catalogue, ws.num_timesteps
    names, labels = [lay.name for lay in cat], common.label_of(cat)
    with common.grid(common.CONTROL_MIN + 70, 2):  # side by side from 1024 px windows up
        ts = common.timesteps_control("sweep_ts", "ts", T, "Timesteps", D.timestep_defaults(T))
        blocks = state.choices("sweep_blocks", "blocks", names, common.spread(names, 5))(
            st.multiselect, "Blocks", options=names, format_func=labels.get
        )
    c = common.grid(common.CONTROL_MIN - 20, 4, vertical_alignment="bottom")
    with c:
        pools = state.choices("sweep_pools", "pools", D.APP_POOLS, [D.DEFAULT_POOL])(
            st.multiselect,
            "Pooling",
            options=list(D.APP_POOLS),
            format_func=common.POOL_LABELS.get,
        )
        heads = state.choices("sweep_heads", "heads", HEADS, ["linear"])(
            st.multiselect, "Heads", options=list(HEADS)
        )
        base = state.flag("sweep_base", "baselines", True)(
            st.toggle,
            "Baselines",
            help=f"The raw-pixel probe and the same model with random weights ({ctx.random_model}): "
            "what training added.",
        )
    ready = bool(ts and blocks and pools and heads)
    plan = (  # the one sweep plan of the CLI and the notebook; the control is the app's cached one
        plan_for(
            ws,
            timesteps=sorted(ts),
            layers=[n for n in names if n in blocks],
            pools=list(pools),
            heads=list(heads),
            baselines=base,
            control=lambda spec: services.workspace(ctx, spec),
        )
        if ready
        else None
    )
    n_img = len(ws.train.indices) + len(ws.test.indices)
    passes = len(ts) * (1 + len(plan.controls)) if plan else 0
    st.caption(
        f"{len(ts)} timesteps × {len(blocks)} blocks × {len(pools)} poolings × {len(heads)} heads: "
        f"{passes} feature passes over {n_img} images (one pass serves every block). "
        f"Results are saved as they arrive to `{path}`."
    )
    go = c.button("Compute", type="primary", key="sweep_run", disabled=not ready)
    return plan if go else None


def cell_choice(cur, labels: dict) -> tuple[str, dict[str, str], bool]:
    """The selected cell's id (`figures.cell_id`), every cell's words, best first, and whether
    "best" is by validation top-1 (else by test top-1, without validation accuracies). A click on
    the heatmap (its event, read before the heatmap is drawn again) selects that cell; the
    selection is `cell` in the URL and always a cell of this table."""
    cells, by_val = ranked_cells(cur)
    words = {
        figures.cell_id(r.t, r.layer): f"t={int(r.t)} · {labels.get(r.layer, r.layer)} · "
        f"{100 * r.top1:.1f}%"
        for r in cells.itertuples()
    }
    ids = list(words)
    ss = st.session_state
    clicked = figures.clicked_cell(ss.get(heat_key()))
    if clicked in words and clicked != ss.get(CLICKED):  # a new click: it selects that cell
        ss[CELL_KEY] = clicked
    ss[CLICKED] = clicked
    state.seed(CELL_KEY, "cell", ids[0], valid=words.__contains__)
    return ss[CELL_KEY], words, by_val


def heat_key() -> str:
    """The heatmap's widget key; a new one (no click) after a cell is picked from the list, so
    clicking the cell clicked before selects it again."""
    return f"{HEAT_KEY}_{st.session_state.get(HEAT_N, 0)}"


def picked_from_list() -> None:
    st.session_state[HEAT_N] = st.session_state.get(HEAT_N, 0) + 1
    st.session_state[CLICKED] = None


def open_cell(ctx, words: dict, by_val: bool, view_pool: str, view_head: str) -> None:
    """The selected cell (a list to pick from as well), and Open in Explore."""
    row = st.container(horizontal=True, vertical_alignment="bottom")
    order = "best on validation first" if by_val else "highest test top-1 first"
    row.selectbox(
        f"Selected cell (click one on the heatmap, or pick it here; {order})",
        list(words),
        format_func=words.get,
        key=CELL_KEY,
        on_change=picked_from_list,
    )
    cell = state.publish(CELL_KEY, "cell")
    if row.button("Open in Explore →", key="sweep_open", type="primary"):
        t, layer = cell.split("|", 1)
        common.open_in_explore(ctx, int(t), layer, view_pool, view_head)


def results_section(ctx, ws, table, path) -> None:
    """Pick a head and pooling; the heatmap, the curves, the summary, best settings, all rows."""
    wide = accuracy_view(table)
    wide = wide.assign(t=wide["t"].astype(float))
    mine = sweep_slice(wide, ws.model_name)
    c = common.grid(common.CONTROL_MIN - 20, 4)
    h_opts = sorted(mine["head"].unique()) or list(HEADS)
    # the app's head first (as on Explore), not the alphabetically first ("knn")
    first = D.DEFAULT_HEAD if D.DEFAULT_HEAD in h_opts else h_opts[0]
    view_head = state.choice("sweep_vhead", "vhead", h_opts, first)(
        c.selectbox, "Show head", options=h_opts
    )
    p_opts = sorted(sweep_slice(mine, ws.model_name, view_head)["pool"].unique()) or ["1"]
    view_pool = state.choice("sweep_vpool", "vpool", p_opts, p_opts[0])(
        c.selectbox, "Show pooling", options=p_opts, format_func=common.POOL_LABELS.get
    )
    cur = sweep_slice(mine, ws.model_name, view_head, view_pool)
    baselines = figures.sweep_baselines(wide, view_head, view_pool, ctx.random_model)
    if cur.empty:
        st.info("No rows for this head and pooling yet.")
    else:
        room = dict(present=common.present())
        cell, words, by_val = cell_choice(cur, common.label_of(ws.catalogue))
        figs = {
            "sweep_heatmap": figures.sweep_heatmap(
                cur, baselines, width=common.FULL_WIDTH, selected=cell, **room
            )
        }
        # the main figure is sent first; the curves are built after it
        common.plot(
            figs["sweep_heatmap"], key=heat_key(), on_select="rerun", selection_mode="points"
        )
        open_cell(ctx, words, by_val, view_pool, view_head)
        x_snr = state.choice("sweep_x", "x", list(X_AXES), "t")(
            st.segmented_control, "Curves' x axis", options=list(X_AXES), format_func=X_AXES.get
        )
        snr = services.log_snr(ws, cur["t"]) if x_snr == "log_snr" else None
        figs["accuracy_vs_t"] = figures.accuracy_vs_timestep(
            cur, baselines, width=common.FIGURE_MIN, log_snr=snr, **room
        )
        figs["accuracy_vs_block"] = figures.accuracy_vs_block(
            cur, baselines, width=common.FIGURE_MIN, **room
        )
        with common.grid(common.FIGURE_MIN, 2):  # side by side from 1280 px windows up
            common.plot(figs["accuracy_vs_t"], key="sweep_vs_t")
            common.plot(figs["accuracy_vs_block"], key="sweep_vs_block")
        st.markdown("\n".join(f"- {line}" for line in summary_lines(cur, ctx.random_model)))
        ts = sorted(int(x) for x in cur["t"].dropna().unique())
        search_panel.find_best(ctx, ws, ts, [lay.name for lay in ws.catalogue], view_pool)
        best_layer = ranked_cells(cur)[0].iloc[0]["layer"]
        search_panel.timestep_profile(ctx, ws, ts, best_layer, view_pool, view_head)
        common.export_panel(figs, {"sweep_results": table}, key="sweep_export")
    st.markdown("**Best settings**")
    st.code(describe_best(table) or "–", language=None)
    with st.expander(f"All {len(wide)} results ({path.name})"):
        st.dataframe(wide, hide_index=True)


ctx = common.context()
st.title("Sweep timesteps × blocks")
with common.guard():
    ws = services.workspace(ctx)
    common.used_counts(ws)
    path = services.sweep_path(ctx)
    table = services.load_sweep(ctx)
    plan = plan_controls(ctx, ws, path)
    if plan is not None:
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
        results_section(ctx, ws, table, path)
    downloads.report_download(table, ws)  # the self-contained HTML report (explorer report)
