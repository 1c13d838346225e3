"""`explorer embed` and `explorer cka`: look at the features themselves (a 2-D map of one
setting; how alike the settings are), not through a probe."""

from __future__ import annotations

import argparse

from explorer import defaults as D
from explorer.cli.options import (
    Command,
    data_args,
    logger,
    model_args,
    open_workspace,
    pool_arg,
    setting_args,
)
from explorer.errors import ExplorerError


def embed_args(p: argparse.ArgumentParser) -> None:
    model_args(p)
    data_args(p)
    setting_args(p, layer_help="block index or name, see explorer layers")
    p.add_argument("--method", choices=["umap", "pca"], default="umap", help="2-D projection")
    p.add_argument(
        "--out", default="embedding.csv", help="CSV with x, y, label, class per test image"
    )


def cmd_embed(a: argparse.Namespace) -> int:
    """2-D UMAP (cached) or PCA of one setting's test features, as a CSV."""
    import pandas as pd

    from explorer.settings import parse_seeds

    ws = open_workspace(a)  # torch loads here, not at import
    s = ws.setting(a.timestep, a.layer, a.pool, parse_seeds(a.seeds)[0])
    ws.ensure([s], splits=["test"])
    if a.method == "umap":
        logger.info("running UMAP (PCA to 50 dims first; cached for next time)...")
    xy = ws.embedding(s, a.method)
    y = ws.labels("test")
    pd.DataFrame(
        {"x": xy[:, 0], "y": xy[:, 1], "label": y, "class": [ws.dataset.class_names[i] for i in y]}
    ).to_csv(a.out, index=False)
    print(f"{a.method} of {len(y)} test images at t={s.t}, {s.layer}, pool {s.pool} -> {a.out}")
    return 0


def cka_args(p: argparse.ArgumentParser) -> None:
    model_args(p)
    data_args(p)
    ts = D.timesteps_text(D.CKA_TIMESTEPS)
    p.add_argument(
        "--timesteps",
        default=ts,
        help=f"one timestep: block x block; several: t x t (default: {ts})",
    )
    p.add_argument("--layers", default="all", help="several layers: block x block; one: t x t")
    pool_arg(p)
    p.add_argument(
        "--debiased", action="store_true", help="debiased HSIC (unbiased CKA for few images)"
    )
    p.add_argument("--out", default=None, help="also write the matrix as CSV")


def cmd_cka(a: argparse.Namespace) -> int:
    """Linear CKA between settings: block x block at one t, or t x t at one block."""
    import pandas as pd

    from explorer.models.layers import select_layers
    from explorer.settings import check_timesteps, parse_timesteps

    ws = open_workspace(a)  # torch loads here, not at import
    ts = check_timesteps(parse_timesteps(a.timesteps), ws.num_timesteps)
    layers = select_layers(ws.catalogue, a.layers)
    if len(ts) > 1 and len(layers) > 1:
        raise ExplorerError(
            "give one timestep (block x block) or one layer (t x t), not several of both"
        )
    if len(ts) > 1:
        settings = [ws.setting(t, layers[0].name, a.pool) for t in ts]
        names = [f"t={t}" for t in ts]
    else:
        settings = [ws.setting(ts[0], lay.name, a.pool) for lay in layers]
        names = [str(lay.index) for lay in layers]
    m = pd.DataFrame(ws.cka(settings, debiased=a.debiased), index=names, columns=names)
    print(m.round(3).to_string())
    if a.out:
        m.to_csv(a.out)
    return 0


EMBED = Command(
    "embed",
    embed_args,
    cmd_embed,
    "explorer embed --dataset digits --timestep 90 --layer mid --method pca --out emb.csv",
)
CKA = Command(
    "cka",
    cka_args,
    cmd_cka,
    "explorer cka --dataset digits --timesteps 90 --layers 4-9 --limit 500",
)
