"""The `explorer` command: layers, extract, sweep, embed, cka, train, convert, cache, export,
report, datasets and app (`explorer COMMAND --help` for each).

Every command turns bad input into one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import inspect
import os
import re
import sys
from collections.abc import Callable

from explorer import defaults as D
from explorer import host_memory
from explorer import log as _log
from explorer.errors import ExplorerError

logger = _log.get("cli")

COMMANDS: dict[
    str, tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]
] = {}


def command(name: str, add_args: Callable[[argparse.ArgumentParser], None]):
    def wrap(fn):
        COMMANDS[name] = (add_args, fn)
        return fn

    return wrap


# --- shared options ----------------------------------------------------------------------------


def _model_args(p: argparse.ArgumentParser) -> None:
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
    p.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:N")
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


def _fold_condition(a: argparse.Namespace) -> None:
    """--prompt / --class-label become part of the model spec (`MODEL#prompt=...`), so the
    conditioning follows the model everywhere: memo, random control, results table."""
    for opt in ("prompt", "class_label"):
        value = getattr(a, opt, None)
        if value is not None and a.model is not None:
            a.model = f"{a.model}#{opt.replace('_', '-')}={value}"
            setattr(a, opt, None)


def _limit_arg(raw: str) -> int | None:
    """`--limit`: a whole number, or `all` (no limit: None)."""
    if raw.strip().lower() == "all":
        return None
    try:
        return int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {raw!r} (a number or all)") from None


def _workers_arg(raw: str) -> int | None:
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


def _data_args(p: argparse.ArgumentParser) -> None:
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
        type=_limit_arg,
        default=None,
        help="at most N images per split (fixed stratified sample), or all (the default)",
    )
    p.add_argument("--batch-size", type=int, default=256, help="images per forward pass")
    p.add_argument(
        "--workers",
        type=_workers_arg,
        default=None,
        help="processes decoding and resizing image files ahead of the model (default: min(4, "
        "CPUs) for folder datasets; 0: in this process; in-memory datasets never use them)",
    )
    p.add_argument("--seeds", default="0", help="noise seeds, one noise draw each (default: 0)")
    p.add_argument(
        "--cache-dir", default=None, help="feature cache (default: $EXPLORER_CACHE or ~/.cache)"
    )


def _compile_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the model's blocks (faster on GPUs after a one-time compile, cached "
        "under the cache dir); results and cache keys are unchanged",
    )


def open_inputs(a: argparse.Namespace, need_dataset: bool = True):
    """(model, dataset or None) from the shared options, with the built-in defaults."""
    from explorer.data import load_dataset
    from explorer.device import resolve_device
    from explorer.models import load_model

    if need_dataset or a.dataset:
        _default_names(a)
    elif a.model is None:
        a.model = "ddpm-fashion-mnist"
    _fold_condition(a)
    dataset = load_dataset(a.dataset) if a.dataset else None
    model = load_model(
        a.model,
        trust_pickle=a.trust_pickle,
        device=resolve_device(a.device),
        compile=getattr(a, "compile", False),
        dtype=getattr(a, "dtype", None),
    )
    return model, dataset


def _int_list(spec: str, what: str) -> list[int]:
    try:
        return [int(s) for s in spec.split(",") if s.strip()]
    except ValueError:
        raise ExplorerError(
            f"cannot read {what} '{spec}'; give integers separated by commas"
        ) from None


def _splits(dataset, spec: str) -> list[str]:
    splits = [s.strip() for s in spec.split(",") if s.strip()]
    for s in splits:
        if s not in dataset.splits:
            raise ExplorerError(
                f"unknown split '{s}'; this dataset has {', '.join(dataset.splits)}"
            )
    return splits


# --- layers ------------------------------------------------------------------------------------


def _layers_args(p: argparse.ArgumentParser) -> None:
    _model_args(p)
    p.add_argument("--dataset", default=None, help=argparse.SUPPRESS)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


@command("layers", _layers_args)
def cmd_layers(a: argparse.Namespace) -> int:
    """List the model's probe points (paper numbering) with their shapes."""
    import json

    from explorer.layers import build_catalogue

    model, _ = open_inputs(a, need_dataset=False)
    cat = build_catalogue(model.unet)
    if a.json:
        print(json.dumps([lay.to_dict() for lay in cat], indent=1))
        return 0
    print(
        f"{model.name}: {model.parameters / 1e6:.2f}M parameters, {model.resolution}x{model.resolution}, "
        f"T={model.num_timesteps}, fingerprint {model.fingerprint}"
    )
    print(
        "; ".join(f"{k}: {v}" for k, v in model.family.describe().items())
        + f"; scheduler: {model.scheduler_text}"
    )
    if model.family.leaks_label:
        print(
            "warning: --class-label true feeds each image's own label: these features are label-leaking"
        )
    print(f"{'idx':>3}  {'stage':5}  {'name':28}  {'kind':22}  {'C x H x W':>14}")
    for lay in cat:
        print(
            f"{lay.index:>3}  {lay.stage:5}  {lay.name:28}  {lay.kind:22}  "
            f"{f'{lay.channels}x{lay.height}x{lay.width}':>14}"
        )
    return 0


