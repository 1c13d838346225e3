"""Data & model: samples per class, the layer catalogue, and the feature cache."""

import pandas as pd
import streamlit as st

from explorer import access
from explorer.paths import cache_dir
from explorer.ui import common, figures, services, state


def size(n: int) -> str:
    return f"{n / 2**20:.1f} MB" if n >= 2**20 else f"{n / 2**10:.0f} KB"


ctx = common.context()
st.title("Data & model")
with common.guard():
    ws = services.workspace(ctx)
    ds, model, cat = ws.dataset, ws.model, ws.catalogue

    c1, c2 = st.columns(2)
    with c1:
        st.subheader(f"Dataset: {ds.name}")
        m = st.columns(4)
        m[0].metric("Images", f"{len(ds)}")
        m[1].metric("Classes", f"{ds.num_classes}")
        m[2].metric("Train split", f"{len(ds.splits['train'])}")
        m[3].metric("Test split", f"{len(ds.splits['test'])}")
        st.caption(
            f"Using {len(ws.train.indices)} train and {len(ws.test.indices)} test images "
            f"(class-balanced samples; change the limits in the sidebar). Source: {ds.source or ds.name}"
        )
        if ds.skipped:
            with st.expander(f"{len(ds.skipped)} unreadable files were skipped"):
                st.code("\n".join(ds.skipped[:200]), language=None)
    with c2:
        st.subheader(f"Model: {model.name}")
        m = st.columns(3)
        m[0].metric("Parameters", f"{model.parameters / 1e6:.2f} M")
        fam = model.family
        c, h, w = fam.input_shape
        m[1].metric(
            "Input",
            f"{c}×{h}×{w} {fam.space}",
            help=f"from {fam.image_channels}×{model.resolution}×{model.resolution} images",
        )
        m[2].metric("Timesteps", f"{model.num_timesteps}")
        info = fam.describe()
        st.markdown(
            f"**Family:** {info['family']} ({info['loaded']})  \n"
            f"**Input space:** {info['input space']}  \n"
            f"**Conditioning:** {info['conditioning']}  \n"
            f"**Scheduler:** {model.scheduler_text}"
        )
        if fam.leaks_label:
            st.warning(
                "Label-leaking: the model is given each image's own class label, so its features "
                "see the answer. Do not read these accuracies as what the model learned."
            )
        st.caption(
            f"Source: {model.source} · {model.path or ''} · fingerprint `{model.fingerprint}` · "
            f"device {services.device_text()}"
        )

    left, right = st.columns([1, 1])
    with left:
        st.subheader("Samples per class")
        per = state.integer("data_n", "n", 8, 1, 20)(
            st.slider, "Images per class", min_value=1, max_value=20
        )
        train = ds.splits["train"]
        rows = [
            services.images(ds, train[ds.labels[train] == k][:per], size=56)
            for k in range(ds.num_classes)
        ]
        fig = figures.sample_grid(
            rows, [str(c) for c in ds.class_names], title=f"{per} training images per class"
        )
        st.plotly_chart(fig, key="data_samples")
    with right:
        st.subheader("Layer catalogue")
        st.caption(
            "Probe points in forward order: one per transformer block, tokens read on the patch "
            "grid, as the Explore page numbers them."
            if model.family.transformer
            else "Probe points in forward order (down → mid → up), as the Explore page numbers "
            "the U-Net blocks."
        )
        layers = pd.DataFrame([lay.to_dict() for lay in cat])
        layers["features (pool 1 / 2)"] = [f"{lay.channels} / {lay.channels * 4}" for lay in cat]
        short = layers[["index", "name", "stage", "kind", "channels", "height", "width"]]
        st.dataframe(short, hide_index=True, height=min(600, 38 + 35 * len(cat)))

    st.subheader("Feature cache")
    store = ws.store
    entries = pd.DataFrame(store.entries())
    root = cache_dir()
    other = {
        d.name: sum(p.stat().st_size for p in d.rglob("*") if p.is_file())
        for d in sorted(root.iterdir())
        if d.is_dir() and d.name != "features"
    }
    m = st.columns(3)
    m[0].metric("Feature entries", f"{len(entries)}")
    m[1].metric("Feature size", size(store.size_bytes()))
    m[2].metric(
        "Other cached data",
        size(sum(other.values())),
        help=", ".join(f"{k}: {size(v)}" for k, v in other.items()) or None,
    )
    st.caption(f"Cache folder: `{root}`")
    if not entries.empty:
        cols = [
            c
            for c in (
                "model",
                "dataset",
                "split",
                "t",
                "layer_index",
                "layer",
                "pool",
                "seed",
                "images",
                "shape",
                "created",
            )
            if c in entries
        ]
        view = (
            entries.sort_values("created", ascending=False) if "created" in entries else entries
        )[cols].copy()
        if "created" in view:
            view["created"] = pd.to_datetime(view["created"], unit="s").dt.strftime(
                "%Y-%m-%d %H:%M"
            )
        if "shape" in view:
            view["shape"] = view["shape"].map(
                lambda s: "×".join(str(x) for x in s) if isinstance(s, list) else s
            )
        st.dataframe(view, hide_index=True, height=260)
    if not access.can_clear(common.policy()):
        st.caption(access.CLEAR_NOTE)
    else:
        c = st.columns([3, 1])
        sure = c[0].checkbox(
            "Yes, delete every cached feature (probe results, UMAPs and sweep tables stay)",
            key="data_confirm",
        )

        def clear() -> None:
            if not access.can_clear(common.policy()):  # re-checked when the click arrives
                return
            store.clear()
            st.session_state["data_confirm"] = False
            st.session_state["data_cleared"] = True

        c[1].button(
            "Clear the feature cache",
            key="data_clear",
            disabled=not sure,
            type="primary",
            on_click=clear,
        )
    if st.session_state.pop("data_cleared", False):
        st.success("Feature cache cleared.")
    common.export_panel(
        {"samples": fig}, {"layers": layers, "cache_entries": entries}, key="data_export"
    )
