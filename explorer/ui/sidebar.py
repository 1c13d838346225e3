"""The sidebar: model, dataset (built-in, path or uploaded zip), image limits, device, cache."""

from __future__ import annotations

import streamlit as st

from explorer import access
from explorer import defaults as D
from explorer.data import BUILTIN_DATASETS, default_dataset
from explorer.defaults import RANDOM_PREFIX
from explorer.errors import ExplorerError
from explorer.paths import cache_dir, default_model
from explorer.ui import services, state
from explorer.ui.common import CONTEXT_KEY, policy

CUSTOM_MODEL = "other: folder or hub id…"
PATH_DATASET = "other: folder or file…"
UPLOAD_DATASET = "upload a zip of class folders…"
_UPLOADED = "_uploaded_dataset"
MAX_LIMIT = 10_000_000  # images per split; any larger number in a link is a crafted one


def defaults() -> tuple[str, str]:
    """The start-up pair: the built-in dataset and its model, else digits (always present)."""
    ds = default_dataset()
    model = default_model(ds)
    if model in services.builtin_models():
        return ds, model
    return "digits", "ddpm-digits"


def _on_dataset_change() -> None:
    """Follow the dataset with its built-in model when the model was the old dataset's default."""
    old = st.session_state.get(state._KEPT + "side_dataset")
    new = st.session_state.get("side_dataset")
    model = st.session_state.get("side_model")
    if old in BUILTIN_DATASETS and new in BUILTIN_DATASETS and model == default_model(old):
        target = default_model(new)
        if target in services.builtin_models():
            st.session_state["side_model"] = target


def _split_spec(spec: str, options: list[str], other: str) -> tuple[str, str]:
    return (spec, "") if spec in options else (other, spec)


def _seed_from_url(name: str, pick_key: str, text_key: str, options: list[str], other: str) -> None:
    """A free-text spec in the URL (a path) selects 'other' and fills the text box."""
    if pick_key in st.session_state or name not in st.query_params:
        return
    pick, text = _split_spec(st.query_params[name], options, other)
    st.session_state[pick_key] = pick
    if text:
        st.session_state[text_key] = text


def _seed_pick(key: str, options: list[str], default: str) -> None:
    ss = st.session_state
    if key not in ss or ss[key] not in options:
        kept = ss.get(state._KEPT + key)
        ss[key] = kept if kept in options else (default if default in options else options[0])


def _model_picker(default: str) -> str:
    from explorer.models import local_models

    names = services.builtin_models()
    options = names + [RANDOM_PREFIX + n for n in names] + local_models() + [CUSTOM_MODEL]
    _seed_from_url("model", "side_model", "side_model_path", options, CUSTOM_MODEL)
    _seed_pick("side_model", options, default)
    spec = st.selectbox(
        "Model",
        options,
        key="side_model",
        help="A built-in model, its random-weights control (`random:`), a model folder found "
        "under $EXPLORER_MODELS, or any diffusers model folder (pixel or latent U-Net, Stable "
        "Diffusion or DiT pipeline; add #class-label=N or #prompt=TEXT) or hub id.",
    )
    st.session_state[state._KEPT + "side_model"] = spec
    if spec == CUSTOM_MODEL:
        _roots_hint()
        spec = (
            st.text_input(
                "Model folder or hub id",
                key="side_model_path",
                placeholder="/path/to/unet-folder or org/name",
            ).strip()
            or default
        )
    _write_url("model", spec)
    return spec