# --- extract -----------------------------------------------------------------------------------


def _extract_args(p: argparse.ArgumentParser) -> None:
    _model_args(p)
    _data_args(p)
    _compile_arg(p)
    ts = D.timesteps_text(D.EXTRACT_TIMESTEPS)
    p.add_argument("--timesteps", default=ts, help=f"e.g. 10,90,150 or 0:1000:100 (default: {ts})")
    p.add_argument(
        "--layers", default="all", help="all, indices (19,24,-1), ranges (20-25) or names"
    )
    p.add_argument(
        "--pool",
        default=D.DEFAULT_POOL,
        help=f"k for k×k average (1,2,4,8) and/or max; comma-separated (default: {D.DEFAULT_POOL})",
    )


@command("extract", _extract_args)
def cmd_extract(a: argparse.Namespace) -> int:
    """Compute pooled features for timesteps x layers into the on-disk cache.

    Under torchrun (`torchrun --nproc_per_node=K -m explorer extract ...`) the K ranks share each
    (t, seed) job by whole batches and write the same entries a single process would (byte for
    byte on the CPU); the cache must be one folder all ranks see. Only rank 0 prints.
    """
    from explorer import distributed
    from explorer.jobs import extract

    _default_names(a)
    _fold_condition(a)
    a.device = distributed.init(a.device)  # torchrun: join the ranks (a plain run: unchanged)
    main_rank = distributed.current().main

    def opened(ws) -> None:
        from explorer.device import describe

        logger.info(
            f"model {ws.model.name} on {describe(next(ws.model.unet.parameters()).device)}; "
            f"dataset {ws.dataset.name}"
        )

    out = extract(
        a.model,
        a.dataset,
        timesteps=a.timesteps,
        layers=a.layers,
        pools=a.pool,
        seeds=a.seeds,
        splits=a.splits,
        limit=a.limit,
        cache_dir=a.cache_dir,
        device=a.device,
        trust_pickle=a.trust_pickle,
        batch_size=a.batch_size,
        on_open=opened,
        compile=a.compile,
        dtype=a.dtype,
        workers=a.workers,
    )
    distributed.finish()
    if not main_rank:
        return 0
    for line in out.lines():
        print(line)
    if out.skipped_log:
        print(f"{out.skipped} unreadable images were skipped; their names are in {out.skipped_log}")
    return 0


def _default_names(a: argparse.Namespace) -> tuple[str, str]:
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
    _fold_condition(a)
    return a.dataset, a.model


# --- sweep -------------------------------------------------------------------------------------


def _sweep_args(p: argparse.ArgumentParser) -> None:
    from explorer.heads import describe_heads

    _model_args(p)
    _data_args(p)
    _compile_arg(p)
    ts = D.timesteps_text(D.SWEEP_TIMESTEPS)
    p.add_argument("--timesteps", default=ts, help=f"default: {ts}")
    p.add_argument(
        "--layers", default="all", help="all, indices (19,24,-1), ranges (20-25) or names"
    )
    p.add_argument(
        "--pools",
        default=D.DEFAULT_POOL,
        help=f"comma-separated poolings (default: {D.DEFAULT_POOL})",
    )
    p.add_argument(
        "--heads",
        default="linear,knn",
        help="comma-separated heads, each name[:param=value...] "
        "(knn10 = knn:k=10); " + describe_heads().replace("%", "%%"),
    )
    p.add_argument(
        "--train-limit", type=int, default=None, help="cap the train split (overrides --limit)"
    )
    p.add_argument(
        "--test-limit", type=int, default=None, help="cap the test split (overrides --limit)"
    )
    p.add_argument(
        "--no-baselines", action="store_true", help="skip raw pixels and the random-weights control"
    )
    p.add_argument(
        "--fuse",
        action="append",
        default=None,
        metavar="B@T+B@T",
        help="also probe a fused setting (repeatable): members BLOCK@T joined by +, e.g. 24@150+19@90 "
        "(concatenated for linear/knn/mlp, a token set for head fusion); ~SEED and /POOL per "
        "member, mean: first for an average; table rows: layer = this text, t empty",
    )
    p.add_argument(
        "--seed-average",
        choices=("accuracy", "features"),
        default="accuracy",
        help="with several --seeds: average the probes' accuracies (default) or the features "
        "(DIFT's ensemble: one probe on the mean over noise draws)",
    )
    p.add_argument(
        "--out",
        default="results.csv",
        help="results table, .csv or .parquet (default: results.csv)",
    )
    p.add_argument(
        "--config",
        default=None,
        metavar="TOML",
        help="read these options from a TOML file (keys as the long options, e.g. timesteps = "
        "[10, 90], train-limit = 1000); flags given here override it. The resolved options "
        "are recorded in OUT.provenance.json",
    )


