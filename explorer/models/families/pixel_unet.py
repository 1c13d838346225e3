"""Unconditional pixel-space `UNet2DModel` (DDPM-style): images are the model input as they are."""

from __future__ import annotations

from explorer.models.families.base import PIXEL_UNET, Adapter


def adapter(unet, loaded_from: str = "UNet2DModel folder") -> Adapter:
    """The adapter of an unconditional pixel U-Net: identity encoding, no conditioning."""
    cfg = unet.config
    s = cfg.sample_size if isinstance(cfg.sample_size, int) else cfg.sample_size[0]
    return Adapter(PIXEL_UNET, unet, int(s), int(cfg.in_channels), loaded_from=loaded_from)
