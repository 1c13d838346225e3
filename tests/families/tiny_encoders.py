"""Tiny reference encoders, built and saved by the tests (no download): 32x32 images, 8x8 patches.

`save_encoder(kind, folder)` writes a transformers folder (`dinov2`, `clip`, `siglip`, `vit`) or
a timm folder in timm's hub layout (`timm`: config.json with `architecture` + model.safetensors).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

SIDE, PATCH, WIDTH, DEPTH = 32, 8, 32, 2
GRID = SIDE // PATCH
CLIP_NORM = {"image_mean": [0.1, 0.2, 0.3], "image_std": [0.5, 0.6, 0.7]}  # unusual on purpose
TIMM_NORM = {"mean": [0.3, 0.4, 0.5], "std": [0.2, 0.25, 0.3]}
TIMM_ARGS = dict(img_size=SIDE, patch_size=PATCH, embed_dim=WIDTH, depth=DEPTH, num_heads=2)


def build_hf(kind: str, seed: int = 0):
    import transformers as tf

    torch.manual_seed(seed)
    common = dict(
        hidden_size=WIDTH,
        num_hidden_layers=DEPTH,
        num_attention_heads=2,
        intermediate_size=37,
        image_size=SIDE,
        patch_size=PATCH,
    )
    if kind == "dinov2":
        return tf.Dinov2Model(tf.Dinov2Config(**common))
    if kind == "clip":
        return tf.CLIPVisionModel(tf.CLIPVisionConfig(**common))
    if kind == "siglip":
        return tf.SiglipVisionModel(tf.SiglipVisionConfig(**common))
    if kind == "vit":
        return tf.ViTModel(tf.ViTConfig(**common), add_pooling_layer=False)
    raise ValueError(kind)


def build_timm(seed: int = 0):
    import timm

    torch.manual_seed(seed)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, **TIMM_ARGS)


def save_encoder(kind: str, folder: Path, seed: int = 0) -> Path:
    folder = Path(folder)
    if kind == "timm":
        from timm.models import save_for_hf

        model = build_timm(seed)
        model.pretrained_cfg = {**model.pretrained_cfg, **TIMM_NORM}
        save_for_hf(model, str(folder), model_args=TIMM_ARGS, safe_serialization=True)
        return folder
    model = build_hf(kind, seed)
    model.save_pretrained(folder)
    if kind == "clip":  # an image processor config whose normalisation the encoder must use
        proc = {"crop_size": {"height": SIDE, "width": SIDE}, "do_center_crop": True, **CLIP_NORM}
        (folder / "preprocessor_config.json").write_text(json.dumps(proc))
    return folder