@command("sweep", _sweep_args)
def cmd_sweep(a: argparse.Namespace) -> int:
    """Probe a grid of timesteps x layers x poolings; writes a tidy results table.

    Under torchrun (`torchrun --nproc_per_node=K -m explorer sweep ...`) every rank first extracts
    the whole grid's features together (as `explorer extract` does); then rank 0 alone trains the
    probes and writes the table, while the other ranks exit cleanly.
    """
    from explorer import distributed
    from explorer.device import describe
    from explorer.extract import check_timesteps, parse_pools, parse_timesteps
    from explorer.heads import parse_heads
    from explorer.layers import select_layers
    from explorer.models import RANDOM_PREFIX, load_model
    from explorer.store import FeatureStore
    from explorer.sweep import SweepPlan, describe_best, extract_plan, run_sweep
    from explorer.workspace import Workspace

    heads = [h.label for h in parse_heads(a.heads)]
    a.device = distributed.init(a.device)  # torchrun: join the ranks (a plain run: unchanged)
    ranks = distributed.current()
    model, ds = open_inputs(a)
    kw = dict(
        store=FeatureStore(a.cache_dir),
        train_limit=a.train_limit or a.limit,
        test_limit=a.test_limit or a.limit,
        batch_size=a.batch_size,
        device=a.device,
        workers=a.workers,
    )
    ws = Workspace(model, ds, **kw)
    timesteps = check_timesteps(parse_timesteps(a.timesteps), model.num_timesteps)
    layers = [lay.name for lay in select_layers(ws.catalogue, a.layers)]
    controls = []
    if not a.no_baselines and not model.name.startswith(RANDOM_PREFIX):
        rnd = load_model(
            RANDOM_PREFIX + a.model,
            trust_pickle=a.trust_pickle,
            device=next(model.unet.parameters()).device,
            compile=a.compile,
            dtype=model.precision,
        )
        controls.append(Workspace(rnd, ds, **kw))
    pools = parse_pools(a.pools)
    plan = SweepPlan(
        timesteps,
        layers,
        pools,
        heads,
        _int_list(a.seeds, "seeds"),
        pixels=not a.no_baselines,
        controls=controls,
        seed_average=a.seed_average,
        fused=[ws.fused(text, pools[0]) for text in a.fuse or []],
    )
    logger.info(
        f"sweep: {model.name} on {describe(next(model.unet.parameters()).device)}; {ds.name} "
        f"({len(ws.train.indices)} train / {len(ws.test.indices)} test); {len(timesteps)} timesteps x "
        f"{len(layers)} layers x {len(plan.pools)} poolings x {len(heads)} heads"
        f"{' + baselines' if plan.pixels else ''}"
    )
    if ranks.active:  # features on every rank together; then the probes on rank 0 alone
        extract_plan(ws, plan, progress=ranks.main)
        distributed.finish()
        if not ranks.main:
            return 0
    df = run_sweep(
        ws, plan, out=a.out, progress=True, report=lambda event: logger.info(event.text())
    )
    prov = write_provenance(a)
    print(describe_best(df))
    print(f"results: {len(df)} rows in {a.out} (options in {prov})")
    return 0


def sweep_config(path: str, known: set[str]) -> dict:
    """Options from a sweep TOML file (top level or a [sweep] table), keyed by argparse dest.

    Lists become the comma-separated strings the flags take; unknown keys are an error.
    """
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError:
        raise ExplorerError(f"--config {path} not found") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ExplorerError(f"--config {path} is not valid TOML: {e}") from None
    if isinstance(raw.get("sweep"), dict):
        raw = raw["sweep"]
    out = {}
    for key, value in raw.items():
        dest = key.replace("-", "_")
        if dest not in known:
            raise ExplorerError(
                f"unknown option '{key}' in {path}; known: "
                f"{', '.join(sorted(k.replace('_', '-') for k in known))}"
            )
        if isinstance(value, list):
            value = ",".join(str(v) for v in value)
        elif isinstance(value, dict):
            raise ExplorerError(f"option '{key}' in {path} must be a value or a list, not a table")
        out[dest] = value
    return out


def write_provenance(a: argparse.Namespace) -> str:
    """`<out>.provenance.json`: the command, the config file and every resolved option of a sweep."""
    import json
    import platform
    from importlib.metadata import version

    from explorer import __version__
    from explorer.atomic import atomic_write

    options = {k.replace("_", "-"): getattr(a, k) for k in a.option_dests}
    record = {
        "command": ["explorer", *a.argv],
        "config_file": os.path.abspath(a.config) if a.config else None,
        "options": options,
        "explorer": __version__,
        "python": platform.python_version(),
        "versions": {p: version(p) for p in ("torch", "diffusers", "scikit-learn", "numpy")},
    }
    path = f"{a.out}.provenance.json"
    atomic_write(path, json.dumps(record, indent=1, default=str) + "\n")
    return path


