"""The images-as-points view in Streamlit: a custom component (built from `frontend/`), its
colour and search controls, and the panel a selection feeds (image grid, per-class table,
"these images" CSV).

`points_view` draws one embedding and returns the test positions selected with the box or
the lasso; `linked_views` draws several embeddings of the same images side by side (one per
setting or timestep), where a selection in one is drawn in all; `linked_pair` is the two-panel
form the Compare page calls. The colouring, search and tables are the pure functions of
`explorer.ui.points.colors`; the browser's arguments are packed by `payload`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import streamlit as st
import streamlit.components.v1 as components

from explorer.analysis.atlas import MAX_SIDE, AtlasLayout, atlas_from_reader, to_png
from explorer.data.base import ImageDataset
from explorer.figures import class_colors
from explorer.ui import services
from explorer.ui.points import colors
from explorer.ui.points.payload import DIST, payload

GRID = 48  # images shown for a selection
_component = components.declare_component("explorer_points_view", path=str(DIST))


@st.cache_data(max_entries=8, show_spinner=False)
def atlas(
    _ds: ImageDataset, fingerprint: str, indices: tuple[int, ...], max_side: int = MAX_SIDE
) -> tuple[bytes, AtlasLayout]:
    """The PNG atlas of the dataset images at `indices` (cell i holds `indices[i]`), read in
    chunks; cached under the dataset's `fingerprint` and the indices."""
    pixels, lay = atlas_from_reader(_ds.images, np.asarray(indices, np.int64), max_side=max_side)
    return to_png(pixels), lay


@st.cache_data(max_entries=8, show_spinner=False)
def confidence(_features: np.ndarray, key: str, labels: np.ndarray, predictions: np.ndarray):
    """`colors.neighbour_confidence` of a setting's test features (cached under its `key`)."""
    return colors.neighbour_confidence(_features, labels, predictions)


def served_url(png: bytes, key: str) -> str | None:
    """A URL the Streamlit server answers with `png` (its media store, as `st.image` uses), so
    the browser fetches the atlas once per new data instead of receiving it in every rerun's
    message; None outside a Streamlit server (the PNG then travels in the arguments)."""
    from streamlit import runtime

    if not runtime.exists():
        return None
    return runtime.get_instance().media_file_mgr.add(png, "image/png", f"points-atlas-{key}")


def file_names(ds: ImageDataset, indices: np.ndarray) -> list[str]:
    """The image file of every dataset index (folders), else `name[index]` (in-memory sets)."""
    from explorer.data.folders import FolderLoader

    paths = ds.loader.paths if isinstance(ds.loader, FolderLoader) else None
    if paths is not None:
        return [Path(paths[int(i)]).name for i in indices]
    return [f"{ds.name}[{int(i)}]" for i in indices]


def controls(key: str, has_predictions: bool) -> tuple[str, str]:
    """Colour-by and class search, side by side; returns `(color_by, query)`."""
    options = list(colors.COLOR_BY) if has_predictions else [colors.COLOR_BY[0]]
    left, right = st.columns([1, 2])
    color_by = left.selectbox(
        "Colour points by",
        options,
        key=f"{key}_color",
        help="Confidence: the share of the image's 10 nearest test images (in this setting's "
        "features) whose label is the predicted class.",
    )
    query = right.text_input(
        "Show classes named",
        key=f"{key}_query",
        placeholder="e.g. shirt, boot (empty: all)",
        help="Comma-separated parts of class names; the legend under the view toggles classes.",
    )
    return color_by, query


def _selected(key: str, initial: Sequence[int] = ()) -> list[int]:
    """The view's selection (its last value), else `initial` (e.g. from a shared link)."""
    value = st.session_state.get(key)
    if isinstance(value, dict):
        return sorted({int(i) for i in value.get("selected", [])})
    return sorted({int(i) for i in initial})


