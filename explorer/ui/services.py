"""Streamlit-side services for the pages: cached models, datasets and workspaces, progress
bars over long jobs (evaluate, sweep, UMAP), images and the sweep tables on disk.

Pages call these for anything that loads, computes or caches, and pure core functions
(`probes.metrics`, `results`, `overview`, `explorer.figures`) for the numbers they show; they never
touch a workspace's stores or model object.

Models and datasets live in `st.cache_resource` (one copy per server process); features,
probe results and UMAPs live in the core's on-disk stores, so a setting computed once by
the app, `explorer extract` or `explorer sweep` renders again without any computation.

umap (seconds to import, through numba) is imported inside the functions that draw
embeddings; `serve.py`'s warm-up thread imports it, and loads the default model and views,
before the first page is answered.
"""

from __future__ import annotations

import base64
import io
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from explorer import defaults, shipped
from explorer.data import ImageDataset, load_dataset
from explorer.defaults import RANDOM_PREFIX
from explorer.features.keys import EXTRACTION_VERSION
from explorer.features.store import FeatureStore
from explorer.models.device import describe, resolve_device
from explorer.models.loader import load_model
from explorer.overview import class_rows
from explorer.paths import BUILTIN_MODEL_DIRS, cache_dir
from explorer.results import COLUMNS, accuracy_view, load_table, save_table, with_text_columns
from explorer.settings import Setting
from explorer.sweep import SweepProgress, run_sweep
from explorer.ui.story import story
from explorer.warm import import_seed, preload, preloaded
from explorer.workspace import Workspace

BATCH_SIZE = 256
DEFAULT_TRAIN_LIMIT = defaults.DEFAULT_TRAIN_LIMIT
DEFAULT_TEST_LIMIT = defaults.DEFAULT_TEST_LIMIT
SEED_PAIR = ("ddpm-fashion-mnist", "fashion-mnist")  # explorer.warm's MODEL, DATASET
SWEEP_KEYS = ["model", "dataset", "t", "layer", "pool", "head", "split", "metric"]


@dataclass(frozen=True)
class Context:
    """What the sidebar chose: the model, the dataset and the image limits (None = whole split)."""

    model: str
    dataset: str
    train_limit: int | None
    test_limit: int | None

    @property
    def base_model(self) -> str:
        return self.model.removeprefix(RANDOM_PREFIX)

    @property
    def random_model(self) -> str:
        return RANDOM_PREFIX + self.base_model


def builtin_models() -> list[str]:
    """Built-in model names whose files are present."""
    return [name for name, d in BUILTIN_MODEL_DIRS.items() if (d / "config.json").exists()]


# --- models, datasets, workspaces ---------------------------------------------------------------


def _make_model(spec: str, device: str):
    return load_model(spec, device=resolve_device(device))


def _load_model(spec: str, device: str):
    """The model, shared by every session of this process (made once; see `warm_up`)."""
    return preloaded(("model", spec, device), lambda: _make_model(spec, device))


def _load_dataset(spec: str) -> ImageDataset:
    return preloaded(("dataset", spec), lambda: load_dataset(spec))


def _new_workspace(*key) -> Workspace:
    """The workspace of `_workspace`'s key: (model, dataset, train_limit, test_limit, root, device)."""
    model, dataset, train_limit, test_limit, root, device = key
    return Workspace(
        _load_model(model, device),
        _load_dataset(dataset),
        store=FeatureStore(root),
        train_limit=train_limit,
        test_limit=test_limit,
        batch_size=BATCH_SIZE,
        device=device,
    )


def _load_workspace(*args) -> Workspace:
    """`_new_workspace(*args)`, shared by every session of this process (see `warm_up`)."""
    return preloaded(("workspace", *args), lambda: _new_workspace(*args))


@st.cache_resource(max_entries=6, show_spinner="Loading the model…")
def _model(spec: str, device: str):
    return _load_model(spec, device)


@st.cache_resource(max_entries=4, show_spinner="Loading the dataset…")
def _dataset(spec: str) -> ImageDataset:
    return _load_dataset(spec)


@st.cache_resource(max_entries=12, show_spinner=False)
def _workspace(
    model: str,
    dataset: str,
    train_limit: int | None,
    test_limit: int | None,
    root: str,
    device: str,
) -> Workspace:
    _model(model, device)  # the spinner while a model loads
    _dataset(dataset)
    return _load_workspace(model, dataset, train_limit, test_limit, root, device)