# --- embed and cka -----------------------------------------------------------------------------


def _workspace(a: argparse.Namespace):
    from explorer.store import FeatureStore
    from explorer.workspace import Workspace

    model, ds = open_inputs(a)
    return Workspace(
        model,
        ds,
        store=FeatureStore(a.cache_dir),
        train_limit=a.limit,
        test_limit=a.limit,
        batch_size=a.batch_size,
        device=a.device,
        progress=True,
        workers=a.workers,
    )


def _embed_args(p: argparse.ArgumentParser) -> None:
    _model_args(p)
    _data_args(p)
    p.add_argument(
        "--timestep", type=int, default=D.DEFAULT_T, help=f"timestep t (default: {D.DEFAULT_T})"
    )
    p.add_argument(
        "--layer",
        default=D.DEFAULT_LAYER,
        help=f"block index or name, see explorer layers (default: {D.DEFAULT_LAYER})",
    )
    p.add_argument(
        "--pool",
        default=D.DEFAULT_POOL,
        help=f"pooling: 1, 2, 4, 8 or max (default: {D.DEFAULT_POOL})",
    )
    p.add_argument("--method", choices=["umap", "pca"], default="umap", help="2-D projection")
    p.add_argument(
        "--out", default="embedding.csv", help="CSV with x, y, label, class per test image"
    )


@command("embed", _embed_args)
def cmd_embed(a: argparse.Namespace) -> int:
    """2-D UMAP (cached) or PCA of one setting's test features, as a CSV."""
    import pandas as pd

    from explorer.extract import check_timesteps, parse_pools
    from explorer.workspace import Setting

    ws = _workspace(a)
    t = check_timesteps([a.timestep], ws.model.num_timesteps)[0]
    s = Setting(t, ws.layer(a.layer).name, parse_pools(a.pool)[0], _int_list(a.seeds, "seeds")[0])
    ws.ensure([s], splits=["test"])
    if a.method == "umap":
        logger.info("running UMAP (PCA to 50 dims first; cached for next time)...")
    xy = ws.embedding(s, a.method)
    y = ws.labels("test")
    pd.DataFrame(
        {"x": xy[:, 0], "y": xy[:, 1], "label": y, "class": [ws.dataset.class_names[i] for i in y]}
    ).to_csv(a.out, index=False)
    print(f"{a.method} of {len(y)} test images at t={t}, {s.layer}, pool {s.pool} -> {a.out}")
    return 0


def _cka_args(p: argparse.ArgumentParser) -> None:
    _model_args(p)
    _data_args(p)
    ts = D.timesteps_text(D.CKA_TIMESTEPS)
    p.add_argument(
        "--timesteps",
        default=ts,
        help=f"one timestep: block x block; several: t x t (default: {ts})",
    )
    p.add_argument("--layers", default="all", help="several layers: block x block; one: t x t")
    p.add_argument(
        "--pool",
        default=D.DEFAULT_POOL,
        help=f"pooling: 1, 2, 4, 8 or max (default: {D.DEFAULT_POOL})",
    )
    p.add_argument(
        "--debiased", action="store_true", help="debiased HSIC (unbiased CKA for few images)"
    )
    p.add_argument("--out", default=None, help="also write the matrix as CSV")


@command("cka", _cka_args)
def cmd_cka(a: argparse.Namespace) -> int:
    """Linear CKA between settings: block x block at one t, or t x t at one block."""
    import pandas as pd

    from explorer.extract import check_timesteps, parse_pools, parse_timesteps
    from explorer.layers import select_layers
    from explorer.workspace import Setting

    ws = _workspace(a)
    ts = check_timesteps(parse_timesteps(a.timesteps), ws.model.num_timesteps)
    layers = select_layers(ws.catalogue, a.layers)
    pool = parse_pools(a.pool)[0]
    if len(ts) > 1 and len(layers) > 1:
        raise ExplorerError(
            "give one timestep (block x block) or one layer (t x t), not several of both"
        )
    if len(ts) > 1:
        settings, names = [Setting(t, layers[0].name, pool) for t in ts], [f"t={t}" for t in ts]
    else:
        settings, names = (
            [Setting(ts[0], lay.name, pool) for lay in layers],
            [str(lay.index) for lay in layers],
        )
    m = pd.DataFrame(ws.cka(settings, debiased=a.debiased), index=names, columns=names)
    print(m.round(3).to_string())
    if a.out:
        m.to_csv(a.out)
    return 0


# --- train -------------------------------------------------------------------------------------


