"""Data & model: samples per class, the layer catalogue, and the feature cache."""

import streamlit as st

from explorer import exposure, figures
from explorer.overview import layer_table, size_text
from explorer.ui import common, services, state

SHAPE = ("channels", "height", "width")  # the layer table's shape columns, shown as one
SMALL_METRIC_MIN = 150  # px: a count such as "70000" or an input shape such as "3×256×256"


def dataset_section(d: dict) -> None:
    """Sizes of the dataset and of the samples in use (`d` from `describe_dataset`)."""
    st.subheader(f"Dataset: {d['name']}")
    m = common.grid(common.METRIC_MIN + 10, 4)  # 2 × 2, or one row when there is room
    m.metric("Images", f"{d['images']}")
    m.metric("Classes", f"{d['classes']}")
    m.metric("Train split", f"{d['train_split']}")
    m.metric("Test split", f"{d['test_split']}")
    st.caption(
        f"Using {common.plural(d['used_train'], 'train image')} and "
        f"{common.plural(d['used_test'], 'test image')} "
        f"(class-balanced samples; change the limits in the sidebar). Source: {d['source']}"
    )
    if d["skipped"]:
        with st.expander(f"{len(d['skipped'])} unreadable files were skipped"):
            st.code("\n".join(d["skipped"][:200]), language=None)


def model_section(m: dict) -> None:
    """Size, input, schedule and provenance of the model (`m` from `describe_model`)."""
    st.subheader(f"Model: {m['name']}")
    c = common.grid(SMALL_METRIC_MIN, 3)
    shape, _, space = str(m["input"]).partition(" ")  # "1×28×28 pixels": the space in the label
    c.metric("Parameters", f"{m['parameters'] / 1e6:.2f} M")
    c.metric(f"Input, {space}" if space else "Input", shape, help=f"from {m['input_from']}")
    c.metric("Timesteps", f"{m['timesteps']}")
    st.markdown(
        f"**Family:** {m['family']} ({m['loaded']})  \n"
        f"**Input space:** {m['input_space']}  \n"
        f"**Conditioning:** {m['conditioning']}  \n"
        f"**Scheduler:** {m['scheduler']}"
    )
    if m["leaks_label"]:
        st.warning(
            "Label-leaking: the model is given each image's own class label, so its features "
            "see the answer. Do not read these accuracies as what the model learned."
        )
    st.caption(
        f"Source: {m['source']} · {m['path']} · fingerprint `{m['fingerprint']}` · "
        f"device {services.device_text()}"
    )


def samples_section(ws, class_names: list[str]):
    """A grid of training images per class; returns its figure."""
    st.subheader("Samples per class")
    per = state.integer("data_n", "n", 8, 1, 20)(
        st.slider, "Images per class", min_value=1, max_value=20
    )
    fig = figures.sample_grid(
        services.class_samples(ws, per), class_names, title=f"{per} training images per class"
    )
    common.plot(fig, key="data_samples")
    return fig


def catalogue_section(layers, transformer: bool) -> None:
    st.subheader("Layer catalogue")
    st.caption(
        "Probe points in forward order: one per transformer block, tokens read on the patch "
        "grid, as the Explore page numbers them."
        if transformer
        else "Probe points in forward order (down → mid → up), as the Explore page numbers "
        "the U-Net blocks."
    )
    shape = [f"{c}×{h}×{w}" for c, h, w in zip(*(layers[k] for k in SHAPE), strict=True)]
    st.dataframe(  # one shape column: every column in view in half a 1280 px window
        layers[["index", "name", "kind"]].assign(shape=shape),
        hide_index=True,
        height=min(600, 38 + 35 * len(layers)),
        column_config={
            "index": st.column_config.NumberColumn("#", width=40),
            "kind": st.column_config.TextColumn("kind", width=112),
            "shape": st.column_config.TextColumn("C×H×W", width=90, help="channels × H × W"),
        },
    )


def clear_control(ws) -> None:
    """The confirm box and button that empty the feature cache (admins only)."""
    if not exposure.can_clear(common.policy()):
        st.caption(exposure.CLEAR_NOTE)
        return
    c = common.grid(common.CONTROL_MIN + 30, 2, vertical_alignment="center")
    sure = c.checkbox(
        "Yes, delete every cached feature (probe results, UMAPs and sweep tables stay)",
        key="data_confirm",
    )

    def clear() -> None:
        if not exposure.can_clear(common.policy()):  # re-checked when the click arrives
            return
        ws.clear_features()
        st.session_state["data_confirm"] = False
        st.session_state["data_cleared"] = True

    c.button(
        "Clear the feature cache",
        key="data_clear",
        disabled=not sure,
        type="primary",
        on_click=clear,
    )


def cache_section(ws):
    """Entries and sizes of the cache, and clearing it; returns the raw entries."""
    st.subheader("Feature cache")
    cache = ws.cache_overview()
    m = common.grid(common.METRIC_MIN, 3)
    m.metric("Feature entries", f"{len(cache.entries)}")
    m.metric("Feature size", size_text(cache.feature_bytes))
    m.metric("Other cached data", size_text(cache.other_bytes), help=cache.other_text() or None)
    st.caption(f"Cache folder: `{cache.root}`")
    if not cache.entries.empty:
        st.dataframe(cache.table(), hide_index=True, height=260)
    clear_control(ws)
    if st.session_state.pop("data_cleared", False):
        st.success("Feature cache cleared.")
    return cache.entries


ctx = common.context()
st.title("Data & model")
with common.guard():
    ws = services.workspace(ctx)
    common.used_counts(ws)
    common.input_notice(ws)
    facts = ws.describe()
    halves = common.grid(common.FIGURE_MIN, 2)  # side by side from 1280 px windows up
    with halves.cell():
        dataset_section(facts["dataset"])
    with halves.cell():
        model_section(facts["model"])
    layers = layer_table(ws.catalogue)
    halves = common.grid(common.FIGURE_MIN, 2)
    with halves.cell():
        fig = samples_section(ws, facts["dataset"]["class_names"])
    with halves.cell():
        catalogue_section(layers, facts["model"]["transformer"])
    entries = cache_section(ws)
    common.export_panel(
        {"samples": fig}, {"layers": layers, "cache_entries": entries}, key="data_export"
    )
