"""PixArt-α / PixArt-Σ: `PixArtTransformer2DModel` behind its VAE and T5 text encoder
(`PixArtAlphaPipeline` / `PixArtSigmaPipeline` layouts), variance-preserving noise.

One probe point per transformer block (image tokens only, no text stream), laid on the patch
grid. Conditioning: a fixed prompt's T5 tokens and mask (120 tokens for α, 300 for Σ); at 1024
px PixArt-α also reads the image's resolution and aspect ratio (the fed images': square).
"""

from __future__ import annotations

from pathlib import Path

from explorer.models.families import text
from explorer.models.families.base import Adapter
from explorer.models.families.latent import check_prompt
from explorer.models.families.sd3 import on_latents, text_transformer
from explorer.models.families.token_net import PixArtNet
from explorer.models.weights import read_json

FAMILY = "pixart"


def adapter(folder: Path, net, trust_pickle: bool, prompt: str | None) -> tuple[Adapter, list[str]]:
    prompt = check_prompt(prompt)
    index = {}
    if (folder / "model_index.json").is_file():
        index = read_json(folder / "model_index.json", "pipeline index")
    sigma = index.get("_class_name") == "PixArtSigmaPipeline"
    wrapped = PixArtNet.wrap(net)
    enc, vparts, side = on_latents(FAMILY, folder, wrapped, trust_pickle, "PixArt")
    wrapped.config.image_size = side
    tensors, tparts = text.pixart(folder, prompt, 300 if sigma else 120, trust_pickle)
    origin = f"PixArt-{'Σ' if sigma else 'α'} pipeline folder (transformer/ + vae/ + T5)"
    return text_transformer(FAMILY, wrapped, enc, side, prompt, tensors, origin), vparts + tparts
