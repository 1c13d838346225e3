"""Helpers every page uses: the sidebar's context, error display, export buttons, controls."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from explorer import defaults as D
from explorer import exposure, figures
from explorer.errors import ExplorerError
from explorer.probes.registry import HEADS
from explorer.ui import services, state
from explorer.ui.story import limits_words

CONTEXT_KEY = "_context"
TRAIN_KEY, TEST_KEY = "side_train", "side_test"  # the sidebar's image-limit boxes
USED_SLOT = "_used_counts_slot"  # the sidebar's place for the image counts in use
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


# --- layout: readable from a 800 px window with the sidebar open to 1920 px and up -------------
# Rows of controls, metrics and figures are `st.grid`s: they wrap to fewer columns as the main
# column narrows (its width, not the window's, so an open sidebar counts), never squeezing a
# selector to an empty box or a metric to "84.8…". The CSS below is the safety net under them.

CONTROL_MIN = 190  # px: a slider or a block selector
SMALL_CONTROL_MIN = 120  # px: a short selector, a radio of two short options, a toggle
METRIC_MIN = 150  # px: a metric whose value is a percentage or a short count
FIGURE_MIN = 400  # px: two figures side by side only when each gets this much (1280 px and up)
FULL_WIDTH = figures.NARROW_WIDTH  # the narrowest a full-width figure gets (800 px, sidebar open)
PRESENT_KEY = "app_present"
NOWRAP = "dfe-nowrap"  # key prefix of a horizontal container that never wraps (see _CSS)
TIMESTEP_BOX_PX = 84  # the "any t" number box beside a timestep slider

_CSS = """
/* metrics wrap (at a word, else anywhere) instead of ending in an ellipsis */
[data-testid="stMetricValue"] > div, [data-testid="stMetricDelta"] > div,
[data-testid="stMetricLabel"] [data-testid="stMarkdownContainer"],
[data-testid="stMetricValue"] p, [data-testid="stMetricDelta"] p,
[data-testid="stMetricLabel"] p {
  white-space: normal !important; overflow: visible !important; text-overflow: clip !important;
  overflow-wrap: break-word;
}
[data-testid="stMetricValue"] { font-size: clamp(1.6rem, 1.2rem + 1.2vw, 2.25rem); }
/* any remaining row of st.columns in the page wraps rather than squeeze a column under 11rem */
[data-testid="stMain"] [data-testid="stHorizontalBlock"] { flex-wrap: wrap; }
/* except a row made to stay one line (a slider and its number box, a notice and its button) */
[data-testid="stMain"] [class*="st-key-dfe-nowrap"] { flex-wrap: nowrap !important; }
[data-testid="stMain"] [data-testid="stColumn"] { min-width: min(100%, 11rem); }
.dfe-side { font-weight: 600; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.dfe-headline { font-size: clamp(1.4rem, 2.8vw, 2.6rem); line-height: 1.25; margin: 0.2em 0 0.4em; }
.dfe-headline .dfe-ci { color: #6b6f7b; }
.dfe-headline .dfe-up { color: #1a8a3a; }
.dfe-headline .dfe-down { color: #c0392b; }
"""
_PRESENT_CSS = """
[data-testid="stMain"] h1 { font-size: clamp(2rem, 3.4vw, 3.2rem); }
[data-testid="stMain"] [data-testid="stCaptionContainer"] { font-size: 1rem; }
"""


def style() -> None:
    """The app's CSS, sent once per run (app.py): responsive rows, metrics that never ellipsise,
    and the presentation mode's larger type."""
    st.html(f"<style>{_CSS}{_PRESENT_CSS if present() else ''}</style>")


def present() -> bool:
    """Presentation mode: the sidebar's toggle, else `?present=1` in the link."""
    if PRESENT_KEY in st.session_state:
        return bool(st.session_state[PRESENT_KEY])
    try:
        return state.parse_bool(st.query_params.get("present", "0"))
    except ValueError:
        return False


def presentation_toggle() -> bool:
    """The sidebar's presentation toggle, bound to `present=1` in the URL (absent when off)."""
    state.seed(
        PRESENT_KEY, "present", False, parse=state.parse_bool, valid=lambda v: isinstance(v, bool)
    )
    on = st.toggle(
        "Presentation mode",
        key=PRESENT_KEY,
        help="For demos: larger type in figures, the headline in one line a room can read, the "
        "sidebar collapsed. Links carry it as `present=1`.",
    )
    if on:
        state.link("present", "1")
    elif "present" in st.query_params:
        del st.query_params["present"]
    return on


def grid(min_width: int, columns: int | str = "auto", **kw):
    """A row of cells that wraps to fewer columns when a cell would get under `min_width` px."""
    return st.grid(columns, min_column_width=min_width, **kw)


def control_rows(first: int, second: int) -> tuple:
    """Two groups of controls, `first` wide ones (sliders, block selectors) and `second` small
    ones: one row where the main column is wide (1280 px windows and up), else two rows
    (each group on its own); returns the two grids. Neither group is ever squeezed."""
    halves = grid(max(first * (CONTROL_MIN + 16), second * (SMALL_CONTROL_MIN + 16)) - 16, 2)
    with halves.cell():
        wide = grid(CONTROL_MIN, first)
    with halves.cell():
        small = grid(SMALL_CONTROL_MIN, second)
    return wide, small


def plot(fig: go.Figure, key: str, where=None, **kw):
    """`st.plotly_chart` of `fig` (in `where`, default the current container), with the
    presentation mode's larger type."""
    shown = figures.presentation(fig) if present() else fig
    return (where or st).plotly_chart(shown, key=key, **kw)


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


EMBED = {"pca": "PCA (instant)", "umap": "UMAP"}  # embedding methods, as figure titles name them
EMBED_SHORT = {"pca": "PCA", "umap": "UMAP"}  # as the radio shows them
EMBED_HELP = "PCA shows at once; UMAP separates classes better and is computed once, then cached."


def embedding_control(page: str) -> str:
    """The embedding method radio of a page (`{page}_proj`, `proj` in the link)."""
    return state.choice(f"{page}_proj", "proj", list(EMBED), "umap")(
        st.radio,
        "Embedding",
        options=list(EMBED),
        format_func=EMBED_SHORT.get,
        horizontal=True,
        help=EMBED_HELP,
    )


def plural(n: int, word: str) -> str:
    """ "1 image", "2 images", "1,000 images"."""
    return f"{n:,} {word}" if n == 1 else f"{n:,} {word}s"


def used_counts(ws) -> None:
    """Show, under the sidebar's limit boxes, the image counts in use: fewer than the limits
    when the dataset is smaller (an upload of 48 images uses 48, whatever the limit says)."""
    n_train, n_test = len(ws.train.indices), len(ws.test.indices)
    ctx = st.session_state.get(CONTEXT_KEY)
    fewer = ctx is not None and ((ctx.train_limit or 0) > n_train or (ctx.test_limit or 0) > n_test)
    text = f"Using {plural(n_train, 'train image')} / {plural(n_test, 'test image')}"
    slot = st.session_state.get(USED_SLOT) or st.sidebar
    slot.caption(text + (": all the dataset has, under the limits" if fewer else ""))


def input_notice(ws) -> None:
    """A warning when the dataset's images are not what the model reads (size or channels):
    they are resized and their channels matched first, so the features may mislead."""
    im = np.asarray(ws.dataset.images(np.asarray(ws.test.indices[:1]))[0])
    h, w = im.shape[:2]
    c = 1 if im.ndim == 2 else im.shape[-1]
    pre = ws.model.preprocess
    if (h, w, c) == (pre.size, pre.size, pre.channels):
        return
    colour = {1: "grayscale", 3: "colour", 4: "colour with alpha"}
    st.warning(
        f"These images are {h}×{w} {colour.get(c, f'{c}-channel')}; the model reads "
        f"{pre.channels}×{pre.size}×{pre.size} ({colour.get(pre.channels, '')}). Each image is "
        "resized and its channels matched before the model sees it, so its features may not "
        "mean what they mean on the model's own data.",
        icon="⚠️",
    )


def pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def headline_html(res, base=None) -> str:
    """Top-1 with its 95% interval and, given the raw-pixel result `base`, the pixels' top-1 and
    the difference in points: one line for presentation mode."""
    words = (
        f"Top-1 <b>{pct(res.top1)}</b> "
        f"<span class='dfe-ci'>[{100 * res.ci_low:.1f}–{100 * res.ci_high:.1f}%]</span>"
    )
    if base is not None:
        d = 100 * (res.top1 - base.top1)
        tone = "dfe-up" if d >= 0 else "dfe-down"
        words += f" · pixels {pct(base.top1)} · <b class='{tone}'>{d:+.1f} points</b>"
    return f"<div class='dfe-headline'>{words}</div>"


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


def timestep_options(T: int, chosen: Sequence[int] = ()) -> list[int]:
    """The timesteps a multiselect offers: the app's one set (`defaults.timestep_grid`) and any
    other `chosen` ones (typed, or from a link)."""
    return sorted(set(D.timestep_grid(T)) | {int(t) for t in chosen if 0 <= int(t) < T})


def timestep_control(key: str, name: str, T: int, label: str, default: int | None = None) -> int:
    """One timestep: a slider that snaps to the app's timestep set (`defaults.timestep_grid`,
    the shipped sweep's grid) and a number box beside it for any other t; both are one
    setting, `name` in the URL. Returns t."""
    bound = state.integer(key, name, D.default_t(T) if default is None else default, 0, T - 1)
    state.seed(key, name, bound.default, parse=bound.parse, valid=bound.valid)
    ss, box = st.session_state, f"{key}_box"
    ss[box] = int(ss[key])  # the box shows the setting (set before it is drawn: allowed)

    def typed() -> None:
        ss[key] = int(ss[box])

    marks = sorted(set(D.timestep_grid(T)) | {int(ss[key])})
    row = st.container(
        horizontal=True, vertical_alignment="bottom", gap="small", key=f"{NOWRAP}-{key}"
    )
    row.select_slider(
        label,
        options=marks,
        key=key,
        help="Snaps to the shipped sweep's timesteps (0 = clean image; larger t adds more "
        "noise before the model reads it); type any other t in the box.",
    )
    row.number_input(
        "any t",
        min_value=0,
        max_value=T - 1,
        step=1,
        key=box,
        on_change=typed,
        help=f"Any timestep from 0 to {T - 1}.",
        width=TIMESTEP_BOX_PX,
    )
    return int(state.publish(key, name))


def timesteps_control(
    key: str, name: str, T: int, label: str, default: Sequence[int], disabled: bool = False
) -> list[int]:
    """Several timesteps: a multiselect over the app's timestep set where any other t can be
    typed, bound to `name` (repeated) in the URL; returns them sorted."""
    ss = st.session_state
    raw = ss.get(key) or st.query_params.get_all(name) or state.kept(key) or []
    chosen = [int(v) for v in raw if str(v).strip().isdigit()]
    opts = timestep_options(T, chosen)
    if key in ss:  # a typed t arrives as text: keep it as the number it is
        ss[key] = [t for t in dict.fromkeys(chosen) if t in opts]
    bound = state.choices(key, name, opts, default, parse=int)
    state.seed(key, name, bound.default, parse=bound.parse, valid=bound.valid, multi=True)
    st.multiselect(
        label,
        options=opts,
        key=key,
        accept_new_options=True,
        placeholder="Pick or type a timestep",
        disabled=disabled,
        help=f"The shipped sweep's timesteps; type any other t from 0 to {T - 1}.",
    )
    picked = sorted({int(v) for v in ss[key] if str(v).strip().isdigit() and 0 <= int(v) < T})
    state.publish(key, name, picked)
    return picked


def spread(items: Sequence, n: int) -> list:
    """`n` items spread evenly over `items` (all of them when there are fewer)."""
    if len(items) <= n:
        return list(items)
    step = (len(items) - 1) / (n - 1)
    return [items[round(i * step)] for i in range(n)]


def _use_limits(train: int | None, test: int | None) -> None:
    """Set the sidebar's limit boxes (a button's callback: before the sidebar is drawn)."""
    st.session_state[TRAIN_KEY] = "all" if train is None else str(train)
    st.session_state[TEST_KEY] = "all" if test is None else str(test)


def story_banner(ctx: services.Context, page: str, head: str, pool: str, setting=None) -> None:
    """The line a page opens with: the sweep's best setting on validation against raw pixels
    (`story.Story.line`), a button to open it when `setting` `(t, layer, pool)` is another one,
    and, when this page's limits are not the sweep's, a notice with the sweep's limits in one
    click."""
    told = services.sweep_story(ctx, head, pool)
    if told is None:
        return
    row = st.container(horizontal=True, vertical_alignment="center", gap="small")
    row.markdown(f"**{told.line()}**")
    other = setting is not None and not told.is_setting(*setting)
    if other and row.button("Open it", key=f"{page}_open_best", help="Open it on Explore."):
        open_in_explore(ctx, told.t, told.layer, told.pool, told.head)
    if told.limits_differ(ctx.train_limit, ctx.test_limit):
        note = st.container(
            horizontal=True, vertical_alignment="center", key=f"{NOWRAP}-{page}-limits"
        )
        note.warning(
            f"This page uses {limits_words(ctx.train_limit, ctx.test_limit)}; the sweep used "
            f"{told.limits_text()}, so its numbers differ from the sweep's.",
            icon="⚖️",
        )
        note.button(
            "Use the sweep's limits",
            key=f"{page}_sweep_limits",
            on_click=_use_limits,
            args=(told.train_limit, told.test_limit),
            help="Sets the sidebar's image limits to the sweep's (the first run at them "
            "extracts features for every image).",
        )


def open_in_explore(ctx: services.Context, t: int, block: str, pool: str, head: str) -> None:
    """Switch to Explore on one setting, with the link that reproduces it."""
    target = {"t": t, "block": block, "pool": pool, "head": head}
    for key, value in target.items():
        state.remember(f"explore_{key}", value)
    state.remember("explore_tl", False)  # one setting opens fast: "Across timesteps" off
    link = {
        "model": ctx.model,
        "dataset": ctx.dataset,
        "train": str(ctx.train_limit or 0),
        "test": str(ctx.test_limit or 0),
    } | ({"present": "1"} if present() else {})
    st.switch_page(PAGES["explore"], query_params=link | {k: str(v) for k, v in target.items()})
