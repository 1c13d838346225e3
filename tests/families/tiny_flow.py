"""Tiny flow-matching and text-conditioned transformer folders, built and saved by the tests (no
download): 16x16 images, 8x8 latents. Shapes follow diffusers' own tiny test configs
(`tests/models/transformers/test_models_transformer_{sd3,flux,pixart}.py`, the SD3 and FLUX
pipeline tests' CLIP and T5 encoders); tokenizers are built here from a small vocabulary.

`save_flow_family(kind, folder)` writes a pipeline folder for kind in `FLOW_KINDS`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from tests.families.tiny import _index, clip_tokenizer, dit_transformer, kl_vae

FLOW_KINDS = ("sd3", "flux", "pixart", "sit")
LETTERS = "abcdefghijklmnopqrstuvwxyz"


def t5_tokenizer(folder: Path) -> None:
    """A T5 (Unigram) tokenizer as a `tokenizers` JSON: pad 0, eos 1, unk 2, then word pieces."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    folder.mkdir(parents=True)
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -3.0), ("▁cat", -0.5)]
    pieces += [("▁" + c, -1.0) for c in LETTERS] + [(c, -2.0) for c in LETTERS]
    tok = Tokenizer(models.Unigram(pieces, unk_id=2))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", 1)]
    )
    tok.save(str(folder / "tokenizer.json"))
    config = {"tokenizer_class": "T5Tokenizer", "model_max_length": 512, "extra_ids": 0}
    config |= {"pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>"}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))


def clip_encoder(projection: bool):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cfg = CLIPTextConfig(
        vocab_size=60,
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=8,
        projection_dim=32,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(cfg)


def t5_encoder():
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(
        T5Config(
            vocab_size=64,
            d_model=32,
            d_kv=8,
            d_ff=37,
            num_layers=2,
            num_heads=4,
            pad_token_id=0,
            eos_token_id=1,
            decoder_start_token_id=0,
        )
    )


def flow_scheduler(folder: Path, **extra) -> None:
    from diffusers import FlowMatchEulerDiscreteScheduler

    FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0).save_pretrained(folder)
    if extra:  # the keys diffusers ignores: flow_path, time_input
        path = folder / "scheduler_config.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), **extra}))


def save_flow_family(kind: str, folder: Path, seed: int = 0) -> Path:
    """Save a tiny pipeline folder of `kind` (sd3 | flux | pixart | sit) into `folder`."""
    from diffusers import (
        DPMSolverMultistepScheduler,
        FluxTransformer2DModel,
        PixArtTransformer2DModel,
        SD3Transformer2DModel,
    )

    folder = Path(folder)
    torch.manual_seed(seed)
    if kind == "sd3":
        SD3Transformer2DModel(
            sample_size=8,
            patch_size=2,
            in_channels=4,
            num_layers=3,
            attention_head_dim=8,
            num_attention_heads=4,
            caption_projection_dim=32,
            joint_attention_dim=32,
            pooled_projection_dim=64,
            out_channels=4,
            pos_embed_max_size=8,
        ).save_pretrained(folder / "transformer")
        kl_vae(4, shift_factor=0.1, scaling_factor=1.5).save_pretrained(folder / "vae")
        for i, (enc, tok) in enumerate(
            (("text_encoder", "tokenizer"), ("text_encoder_2", "tokenizer_2"))
        ):
            torch.manual_seed(seed + 10 + i)
            clip_encoder(projection=True).save_pretrained(folder / enc)
            clip_tokenizer(folder / tok)
        t5_encoder().save_pretrained(folder / "text_encoder_3")
        t5_tokenizer(folder / "tokenizer_3")
        flow_scheduler(folder / "scheduler")
        _index(
            folder,
            "StableDiffusion3Pipeline",
            transformer=("diffusers", "SD3Transformer2DModel"),
            vae=("diffusers", "AutoencoderKL"),
            scheduler=("diffusers", "FlowMatchEulerDiscreteScheduler"),
        )
    elif kind == "flux":
        FluxTransformer2DModel(
            patch_size=1,
            in_channels=4,
            num_layers=2,
            num_single_layers=2,
            attention_head_dim=16,
            num_attention_heads=2,
            joint_attention_dim=32,
            pooled_projection_dim=32,
            axes_dims_rope=[4, 4, 8],
            guidance_embeds=True,
        ).save_pretrained(folder / "transformer")
        kl_vae(1, shift_factor=0.1, scaling_factor=0.4).save_pretrained(folder / "vae")
        clip_encoder(projection=False).save_pretrained(folder / "text_encoder")
        clip_tokenizer(folder / "tokenizer")
        t5_encoder().save_pretrained(folder / "text_encoder_2")
        t5_tokenizer(folder / "tokenizer_2")
        from diffusers import FlowMatchEulerDiscreteScheduler

        FlowMatchEulerDiscreteScheduler(
            num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True
        ).save_pretrained(folder / "scheduler")
        _index(
            folder,
            "FluxPipeline",
            transformer=("diffusers", "FluxTransformer2DModel"),
            vae=("diffusers", "AutoencoderKL"),
            scheduler=("diffusers", "FlowMatchEulerDiscreteScheduler"),
        )
    elif kind == "pixart":
        PixArtTransformer2DModel(
            sample_size=8,
            num_layers=2,
            patch_size=2,
            attention_head_dim=8,
            num_attention_heads=3,
            caption_channels=32,
            in_channels=4,
            cross_attention_dim=24,
            out_channels=8,
            attention_bias=True,
            activation_fn="gelu-approximate",
            num_embeds_ada_norm=1000,
            norm_type="ada_norm_single",
            norm_elementwise_affine=False,
            norm_eps=1e-6,
        ).save_pretrained(folder / "transformer")
        kl_vae(4).save_pretrained(folder / "vae")
        t5_encoder().save_pretrained(folder / "text_encoder")
        t5_tokenizer(folder / "tokenizer")
        DPMSolverMultistepScheduler(num_train_timesteps=1000).save_pretrained(folder / "scheduler")
        _index(
            folder,
            "PixArtSigmaPipeline",
            transformer=("diffusers", "PixArtTransformer2DModel"),
            vae=("diffusers", "AutoencoderKL"),
            scheduler=("diffusers", "DPMSolverMultistepScheduler"),
        )
    elif kind == "sit":  # a converted SiT folder: DiT blocks + the flow-matching scheduler
        dit_transformer(8).save_pretrained(folder / "transformer")
        kl_vae(4).save_pretrained(folder / "vae")
        flow_scheduler(folder / "scheduler", flow_path="linear", time_input="u")
        _index(
            folder,
            "DiTPipeline",
            transformer=("diffusers", "DiTTransformer2DModel"),
            vae=("diffusers", "AutoencoderKL"),
            scheduler=("diffusers", "FlowMatchEulerDiscreteScheduler"),
        )
    else:
        raise ValueError(kind)
    return folder
