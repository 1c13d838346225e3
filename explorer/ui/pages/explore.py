"""Explore one setting: accuracy with its interval, per-class results, embedding, confusions."""

import numpy as np
import streamlit as st

from explorer import defaults as D
from explorer import figures
from explorer.defaults import PIXEL_POOL
from explorer.features.sizes import feature_bytes, human_bytes
from explorer.probes.metrics import confused_positions, per_class_table, predictions_table
from explorer.probes.registry import HEADS, canonical_name
from explorer.settings import Setting
from explorer.ui import common, downloads, selection, services, state, timelapse
from explorer.ui.points import view as points


def controls(ws) -> tuple[Setting, str, str]:
    """Timestep, block, pool, head and embedding controls; returns (setting, head, method)."""
    cat, T = ws.catalogue, ws.num_timesteps
    wide, small = common.control_rows(2, 3)  # one row from 1280 px windows up, else two
    with wide.cell():
        t = common.timestep_control("explore_t", "t", T, "Timestep t")
    with wide:
        block = common.layer_choice(
            cat, "explore_block", "block", D.default_block([lay.stage for lay in cat])
        )(
            st.selectbox,
            "Block",
            options=[lay.name for lay in cat],
            format_func=common.label_of(cat).get,
            help="Shown as index · name · channels×H×W, in forward order (down → mid → up).",
        )
    with small:
        pool = common.pool_control(
            state.choice("explore_pool", "pool", D.APP_POOLS, D.DEFAULT_POOL)
        )
        head = common.head_control(
            state.choice("explore_head", "head", HEADS, D.DEFAULT_HEAD, parse=canonical_name)
        )
        method = common.embedding_control("explore")
    return Setting(int(t), block, pool), head, method


def headline(ws, s: Setting, head: str):
    """Top-1, its interval, the raw-pixel baseline and the test size; returns the result."""
    n_img = len(ws.train.indices) + len(ws.test.indices)
    st.caption(
        f"Features of this setting: {human_bytes(feature_bytes(n_img, ws.layer(s.layer), s.pool))} "
        f"on disk for {n_img} images (float16), before any is computed."
    )
    if HEADS[head].sets:
        st.caption(
            f"Explore reads one setting, so the {head} head here is a transformer over this "
            "setting's tokens alone; fuse two settings with *Add A+B fused* on Compare."
        )
    res = services.evaluate(ws, [s], head, f"Extracting t={s.t}, {s.layer}…")[s]
    # raw pixels are not a map: heads on maps are compared with the linear probe on pixels
    px_head = D.DEFAULT_HEAD if HEADS[head].maps else head
    px = Setting(None, D.PIXELS, PIXEL_POOL)
    base = services.evaluate(ws, [px], px_head, "Raw-pixel baseline…")[px]
    if common.present():  # one line a room can read
        st.markdown(common.headline_html(res, base), unsafe_allow_html=True)
        st.caption(f"{res.n_test} test images; 95% interval: bootstrap over them.")
        return res
    m = common.grid(common.METRIC_MIN, 4)
    m.metric("Top-1 (test)", common.pct(res.top1), help="Accuracy of the probe on the test images.")
    m.metric(
        "95% interval",
        f"{100 * res.ci_low:.1f}–{100 * res.ci_high:.1f}%",
        help="Bootstrap over the test images.",
    )
    same = px_head == head
    m.metric(
        "Raw pixels, same head" if same else f"Raw pixels, {px_head} head",
        common.pct(base.top1),
        delta=f"{100 * (res.top1 - base.top1):+.1f} points",
        delta_description="this block",
        help="The same probe trained on the preprocessed pixels: what the model adds."
        if same
        else f"Pixels are not a map, so the {head} head cannot read them: the {px_head} probe "
        "on the preprocessed pixels is the baseline.",
    )
    m.metric("Test images", f"{res.n_test}")
    return res


def embedding_section(ws, s: Setting, method: str, res, names: list[str], y):
    """The embedding as one images-as-points view (colour, class search, legend, size,
    opacity, hover, box and lasso); the selection feeds the image grid, the per-class table
    and the "these images" CSV. Returns a static figure of it for the export panel."""
    st.subheader("Embedding of the test features")
    ds, pred = ws.dataset, res.predictions
    xy, shown = services.embedding(ws, s, method)  # PCA while a first UMAP computes
    title = f"{common.EMBED[shown]} · t={s.t} · {s.layer} · pool {s.pool}"
    color_by, query = points.controls("explore_points", has_predictions=pred is not None)
    conf = None
    if color_by == "confidence":
        feats = np.asarray(ws.features(s, "test"))
        conf = points.confidence(feats, ws.key(s, "test"), y, np.asarray(pred))
    chosen = points.points_view(
        ds, xy, title, y, names, ws.test.indices, key="explore_points", predictions=pred,
        confidence=conf, color_by=color_by, query=query, initial=selection.from_link(len(y)),
    )  # fmt: skip
    selection.grid(ws, chosen, names, y, pred, key="explore_grid")
    points.selection_panel(
        ds, chosen, y, names, ws.test.indices, pred, key="explore_sel", images=False
    )
    return figures.embedding_scatter(xy, y, names, pred, title=title)


def confusions_section(ws, res, names: list[str], y) -> None:
    """Images of the three most confused (true, predicted) pairs."""
    st.subheader("Most confused")
    pairs = figures.most_confused(res.confusion, k=3)
    if not pairs:
        st.caption("No confusions: every test image is classified correctly.")
    for a, b, n in pairs:
        st.markdown(f"**true {names[a]} → predicted {names[b]}** · {common.plural(n, 'image')}")
        st.image(
            services.images(ws.dataset, ws.test.indices[confused_positions(res, y, a, b, 12)]),
            width=56,
        )


ctx = common.context()
st.title("Explore one setting")
with common.guard():
    ws = services.workspace(ctx)
    common.used_counts(ws)
    names = [str(c) for c in ws.dataset.class_names]
    st.caption(
        f"**{ws.model_name}** on **{ws.dataset.name}** · {len(ws.train.indices)} train / "
        f"{len(ws.test.indices)} test images · T = {ws.num_timesteps} timesteps · {len(ws.catalogue)} blocks"
    )
    common.input_notice(ws)
    s, head, method = controls(ws)
    common.story_banner(ctx, "explore", head, s.pool, setting=(s.t, s.layer, s.pool))
    res = headline(ws, s, head)
    y = ws.labels("test")
    fig_bars = figures.per_class_bars(names, res.per_class, res.top1)
    fig_cm = figures.confusion_heatmap(
        res.confusion, names, width=common.FIGURE_MIN, present=common.present()
    )
    with common.grid(common.FIGURE_MIN, 2):  # side by side from 1280 px windows up
        common.plot(fig_bars, key="explore_bars")
        common.plot(fig_cm, key="explore_cm")
    fig_emb = embedding_section(ws, s, method, res, names, y)
    timelapse.view(ws, s.layer, s.pool, s.t, names)  # the aligned UMAP of this block over t
    confusions_section(ws, res, names, y)
    common.export_panel(
        {"per_class": fig_bars, "confusion": fig_cm, "embedding": fig_emb},
        {
            "per_class": per_class_table(res, names),
            "predictions": predictions_table(res, y, ws.test.indices, names),
        },
        key="explore_export",
    )
    downloads.setting_downloads(ws, s)  # features as npz, safetensors, Parquet, Projector
