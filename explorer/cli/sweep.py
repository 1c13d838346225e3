"""`explorer sweep`: probe a grid of settings into a results table; its options may come from a
TOML file (`--config`), and every resolved option is recorded beside the table (provenance)."""

from __future__ import annotations

import argparse
import os

from explorer import defaults as D
from explorer.cli.options import Command, grid_args, logger, open_workspace, split_limit_args
from explorer.errors import ExplorerError


def sweep_args(p: argparse.ArgumentParser) -> None:
    from explorer.probes.registry import describe_heads

    grid_args(
        p,
        D.SWEEP_TIMESTEPS,
        "default: {ts}",
        ("--pools", "comma-separated poolings (default: {pool})"),
    )
    p.add_argument(
        "--heads",
        default="linear,knn",
        help="comma-separated heads, each name[:param=value...] "
        "(knn10 = knn:k=10); " + describe_heads().replace("%", "%%"),
    )
    split_limit_args(p)
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


def cmd_sweep(a: argparse.Namespace) -> int:
    """Probe a grid of timesteps x layers x poolings; writes a tidy results table.

    Under torchrun (`torchrun --nproc_per_node=K -m explorer sweep ...`) every rank first extracts
    the whole grid's features together (as `explorer extract` does); then rank 0 alone trains the
    probes and writes the table, while the other ranks exit cleanly.
    """
    # torch loads here, not at import: a cached `explorer extract` answers without it
    from explorer.features import torchrun
    from explorer.models.device import describe
    from explorer.probes.registry import parse_heads
    from explorer.sweep import describe_best, extract_plan, plan_for, run_sweep

    parse_heads(a.heads)  # a bad head is a one-line error before the model loads
    a.device = torchrun.init(a.device)  # torchrun: join the ranks (a plain run: unchanged)
    ranks = torchrun.current()
    ws = open_workspace(
        a,
        train_limit=a.train_limit or a.limit,
        test_limit=a.test_limit or a.limit,
        progress=False,
    )
    plan = plan_for(
        ws,
        timesteps=a.timesteps,
        layers=a.layers,
        pools=a.pools,
        heads=a.heads,
        seeds=a.seeds,
        baselines=not a.no_baselines,
        fuse=a.fuse or (),
        seed_average=a.seed_average,
    )
    model, ds = ws.model, ws.dataset
    logger.info(
        f"sweep: {model.name} on {describe(next(model.denoiser.parameters()).device)}; {ds.name} "
        f"({len(ws.train.indices)} train / {len(ws.test.indices)} test); {len(plan.timesteps)} "
        f"timesteps x {len(plan.layers)} layers x {len(plan.pools)} poolings x {len(plan.heads)} "
        f"heads{' + baselines' if plan.pixels else ''}"
    )
    if ranks.active:  # features on every rank together; then the probes on rank 0 alone
        extract_plan(ws, plan, progress=ranks.main)
        torchrun.finish()
        if not ranks.main:
            return 0
    df = run_sweep(
        ws, plan, out=a.out, progress=True, report=lambda event: logger.info(event.text())
    )
    prov = write_provenance(a)
    print(describe_best(df))
    print(f"results: {len(df)} rows in {a.out} (options in {prov})")
    return 0


SWEEP = Command(
    "sweep",
    sweep_args,
    cmd_sweep,
    "explorer sweep --dataset digits --timesteps 10,90 --layers 6-9 --limit 500 --out sweep.csv\n"
    "  explorer sweep --config sweep.toml --out again.csv   (flags override the file)",
)


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
