"""`explorer export` and `explorer report`: results to take elsewhere (one setting's features as a
file; a sweep as a self-contained HTML page)."""

from __future__ import annotations

import argparse
import os

from explorer.cli.options import Command, data_args, model_args, open_workspace, setting_args
from explorer.errors import ExplorerError


def export_args(p: argparse.ArgumentParser) -> None:
    from explorer.export import FORMATS

    model_args(p)
    data_args(p)
    setting_args(p, layer_help="block index or name")
    p.add_argument(
        "--format",
        choices=FORMATS,
        default="npz",
        help="npz, safetensors, parquet, or projector (a TensorBoard Embedding Projector folder)",
    )
    p.add_argument("--out", required=True, help="file to write (projector: a folder)")


def _splits(dataset, spec: str) -> list[str]:
    splits = [s.strip() for s in spec.split(",") if s.strip()]
    for s in splits:
        if s not in dataset.splits:
            raise ExplorerError(
                f"unknown split '{s}'; this dataset has {', '.join(dataset.splits)}"
            )
    return splits


def cmd_export(a: argparse.Namespace) -> int:
    """Write one setting's features, labels and metadata as npz, safetensors, Parquet or a Projector folder."""
    from explorer import export
    from explorer.settings import parse_seeds

    ws = open_workspace(a)  # torch loads here, not at import
    s = ws.setting(a.timestep, a.layer, a.pool, parse_seeds(a.seeds)[0])
    splits = [sp for sp in _splits(ws.dataset, a.splits) if sp in ("train", "test")]
    if not splits:
        raise ExplorerError("--splits must name train and/or test")
    data = export.from_workspace(ws, s, splits, images=a.format == "projector")
    paths = export.write(data, a.format, a.out)
    shapes = ", ".join(f"{sp} {x.shape[0]}x{x.shape[1]}" for sp, x in data.features.items())
    print(
        f"{a.format}: t={s.t}, {s.layer}, pool {s.pool} ({shapes}) -> {', '.join(map(str, paths))}"
    )
    return 0


def report_args(p: argparse.ArgumentParser) -> None:
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
    p.add_argument(
        "--search",
        default=None,
        metavar="ROUNDS.csv",
        help="also show a setting search's rounds (the --out of explorer search)",
    )
    model_args(p)
    data_args(p)


def cmd_report(a: argparse.Namespace) -> int:
    """Write a self-contained HTML report of a sweep (figures inline, opens offline)."""
    import shlex

    from explorer.report import write_html_report
    from explorer.results import load_table

    if not os.path.exists(a.sweep):
        raise ExplorerError(f"{a.sweep} not found; give a results table written by explorer sweep")
    table = load_table(a.sweep)
    if a.search and not os.path.exists(a.search):
        raise ExplorerError(f"{a.search} not found; give the rounds table of explorer search --out")
    ws = open_workspace(a) if a.workspace else None  # torch loads here, and only with --workspace
    out = write_html_report(
        table,
        a.out,
        head=a.head,
        pool=a.pool,
        workspace=ws,
        search=a.search,
        source=a.sweep,
        command=shlex.join(["explorer", *a.argv]),
    )
    print(f"report of {a.sweep} -> {out}")
    return 0


EXPORT = Command(
    "export",
    export_args,
    cmd_export,
    "explorer export --dataset digits --timestep 10 --layer mid --format npz --out mid.npz",
)
REPORT = Command(
    "report", report_args, cmd_report, "explorer report --sweep results.csv --out report.html"
)
