"""Stable Diffusion 3 / 3.5: `SD3Transformer2DModel` (joint attention) behind its VAE and three
text encoders (`StableDiffusion3Pipeline` layout), trained with flow matching.

One probe point per transformer block; each joint block returns (text, image) tokens and only
the image tokens `(B, N, D)` are read, laid on the patch grid `(B, D, h, w)`. Conditioning: a
fixed prompt (empty by default, `--prompt TEXT`) encoded as the pipeline does (`families.text`).
"""

from __future__ import annotations

from pathlib import Path

from explorer.errors import ExplorerError
from explorer.models.families import text
from explorer.models.families.base import Adapter
from explorer.models.families.latent import check_prompt, load_encoder
from explorer.models.families.token_net import SD3Net

FAMILY = "sd3"


def on_latents(family: str, folder: Path, wrapped, trust_pickle: bool, what: str):
    """(autoencoder, its fingerprint parts, image side) of a transformer on `folder`'s VAE, after
    checking the folder has one whose latent channels are the transformer's input channels."""
    if not (folder / "vae" / "config.json").exists():
        raise ExplorerError(
            f"{folder} holds a {what} transformer but no vae/; pass the whole pipeline folder, "
            "never the transformer alone (it must not be fed pixels)"
        )
    enc, parts = load_encoder(folder, trust_pickle)
    latent = int(getattr(enc.vae.config, "latent_channels", 0) or 0)
    if latent != wrapped.config.in_channels:
        raise ExplorerError(
            f"{folder}: the vae/ gives {latent}-channel latents but the {what} transformer takes "
            f"{wrapped.config.in_channels}; the folders do not belong together"
        )
    return enc, parts, wrapped.config.sample_size * enc.factor


def text_transformer(
    family: str,
    wrapped,
    enc,
    side: int,
    prompt: str,
    tensors: dict,
    loaded_from: str,
    note: str = "",
) -> Adapter:
    """The adapter of a text-conditioned transformer `wrapped` on the autoencoder `enc`, fed
    the encoded prompt `tensors` (their text tokens counted in its FLOPs); `note` joins the
    condition's description (e.g. FLUX's guidance)."""
    wrapped.config.text_tokens = tensors["encoder_hidden_states"].shape[1]  # FLOPs count them
    return Adapter(
        family,
        wrapped,
        side,
        int(enc.vae.config.in_channels),
        encoder=enc,
        condition=text.TextCondition(prompt, tensors, note),
        transformer=True,
        loaded_from=loaded_from,
    )


def adapter(folder: Path, net, trust_pickle: bool, prompt: str | None) -> tuple[Adapter, list[str]]:
    prompt = check_prompt(prompt)
    wrapped = SD3Net.wrap(net)
    enc, vparts, side = on_latents(FAMILY, folder, wrapped, trust_pickle, "SD3")
    joint = int(net.config.joint_attention_dim)
    tensors, tparts = text.sd3(folder, prompt, joint, trust_pickle)
    origin = "SD3 pipeline folder (transformer/ + vae/ + CLIP-L, CLIP-G, T5 text encoders)"
    return text_transformer(FAMILY, wrapped, enc, side, prompt, tensors, origin), vparts + tparts
