"""Latent families: an autoencoder maps images to the denoiser's input space.

- `LatentEncoder`: `AutoencoderKL` -> the mean of the latent distribution (never a sample),
  minus `shift_factor` if any, times `scaling_factor`; `VQModel` -> its pre-quantisation
  latents, unscaled, as diffusers' `LDMPipeline` feeds them.
- Latent diffusion (`unet/` `UNet2DModel` with `vqvae/` or `vae/`): unconditional (or class-conditional).
- Stable Diffusion 1.x/2.x (`UNet2DConditionModel` + `vae/`, `text_encoder/`, `tokenizer/`):
  the U-Net reads a fixed prompt embedding from the pipeline's own text encoder (empty prompt
  by default, as in DIFT).
- Stable Diffusion XL (the same with `addition_embed_type="text_time"`, plus `text_encoder_2/`,
  `tokenizer_2/`): family "sdxl"; both text encoders, the pooled embedding and the time ids,
  computed as its pipeline does (`explorer.models.families.sdxl`).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from explorer.errors import ExplorerError
from explorer.models.families import class_cond, sdxl
from explorer.models.families.base import Adapter, Condition, token_ids
from explorer.models.weights import load_component, read_json

SD_INSTALL = 'pip install -e ".[sd]"'


class LatentEncoder:
    """Images `(B, 3, H, W)` in [-1, 1] -> latents `(B, c, H/f, W/f)`, deterministic."""

    def __init__(self, vae):
        self.vae = vae.eval()
        self.kind = type(vae).__name__
        cfg = vae.config
        self.factor = 2 ** (len(cfg.block_out_channels) - 1)
        self.scale = (
            float(getattr(cfg, "scaling_factor", 1.0) or 1.0) if self.kind != "VQModel" else 1.0
        )
        self.shift = getattr(cfg, "shift_factor", None) if self.kind != "VQModel" else None

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(next(self.vae.parameters()).device, torch.float32)
        if self.kind == "VQModel":
            return self.vae.encode(x).latents.float()
        z = self.vae.encode(x).latent_dist.mean
        if self.shift is not None:
            z = z - self.shift
        return (z * self.scale).float()

    def to(self, device) -> LatentEncoder:
        self.vae.to(device)
        return self

    def describe(self) -> str:
        if self.kind == "VQModel":
            return "VQModel, pre-quantisation latents"
        return f"{self.kind} mean × {self.scale:g}" + (
            f" after − {self.shift:g}" if self.shift is not None else ""
        )


def _vae_folder(folder: Path) -> tuple[Path, str]:
    for sub, cls in (("vqvae", "VQModel"), ("vae", None)):
        if (folder / sub / "config.json").exists():
            return folder / sub, cls or "AutoencoderKL"
    raise ExplorerError(
        f"{folder} is a latent pipeline but has no vae/ or vqvae/ with a config.json; "
        "the copy is incomplete, fetch the autoencoder folder too"
    )


def load_encoder(folder: Path, trust_pickle: bool) -> tuple[LatentEncoder, list[str]]:
    """The pipeline's autoencoder as a `LatentEncoder`, and its fingerprint parts (config, weights)."""
    import diffusers

    sub, default_cls = _vae_folder(folder)
    cls_name = _class_name(sub / "config.json", default_cls)
    if cls_name not in ("AutoencoderKL", "VQModel"):
        raise ExplorerError(
            f"{sub} holds a {cls_name}; the explorer reads AutoencoderKL and VQModel autoencoders"
        )
    vae, parts = load_component(sub, getattr(diffusers, cls_name), trust_pickle, "autoencoder")
    return LatentEncoder(vae), parts


def _class_name(config_path: Path, default: str) -> str:
    return read_json(config_path, "autoencoder config").get("_class_name", default)


