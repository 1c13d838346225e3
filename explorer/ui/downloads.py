"""Download buttons over the core exporters: a setting's features, and a sweep's HTML report.

The bytes are made only when a button is clicked (Streamlit's deferred downloads), so the
buttons cost nothing on a rerun.
"""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import streamlit as st

from explorer import export
from explorer.export import ExportData

LABELS = {
    "npz": "NumPy .npz",
    "safetensors": "safetensors",
    "parquet": "Parquet",
    "projector": "Embedding Projector (.zip)",
}


def feature_downloads(
    data: ExportData | Callable[[], ExportData], key: str, name: str = "features"
) -> None:
    """One button per export format for `data` (or a function returning it, called on click)."""
    get = data if callable(data) else lambda: data
    with st.expander("Download these features: npz, safetensors, Parquet, Embedding Projector"):
        st.caption(
            "Train and test features with labels, dataset indices and the setting's metadata. "
            "The Projector zip unpacks to a folder for projector.tensorflow.org or TensorBoard."
        )
        for col, fmt in zip(st.columns(len(export.FORMATS)), export.FORMATS, strict=True):
            col.download_button(
                f"⬇ {LABELS[fmt]}",
                data=lambda f=fmt: export.to_bytes(get(), f),
                file_name=f"{name}{export.SUFFIX[fmt]}",
                mime=export.MIME[fmt],
                key=f"{key}_{fmt}",
                on_click="ignore",
            )


def setting_downloads(ws, s, key: str = "explore_features") -> None:
    """`feature_downloads` for Setting `s` of a Workspace (features read from the cache on click)."""
    name = f"{ws.model_name}_t{s.t}_{s.layer}_pool{s.pool}".replace("/", "_").replace(":", "_")
    feature_downloads(lambda: export.from_workspace(ws, s, ("train", "test")), key, name)


def report_download(table: pd.DataFrame, ws=None, key: str = "sweep_report") -> None:
    """A button writing the sweep's self-contained HTML report (`explorer report`); with a
    Workspace, per-class results and a UMAP of its best setting are added (computed if missing)."""
    if table is None or table.empty:
        return
    from explorer.report import html_report  # plotly's inline bundle: only when asked for

    st.download_button(
        "⬇ Report (one HTML file, opens offline)",
        data=lambda: html_report(table, workspace=ws, command="Sweep page of the app"),
        file_name="report.html",
        mime="text/html",
        key=key,
        on_click="ignore",
        help="Heatmap, curves with intervals, best settings on validation, per-class results, a UMAP "
        "of the best setting and the exact versions; plotly is inside the file.",
    )