def warm_up() -> threading.Thread:
    """Start making, in a background thread of this server process, what a first session on the
    default pair needs: the pages' imports, the shipped seed in the cache, the model, the
    dataset and the default workspaces (with their layer catalogue), and the random-weights
    control the Sweep page plans with. Sessions that ask for any
    of these meanwhile wait for the same object instead of loading it again."""
    import importlib
    import pkgutil

    from explorer import ui

    model, dataset = SEED_PAIR
    root, device = str(cache_dir()), "auto"
    tl, sim = DEFAULT_TEST_LIMIT, min(defaults.DEFAULT_SIMILARITY_IMAGES, DEFAULT_TEST_LIMIT)

    def imports():
        mods = [m.name for m in pkgutil.iter_modules(ui.__path__, "explorer.ui.")]
        for name in [
            *mods,
            "explorer.analysis.embed",
            "explorer.probes.metrics",
            "explorer.probes.registry",
            "explorer.models.loader",
            "explorer.shipped",
            "plotly.graph_objects",
        ]:
            importlib.import_module(name)

    def workspace_ready(test_limit):
        def make():
            ws = _new_workspace(model, dataset, DEFAULT_TRAIN_LIMIT, test_limit, root, device)
            ws.catalogue, ws.train, ws.test, ws.model.fingerprint  # noqa: B018 - computed once here
            return ws

        return make

    key = ("workspace", model, dataset, DEFAULT_TRAIN_LIMIT)
    return preload(
        [
            (("imports",), imports),
            (("seed", root), lambda: import_seed(root)),
            (("model", model, device), lambda: _make_model(model, device)),
            (
                ("model", RANDOM_PREFIX + model, device),
                lambda: _make_model(RANDOM_PREFIX + model, device),
            ),
            (("dataset", dataset), lambda: load_dataset(dataset)),
            ((*key, tl, root, device), workspace_ready(tl)),
            ((*key, sim, root, device), workspace_ready(sim)),
        ]
    )


@st.cache_resource(show_spinner=False)
def warm_cache(root: str) -> dict[str, int]:
    """Import the shipped seed of the default views into cache `root`, once per process
    (checksummed files only; see `explorer.warm`)."""
    return import_seed(root)


def workspace(
    ctx: Context, model: str | None = None, *, test_limit: int | None = None
) -> Workspace:
    """The workspace of `ctx` (or of another `model` on the same data), cached per process."""
    tl = ctx.test_limit if test_limit is None else test_limit
    root = str(cache_dir())
    if (ctx.base_model, ctx.dataset) == SEED_PAIR:  # the default pair: its views are shipped warm
        warm_cache(root)
    return _workspace(model or ctx.model, ctx.dataset, ctx.train_limit, tl, root, "auto")


@st.cache_resource(show_spinner=False)
def device_text() -> str:
    return describe(resolve_device("auto"))


def log_snr(ws: Workspace, ts) -> dict[int, float]:
    """t -> log(signal² / noise²) of the model's noise schedule at each of `ts` (for a VP model
    `log(a_t / (1 - a_t))`, a_t = alphas_cumprod[t]): the level axis all noise families share."""
    levels = log_snr_levels(ws)
    return {int(t): float(levels[int(t)]) for t in set(ts) if t == t}


@st.cache_data(max_entries=16, show_spinner=False)
def _log_snr_levels(_ws: Workspace, fingerprint: str, n: int) -> np.ndarray:
    return np.array([_ws.model.log_snr(t) for t in range(n)], dtype=np.float64)


def log_snr_levels(ws: Workspace) -> np.ndarray:
    """`(T,)` the log SNR of every level of the model's schedule (cached per model)."""
    return _log_snr_levels(ws, ws.model.fingerprint, ws.num_timesteps)


# --- probes and views -----------------------------------------------------------------------------


def evaluate(
    ws: Workspace, settings: Sequence[Setting], head: str, label: str = "Computing features…"
):
    """Probe results of `settings`: a progress bar while features are extracted, a spinner
    (after half a second) while a probe trains; cached results return at once."""
    spin = st.spinner(f"Training the {head} probe…", show_time=True)
    if all(ws.is_cached(s) for s in settings):
        with spin:
            return ws.evaluate(list(settings), head)
    bar = st.progress(0.0, text=label)

    def tick(done: int, total: int) -> None:
        text = f"{label} {done}/{total} images" if done < total else f"Training the {head} probe…"
        bar.progress(min(1.0, done / max(total, 1)), text=text)

    try:
        return ws.evaluate(list(settings), head, progress=tick)
    finally:
        bar.empty()


