"""The sidebar: model, dataset (built-in, path or uploaded zip) and image limits, bound to the URL
like every page setting; it also shows the device in use (chosen automatically) and the cache."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import streamlit as st

from explorer import defaults as D
from explorer import exposure
from explorer.data import BUILTIN_DATASETS, default_dataset
from explorer.defaults import RANDOM_PREFIX
from explorer.errors import ExplorerError
from explorer.paths import cache_dir, default_model
from explorer.ui import services, state
from explorer.ui.common import CONTEXT_KEY, TEST_KEY, TRAIN_KEY, USED_SLOT, plural, policy

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
    old = state.kept("side_dataset")
    new = st.session_state.get("side_dataset")
    model = st.session_state.get("side_model")
    if old in BUILTIN_DATASETS and new in BUILTIN_DATASETS and model == default_model(old):
        target = default_model(new)
        if target in services.builtin_models():
            st.session_state["side_model"] = target


@dataclass(frozen=True)
class Picker:
    """A choice among `options` whose `other` option opens a text box for a free spec (a path).

    The URL holds the spec itself under `name`: a value that is not an option selects `other`
    and fills the text box. `extra` maps further options to a function giving their spec.
    """

    label: str
    name: str
    options: list[str]
    other: str
    text_label: str
    placeholder: str
    help: str
    on_change: Callable[[], None] | None = None
    extra: dict[str, Callable[[], str | None]] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"side_{self.name}"


def _picker(p: Picker, default: str) -> str:
    """Draw `p`, bound to the URL like every page setting; returns the chosen spec."""
    ss, text_key = st.session_state, f"{p.key}_path"
    if p.key not in ss and st.query_params.get(p.name, p.options[0]) not in p.options:
        ss[text_key] = st.query_params[p.name]  # a path in the link: 'other', with its text
    state.seed(
        p.key,
        p.name,
        default if default in p.options else p.options[0],
        parse=lambda raw: raw if raw in p.options else p.other,
        valid=lambda v: v in p.options,
    )
    spec = st.selectbox(p.label, p.options, key=p.key, on_change=p.on_change, help=p.help)
    if spec == p.other:
        _roots_hint()
        spec = st.text_input(p.text_label, key=text_key, placeholder=p.placeholder).strip()
    elif spec in p.extra:
        spec = p.extra[spec]()
    return state.publish(p.key, p.name, spec or default)


def _model_picker(default: str) -> str:
    from explorer.models.loader import local_models  # torch: only when the picker opens

    names = services.builtin_models()
    options = names + [RANDOM_PREFIX + n for n in names] + local_models() + [CUSTOM_MODEL]
    return _picker(
        Picker(
            "Model",
            "model",
            options,
            CUSTOM_MODEL,
            "Model folder or hub id",
            "/path/to/unet-folder or org/name",
            "A built-in model, its random-weights control (`random:`), a model folder found "
            "under $EXPLORER_MODELS, or any diffusers model folder (pixel or latent U-Net, Stable "
            "Diffusion or DiT pipeline; add #class-label=N or #prompt=TEXT) or hub id.",
        ),
        default,
    )


def _dataset_picker(default: str) -> str:
    options = list(BUILTIN_DATASETS) + [PATH_DATASET, UPLOAD_DATASET]
    return _picker(
        Picker(
            "Dataset",
            "dataset",
            options,
            PATH_DATASET,
            "Dataset folder or file",
            "/path/to/class-folders",
            "Built-in, a folder (ImageFolder tree, CIFAR batches, IDX files, HF dataset on "
            "disk), or a zip of class folders uploaded here.",
            on_change=_on_dataset_change,
            extra={UPLOAD_DATASET: _upload},
        ),
        default,
    )


def _roots_hint() -> None:
    rules = policy()
    if rules.exposed:
        st.caption(f"This app is shared: only folders under {rules.roots_text()} can be opened.")


def _upload() -> str | None:
    from explorer.data.upload import extract_zip, upload_limits  # only for an upload

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
            f.getvalue(),
            cache_dir() / "uploads",
            max_bytes=max_bytes,
            max_files=max_files,
            name=f.name,  # the dataset is called by its file name
        )
    except ExplorerError as e:
        st.error(str(e))
        return None
    skipped = stats.get("skipped_non_image", 0) + stats.get("skipped_hidden", 0)
    st.success(
        f"{plural(stats.get('images', 0), 'image')} extracted from `{f.name}`"
        + (f"; {plural(skipped, 'non-image or hidden file')} skipped" if skipped else "")
    )
    st.session_state[_UPLOADED] = str(root)
    return str(root)


def limit_text(raw: str) -> str:
    """A typed or linked image limit in its canonical text: `all` (also 0, none or empty) or a
    positive whole number up to `MAX_LIMIT`; ValueError with the reason otherwise."""
    n = state.parse_limit(str(raw), MAX_LIMIT)
    return "all" if n is None else str(n)


def _limit(key: str, name: str, label: str, default: int | None, bad: list[str]) -> int | None:
    """A limit box bound to the URL (`train=all` round-trips). A bad typed value adds a
    one-line message to `bad` (the caller stops with it; the URL keeps the last good value)."""
    state.seed(key, name, limit_text(str(default or 0)), parse=limit_text, valid=_is_text)
    raw = st.text_input(
        label,
        key=key,
        placeholder="all or a number",
        help="Images per split, a fixed class-balanced sample; `all` = the whole split. "
        "Lower is faster.",
    )
    try:
        text = limit_text(raw)
    except ValueError as e:
        bad.append(f"{label} '{state.shown(raw)}': {e}. Type a positive whole number or 'all'.")
        return default
    return state.parse_limit(state.publish(key, name, text))


def _is_text(v) -> bool:
    return isinstance(v, str)


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
        c1, c2, bad = *st.columns(2), []
        with c1:
            train = _limit(TRAIN_KEY, "train", "Train images", D.DEFAULT_TRAIN_LIMIT, bad)
        with c2:
            test = _limit(TEST_KEY, "test", "Test images", D.DEFAULT_TEST_LIMIT, bad)
        used = st.empty()  # the counts in use, once a page has the dataset (`common.used_counts`)
        root = str(cache_dir())
        short = root if len(root) <= 34 else "…" + root[-33:]
        st.caption(f"Device: **{services.device_text()}**  \nCache: `{short}`", help=root)
    st.session_state.pop(CONTEXT_KEY, None)
    if bad:
        raise ExplorerError(bad[0])
    rules = policy()
    exposure.check_dataset(dataset, rules, builtins=tuple(BUILTIN_DATASETS))
    exposure.check_model(model, rules)
    ctx = services.Context(model, dataset, train, test)
    st.session_state[CONTEXT_KEY] = ctx
    st.session_state[USED_SLOT] = used
    return ctx
