"""Model families: one adapter per family, chosen from what a model folder holds.

| family            | folder                                                    | module       |
|-------------------|-----------------------------------------------------------|--------------|
| pixel-unet        | `UNet2DModel` (root or `unet/`), no autoencoder           | `pixel_unet` |
| class-cond-unet   | the same with `num_class_embeds`                          | `class_cond` |
| latent-unet       | `unet/` `UNet2DModel` + `vqvae/` or `vae/`                | `latent`     |
| stable-diffusion  | `unet/` `UNet2DConditionModel` + vae, text encoder, tokenizer | `latent` |
| dit (sit)         | `transformer/` `DiTTransformer2DModel` + `vae/` (flow: SiT) | `dit`      |
| sd3               | `transformer/` `SD3Transformer2DModel` + vae, 3 text encoders | `sd3`    |
| flux              | `transformer/` `FluxTransformer2DModel` + vae, CLIP + T5  | `flux`       |
| pixart            | `transformer/` `PixArtTransformer2DModel` + vae, T5       | `pixart`     |
| encoder           | a transformers / timm vision encoder (no noise, no t)     | `encoder`    |

A reference encoder is no denoiser: `models.loader.load_model` hands its folder (or
`encoder:FOLDER`) to `encoder.load` before `detect`, which reads diffusers folders only.

Adding a family: one module that builds an `Adapter`, a branch in `detect` and `build`, its tests.
"""

from __future__ import annotations

import inspect
from pathlib import Path

from explorer.errors import ExplorerError
from explorer.models.families import class_cond, dit, flux, latent, pixart, pixel_unet, sd3
from explorer.models.families.base import PIXEL_UNET, Adapter, Condition
from explorer.models.weights import check_regular, read_json

__all__ = ["PIXEL_UNET", "Adapter", "Condition", "build", "detect", "net_folder"]

# the text-conditioned transformers, by class: their family and their pipeline, in words
TEXT_TRANSFORMERS = {
    "SD3Transformer2DModel": ("sd3", "SD3 pipeline folder (transformer, vae, text encoders)"),
    "FluxTransformer2DModel": ("flux", "FLUX pipeline folder (transformer, vae, text encoders)"),
    "PixArtTransformer2DModel": ("pixart", "PixArt pipeline folder (transformer, vae, T5)"),
}
NET_CLASSES = ("UNet2DModel", "UNet2DConditionModel", "DiTTransformer2DModel", *TEXT_TRANSFORMERS)
PROMPTED = ("stable-diffusion", "sd3", "flux", "pixart")  # families that take --prompt
# The input side (pixels, or latents) a config may declare: every real model is well inside
# (DDPM 32-256, ADM 64-512, SD latents 64/96/128, DiT 32/64, the built-ins 16 and 28); far
# beyond, the first pass would only fail to allocate.
MAX_SAMPLE_SIZE = 4096


def _read(path: Path) -> dict:
    return read_json(path, "model config")


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
    path = folder / "model_index.json"
    check_regular(path)  # a FIFO would block the read forever
    try:
        return read_json(path, "pipeline index")
    except ExplorerError:
        return {}  # unreadable or missing: the folder's layout is detected without it