def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dataset", default="fashion-mnist", help="built-in name or path (default: fashion-mnist)"
    )
    p.add_argument(
        "--out", required=True, help="folder for the model (resumes if a checkpoint is there)"
    )
    p.add_argument("--steps", type=int, default=2000, help="optimiser steps")
    p.add_argument("--batch-size", type=int, default=128, help="images per step")
    p.add_argument("--lr", type=float, default=5e-4, help="AdamW learning rate")
    p.add_argument(
        "--ema-decay", type=float, default=0.995, help="decay of the weights' moving average"
    )
    p.add_argument(
        "--checkpoint-every", type=int, default=100, help="steps between resumable checkpoints"
    )
    p.add_argument(
        "--size",
        type=int,
        default=None,
        help="model resolution (default: the images', at least 16)",
    )
    p.add_argument("--no-flip", action="store_true", help="no horizontal-flip augmentation")
    p.add_argument("--seed", type=int, default=0, help="random seed (weights, batches, noise)")
    p.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:N")


@command("train", _train_args)
def cmd_train(a: argparse.Namespace) -> int:
    """Train a small DDPM for the built-in models."""
    from explorer.data import load_dataset
    from explorer.train import TrainConfig, command_line, train

    if a.steps < 1 or a.batch_size < 1:
        raise ExplorerError("--steps and --batch-size must be positive integers")
    ds = load_dataset(a.dataset)
    cfg = TrainConfig(
        steps=a.steps,
        batch_size=a.batch_size,
        lr=a.lr,
        ema_decay=a.ema_decay,
        checkpoint_every=a.checkpoint_every,
        seed=a.seed,
        size=a.size,
        flip=not a.no_flip,
    )
    out = train(ds, a.out, cfg, device=a.device, command=command_line())
    print(f"saved model to {out} (model card: {out / 'README.md'})")
    return 0


# --- convert -----------------------------------------------------------------------------------


def _convert_args(p: argparse.ArgumentParser) -> None:
    from explorer.convert.adm_presets import PRESETS

    p.add_argument(
        "source", choices=["adm"], help="checkpoint format: adm (OpenAI guided-diffusion)"
    )
    p.add_argument("checkpoint", help="the .pt state dict, e.g. 256x256_diffusion_uncond.pt")
    p.add_argument("--out", required=True, help="diffusers folder to write (then: --model OUT)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument(
        "--preset",
        default="imagenet256-uncond",
        choices=list(PRESETS),
        help="flags of a released checkpoint (default: imagenet256-uncond); flags below override",
    )
    g = p.add_argument_group("guided-diffusion flags (default: the preset's)")
    for flag, kind, text in (
        ("--image-size", int, "input side"),
        ("--num-channels", int, "base width"),
        ("--num-res-blocks", int, "res blocks per level"),
        (
            "--channel-mult",
            str,
            "e.g. 1,1,2,2,4,4 (empty: guided-diffusion's default for the image size)",
        ),
        ("--attention-resolutions", str, "feature-map sides with attention, e.g. 32,16,8"),
        ("--num-head-channels", int, "channels per head (-1: use --num-heads)"),
        ("--num-heads", int, "heads per attention block when --num-head-channels is -1"),
        ("--noise-schedule", str, "linear or cosine"),
        ("--diffusion-steps", int, "training timesteps"),
    ):
        g.add_argument(flag, type=kind, default=None, help=text)
    for flag in (
        "--use-new-attention-order",
        "--learn-sigma",
        "--resblock-updown",
        "--use-scale-shift-norm",
        "--class-cond",
    ):
        g.add_argument(
            flag,
            action=argparse.BooleanOptionalAction,
            default=None,
            help=f"guided-diffusion's {flag[2:].replace('-', '_')}",
        )


def adm_config_from_args(a: argparse.Namespace):
    """The preset's ADMConfig with every flag given on the command line applied."""
    from dataclasses import replace

    from explorer.convert.adm_presets import preset

    cfg, changes = preset(a.preset), {}
    for name in (
        "image_size",
        "num_channels",
        "num_res_blocks",
        "num_head_channels",
        "num_heads",
        "noise_schedule",
        "diffusion_steps",
        "use_new_attention_order",
        "learn_sigma",
        "resblock_updown",
        "use_scale_shift_norm",
        "class_cond",
    ):
        if getattr(a, name) is not None:
            changes[name] = getattr(a, name)
    if a.channel_mult is not None:
        try:
            changes["channel_mult"] = (
                tuple(float(s) for s in a.channel_mult.split(",") if s.strip()) or None
            )
        except ValueError:
            raise ExplorerError(
                f"cannot read --channel-mult '{a.channel_mult}'; give e.g. 1,1,2,2,4,4"
            ) from None
    elif a.image_size is not None and a.image_size != cfg.image_size:
        changes["channel_mult"] = None  # the new size's default, as guided-diffusion does
    if a.attention_resolutions is not None:
        changes["attention_resolutions"] = tuple(
            _int_list(a.attention_resolutions, "--attention-resolutions")
        )
    return replace(cfg, **changes).validate()


