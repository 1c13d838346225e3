"""`python -m benchmarks`: every figure of issue 11's table, measured in one run on this machine.

    python -m benchmarks                 # print figures 1-8 with target and MET / MISSED
    python -m benchmarks --only 1,4,5    # a subset ("3" includes 3b, "7" includes 7b)
    python -m benchmarks --quick         # a smoke run at small sizes (numbers not meaningful)
    python -m benchmarks --write         # also record them in BENCHMARKS.md

Runs on a fresh clone with the built-in model and data only (Fashion-MNIST where its files
are installed, else scikit-learn's digits); caches go to a temporary folder.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import inspect
import os
import shlex
import sys
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path

from benchmarks.common import ROOT, Context, load_average, machine, not_run

NO_GPU = "no GPU on this machine; run `python -m benchmarks --only 8` on a GPU machine"


def _ours(module: str, name: str) -> Callable[[Context], dict | list[dict]]:
    def run(ctx: Context):
        return getattr(importlib.import_module(f"benchmarks.{module}"), name)(ctx)

    return run


def _theirs(module: str, fig: str, name: str, target: str, needs_gpu: bool = False):
    """A figure another module provides as `benchmarks.<module>.figure()` (or `figures()`),
    imported only when it runs; its absence is a row that says so."""

    def run(ctx: Context):
        if needs_gpu:
            import torch

            if not torch.cuda.is_available():
                return not_run(fig, name, target, NO_GPU)
        try:
            mod = importlib.import_module(f"benchmarks.{module}")
        except ImportError as e:
            return not_run(fig, name, target, f"benchmarks/{module}.py not importable: {e}")
        fn = getattr(mod, "figures", None) or getattr(mod, "figure", None)
        if fn is None:
            return not_run(fig, name, target, f"benchmarks/{module}.py has no figure()/figures()")
        params = inspect.signature(fn).parameters
        kw = {"quick": ctx.quick} if "quick" in params else {}
        if "images" in params and ctx.rss_images:
            kw["images"] = ctx.rss_images
        return fn(**kw)

    return run


# figure id -> runner; each returns one figure dict or a list of them
RUNNERS: dict[str, Callable[[Context], dict | list[dict]]] = {
    "1": _ours("extraction", "fig1_one_pass"),
    "2": _ours("extraction", "fig2_capture_cost"),
    "2b": _ours("flow_families", "fig2b_flow_families"),  # SD3, FLUX, SiT (issue 20)
    "3": _ours("extraction", "fig3_early_exit"),
    "3b": _theirs(
        "stream_rss", "3b", "peak RSS extracting a 50,000-image ImageFolder", "< 2 GB over model"
    ),
    "4": _ours("cached", "fig4_cached_read"),
    "5": _ours("probes", "fig5_probe_grid"),
    "6": _ours("cached", "fig6_umap"),
    "7": _ours("app", "fig7_timestep_switch"),
    "7b": _theirs("big_scatter", "7b", "in-browser render of 70,000 points", "report"),
    "8": _theirs("gpu_check", "8", "GPU throughput (ADM-256, ddpm-cifar10-32)", "point 5", True),
    "8b": _ours("flow_families", "fig8b_gpu_layouts"),  # SiT-XL/2, FLUX.1 (issue 20); CUDA only
}


def select(only: str | None) -> list[str]:
    """Figure ids to run: all, or those named in `only` ("3" also picks "3b")."""
    if not only:
        return list(RUNNERS)
    asked = [a.strip().lower() for a in only.split(",") if a.strip()]
    bad = [a for a in asked if not any(k == a or k.rstrip("ab") == a for k in RUNNERS)]
    if bad:
        raise SystemExit(f"unknown figure {bad[0]!r}; choose from {', '.join(RUNNERS)}")
    return [k for k in RUNNERS if k in asked or k.rstrip("ab") in asked]


def run_figures(ids: list[str], ctx: Context, echo: Callable[[str], None] = print) -> list[dict]:
    """Run each figure in turn; one that fails becomes a row with its error, not a crash."""
    from benchmarks.table import print_table

    out: list[dict] = []
    for fid in ids:
        echo(f"figure {fid} ... (load average {load_average():.1f})")
        try:
            got = RUNNERS[fid](ctx)
        except Exception as e:  # a broken figure is reported, the others still run
            traceback.print_exc()
            got = not_run(fid, f"figure {fid}", "", f"failed: {type(e).__name__}: {e}")
        rows = got if isinstance(got, list) else [got]
        for r in rows:  # a row without a target reports a figure
            r["target"] = r.get("target") or "report"
        echo(print_table(rows))
        out += rows
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n")[0])
    ap.add_argument("--only", help="comma-separated figures, e.g. 1,4,5")
    ap.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    ap.add_argument("--write", action="store_true", help="record the result in BENCHMARKS.md")
    ap.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"), help=argparse.SUPPRESS)
    ap.add_argument("--model", default=None, help="model spec (default: the dataset's built-in)")
    ap.add_argument("--dataset", default=None, help="dataset (default: fashion-mnist or digits)")
    ap.add_argument(
        "--rss-images",
        type=int,
        default=None,
        help="figure 3b: images in the synthetic ImageFolder (default 50,000)",
    )
    a = ap.parse_args(argv)
    ids = select(a.only)
    from explorer.features import host_memory

    host_memory.tune()  # as the explorer's own commands do, for every pass timed below

    from explorer.data import default_dataset
    from explorer.paths import default_model

    dataset = a.dataset or default_dataset()
    model = a.model or default_model(dataset)
    load_start = load_average()
    started = dt.datetime.now(dt.timezone.utc)
    print(f"{machine()}\nmodel {model}, dataset {dataset}{', quick' if a.quick else ''}")
    with tempfile.TemporaryDirectory(prefix="benchmarks-") as tmp:
        os.environ["EXPLORER_CACHE"] = str(Path(tmp) / "cache")  # nothing reaches a user's cache
        # servers started by figure 7 run this checkout's code, whatever is installed
        os.environ["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p
        )
        ctx = Context(
            model=model, dataset=dataset, quick=a.quick, workdir=Path(tmp), rss_images=a.rss_images
        )
        figs = run_figures(ids, ctx)
    load_end = load_average()

    from benchmarks.table import markdown, print_table, write_section

    print("\n" + print_table(figs))
    if a.write:
        command = "python -m benchmarks " + shlex.join(argv if argv is not None else sys.argv[1:])
        section = markdown(
            figs,
            date=f"{started:%Y-%m-%d %H:%M} UTC",
            machine=f"{machine()}; model `{model}`, dataset `{dataset}`",
            command=command.strip(),
            load=f"{load_start:.1f} at the start, {load_end:.1f} at the end",
        )
        write_section(Path(a.out), section)
        print(f"\nwritten to {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
