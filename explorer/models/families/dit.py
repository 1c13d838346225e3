"""Diffusion transformers: diffusers' `DiTTransformer2DModel` behind its VAE (`DiTPipeline` layout).

Class-conditional through the null class by default (index `num_embeds_ada_norm`, the
classifier-free-guidance embedding). One probe point per transformer block; its tokens
`(B, N, D)` are read as the patch grid `(B, D, h, w)` so every pooling applies.

Driven by a flow-matching scheduler (a converted SiT folder, `explorer convert sit`: SiT's blocks
are DiT's adaLN-Zero blocks), the family is named "sit" in keys and descriptions.
"""

from __future__ import annotations

from pathlib import Path

from explorer.errors import ExplorerError
from explorer.models.convert.sit import patch_converted_sit
from explorer.models.families import class_cond
from explorer.models.families.base import Adapter
from explorer.models.families.latent import load_encoder


def adapter(
    folder: Path, net, trust_pickle: bool, class_label, flow: bool = False
) -> tuple[Adapter, list[str]]:
    """The adapter of a DiT pipeline folder; `flow`: its scheduler is flow matching (SiT)."""
    cfg = net.config
    name = "SiT" if flow else "DiT"
    if getattr(cfg, "norm_type", "ada_norm_zero") != "ada_norm_zero" or not cfg.num_embeds_ada_norm:
        raise ExplorerError(
            f"only class-conditional {name} transformers (norm_type ada_norm_zero) are supported"
        )
    if not (folder / "vae" / "config.json").exists():
        raise ExplorerError(
            f"{folder} holds a {name} transformer but no vae/; pass the whole {name} pipeline folder "
            "(transformer, vae, scheduler), never the transformer alone"
        )
    enc, parts = load_encoder(folder, trust_pickle)
    parts = parts + patch_converted_sit(folder, net)  # SiT's timestep frequencies (sit.json)
    n = int(cfg.num_embeds_ada_norm)
    cond = class_cond.condition(
        class_label, n, n, name
    )  # the table's extra row n is the null class
    a = Adapter(
        "sit" if flow else "dit",
        net,
        int(cfg.sample_size) * enc.factor,
        int(enc.vae.config.in_channels),
        encoder=enc,
        condition=cond,
        transformer=True,
        loaded_from=f"{name} pipeline folder (transformer/ + vae/"
        + (", flow-matching scheduler)" if flow else ")"),
    )
    return a, parts
