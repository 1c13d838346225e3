"""Diffusion transformers: diffusers' `DiTTransformer2DModel` behind its VAE (`DiTPipeline` layout).

Class-conditional through the null class by default (index `num_embeds_ada_norm`, the
classifier-free-guidance embedding). One probe point per transformer block; its tokens
`(B, N, D)` are read as the patch grid `(B, D, h, w)` so every pooling applies.
"""

from __future__ import annotations

from pathlib import Path

from explorer.errors import ExplorerError
from explorer.models.families import class_cond
from explorer.models.families.base import Adapter
from explorer.models.families.latent import load_encoder


def adapter(folder: Path, net, trust_pickle: bool, class_label) -> tuple[Adapter, list[str]]:
    cfg = net.config
    if getattr(cfg, "norm_type", "ada_norm_zero") != "ada_norm_zero" or not cfg.num_embeds_ada_norm:
        raise ExplorerError(
            "only class-conditional DiT transformers (norm_type ada_norm_zero) are supported"
        )
    if not (folder / "vae" / "config.json").exists():
        raise ExplorerError(
            f"{folder} holds a DiT transformer but no vae/; pass the whole DiT pipeline folder "
            "(transformer, vae, scheduler), never the transformer alone"
        )
    enc, parts = load_encoder(folder, trust_pickle)
    n = int(cfg.num_embeds_ada_norm)
    cond = class_cond.condition(
        class_label, n, n, "DiT"
    )  # the table's extra row n is the null class
    a = Adapter(
        "dit",
        net,
        int(cfg.sample_size) * enc.factor,
        int(enc.vae.config.in_channels),
        encoder=enc,
        condition=cond,
        transformer=True,
        loaded_from="DiT pipeline folder (transformer/ + vae/)",
    )
    return a, parts
