"""Helpers every page uses: the sidebar's context, error display, export buttons, controls."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from explorer import defaults as D
from explorer import exposure
from explorer.errors import ExplorerError
from explorer.probes.registry import HEADS
from explorer.ui import services, state

CONTEXT_KEY = "_context"
HEADS_HELP = "\n".join(f"- **{h.name}**: {h.description}" for h in HEADS.values())
POOL_LABELS = D.POOL_LABELS  # one set of labels, shared with the CLI's help
_PAGE_DIR = (
    Path(__file__).resolve().parent / "pages"
)  # absolute: app.py may run from a wheel's bundle
PAGES = {
    "explore": str(_PAGE_DIR / "explore.py"),
    "sweep": str(_PAGE_DIR / "sweep.py"),
    "compare": str(_PAGE_DIR / "compare.py"),
    "similarity": str(_PAGE_DIR / "similarity.py"),
    "data": str(_PAGE_DIR / "data_model.py"),
}


def context() -> services.Context:
    """The model, dataset and limits chosen in the sidebar (app.py draws it before every page)."""
    ctx = st.session_state.get(CONTEXT_KEY)
    if ctx is None:
        st.error("Open the app with `streamlit run app.py`; this page needs the sidebar it draws.")
        st.stop()
    return ctx


def policy() -> exposure.Policy:
    """This server's access policy: the CLI's environment, or the address Streamlit listens on."""
    return exposure.Policy.from_env(st.get_option("server.address"))


def show_error(e: BaseException) -> None:
    if isinstance(e, ExplorerError):
        st.error(f"{e}", icon="⚠️")
    elif isinstance(e, MemoryError):
        st.error(
            "Out of memory for this setting: lower the train/test limits in the sidebar, or pick a "
            "smaller pooling.",
            icon="⚠️",
        )
    else:
        st.error(
            f"Something went wrong ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'no details'}). "
            "Check the model and dataset in the sidebar, lower the limits, or pick another setting; "
            "`explorer` on the command line gives the same result with more detail.",
            icon="⚠️",
        )


@contextlib.contextmanager
def guard() -> Iterator[None]:
    """Show errors as `st.error` with what to do; never a traceback. Rerun/stop/switch pass through."""
    try:
        yield
    except Exception as e:  # Streamlit's control flow derives from BaseException and passes
        show_error(e)


def pool_control(bound: state.Bound, label: str = "Pooling") -> str:
    return bound(
        st.selectbox, label, options=list(D.APP_POOLS), format_func=lambda p: POOL_LABELS.get(p, p)
    )


def head_control(bound: state.Bound, label: str = "Head") -> str:
    return bound(st.selectbox, label, options=list(HEADS), help=HEADS_HELP)


def pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def ci_text(lo: float, hi: float) -> str:
    return f"95% CI {100 * lo:.1f}–{100 * hi:.1f}%"


def export_panel(
    figures: Mapping[str, go.Figure],
    tables: Mapping[str, pd.DataFrame] | None = None,
    key: str = "export",
) -> None:
    """Download buttons: each table as CSV, each figure as HTML (offline) and PNG when kaleido can."""
    png = services.png_export()
    with st.expander("Export: tables (CSV) and figures (HTML/PNG)"):
        for name, df in (tables or {}).items():
            st.download_button(
                f"⬇ {name}.csv",
                df.to_csv(index=False).encode(),
                file_name=f"{name}.csv",
                mime="text/csv",
                key=f"{key}_csv_{name}",
                on_click="ignore",
            )
        for name, fig in figures.items():
            c1, c2 = st.columns(2)
            c1.download_button(
                f"⬇ {name}.html",
                data=lambda f=fig: f.to_html(include_plotlyjs=True),
                file_name=f"{name}.html",
                mime="text/html",
                key=f"{key}_html_{name}",
                on_click="ignore",
            )
            if png:
                c2.download_button(
                    f"⬇ {name}.png",
                    data=lambda f=fig: f.to_image(format="png", width=1200, height=700, scale=1),
                    file_name=f"{name}.png",
                    mime="image/png",
                    key=f"{key}_png_{name}",
                    on_click="ignore",
                )
        if not png:
            st.caption(
                "PNG export is off: plotly's kaleido found no Chrome/Chromium here. The HTML files "
                "open offline in any browser; install chromium to get PNGs."
            )


def layer_choice(catalogue, key: str, name: str, default_index: int | None = None) -> state.Bound:
    """A block chooser over a catalogue: values are layer names, shown as `LayerSpec.label`."""
    names = [lay.name for lay in catalogue]
    default = names[default_index if default_index is not None else default_block(catalogue)]

    def parse(raw: str) -> str:
        if raw.lstrip("-").isdigit():
            if len(raw) > 6:
                raise ValueError("not a block number of this model")
            i = int(raw)
            if not 1 <= i <= len(names):
                raise ValueError(f"block {i} is out of range (1 to {len(names)})")
            return names[i - 1]
        return raw

    return state.choice(key, name, names, default, parse=parse)


def default_block(catalogue) -> int:
    """Position of the app's first block in `catalogue` (`defaults.default_block`: the mid block)."""
    return D.default_block([lay.stage for lay in catalogue])


def label_of(catalogue) -> dict[str, str]:
    return {lay.name: lay.label for lay in catalogue}


def timestep_options(T: int) -> list[int]:
    base = [0, 5, 10, 25, 50, 75, 100, 150, 200, 250, 300, 400, 500, 600, 700, 800, 900, 999]
    return sorted({min(T - 1, max(0, round(b * T / 1000))) for b in base})


def spread(items: Sequence, n: int) -> list:
    """`n` items spread evenly over `items` (all of them when there are fewer)."""
    if len(items) <= n:
        return list(items)
    step = (len(items) - 1) / (n - 1)
    return [items[round(i * step)] for i in range(n)]


def open_in_explore(ctx: services.Context, t: int, block: str, pool: str, head: str) -> None:
    """Switch to Explore on one setting, with the link that reproduces it."""
    target = {"t": t, "block": block, "pool": pool, "head": head}
    for key, value in target.items():
        state.remember(f"explore_{key}", value)
    link = {
        "model": ctx.model,
        "dataset": ctx.dataset,
        "train": str(ctx.train_limit or 0),
        "test": str(ctx.test_limit or 0),
    }
    st.switch_page(PAGES["explore"], query_params=link | {k: str(v) for k, v in target.items()})