@st.cache_data(max_entries=64, show_spinner=False)
def _pca(_ws: Workspace, key: str, _s: Setting) -> np.ndarray:
    return np.asarray(_ws.embedding(_s, method="pca"), dtype=np.float32)


def embedding(ws: Workspace, s: Setting, method: str) -> tuple[np.ndarray, str]:
    """`((N_test, 2), shown)`: the UMAP (cached on disk by the core) or PCA of a setting's test
    features, and which one it is. A UMAP not yet computed is started in the background and
    PCA shown meanwhile; the page reruns by itself when the UMAP is ready."""
    from explorer.analysis.embed import fit_note, umap_or_pca  # umap/numba: on use only

    key = ws.key(s, "test")
    if method == "umap" and (done := ws.cached_umap(s)) is not None:  # no features needed
        if note := fit_note(len(done)):
            st.caption(note)
        return np.asarray(done, dtype=np.float32), "umap"
    if not ws.store.has(key):
        ws.ensure([s], splits=["test"])
    if method != "umap":
        return _pca(ws, key, s), "pca"
    x = ws.features(s, "test")
    y = ws.labels("test")  # a set over the fit cap is fitted on a class-balanced subsample
    xy, shown = umap_or_pca(np.asarray(x), cache_key=key, cache_root=ws.store.root, labels=y)
    if shown == "pca":
        st.caption(
            "UMAP is being computed in the background (first time for this setting; cached "
            "after): PCA is shown until it is ready, then the page updates by itself."
        )
        _await_umap(tuple(x.shape), key, str(ws.store.root))
    if shown == "umap" and (note := fit_note(len(x))):
        st.caption(note)
    return np.asarray(xy, dtype=np.float32), shown


@st.fragment(run_every=1.5)
def _await_umap(shape: tuple[int, int], key: str, root: str) -> None:
    """Polls the background UMAP; reruns the page once it is done."""
    from explorer.analysis.embed import umap_pending  # umap/numba: on use only

    if not umap_pending(shape, cache_key=key, cache_root=Path(root), stratified=True):
        st.rerun()


def cka(ws: Workspace, settings: Sequence[Setting], debiased: bool, label: str) -> np.ndarray:
    """`(K, K)` CKA on the test split (cached on disk), with a progress bar while features are missing."""

    def ensure(missing: list[Setting]) -> None:
        bar = st.progress(0.0, text=label)

        def tick(done: int, total: int) -> None:
            bar.progress(min(1.0, done / max(total, 1)), text=f"{label} {done}/{total} images")

        try:
            ws.ensure(missing, progress=tick, splits=["test"])
        finally:
            bar.empty()

    return ws.cka(list(settings), split="test", debiased=debiased, ensure=ensure)


COMPARE_WITH = {
    "self": "this model only",
    "random": "random weights",
    "other": "another model or encoder…",
}


def reference_spec(ctx: Context, choice: str, typed: str) -> str | None:
    """The model spec the Similarity page compares with: None for "this model only" (or an
    empty typed spec), `random:<model>` for "random weights", else the typed spec."""
    if choice == "random":
        return ctx.random_model
    if choice == "other" and typed.strip():
        return typed.strip()
    return None


@st.cache_data(max_entries=32, show_spinner=False)
def _alignment(_ws: Workspace, _ref: Workspace, key: tuple, ts: tuple, ref_layers: str, pool: str):
    from explorer.analysis.alignment import METRICS

    return _ws.align(_ref, timesteps=list(ts), ref_layers=ref_layers, pool=pool, metrics=METRICS)