def check_sample_size(config: dict, cls: str, where: Path) -> None:
    """Refuse a `sample_size` no model of `cls` can take, before anything is built or run: not a
    whole number, out of 1..MAX_SAMPLE_SIZE, or not divisible by what the net halves it by (a
    U-Net's down blocks, a DiT's patches). Keys missing from `config` take the class defaults."""
    import diffusers  # the denoiser's own defaults; diffusers is loaded for the model anyway

    params = inspect.signature(getattr(diffusers, cls).__init__).parameters
    full = {k: v.default for k, v in params.items() if v.default is not inspect.Parameter.empty}
    full |= config
    size = full.get("sample_size")
    if size is None:
        raise ExplorerError(
            f"{where} has no sample_size (the side of the model's input); add it to the config, "
            'e.g. "sample_size": 64'
        )
    sides = list(size) if isinstance(size, list | tuple) and len(size) == 2 else [size]
    if not all(isinstance(s, int) and not isinstance(s, bool) for s in sides):
        raise ExplorerError(f"{where}: sample_size must be a whole number (or two), not {size!r}")
    for s in sides:
        if not 1 <= s <= MAX_SAMPLE_SIZE:
            raise ExplorerError(
                f"{where}: sample_size {s} is out of range; it must be between 1 and "
                f"{MAX_SAMPLE_SIZE} (the side of the model's input, in pixels or latents)"
            )
        if cls != "UNet2DModel" and cls != "UNet2DConditionModel":  # a transformer
            patch = full.get("patch_size") or 1
            if isinstance(patch, int) and patch > 0 and s % patch:
                raise ExplorerError(
                    f"{where}: sample_size {s} is not divisible by patch_size {patch}; "
                    "the transformer cuts its input into whole patches"
                )
            continue
        blocks = len(full.get("down_block_types") or ())
        halvings = max(blocks - 1, 0)
        if s % 2**halvings:
            raise ExplorerError(
                f"{where}: sample_size {s} is not divisible by {2**halvings}: the U-Net halves "
                f"its input {halvings} time{'s' if halvings != 1 else ''} ({blocks} down blocks), "
                f"so its skip connections would not line up; use a multiple of {2**halvings}"
            )


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
        family = "stable-diffusion"
    elif cls == "DiTTransformer2DModel":
        if sub == folder:
            raise ExplorerError(
                f"{sub / 'config.json'} is a DiT transformer alone; pass the whole DiT "
                "pipeline folder (transformer, vae, scheduler)"
            )
        family = "dit"
    elif cls in TEXT_TRANSFORMERS:
        family, whole = TEXT_TRANSFORMERS[cls]
        if sub == folder:
            raise ExplorerError(f"{sub / 'config.json'} is a {cls} alone; pass the whole {whole}")
        if cls == "FluxTransformer2DModel":
            return family, config  # no sample_size: FLUX is read at its VAE's size (`flux`)
    elif cls != "UNet2DModel":
        raise ExplorerError(
            f"{sub / 'config.json'} describes a {cls}; the explorer reads "
            f"{', '.join(NET_CLASSES)} (see the README's table of families)"
        )
    elif latent:
        family = "latent-unet"
    elif config.get("num_class_embeds") or config.get("class_embed_type"):
        family = "class-cond-unet"
    else:
        family = PIXEL_UNET
    check_sample_size(config, cls, sub / "config.json")  # before anything is built or run
    return family, config


def build(
    family: str,
    folder: Path,
    net,
    *,
    trust_pickle: bool = False,
    prompt: str | None = None,
    class_label=None,
    condition_required: bool = True,
    process=None,
) -> tuple[Adapter, list[str]]:
    """The adapter of a loaded denoiser `net` of `family`, and fingerprint parts of its other
    components (autoencoder, text encoder): empty for pixel models, so their fingerprints stay.

    `condition_required=False` (listing layers): a class-conditional U-Net given no class label
    gets a placeholder class instead of the refusal, as its layers do not depend on the class.
    `process` (a `noise_process.NoiseProcess`): a DiT driven by flow matching is named "sit"."""
    if prompt is not None and family not in PROMPTED:
        raise ExplorerError(
            f"--prompt applies to Stable Diffusion, SD3, FLUX and PixArt folders; this model is "
            f"a {family}"
        )
    if family in PROMPTED[1:]:
        if class_label is not None:
            raise ExplorerError(
                f"--class-label applies to class-conditional models; {family} takes --prompt"
            )
        module = {"sd3": sd3, "flux": flux, "pixart": pixart}[family]
        return module.adapter(folder, net, trust_pickle, prompt)
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
        flow = getattr(process, "kind", "vp") == "flow"
        return dit.adapter(folder, net, trust_pickle, class_label, flow=flow)
    raise ExplorerError(f"unknown model family '{family}'")
