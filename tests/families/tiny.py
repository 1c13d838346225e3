"""Tiny model folders of every family, built and saved by the tests (no download): 16x16 images.

`save_family(kind, folder)` writes a diffusers-layout folder for kind in `FAMILIES`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from tests.conftest import TINY_UNET

FAMILIES = ("class-cond", "ldm", "sd", "dit")
LATENT = 8  # latent side; the tiny autoencoders halve 16x16 images


def kl_vae(latent_channels: int = 4, **extra):
    """A tiny `AutoencoderKL` that halves 16x16 RGB images (`extra`: e.g. scaling_factor)."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(8, 16),
        latent_channels=latent_channels,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        norm_num_groups=4,
        sample_size=16,
        **extra,
    )


def clip_tokenizer(folder: Path) -> None:
    """A CLIP BPE tokenizer from a vocabulary written here: specials, letters, and two merges."""
    folder.mkdir(parents=True)
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    tokens = (
        ["<|startoftext|>", "<|endoftext|>"]
        + letters
        + [c + "</w>" for c in letters]
        + ["ca", "cat</w>"]
    )
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (folder / "merges.txt").write_text("#version: 0.2\nc a\nca t</w>\n")
    (folder / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "model_max_length": 8,
                "bos_token": "<|startoftext|>",
                "eos_token": "<|endoftext|>",
                "unk_token": "<|endoftext|>",
                "pad_token": "<|endoftext|>",
                "tokenizer_class": "CLIPTokenizer",
            }
        )
    )


def _index(folder: Path, cls: str, **parts: tuple[str, str]) -> None:
    (folder / "model_index.json").write_text(
        json.dumps({"_class_name": cls, **{k: list(v) for k, v in parts.items()}})
    )


def dit_transformer(sample_size: int = LATENT):
    """A 3-block DiT over `(4, sample_size, sample_size)` latents, patch 2, 5 classes."""
    from diffusers import DiTTransformer2DModel

    return DiTTransformer2DModel(
        sample_size=sample_size,
        num_layers=3,
        patch_size=2,
        attention_head_dim=8,
        num_attention_heads=2,
        in_channels=4,
        out_channels=8,
        num_embeds_ada_norm=5,
        norm_num_groups=4,
    )


def save_family(kind: str, folder: Path, seed: int = 0) -> Path:
    """Save a tiny model of `kind` (class-cond | ldm | sd | dit) into `folder`."""
    from diffusers import (
        DDIMScheduler,
        DDPMScheduler,
        PNDMScheduler,
        UNet2DConditionModel,
        UNet2DModel,
        VQModel,
    )

    folder = Path(folder)
    torch.manual_seed(seed)
    if kind == "class-cond":  # ADM-style: a pixel U-Net with a class embedding table, flat folder
        UNet2DModel(**TINY_UNET, num_class_embeds=5).save_pretrained(folder)
        DDPMScheduler(num_train_timesteps=1000).save_pretrained(folder)
    elif kind == "ldm":  # diffusers LDMPipeline: unet/ + vqvae/ + scheduler/ (DDIM)
        UNet2DModel(
            **{**TINY_UNET, "sample_size": LATENT, "in_channels": 3, "out_channels": 3}
        ).save_pretrained(folder / "unet")
        VQModel(
            in_channels=3,
            out_channels=3,
            block_out_channels=(8, 16),
            latent_channels=3,
            down_block_types=("DownEncoderBlock2D",) * 2,
            up_block_types=("UpDecoderBlock2D",) * 2,
            norm_num_groups=4,
            num_vq_embeddings=16,
            vq_embed_dim=3,
        ).save_pretrained(folder / "vqvae")
        DDIMScheduler(num_train_timesteps=1000).save_pretrained(folder / "scheduler")
        _index(
            folder,
            "LDMPipeline",
            unet=("diffusers", "UNet2DModel"),
            vqvae=("diffusers", "VQModel"),
            scheduler=("diffusers", "DDIMScheduler"),
        )
    elif kind == "sd":  # StableDiffusionPipeline layout with a CLIP text encoder and tokenizer
        from transformers import CLIPTextConfig, CLIPTextModel

        UNet2DConditionModel(
            sample_size=LATENT,
            in_channels=4,
            out_channels=4,
            block_out_channels=(8, 16),
            layers_per_block=1,
            norm_num_groups=4,
            cross_attention_dim=16,
            attention_head_dim=4,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        ).save_pretrained(folder / "unet")
        kl_vae().save_pretrained(folder / "vae")
        CLIPTextModel(
            CLIPTextConfig(
                vocab_size=60,
                hidden_size=16,
                intermediate_size=32,
                num_hidden_layers=2,
                num_attention_heads=2,
                max_position_embeddings=8,
                bos_token_id=0,
                eos_token_id=1,
                pad_token_id=1,
            )
        ).save_pretrained(folder / "text_encoder")
        clip_tokenizer(folder / "tokenizer")
        PNDMScheduler(
            beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, skip_prk_steps=True
        ).save_pretrained(folder / "scheduler")
        _index(
            folder,
            "StableDiffusionPipeline",
            unet=("diffusers", "UNet2DConditionModel"),
            vae=("diffusers", "AutoencoderKL"),
            text_encoder=("transformers", "CLIPTextModel"),
            tokenizer=("transformers", "CLIPTokenizer"),
            scheduler=("diffusers", "PNDMScheduler"),
        )
    elif kind == "dit":  # DiTPipeline layout: transformer/ + vae/ + scheduler/
        dit_transformer().save_pretrained(folder / "transformer")
        kl_vae().save_pretrained(folder / "vae")
        DDIMScheduler(num_train_timesteps=1000).save_pretrained(folder / "scheduler")
        _index(
            folder,
            "DiTPipeline",
            transformer=("diffusers", "DiTTransformer2DModel"),
            vae=("diffusers", "AutoencoderKL"),
            scheduler=("diffusers", "DDIMScheduler"),
        )
    else:
        raise ValueError(kind)
    return folder