@command("convert", _convert_args)
def cmd_convert(a: argparse.Namespace) -> int:
    """Convert a guided-diffusion (ADM) checkpoint into a diffusers folder usable as --model."""
    import time

    from explorer.convert.adm import convert_adm

    cfg = adm_config_from_args(a)
    start = time.perf_counter()
    out = convert_adm(a.checkpoint, a.out, cfg, overwrite=a.overwrite)
    print(
        f"converted {a.checkpoint} in {time.perf_counter() - start:.1f} s to {out}; "
        f"use it as --model {out}"
    )
    if cfg.class_cond:
        logger.warning(
            "note: this model is class-conditional (label embedding kept); the explorer's feature "
            "extraction does not pass class labels, so it cannot extract features from it yet"
        )
    return 0


# --- cache -------------------------------------------------------------------------------------


def _cache_args(p: argparse.ArgumentParser) -> None:
    from explorer.cache_admin import PARTS

    p.add_argument(
        "action",
        choices=["verify", "clear", "info"],
        help="verify: check every feature entry; clear: delete parts; info: sizes",
    )
    p.add_argument(
        "--cache-dir", default=None, help="cache root (default: $EXPLORER_CACHE or ~/.cache)"
    )
    for name in PARTS:
        p.add_argument(
            f"--{name}",
            action="store_true",
            help=f"clear: only {name} (combine; default: all but uploads)",
        )


@command("cache", _cache_args)
def cmd_cache(a: argparse.Namespace) -> int:
    """Verify, clear or list the on-disk cache (features, probe results, UMAPs, sweeps, ...)."""
    from explorer import cache_admin

    if a.action == "verify":
        rep = cache_admin.verify(a.cache_dir)
        for key, reason in rep.damaged:
            print(f"damaged: {key}: {reason}")
        print(rep.summary())
        return 0
    if a.action == "clear":
        parts = [n for n in cache_admin.PARTS if getattr(a, n)] or None
        freed = cache_admin.clear(a.cache_dir, parts)
        print("cleared " + ", ".join(f"{n} ({b / 1e6:.1f} MB)" for n, b in freed.items()))
        return 0
    for part in cache_admin.inventory(a.cache_dir):
        print(f"{part.name:9} {part.files:7d} files {part.bytes / 1e6:10.1f} MB  {part.path}")
    return 0


# --- export and report -------------------------------------------------------------------------


def _export_args(p: argparse.ArgumentParser) -> None:
    from explorer.export import FORMATS

    _model_args(p)
    _data_args(p)
    p.add_argument(
        "--timestep", type=int, default=D.DEFAULT_T, help=f"timestep t (default: {D.DEFAULT_T})"
    )
    p.add_argument(
        "--layer", default=D.DEFAULT_LAYER, help=f"block index or name (default: {D.DEFAULT_LAYER})"
    )
    p.add_argument(
        "--pool",
        default=D.DEFAULT_POOL,
        help=f"pooling: 1, 2, 4, 8 or max (default: {D.DEFAULT_POOL})",
    )
    p.add_argument(
        "--format",
        choices=FORMATS,
        default="npz",
        help="npz, safetensors, parquet, or projector (a TensorBoard Embedding Projector folder)",
    )
    p.add_argument("--out", required=True, help="file to write (projector: a folder)")


@command("export", _export_args)
def cmd_export(a: argparse.Namespace) -> int:
    """Write one setting's features, labels and metadata as npz, safetensors, Parquet or a Projector folder."""
    from explorer import export
    from explorer.extract import check_timesteps, parse_pools
    from explorer.workspace import Setting

    ws = _workspace(a)
    t = check_timesteps([a.timestep], ws.model.num_timesteps)[0]
    s = Setting(t, ws.layer(a.layer).name, parse_pools(a.pool)[0], _int_list(a.seeds, "seeds")[0])
    splits = [sp for sp in _splits(ws.dataset, a.splits) if sp in ("train", "test")]
    if not splits:
        raise ExplorerError("--splits must name train and/or test")
    data = export.from_workspace(ws, s, splits, images=a.format == "projector")
    paths = export.write(data, a.format, a.out)
    shapes = ", ".join(f"{sp} {x.shape[0]}x{x.shape[1]}" for sp, x in data.features.items())
    print(f"{a.format}: t={t}, {s.layer}, pool {s.pool} ({shapes}) -> {', '.join(map(str, paths))}")
    return 0


def _report_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--sweep", required=True, help="results table from explorer sweep (.csv or .parquet)"
    )
    p.add_argument("--out", default="report.html", help="HTML file to write (default: report.html)")
    p.add_argument("--head", default=None, help="head for the figures (default: the table's first)")
    p.add_argument(
        "--pool", default=None, help="pooling for the figures (default: the table's first)"
    )
    p.add_argument(
        "--workspace",
        action="store_true",
        help="also open the model and data (--model/--dataset/--limit...) for per-class "
        "results and a UMAP of the best setting, from the cache or computed",
    )
    _model_args(p)
    _data_args(p)