def alignment(
    ctx: Context,
    ws: Workspace,
    spec: str | None,
    timesteps: Sequence[int],
    ref_layers: str,
    pool: str,
    rules,
) -> pd.DataFrame:
    """`align_table` (every metric, with bootstrap intervals) between the blocks of `ws` at each
    of `timesteps` and the `ref_layers` of model `spec` (at the same t, none for an encoder) on
    the SAME test images (`ws`'s dataset and test limit); `spec` None: `ws`'s own raw pixels
    (`ref_layers="pixels"`). `spec` is checked by the access policy `rules` as the sidebar
    checks its model. The map is cached on disk by the core, the table by `st.cache_data`."""
    from explorer import exposure

    tl = ws.limits.get("test_limit")
    if spec is not None:
        exposure.check_model(spec, rules)
    ref = ws if spec is None else workspace(ctx, spec, test_limit=tl)
    key = (ctx.model, spec, ctx.dataset, ctx.train_limit, tl, str(cache_dir()))
    ts = tuple(int(t) for t in timesteps)
    at = f"t={ts[0]}" if len(ts) == 1 else f"{len(ts)} timesteps"
    with st.spinner(f"Aligning {ctx.model} with {spec or 'its pixels'} at {at}…", show_time=True):
        return _alignment(ws, ref, key, ts, ref_layers, str(pool))


# --- images ---------------------------------------------------------------------------------------


def fit(img: np.ndarray, size: int, *, enlarge: bool = True) -> np.ndarray:
    """`(H, W, C) uint8` resized so that its longer side is `size` (aspect kept): nearest
    neighbours when enlarging (crisp tiny digits), antialiased when shrinking. With
    `enlarge=False` small images stay as they are."""
    from PIL import Image

    img = np.asarray(img, dtype=np.uint8)
    h, w = img.shape[:2]
    scale = size / max(h, w)
    if scale == 1 or (scale > 1 and not enlarge):
        return img
    pil = Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img)
    new = (max(1, round(w * scale)), max(1, round(h * scale)))
    out = np.asarray(pil.resize(new, Image.NEAREST if scale > 1 else Image.LANCZOS))
    return out[..., None] if out.ndim == 2 else out


def images(
    ds: ImageDataset, indices: Sequence[int], size: int = 56, *, enlarge: bool = True
) -> list[np.ndarray]:
    """Display-size images at dataset `indices`, grayscale as 2-D arrays for `st.image`."""
    out = []
    for im in ds.images(np.asarray(indices, dtype=np.int64)):
        u = fit(im, size, enlarge=enlarge)
        out.append(u[..., 0] if u.shape[-1] == 1 else u)
    return out


def class_samples(ws: Workspace, per: int, size: int = 56) -> list[list[np.ndarray]]:
    """`per` display-size training images of every class, one list a class (in class order)."""
    ds = ws.dataset
    rows = class_rows(ds.labels, ds.splits["train"], ds.num_classes, per)
    return [images(ds, r, size=size) for r in rows]


@st.cache_data(max_entries=16, show_spinner=False)
def thumbnails(
    _ds: ImageDataset, fingerprint: str, indices: tuple[int, ...], size: int = 64
) -> list[str]:
    """`data:image/png;base64,...` thumbnails of dataset `indices` for hover previews: small
    images at their own size (the browser enlarges them), large ones shrunk to `size`."""
    from PIL import Image

    out = []
    for im in images(_ds, indices, size, enlarge=False):
        buf = io.BytesIO()
        Image.fromarray(im).save(buf, format="PNG", optimize=True)
        out.append("data:image/png;base64," + base64.b64encode(buf.getvalue()).decode())
    return out


# --- sweep tables ---------------------------------------------------------------------------------


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[-80:] or "x"


def sweep_path(ctx: Context) -> Path:
    """Where the app keeps the sweep table of this model, dataset and image limits."""
    lim = f"tr{ctx.train_limit or 'all'}-te{ctx.test_limit or 'all'}"
    return cache_dir() / "sweeps" / f"{_slug(ctx.base_model)}__{_slug(ctx.dataset)}__{lim}.csv"


def read_table(path: Path) -> pd.DataFrame:
    """A results table from disk (empty when absent), with string columns kept as strings."""
    if not path.exists():
        return pd.DataFrame(columns=COLUMNS)
    return with_text_columns(load_table(path))


def merge_tables(*frames: pd.DataFrame) -> pd.DataFrame:
    """Concatenate tidy tables; a later row replaces an earlier one for the same setting and metric."""
    parts = [f for f in frames if f is not None and not f.empty]
    if not parts:
        return pd.DataFrame(columns=COLUMNS)
    df = with_text_columns(pd.concat(parts, ignore_index=True))
    return df.drop_duplicates(subset=SWEEP_KEYS, keep="last").reset_index(drop=True)


