"""A tiny Stable Diffusion XL pipeline folder built by the tests (no download): 16x16 images.

Shaped like diffusers' own SDXL test components (`get_dummy_components` of
`tests/pipelines/stable_diffusion_xl/test_stable_diffusion_xl.py`): a `UNet2DConditionModel`
with `addition_embed_type="text_time"`, two CLIP text encoders (the second with a projection)
whose penultimate hidden states concatenate to the cross-attention width, and
`projection_class_embeddings_input_dim = 6 * addition_time_embed_dim + projection_dim`.
The encoders differ in width (16 and 24) so a swapped concatenation cannot pass unnoticed.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from tests.families.tiny import LATENT, _index, clip_tokenizer, kl_vae

WIDTHS = (16, 24)  # hidden sizes of text_encoder and text_encoder_2
PROJECTION = 12  # text_encoder_2's projection_dim: the pooled text embedding's width
TIME_DIM = 8  # addition_time_embed_dim
SCALING = 0.13025  # SDXL's VAE scaling factor


def _clip_config(width: int, **extra):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=60,
        hidden_size=width,
        intermediate_size=2 * width,
        num_hidden_layers=3,  # the penultimate hidden state differs from the last one
        num_attention_heads=2,
        max_position_embeddings=8,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
        **extra,
    )


def save_sdxl(folder: Path, seed: int = 0, *, text_encoder_2: bool = True, **unet) -> Path:
    """Save a tiny `StableDiffusionXLPipeline` folder; `text_encoder_2=False` leaves that
    component out (an incomplete copy), `unet` overrides U-Net config keys."""
    from diffusers import EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    folder = Path(folder)
    torch.manual_seed(seed)
    config = dict(
        sample_size=LATENT,
        in_channels=4,
        out_channels=4,
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        transformer_layers_per_block=(1, 2),
        cross_attention_dim=sum(WIDTHS),
        addition_embed_type="text_time",
        addition_time_embed_dim=TIME_DIM,
        projection_class_embeddings_input_dim=6 * TIME_DIM + PROJECTION,
    )
    UNet2DConditionModel(**(config | unet)).save_pretrained(folder / "unet")
    vae = kl_vae()
    vae.register_to_config(scaling_factor=SCALING)
    vae.save_pretrained(folder / "vae")
    CLIPTextModel(_clip_config(WIDTHS[0])).save_pretrained(folder / "text_encoder")
    if text_encoder_2:
        CLIPTextModelWithProjection(
            _clip_config(WIDTHS[1], projection_dim=PROJECTION)
        ).save_pretrained(folder / "text_encoder_2")
    clip_tokenizer(folder / "tokenizer")
    clip_tokenizer(folder / "tokenizer_2")
    cfg = folder / "tokenizer_2" / "tokenizer_config.json"  # SDXL's second tokenizer pads
    cfg.write_text(json.dumps({**json.loads(cfg.read_text()), "pad_token": "a</w>"}))  # apart
    EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        steps_offset=1,
        timestep_spacing="leading",
    ).save_pretrained(folder / "scheduler")
    _index(
        folder,
        "StableDiffusionXLPipeline",
        unet=("diffusers", "UNet2DConditionModel"),
        vae=("diffusers", "AutoencoderKL"),
        text_encoder=("transformers", "CLIPTextModel"),
        text_encoder_2=("transformers", "CLIPTextModelWithProjection"),
        tokenizer=("transformers", "CLIPTokenizer"),
        tokenizer_2=("transformers", "CLIPTokenizer"),
        scheduler=("diffusers", "EulerDiscreteScheduler"),
    )
    index = folder / "model_index.json"
    index.write_text(
        json.dumps({**json.loads(index.read_text()), "force_zeros_for_empty_prompt": True})
    )
    return folder