@command("report", _report_args)
def cmd_report(a: argparse.Namespace) -> int:
    """Write a self-contained HTML report of a sweep (figures inline, opens offline)."""
    import shlex

    from explorer.report import write_html_report
    from explorer.results import load_table

    if not os.path.exists(a.sweep):
        raise ExplorerError(f"{a.sweep} not found; give a results table written by explorer sweep")
    table = load_table(a.sweep)
    ws = _workspace(a) if a.workspace else None
    out = write_html_report(
        table,
        a.out,
        head=a.head,
        pool=a.pool,
        workspace=ws,
        source=a.sweep,
        command=shlex.join(["explorer", *a.argv]),
    )
    print(f"report of {a.sweep} -> {out}")
    return 0


# --- datasets ----------------------------------------------------------------------------------


def _datasets_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "paths",
        nargs="*",
        help="dataset folders, or folders of them (also searched: $EXPLORER_DATA_ROOTS)",
    )


@command("datasets", _datasets_args)
def cmd_datasets(a: argparse.Namespace) -> int:
    """List the datasets available (built-ins, folders given or under the data roots) and their splits."""
    from explorer.data.catalog import list_datasets

    for e in list_datasets(a.paths):
        state = "" if e.available else " (not installed)"
        print(f"{e.name}\t{e.kind}{state}\t{e.split}")
    return 0


# --- app ---------------------------------------------------------------------------------------


def _app_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", type=int, default=8501, help="port to serve on")
    p.add_argument("--headless", action="store_true", help="do not open a browser")
    p.add_argument(
        "--host",
        default=None,
        help="address to listen on (default: 127.0.0.1, this machine only; 0.0.0.0 = everyone)",
    )
    p.add_argument(
        "--share", action="store_true", help="listen on every interface (same as --host 0.0.0.0)"
    )
    p.add_argument(
        "--data-root",
        action="append",
        default=[],
        metavar="DIR",
        help="when shared, folders whose models and datasets the app may load (repeatable; "
        "added to $EXPLORER_DATA_ROOTS)",
    )
    p.add_argument(
        "--allow-admin", action="store_true", help="show the button that clears the feature cache"
    )


_HOST = re.compile(r"^[A-Za-z0-9.:\[\]-]+$")


@command("app", _app_args)
def cmd_app(a: argparse.Namespace) -> int:
    """Start the web app (streamlit run app.py); this machine only unless --host/--share."""
    import signal
    import subprocess

    from explorer import access
    from explorer.paths import REPO_ROOT

    if a.host and a.share:
        raise ExplorerError("give --host or --share, not both")
    if not 1 <= a.port <= 65535:
        raise ExplorerError("--port must be between 1 and 65535")
    host = "0.0.0.0" if a.share else (a.host or "127.0.0.1").strip()
    if not _HOST.match(host):
        raise ExplorerError(f"--host '{host}' is not an IP address or host name")
    app = REPO_ROOT / "app.py"
    if not app.exists():
        raise ExplorerError(
            f"{app} not found; run from a clone of the repository (pip install -e .)"
        )
    exposed = not access.is_loopback(host)
    roots = [str(r) for r in access.parse_roots(os.pathsep.join(a.data_root))]
    roots += [r for r in os.environ.get(access.ROOTS_ENV, "").split(os.pathsep) if r.strip()]
    env = dict(os.environ)
    env |= {
        access.EXPOSED_ENV: "1" if exposed else "0",
        access.ADMIN_ENV: "1" if a.allow_admin else "0",
        access.ROOTS_ENV: os.pathsep.join(roots),
    }
    if exposed:
        policy = access.Policy(
            exposed=True, admin=a.allow_admin, roots=access.parse_roots(env[access.ROOTS_ENV])
        )
        logger.warning(access.exposure_text(host, a.port, policy))
    # explorer.serve: Streamlit in-process, after loading the default model and views (first page warm)
    cmd = [
        sys.executable,
        "-m",
        "explorer.serve",
        "run",
        str(app),
        "--server.port",
        str(a.port),
        "--server.address",
        host,
        "--browser.gatherUsageStats",
        "false",
        # no source watcher: it walks every imported module (torch: thousands) for each session
        "--server.fileWatcherType",
        "none",
    ]
    if a.headless:
        cmd += ["--server.headless", "true"]
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env)  # cwd: so .streamlit/config.toml applies
    try:  # a SIGTERM to `explorer app` stops the server too, instead of orphaning it
        previous = signal.signal(signal.SIGTERM, lambda *_: proc.terminate())
    except ValueError:  # not the main thread: no handler, the finally clause still cleans up
        previous = None
    try:
        return proc.wait()
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        if proc.poll() is None:
            proc.terminate()
            proc.wait()


# --- entry point --------------------------------------------------------------------------------


