"""`explorer align`: how alike two feature sources are, block by block, on the same images.

The model and the reference are each a diffusion model (a folder, a built-in, `random:<model>`)
or a reference encoder (`encoder:FOLDER`, or a transformers/timm vision encoder folder). The
table (`--out`, CSV) has one row per (t, layer, ref_layer, metric) with a bootstrap interval
over the images; `explorer.analysis.align_maps` describes the maps.
"""

from __future__ import annotations

import argparse

from explorer import defaults as D
from explorer.cli.options import Command, data_args, logger, model_args, open_workspace, pool_arg
from explorer.errors import ExplorerError


def align_args(p: argparse.ArgumentParser) -> None:
    from explorer.analysis.alignment import DEFAULT_BOOT, DEFAULT_K, METRICS  # numpy only

    model_args(p)
    p.add_argument(
        "--reference",
        required=True,
        help="the source to compare with: a diffusion model (folder, built-in, random:<model>) "
        "or a reference encoder folder (encoder:FOLDER; transformers DINOv2/CLIP/SigLIP/ViT or "
        "timm)",
    )
    data_args(p)
    ts = D.timesteps_text(D.CKA_TIMESTEPS)
    p.add_argument(
        "--timesteps",
        default=ts,
        help=f"the model's timesteps: one for block x block, several for block x t (default: "
        f"{ts}); an encoder model has none: a diffusion reference is read at these",
    )
    p.add_argument(
        "--layers", default="all", help="the model's blocks: all, indices, ranges, names"
    )
    p.add_argument(
        "--ref-layers", default="all", help="the reference's blocks: all, indices, ranges, names"
    )
    p.add_argument(
        "--ref-timestep",
        type=int,
        default=None,
        help="a diffusion reference read at this one t in every cell (default: the model's own "
        "t; an encoder has none)",
    )
    pool_arg(p)
    p.add_argument(
        "--metric",
        default="cka,cknna",
        help=f"comma-separated metrics: {', '.join(METRICS)} (default: cka,cknna)",
    )
    p.add_argument(
        "--k",
        type=int,
        default=DEFAULT_K,
        help=f"neighbours of the k-NN metrics (default: {DEFAULT_K})",
    )
    p.add_argument(
        "--boot",
        type=int,
        default=DEFAULT_BOOT,
        help=f"bootstrap resamples of the images for the interval; 0: none (default: {DEFAULT_BOOT})",
    )
    p.add_argument("--out", default="align.csv", help="the tidy table, CSV (default: align.csv)")


def cmd_align(a: argparse.Namespace) -> int:
    """Alignment between two feature sources: block x block at one t, or block x t."""
    from explorer.analysis.alignment import parse_metrics
    from explorer.atomic import atomic_write

    metrics = parse_metrics(a.metric)  # bad input fails before any model loads
    if a.k < 1:
        raise ExplorerError(f"--k must be at least 1, got {a.k}")
    if a.boot < 0:
        raise ExplorerError(f"--boot must be 0 or more, got {a.boot}")
    ws = open_workspace(a)  # torch loads here, not at import
    ref = ws.twin(a.reference)
    logger.info(f"align: {ws.model.name} against {ref.model.name} on {ws.dataset.name}")
    df = ws.align(
        ref,
        timesteps=a.timesteps,
        layers=a.layers,
        ref_layers=a.ref_layers,
        ref_timestep=a.ref_timestep,
        pool=a.pool,
        metrics=metrics,
        k=a.k,
        n_boot=a.boot,
    )
    atomic_write(a.out, df.to_csv(index=False))
    for metric, part in df.groupby("metric", sort=False):
        t_text = "" if part["t"].isna().all() else f" (t={','.join(map(str, part['t'].unique()))})"
        table = part.pivot_table(
            index=["t", "layer_index"] if part["t"].notna().all() else "layer_index",
            columns="ref_layer_index",
            values="value",
        )
        print(f"{metric}{t_text}, rows: model blocks, columns: reference blocks")
        print(table.round(3).to_string())
    print(f"{len(df)} rows ({df['images'].iloc[0] if len(df) else 0} images) -> {a.out}")
    return 0


ALIGN = Command(
    "align",
    align_args,
    cmd_align,
    "explorer align --dataset digits --reference random:ddpm-digits --timesteps 10 "
    "--metric cka,cknna --k 10 --limit 300 --out align.csv",
)