def ldm_adapter(
    folder: Path, unet, trust_pickle: bool, class_label, required: bool = True
) -> tuple[Adapter, list[str]]:
    """A latent `UNet2DModel` behind its `vqvae/` or `vae/` (diffusers `LDMPipeline` layout)."""
    enc, parts = load_encoder(folder, trust_pickle)
    n = class_cond.unet_classes(dict(unet.config))
    if n:
        cond = class_cond.condition(class_label, n, None, "latent U-Net", required=required)
    elif class_label is not None:
        raise ExplorerError(
            "--class-label was given but this latent U-Net is not class-conditional"
        )
    else:
        cond = Condition()
    return _on_latents(
        "latent-unet", unet, enc, cond, f"latent pipeline folder (unet/ + {enc.kind})"
    ), parts


class Prompt(Condition):
    """A fixed prompt embedding `(1, L, D)` from the pipeline's own text encoder, for every image."""

    def __init__(self, prompt: str, embedding: torch.Tensor):
        self.prompt, self.embedding = prompt, embedding
        self.tag = "prompt:" + prompt

    def kwargs(self, batch: int, labels, device) -> dict:
        return {"encoder_hidden_states": self.embedding.to(device).expand(batch, -1, -1)}

    def describe(self) -> str:
        return (
            "the empty prompt (as in DIFT)"
            if not self.prompt
            else f"the fixed prompt {self.prompt!r}"
        )

    def to(self, device) -> Prompt:
        self.embedding = self.embedding.to(device)
        return self


def check_prompt(prompt: str | None) -> str:
    """One fixed prompt for all images; a template that would vary with the label is refused."""
    prompt = prompt or ""
    if "{" in prompt or "}" in prompt:
        raise ExplorerError(
            "--prompt must be one fixed text for every image: a prompt that varies with the "
            "label (a {template}) leaks the answer into the features"
        )
    return prompt


def prompt_embedding(
    folder: Path, prompt: str, trust_pickle: bool
) -> tuple[torch.Tensor, list[str]]:
    """`(1, L, D)` last hidden state of the pipeline's text encoder for `prompt`, padded to the
    tokenizer's max length as the SD pipelines do; and fingerprint parts (encoder, tokenizer)."""
    try:
        from transformers import CLIPTextModel, CLIPTokenizer
    except ImportError:
        raise ExplorerError(
            f"Stable Diffusion folders need the transformers package: {SD_INSTALL}"
        ) from None
    for sub in ("text_encoder", "tokenizer"):
        if not (folder / sub).is_dir():
            raise ExplorerError(
                f"{folder} has a UNet2DConditionModel but no {sub}/; pass the whole Stable "
                "Diffusion pipeline folder (unet, vae, text_encoder, tokenizer, scheduler)"
            )
    enc, parts = load_component(
        folder / "text_encoder", CLIPTextModel, trust_pickle, "text encoder"
    )
    tok, digest = load_tokenizer(folder / "tokenizer", CLIPTokenizer)
    with torch.inference_mode():
        emb = enc.eval()(token_ids(tok, prompt)[0])[0].float()
    return emb.clone(), parts + [digest]


def load_tokenizer(sub: Path, cls) -> tuple[object, str]:
    """The tokenizer saved in `sub`, and the sha256 of its files (names and bytes)."""
    try:
        tok = cls.from_pretrained(sub, local_files_only=True)
    except (OSError, ValueError, TypeError) as e:
        raise ExplorerError(f"cannot load the tokenizer in {sub}: {e}") from e
    h = hashlib.sha256()
    for f in sorted(sub.iterdir()):
        if f.is_file():
            h.update(f.name.encode() + b"\0" + f.read_bytes())
    return tok, h.hexdigest()