# One example per command, shown at the end of its --help (a new command needs one: see the tests).
EXAMPLES = {
    "layers": "explorer layers --model ddpm-digits",
    "extract": "explorer extract --dataset digits --timesteps 10,90 --layers mid --pool 2,max --limit 500",
    "sweep": "explorer sweep --dataset digits --timesteps 10,90 --layers 6-9 --limit 500 --out sweep.csv\n"
    "  explorer sweep --config sweep.toml --out again.csv   (flags override the file)",
    "embed": "explorer embed --dataset digits --timestep 90 --layer mid --method pca --out emb.csv",
    "cka": "explorer cka --dataset digits --timesteps 90 --layers 4-9 --limit 500",
    "train": "explorer train --dataset digits --out runs/ddpm-digits --steps 500",
    "convert": "explorer convert adm 256x256_diffusion_uncond.pt --out models/adm256",
    "cache": "explorer cache info",
    "datasets": "explorer datasets ~/data   (a folder of ImageFolder trees; train.txt/test.txt pick splits)",
    "export": "explorer export --dataset digits --timestep 10 --layer mid --format npz --out mid.npz",
    "report": "explorer report --sweep results.csv --out report.html",
    "app": "explorer app --port 8501",
}
_NOISE = ("help", "version", "verbose", "quiet", "config", "func", "command")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows each option's default, unless its help already tells it or there is none to show."""

    def _get_help_string(self, action):
        text = action.help or ""
        if (
            "default" in text.lower()
            or action.default in (None, False)
            or action.default is argparse.SUPPRESS
        ):
            return text
        return super()._get_help_string(action)


def _verbosity(p: argparse.ArgumentParser, top: bool) -> None:
    default = (
        0 if top else argparse.SUPPRESS
    )  # a subcommand's flags must not reset the top-level ones
    p.add_argument(
        "-v", "--verbose", action="count", default=default, help="more messages on stderr"
    )
    p.add_argument(
        "-q",
        "--quiet",
        action="count",
        default=default,
        help="fewer messages on stderr (-qq: errors only); results stay on stdout",
    )


def build_parser() -> argparse.ArgumentParser:
    from explorer import __version__

    parser = argparse.ArgumentParser(
        prog="explorer",
        description="Find where a diffusion U-Net keeps its best image features.",
        epilog="example:\n  explorer layers\n  explorer sweep --help",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"explorer {__version__}")
    _verbosity(parser, top=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    parser.commands = {}
    for name, (add_args, fn) in COMMANDS.items():
        example = EXAMPLES.get(name)
        p = sub.add_parser(
            name,
            help=(fn.__doc__ or "").strip().splitlines()[0],
            description=inspect.cleandoc(fn.__doc__ or ""),
            formatter_class=HelpFormatter,
            epilog=f"example:\n  {example}" if example else None,
        )
        add_args(p)
        _verbosity(p, top=False)
        p.set_defaults(func=fn)
        parser.commands[name] = p
    return parser


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """Parsed arguments; for `sweep --config FILE` the file's options sit under the flags given."""
    parser = build_parser()
    args = parser.parse_args(argv)
    sub = parser.commands[args.command]
    args.option_dests = [a.dest for a in sub._actions if a.dest not in _NOISE]
    if getattr(args, "config", None):
        sub.set_defaults(**sweep_config(args.config, set(args.option_dests)))
        args = parser.parse_args(argv)
        args.option_dests = [a.dest for a in sub._actions if a.dest not in _NOISE]
    return args


def _not_under_torchrun(command: str) -> None:
    """Only extract and sweep share their work over torchrun ranks; refuse the rest there."""
    from explorer import distributed
    from explorer.distributed import RankFailed

    ranks = distributed.from_env()
    if ranks.active:
        raise RankFailed(
            f"`explorer {command}` does not run under torchrun; only extract and sweep share "
            "their work over ranks",
            echo=ranks.main,
        )


def main(argv: list[str] | None = None) -> int:
    host_memory.tune()  # before any thread starts: CPU passes reuse freed heap pages
    try:
        args = parse(argv)
    except ExplorerError as e:
        _log.setup()
        logger.error(f"error: {e}")
        return 2
    _log.setup(args.verbose, args.quiet)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # the command, for records
    try:
        if args.command not in ("extract", "sweep"):
            _not_under_torchrun(args.command)
        return int(args.func(args) or 0)
    except ExplorerError as e:
        if getattr(e, "echo", True):  # a torchrun rank's failure is printed by rank 0 only
            logger.error(f"error: {e}")
        return 2
    except KeyboardInterrupt:
        logger.error("interrupted; finished work is saved and the next run resumes from it")
        return 130
    except (OSError, ValueError, RuntimeError) as e:
        if os.environ.get("EXPLORER_DEBUG"):
            raise
        logger.error(f"error: {type(e).__name__}: {e} (set EXPLORER_DEBUG=1 for a traceback)")
        return 1


if __name__ == "__main__":
    sys.exit(main())