def _dataset_picker(default: str) -> str:
    options = list(BUILTIN_DATASETS) + [PATH_DATASET, UPLOAD_DATASET]
    _seed_from_url("dataset", "side_dataset", "side_dataset_path", options, PATH_DATASET)
    _seed_pick("side_dataset", options, default)
    spec = st.selectbox(
        "Dataset",
        options,
        key="side_dataset",
        on_change=_on_dataset_change,
        help="Built-in, a folder (ImageFolder tree, CIFAR batches, IDX files, HF dataset on "
        "disk), or a zip of class folders uploaded here.",
    )
    st.session_state[state._KEPT + "side_dataset"] = spec
    if spec == PATH_DATASET:
        _roots_hint()
        spec = (
            st.text_input(
                "Dataset folder or file",
                key="side_dataset_path",
                placeholder="/path/to/class-folders",
            ).strip()
            or default
        )
    elif spec == UPLOAD_DATASET:
        spec = _upload() or default
    _write_url("dataset", spec)
    return spec


def _roots_hint() -> None:
    rules = policy()
    if rules.exposed:
        st.caption(f"This app is shared: only folders under {rules.roots_text()} can be opened.")


def _upload() -> str | None:
    from explorer.data.upload import extract_zip, upload_limits

    max_bytes, max_files = upload_limits()
    f = st.file_uploader(
        "Zip of class folders (class/image.png)",
        type=["zip"],
        key="side_upload",
        help=f"Limits: {max_bytes / 2**20:.0f} MB expanded, {max_files} files "
        "(EXPLORER_UPLOAD_MAX_MB / EXPLORER_UPLOAD_MAX_FILES).",
    )
    if f is None:
        st.caption("Until a zip is uploaded, the default dataset is used.")
        return st.session_state.get(_UPLOADED)
    try:
        root, stats = extract_zip(
            f.getvalue(), cache_dir() / "uploads", max_bytes=max_bytes, max_files=max_files
        )
    except ExplorerError as e:
        st.error(str(e))
        return None
    skipped = stats.get("skipped_non_image", 0) + stats.get("skipped_hidden", 0)
    st.success(
        f"{stats.get('images', 0)} images extracted"
        + (f"; {skipped} non-image or hidden files skipped" if skipped else "")
    )
    st.session_state[_UPLOADED] = str(root)
    return str(root)


def _write_url(name: str, value: str) -> None:
    if st.query_params.get(name) != value:
        st.query_params[name] = value


def _limit(key: str, name: str, label: str, default: int) -> int | None:
    b = state.Bound(
        key,
        name,
        default,
        lambda r: state.parse_limit(r, MAX_LIMIT) or 0,
        lambda v: isinstance(v, int) and 0 <= v <= MAX_LIMIT,
    )
    v = b(
        st.number_input,
        label,
        min_value=0,
        max_value=MAX_LIMIT,
        step=500,
        help="Images per split, a fixed class-balanced sample; 0 = the whole split. Lower is faster.",
    )
    return int(v) or None


def render() -> services.Context:
    """Draw the sidebar and store the context for the pages; returns it.

    Raises ExplorerError, before anything is loaded, when this server's access policy
    refuses the model or dataset (a shared app and a path outside its data roots)."""
    ds_default, model_default = defaults()
    with st.sidebar:
        st.markdown("### Diffusion Feature Explorer")
        dataset = _dataset_picker(ds_default)
        model = _model_picker(
            default_model(dataset)
            if dataset in BUILTIN_DATASETS and default_model(dataset) in services.builtin_models()
            else model_default
        )
        c1, c2 = st.columns(2)
        with c1:
            train = _limit("side_train", "train", "Train images", D.DEFAULT_TRAIN_LIMIT)
        with c2:
            test = _limit("side_test", "test", "Test images", D.DEFAULT_TEST_LIMIT)
        root = str(cache_dir())
        short = root if len(root) <= 34 else "…" + root[-33:]
        st.caption(f"Device: **{services.device_text()}**  \nCache: `{short}`", help=root)
    st.session_state.pop(CONTEXT_KEY, None)
    rules = policy()
    access.check_dataset(dataset, rules, builtins=tuple(BUILTIN_DATASETS))
    access.check_model(model, rules)
    ctx = services.Context(model, dataset, train, test)
    st.session_state[CONTEXT_KEY] = ctx
    return ctx