def sd_adapter(
    folder: Path, unet, trust_pickle: bool, prompt: str | None
) -> tuple[Adapter, list[str]]:
    """Stable Diffusion 1.x/2.x: VAE latents in, the fixed prompt's embedding as cross-attention
    input; an SDXL U-Net (added text-and-time embedding) goes to `sdxl_adapter`."""
    cfg = unet.config
    if sdxl.is_sdxl(cfg) and not (
        getattr(cfg, "class_embed_type", None) or getattr(cfg, "num_class_embeds", None)
    ):
        return sdxl_adapter(folder, unet, trust_pickle, prompt)
    if (
        getattr(cfg, "addition_embed_type", None)
        or getattr(cfg, "class_embed_type", None)
        or getattr(cfg, "num_class_embeds", None)
    ):
        raise ExplorerError(
            "this UNet2DConditionModel needs extra conditioning (added embeddings other than "
            "SDXL's text_time, or class embeddings); only Stable Diffusion 1.x/2.x and SDXL "
            "layouts are supported"
        )
    prompt = check_prompt(prompt)
    _require_vae(folder)
    emb, tparts = prompt_embedding(folder, prompt, trust_pickle)
    enc, vparts = load_encoder(folder, trust_pickle)
    a = _on_latents(
        "stable-diffusion", unet, enc, Prompt(prompt, emb), "Stable Diffusion pipeline folder"
    )
    return a, vparts + tparts


def _require_vae(folder: Path) -> None:
    if not (folder / "vae" / "config.json").exists():
        raise ExplorerError(
            f"{folder} has a UNet2DConditionModel but no vae/; pass the whole Stable Diffusion "
            "pipeline folder, never its U-Net alone (it must not be fed pixels)"
        )


SDXL_PARTS = ("text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2")


def sdxl_adapter(
    folder: Path, unet, trust_pickle: bool, prompt: str | None
) -> tuple[Adapter, list[str]]:
    """Stable Diffusion XL: VAE latents in; the fixed prompt through both text encoders, its
    pooled embedding and the image's time ids as conditioning (`explorer.models.families.sdxl`)."""
    prompt = check_prompt(prompt)
    if _is_refiner(folder):
        raise ExplorerError(
            f"{folder} is an SDXL refiner (its time ids carry an aesthetic score); the explorer "
            "reads the SDXL base pipeline"
        )
    _require_vae(folder)
    for sub in SDXL_PARTS:
        if not (folder / sub).is_dir():
            raise ExplorerError(
                f"{folder} has an SDXL U-Net but no {sub}/; pass the whole SDXL pipeline folder "
                "(unet, vae, text_encoder, text_encoder_2, tokenizer, tokenizer_2, scheduler)"
            )
    try:
        from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer
    except ImportError:
        raise ExplorerError(
            f"Stable Diffusion XL folders need the transformers package: {SD_INSTALL}"
        ) from None
    enc1, parts1 = load_component(
        folder / "text_encoder", CLIPTextModel, trust_pickle, "text encoder"
    )
    enc2, parts2 = load_component(
        folder / "text_encoder_2", CLIPTextModelWithProjection, trust_pickle, "text encoder"
    )
    tok1, digest1 = load_tokenizer(folder / "tokenizer", CLIPTokenizer)
    tok2, digest2 = load_tokenizer(folder / "tokenizer_2", CLIPTokenizer)
    emb, pooled = sdxl.encode_prompt(prompt, (tok1, tok2), (enc1, enc2))
    sdxl.check_widths(unet, emb, pooled)
    enc, vparts = load_encoder(folder, trust_pickle)
    condition = sdxl.TextTime(prompt, emb, pooled, sdxl.time_ids(_side(unet) * enc.factor))
    a = _on_latents(sdxl.FAMILY, unet, enc, condition, "Stable Diffusion XL pipeline folder")
    return a, vparts + parts1 + parts2 + [digest1, digest2]


def _is_refiner(folder: Path) -> bool:
    """True when the pipeline index says its time ids carry an aesthetic score (SDXL refiner)."""
    index = folder / "model_index.json"
    try:
        return bool(index.is_file() and read_json(index).get("requires_aesthetics_score"))
    except ExplorerError:
        return False  # unreadable: the layout was detected without it, the widths check stays


def _side(unet) -> int:
    size = unet.config.sample_size
    return int(size if isinstance(size, int) else size[0])


def _on_latents(family: str, unet, enc, condition: Condition, loaded_from: str) -> Adapter:
    """The adapter of a U-Net on `enc`'s latents: images are `sample_size x factor` pixels."""
    return Adapter(
        family,
        unet,
        _side(unet) * enc.factor,
        int(enc.vae.config.in_channels),
        encoder=enc,
        condition=condition,
        loaded_from=loaded_from,
    )
