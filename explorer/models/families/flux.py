"""FLUX.1: `FluxTransformer2DModel` behind its VAE, CLIP and T5 text encoders (`FluxPipeline`
layout), trained with flow matching; the transformer takes time as sigma in [0, 1].

Blocks are numbered in forward order: the dual-stream `transformer_blocks` (19 on FLUX.1) then
the single-stream `single_transformer_blocks` (38), so full-size block 20 is single-stream block
0. Every block returns (text, image) tokens; only the image tokens are read, on the grid of
FLUX's packed 2x2 latent patches. A guidance-distilled model (`guidance_embeds`, FLUX.1-dev)
gets the fixed guidance `GUIDANCE` (the pipeline's default), named in the key and the UI.
"""

from __future__ import annotations

from pathlib import Path

from explorer.errors import ExplorerError
from explorer.models.families import text
from explorer.models.families.base import Adapter
from explorer.models.families.latent import check_prompt
from explorer.models.families.sd3 import on_latents, text_transformer
from explorer.models.families.token_net import FluxNet
from explorer.models.weights import read_json

FAMILY = "flux"
GUIDANCE = 3.5  # FluxPipeline's default guidance_scale


def image_side(folder: Path) -> int:
    """The latent side FLUX is read at: the VAE's `sample_size` (FLUX.1: 1024 px) over its
    downsampling; it must split into whole 2x2 patches."""
    cfg = read_json(folder / "vae" / "config.json", "autoencoder config")
    size, blocks = cfg.get("sample_size"), len(cfg.get("block_out_channels") or [0])
    factor = 2 ** max(blocks - 1, 0)
    if (
        not isinstance(size, int)
        or isinstance(size, bool)
        or size < 2 * factor
        or size % (2 * factor)
    ):
        raise ExplorerError(
            f"{folder / 'vae' / 'config.json'}: sample_size {size!r} is not a multiple of "
            f"{2 * factor} pixels; FLUX reads images whose latents split into 2x2 patches"
        )
    return size // factor


def adapter(folder: Path, net, trust_pickle: bool, prompt: str | None) -> tuple[Adapter, list[str]]:
    prompt = check_prompt(prompt)
    if not (folder / "vae" / "config.json").exists():
        raise ExplorerError(
            f"{folder} holds a FLUX transformer but no vae/; pass the whole FLUX pipeline folder"
        )
    guided = bool(net.config.get("guidance_embeds"))
    wrapped = FluxNet.wrap(
        net, sample_size=image_side(folder), guidance=GUIDANCE if guided else None
    )
    tensors, tparts = text.flux(folder, prompt, trust_pickle)  # before the VAE: refuse early
    enc, vparts, side = on_latents(FAMILY, folder, wrapped, trust_pickle, "FLUX")
    origin = "FLUX pipeline folder (transformer/ + vae/ + CLIP and T5 text encoders)"
    note = f"guidance={GUIDANCE:g}" if guided else ""
    a = text_transformer(FAMILY, wrapped, enc, side, prompt, tensors, origin, note)
    return a, vparts + tparts