def linked_views(
    ds: ImageDataset,
    panels: np.ndarray,
    titles: Sequence[str],
    labels: np.ndarray,
    class_names: Sequence[str],
    indices: np.ndarray,
    *,
    key: str,
    predictions: np.ndarray | None = None,
    confidence: np.ndarray | None = None,
    color_by: str = "true class",
    query: str = "",
    height: int = 560,
    initial: Sequence[int] = (),
) -> list[int]:
    """Embeddings `(K, N, 2)` of the dataset images at `indices` `(N,)`, one panel each,
    drawn as their own thumbnails; returns the selected positions (0..N-1), sorted (before
    the first box or lasso: `initial`). A selection in one panel is drawn in every panel."""
    names = [str(c) for c in class_names]
    idx = np.asarray(indices, np.int64)
    png, lay = atlas(ds, ds.fingerprint, tuple(int(i) for i in idx))
    coloring = colors.point_colors(
        color_by, labels, class_colors(len(names)), names, predictions, confidence
    )
    shown = colors.shown_mask(labels, colors.search_classes(query, names))
    if not shown.any():
        st.warning(f"No class name contains “{query}”: showing none.")
    args = payload(
        panels, titles, labels, names, coloring, png, lay, idx,
        predictions=predictions, confidence=confidence, shown=shown,
        selected=_selected(key, initial), height=height, atlas_url=served_url(png, key),
    )  # fmt: skip
    _component(**args, key=key, default=None)
    return [p for p in _selected(key, initial) if 0 <= p < len(idx)]


def points_view(
    ds: ImageDataset,
    xy: np.ndarray,
    title: str,
    labels: np.ndarray,
    class_names: Sequence[str],
    indices: np.ndarray,
    *,
    key: str,
    predictions: np.ndarray | None = None,
    confidence: np.ndarray | None = None,
    color_by: str = "true class",
    query: str = "",
    height: int = 560,
    initial: Sequence[int] = (),
) -> list[int]:
    """One embedding `(N, 2)` as images (see `linked_views`); returns the selected positions."""
    return linked_views(
        ds, np.asarray(xy)[None], [title], labels, class_names, indices, key=key,
        predictions=predictions, confidence=confidence, color_by=color_by, query=query,
        height=height, initial=initial,
    )  # fmt: skip


def linked_pair(
    ds: ImageDataset,
    xy_a: np.ndarray,
    xy_b: np.ndarray,
    titles: tuple[str, str],
    labels: np.ndarray,
    class_names: Sequence[str],
    indices: np.ndarray,
    *,
    key: str,
    height: int = 460,
) -> list[int]:
    """Two settings' embeddings `(N, 2)` of the same test images side by side (Compare): a
    box or lasso in either draws the same images selected in both. Returns the selection."""
    return linked_views(
        ds, np.stack([xy_a, xy_b]), list(titles), labels, class_names, indices, key=key,
        height=height,
    )  # fmt: skip


def selection_panel(
    ds: ImageDataset,
    positions: Sequence[int],
    labels: np.ndarray,
    class_names: Sequence[str],
    indices: np.ndarray,
    predictions: np.ndarray | None = None,
    *,
    key: str,
    images: bool = True,
) -> None:
    """What the selection holds: its first `GRID` images (captions true → predicted; left out
    with `images` False, where the page draws its own grid), the per-class table and the
    "these images" CSV (dataset indices and file names)."""
    pos = np.asarray(list(positions), np.int64)
    if not len(pos):
        st.caption(
            "Pick **Box** or **Lasso** above the view and drag over points to see their "
            "images, classes and a CSV here. Zoom in (wheel) to see every image as itself."
        )
        return
    names = [str(c) for c in class_names]
    y, idx = np.asarray(labels, np.int64), np.asarray(indices, np.int64)
    if images:
        shown = pos[:GRID]
        st.markdown(
            f"**{len(pos):,} selected** (showing {len(shown)})"
            + (", captions true → predicted" if predictions is not None else "")
        )
        caps = [
            names[y[p]] + (f"→{names[predictions[p]]}" if predictions is not None else "")
            for p in shown
        ]
        st.image(services.images(ds, idx[shown]), caption=caps, width=64)
    st.dataframe(
        colors.selection_table(pos, y, names, predictions), hide_index=True, key=f"{key}_table"
    )
    st.download_button(
        "These images (CSV)",
        colors.selection_csv(pos, idx, file_names(ds, idx), y, names, predictions),
        file_name="selected_images.csv",
        mime="text/csv",
        key=f"{key}_csv",
        help="Test position, dataset index, file name, label and prediction of each image.",
    )