def sweep(ws: Workspace, plan, path: Path, table: pd.DataFrame) -> tuple[pd.DataFrame, int, float]:
    """Run `plan` with a progress bar and ETA, rows saved as they arrive; returns the merged
    table, the number of new results and the seconds spent. A failure keeps finished rows."""
    bar, t0 = st.progress(0.0, text="Starting the sweep…"), time.time()
    now = {"event": SweepProgress(0, plan.steps, "Starting the sweep…", 0.0)}

    def show(frac: float) -> None:
        spent = time.time() - t0
        eta = f" · ETA {spent / frac * (1 - frac):.0f}s" if frac > 0.02 else ""
        bar.progress(frac, text=f"{now['event'].current} · {100 * frac:.0f}% · {spent:.0f}s{eta}")

    def report(event: SweepProgress) -> None:  # before each (model, t) step
        now["event"] = event
        show(event.fraction)

    def images_done(done: int, total: int) -> None:  # within a step, while features are extracted
        show(now["event"].within(done, total))

    running = running_path(path)
    new = None
    try:
        new = run_sweep(ws, plan, out=running, report=report, progress=images_done)
    finally:  # keep whatever finished, even if the run failed half-way
        table = merge_tables(table, read_table(running))
        save_table(table, path)
        running.unlink(missing_ok=True)
        bar.empty()
    return table, len(accuracy_view(new)), time.time() - t0


def shipped_sweep(ctx: Context):
    """The shipped sweep of this built-in model and dataset, checked against its checksum, the
    extraction version and the model's weights (`explorer.shipped.Shipped`, with `.table`),
    or None when there is none."""
    path = shipped.table_for(ctx.base_model, ctx.dataset)
    if path is None:
        return None
    fp = workspace(ctx, ctx.base_model).model.fingerprint
    found = shipped.check(path, extraction_version=EXTRACTION_VERSION, model_fingerprint=fp)
    found.table = read_table(path)
    return found


def sweep_story(ctx: Context, head: str, pool: str):
    """The story Explore and Compare open with (`explorer.ui.story.Story`): the best setting on
    validation in the user's own sweep at the sidebar's limits, else in the shipped sweep (at
    its own limits, from its provenance); None when neither has one."""
    told = story(
        load_sweep(ctx),
        ctx.base_model,
        head=head,
        pool=pool,
        train_limit=ctx.train_limit,
        test_limit=ctx.test_limit,
    )
    path = shipped.table_for(ctx.base_model, ctx.dataset)
    if told is not None or path is None:
        return told
    return _shipped_story(str(path), path.stat().st_mtime_ns, ctx.base_model, head, pool)


@st.cache_data(max_entries=16, show_spinner=False)
def _shipped_story(path: str, stamp: int, model: str, head: str, pool: str):
    """`sweep_story` of a shipped table (read once per file version `stamp`)."""
    prov = shipped.check(
        Path(path), extraction_version=EXTRACTION_VERSION, model_fingerprint=None
    ).provenance
    return story(
        read_table(Path(path)),
        model,
        head=head,
        pool=pool,
        train_limit=prov.get("train_images"),
        test_limit=None,  # the shipped sweep reads the whole test split
        test_images=prov.get("test_images"),
    )


def running_path(path: Path) -> Path:
    return path.with_name(path.stem + ".running.csv")


def load_sweep(ctx: Context) -> pd.DataFrame:
    """The saved table merged with rows an interrupted run left behind (a reload loses nothing)."""
    path = sweep_path(ctx)
    run = running_path(path)
    df = read_table(path)
    if run.exists():
        df = merge_tables(df, read_table(run))
        save_table(df, path)
        run.unlink(missing_ok=True)
    return df


# --- export ---------------------------------------------------------------------------------------


@st.cache_resource(show_spinner=False)
def png_export() -> bool:
    """Whether figures can be saved as PNG here: plotly's kaleido and a Chrome/Chromium for it.

    Only looks for the browser (milliseconds); kaleido starts it when a PNG is asked for.
    """
    try:
        import kaleido  # noqa: F401
        from choreographer.browsers.chromium import Chromium

        return bool(Chromium.find_browser(skip_local=False))
    except Exception:  # kaleido 0.x, a missing package or an unexpected layout: HTML only
        return False
