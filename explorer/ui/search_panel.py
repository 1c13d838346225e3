"""The Sweep page's two answers to "which block, which t, and why": *Find best* (the setting
search, `explorer.search`) and the timestep profile of one block (`Workspace.timestep_profile`).

Both run through the core's caches: a search or profile computed here, by `explorer search` or
by a notebook is read back at once, and a later sweep reuses what the search extracted.
"""

from __future__ import annotations

import streamlit as st

from explorer import figures
from explorer.ui import common

SEARCH_KEY = "sweep_search_result"  # session state: the last search of this page


def find_best(ctx, ws, timesteps: list[int], layers: list[str], pool: str) -> None:
    """A *Find best* button over the grid `timesteps` x `layers` at `pool`: progress while it
    runs, then the pick (validation, test with its interval), the cost against the grid, the
    rounds, and *Open in Explore*."""
    st.subheader("Find the best setting without the grid")
    st.caption(
        f"Successive halving over {len(timesteps)} timesteps × {len(layers)} blocks at pool "
        f"{pool}: every setting on a few train images, the best third on three times as many, "
        "and so on, scored on validation only; only the pick is extracted on every image."
    )
    key = (ws.model_name, ctx.dataset, ctx.train_limit, ctx.test_limit, tuple(timesteps), pool)
    if st.button("Find best", key="sweep_find_best", disabled=not (timesteps and layers)):
        bar = st.progress(0.0, text="Starting the search…")
        found = ws.search(
            timesteps,
            layers,
            pool,
            progress=lambda text, fraction: bar.progress(min(fraction, 1.0), text=text),
        )
        bar.empty()
        st.session_state[SEARCH_KEY] = (key, found)
    stored = st.session_state.get(SEARCH_KEY)
    if not stored or stored[0] != key:
        return
    found = stored[1]
    lines = found.lines()
    st.success(lines[0].replace("pick (best on validation)", "Best on validation"))
    st.markdown("\n".join(f"- {line}" for line in lines[1:]))
    room = dict(width=common.FULL_WIDTH, present=common.present())
    common.plot(figures.search_rounds(found.rounds_frame(), **room), key="sweep_search_rounds")
    if st.button("Open the pick in Explore →", key="sweep_search_open"):
        p = found.pick
        common.open_in_explore(ctx, int(p.t), p.layer, p.pool, "linear")


def timestep_profile(ctx, ws, timesteps: list[int], layer: str, pool: str, head: str) -> None:
    """Why this t: the chosen block's timestep profile (R² from its clean and noisiest features
    beside the probe at each t), computed with a progress bar the first time, then cached."""
    st.subheader("Why this t: the timestep profile of a block")
    names = [lay.name for lay in ws.catalogue]
    labels = common.label_of(ws.catalogue)
    c = common.grid(common.CONTROL_MIN, 2)
    block = c.selectbox(
        "Block",
        names,
        index=names.index(layer) if layer in names else 0,
        format_func=labels.get,
        key="sweep_profile_block",
    )
    shown = c.toggle(
        "Show the profile",
        key="sweep_profile_on",
        help="Features at t=0 and t=T-1 too, ridge maps and a probe per t: computed once, "
        "then read from the cache.",
    )
    if not shown:
        return
    bar = None

    def ensure(missing: list) -> None:
        nonlocal bar
        bar = st.progress(0.0, text=f"Computing features at {len(missing)} timesteps…")

    with st.spinner("Fitting the ridge maps and probes…", show_time=True):
        profile = ws.timestep_profile(
            block,
            timesteps,
            pool,
            head,
            ensure=ensure,
            progress=lambda done, total: bar and bar.progress(min(done / max(total, 1), 1.0)),
        )
    if bar is not None:
        bar.empty()
    room = dict(width=common.FULL_WIDTH, present=common.present())
    fig = figures.timestep_profile(profile, labels.get(block, block), **room)
    common.plot(fig, key="sweep_profile")
    st.caption(
        "R² from the clean features (t=0): how much of the block's features at t the clean "
        "image still explains (ridge map, fitted on train images, scored on test images). "
        "Where it falls, the image signal fades from the block; the probe's top-1 follows."
    )
