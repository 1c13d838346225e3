"""What the commands share: the `Command` record each command module declares, the option groups
(defined once here, so every command spells, defaults and explains a flag alike) and the
inputs they open.

Kept free of torch at import time: `explorer extract` answered from the cache must not load it.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import NamedTuple

from explorer import defaults as D
from explorer.cli import log

logger = log.get("cli")


class Command(NamedTuple):
    """One `explorer NAME`: its options, its handler (whose docstring is the help) and an example
    shown at the end of its --help (a new command needs one: see the tests)."""

    name: str
    add_args: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    example: str


# --- model -------------------------------------------------------------------------------------


def device_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:N")


def model_args(p: argparse.ArgumentParser) -> None:
    """--model, --trust-pickle, --device, --dtype and the conditioning (--prompt, --class-label)."""
    p.add_argument(
        "--model",
        default=None,
        help="built-in name, folder, hub id, or random:<model> (default: the dataset's built-in model)",
    )
    p.add_argument(
        "--trust-pickle",
        action="store_true",
        help="allow .bin/.pt pickle weights (they can run code)",
    )
    device_arg(p)
    p.add_argument(
        "--dtype",
        default="auto",
        metavar="fp32|bf16|fp16",
        help="compute precision (autocast); part of the cache key (default: bf16 on CUDA, fp32 "
        "on the CPU)",
    )
    p.add_argument(
        "--prompt",
        default=None,
        help="Stable Diffusion: one fixed prompt for every image (default: the empty prompt)",
    )
    p.add_argument(
        "--class-label",
        default=None,
        metavar="null|N|true",
        help="class-conditional models: null (the unconditional class), a fixed class N, or "
        "true (each image's own label: label-leaking)",
    )


def compile_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the model's blocks (faster on GPUs after a one-time compile, cached "
        "under the cache dir); results and cache keys are unchanged",
    )


def fold_condition(a: argparse.Namespace) -> None:
    """--prompt / --class-label become part of the model spec (`MODEL#prompt=...`), so the
    conditioning follows the model everywhere: memo, random control, results table."""
    for opt in ("prompt", "class_label"):
        value = getattr(a, opt, None)
        if value is not None and a.model is not None:
            a.model = f"{a.model}#{opt.replace('_', '-')}={value}"
            setattr(a, opt, None)


# --- data --------------------------------------------------------------------------------------


def limit_arg(raw: str) -> int | None:
    """`--limit`: a whole number, or `all` (no limit: None)."""
    if raw.strip().lower() == "all":
        return None
    try:
        return int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {raw!r} (a number or all)") from None


def workers_arg(raw: str) -> int | None:
    """`--workers`: a whole number >= 0, or auto (None)."""
    if raw.strip().lower() == "auto":
        return None
    try:
        n = int(raw)
    except ValueError:
        n = -1
    if n < 0:
        raise argparse.ArgumentTypeError(f"invalid value: {raw!r} (0 or more, or auto)")
    return n


def cache_dir_arg(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument(
        "--cache-dir", default=None, help=f"{what} (default: $EXPLORER_CACHE or ~/.cache)"
    )


def data_args(p: argparse.ArgumentParser) -> None:
    """--dataset, --splits, --limit, --batch-size, --workers, --seeds and --cache-dir."""
    p.add_argument(
        "--dataset",
        default=None,
        help="fashion-mnist, digits, or a path (default: fashion-mnist if installed, else digits)",
    )
    p.add_argument(
        "--splits", default="train,test", help="which splits to use (default: train,test)"
    )
    p.add_argument(
        "--limit",
        type=limit_arg,
        default=None,
        help="at most N images per split (fixed stratified sample), or all (the default)",
    )
    p.add_argument("--batch-size", type=int, default=256, help="images per forward pass")
    p.add_argument(
        "--workers",
        type=workers_arg,
        default=None,
        help="processes decoding and resizing image files ahead of the model (default: min(4, "
        "CPUs) for folder datasets; 0: in this process; in-memory datasets never use them)",
    )
    p.add_argument("--seeds", default="0", help="noise seeds, one noise draw each (default: 0)")
    cache_dir_arg(p, "feature cache")


# --- where features are read -------------------------------------------------------------------


def grid_args(
    p: argparse.ArgumentParser, timesteps: list[int], timesteps_help: str, pools: tuple[str, str]
) -> None:
    """A grid of settings (extract, sweep): the model and data options, --compile, --timesteps
    (default `timesteps`; `{ts}` in `timesteps_help` shows it), --layers and the poolings, as
    `pools` = (flag, help) (`{pool}` in the help shows the default)."""
    model_args(p)
    data_args(p)
    compile_arg(p)
    ts = D.timesteps_text(timesteps)
    p.add_argument("--timesteps", default=ts, help=timesteps_help.format(ts=ts))
    p.add_argument(
        "--layers", default="all", help="all, indices (19,24,-1), ranges (20-25) or names"
    )
    flag, text = pools
    p.add_argument(flag, default=D.DEFAULT_POOL, help=text.format(pool=D.DEFAULT_POOL))


def split_limit_args(p: argparse.ArgumentParser) -> None:
    """--train-limit and --test-limit: cap one split (over --limit)."""
    for split in ("train", "test"):
        p.add_argument(
            f"--{split}-limit",
            type=int,
            default=None,
            help=f"cap the {split} split (overrides --limit)",
        )


def pool_arg(p: argparse.ArgumentParser) -> None:
    """--pool: one pooling."""
    p.add_argument(
        "--pool",
        default=D.DEFAULT_POOL,
        help=f"pooling: 1, 2, 4, 8 or max (default: {D.DEFAULT_POOL})",
    )


def setting_args(p: argparse.ArgumentParser, layer_help: str) -> None:
    """--timestep, --layer and --pool: one setting (embed, export)."""
    p.add_argument(
        "--timestep", type=int, default=D.DEFAULT_T, help=f"timestep t (default: {D.DEFAULT_T})"
    )
    p.add_argument(
        "--layer", default=D.DEFAULT_LAYER, help=f"{layer_help} (default: {D.DEFAULT_LAYER})"
    )
    pool_arg(p)


# --- opening the inputs (the model and data load here, in the handlers, never at import) ------


def default_names(a: argparse.Namespace) -> tuple[str, str]:
    """(dataset, model) names with the built-in defaults filled in; sets them on `a`."""
    from explorer.data import default_dataset
    from explorer.paths import default_model

    if a.dataset is None:
        a.dataset = default_dataset()
        if a.dataset != "fashion-mnist":
            logger.warning(
                "note: Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist); "
                "using digits"
            )
    if a.model is None:
        a.model = default_model(a.dataset)
    fold_condition(a)
    return a.dataset, a.model


def open_inputs(a: argparse.Namespace, need_dataset: bool = True, condition_required: bool = True):
    """(model, dataset or None) from the shared options, with the built-in defaults.

    `condition_required=False` (listing layers): a class-conditional model needs no class label.
    """
    # torch loads here, not at import: a cached `explorer extract` answers without it
    from explorer.data import load_dataset
    from explorer.models.device import resolve_device
    from explorer.models.loader import load_model

    if need_dataset or a.dataset:
        default_names(a)
    elif a.model is None:
        a.model = "ddpm-fashion-mnist"
    fold_condition(a)
    dataset = load_dataset(a.dataset) if a.dataset else None
    model = load_model(
        a.model,
        trust_pickle=a.trust_pickle,
        device=resolve_device(a.device),
        compile=getattr(a, "compile", False),
        dtype=getattr(a, "dtype", None),
        condition_required=condition_required,
    )
    return model, dataset


def open_workspace(a: argparse.Namespace, **kw):
    """A `Workspace` over the shared options (model, data, --limit per split, cache, device);
    `kw` overrides or adds `Workspace` arguments."""
    from explorer.features.store import FeatureStore
    from explorer.workspace import Workspace

    model, ds = open_inputs(a)
    args = dict(
        store=FeatureStore(a.cache_dir),
        train_limit=a.limit,
        test_limit=a.limit,
        batch_size=a.batch_size,
        device=a.device,
        progress=True,
        workers=a.workers,
        trust_pickle=a.trust_pickle,
    )
    return Workspace(model, ds, **(args | kw))
