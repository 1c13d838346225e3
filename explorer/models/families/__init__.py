"""Model families: one adapter per family, chosen from what a model folder holds.

| family            | folder                                                    | module       |
|-------------------|-----------------------------------------------------------|--------------|
| pixel-unet        | `UNet2DModel` (root or `unet/`), no autoencoder           | `pixel_unet` |
| class-cond-unet   | the same with `num_class_embeds`                          | `class_cond` |
| latent-unet       | `unet/` `UNet2DModel` + `vqvae/` or `vae/`                | `latent`     |
| stable-diffusion  | `unet/` `UNet2DConditionModel` + vae, text encoder, tokenizer | `latent` |
| dit               | `transformer/` `DiTTransformer2DModel` + `vae/`           | `dit`        |

Adding a family: one module that builds an `Adapter`, a branch in `detect` and `build`, its tests.
"""

from __future__ import annotations

import json
from pathlib import Path

from explorer.errors import ExplorerError
from explorer.models.families import class_cond, dit, latent, pixel_unet
from explorer.models.families.base import PIXEL_UNET, Adapter, Condition

__all__ = ["PIXEL_UNET", "Adapter", "Condition", "build", "detect", "net_folder"]

NET_CLASSES = ("UNet2DModel", "UNet2DConditionModel", "DiTTransformer2DModel")


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ExplorerError(f"cannot read {path}: {e}; is this a diffusers model folder?") from e
    if not isinstance(data, dict):
        raise ExplorerError(f"{path} is not a model config (not a JSON object)")
    return data


def net_folder(folder: Path) -> Path:
    """The folder holding the denoiser's config: `transformer/`, `unet/`, or the folder itself."""
    for sub in ("transformer", "unet"):
        if (folder / sub / "config.json").exists():
            return folder / sub
    if (folder / "config.json").exists():
        return folder
    raise ExplorerError(
        f"{folder} is not a diffusers model folder (no config.json, unet/config.json or "
        "transformer/config.json); save one with save_pretrained or pass a built-in name"
    )


def _index(folder: Path) -> dict:
    try:
        index = json.loads((folder / "model_index.json").read_text())
    except (OSError, ValueError):
        return {}
    return index if isinstance(index, dict) else {}


def detect(folder: Path) -> tuple[str, dict]:
    """(family, the denoiser's config) of a model folder; a one-line ExplorerError for what is refused."""
    sub = net_folder(folder)
    config = _read(sub / "config.json")
    cls = config.get("_class_name", "UNet2DModel")
    index = _index(folder)
    latent = any((folder / d).is_dir() for d in ("vae", "vqvae")) or any(
        k in index for k in ("vae", "vqvae")
    )
    if cls == "UNet2DConditionModel":
        if sub == folder:
            raise ExplorerError(
                f"{sub / 'config.json'} is a UNet2DConditionModel alone; pass the whole Stable "
                "Diffusion pipeline folder (unet, vae, text_encoder, tokenizer, scheduler)"
            )
        return "stable-diffusion", config
    if cls == "DiTTransformer2DModel":
        if sub == folder:
            raise ExplorerError(
                f"{sub / 'config.json'} is a DiT transformer alone; pass the whole DiT "
                "pipeline folder (transformer, vae, scheduler)"
            )
        return "dit", config
    if cls != "UNet2DModel":
        raise ExplorerError(
            f"{sub / 'config.json'} describes a {cls}; the explorer reads "
            f"{', '.join(NET_CLASSES)} (see the README's table of families)"
        )
    if latent:
        return "latent-unet", config
    if config.get("num_class_embeds") or config.get("class_embed_type"):
        return "class-cond-unet", config
    return PIXEL_UNET, config


def build(
    family: str,
    folder: Path,
    net,
    *,
    trust_pickle: bool = False,
    prompt: str | None = None,
    class_label=None,
    condition_required: bool = True,
) -> tuple[Adapter, list[str]]:
    """The adapter of a loaded denoiser `net` of `family`, and fingerprint parts of its other
    components (autoencoder, text encoder): empty for pixel models, so their fingerprints stay.

    `condition_required=False` (listing layers): a class-conditional U-Net given no class label
    gets a placeholder class instead of the refusal, as its layers do not depend on the class."""
    if prompt is not None and family != "stable-diffusion":
        raise ExplorerError(
            f"--prompt applies to Stable Diffusion folders; this model is a {family}"
        )
    if family == PIXEL_UNET:
        if class_label is not None:
            raise ExplorerError("--class-label was given but this U-Net is not class-conditional")
        return pixel_unet.adapter(net), []
    if family == "class-cond-unet":
        class_cond.unet_classes(dict(net.config))  # refuses float-input class embeddings
        return class_cond.adapter(net, class_label, required=condition_required), []
    if family == "latent-unet":
        return latent.ldm_adapter(folder, net, trust_pickle, class_label, condition_required)
    if family == "stable-diffusion":
        if class_label is not None:
            raise ExplorerError(
                "--class-label applies to class-conditional models; Stable Diffusion takes --prompt"
            )
        return latent.sd_adapter(folder, net, trust_pickle, prompt)
    if family == "dit":
        return dit.adapter(folder, net, trust_pickle, class_label)
    raise ExplorerError(f"unknown model family '{family}'")
