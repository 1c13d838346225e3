"""Turn raw uint8 images into model input: resize, match channels, scale to [-1, 1]."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


@dataclass(frozen=True)
class Preprocess:
    """How raw images become model input; its `tag` is part of every feature key."""

    size: int
    channels: int

    @property
    def tag(self) -> str:
        return f"v1-square{self.size}-c{self.channels}-bilinear-aa-pm1"

    def __call__(self, images: np.ndarray | list[np.ndarray]) -> torch.Tensor:
        """`(B, H, W, C) uint8` array or list of `(H, W, C) uint8` -> `(B, channels, size, size)` float32."""
        if isinstance(images, np.ndarray):
            batch = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
            if batch.shape[-1] != self.size or batch.shape[-2] != self.size:
                batch = _resize_square(batch, self.size)
        else:
            # match channels per image: a list may mix gray and colour
            batch = torch.cat([_match_channels(_resize_one(im, self.size)[None], self.channels) for im in images])
        batch = _match_channels(batch, self.channels)
        return (batch / 127.5 - 1.0).clamp_(-1.0, 1.0)


def _resize_square(batch: torch.Tensor, size: int) -> torch.Tensor:
    """Center-crop `(B, C, H, W)` to a square, then resize to `size` with antialiasing."""
    h, w = batch.shape[-2:]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    batch = batch[..., top : top + s, left : left + s]
    if s == size:
        return batch
    return F.interpolate(batch, size=(size, size), mode="bilinear", antialias=s > size, align_corners=False)


def _resize_one(image: np.ndarray, size: int) -> torch.Tensor:
    """One `(H, W, C) uint8` image -> `(C, size, size)` float32 in [0, 255]."""
    if image.ndim == 2:
        image = image[..., None]
    t = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float()[None]
    return _resize_square(t, size)[0]


def _match_channels(batch: torch.Tensor, channels: int) -> torch.Tensor:
    c = batch.shape[1]
    if c == channels:
        return batch
    if c == 4:  # drop alpha
        batch, c = batch[:, :3], 3
        if channels == 3:
            return batch
    if c == 1 and channels == 3:
        return batch.expand(-1, 3, -1, -1).contiguous()
    if c == 3 and channels == 1:
        w = torch.tensor([0.299, 0.587, 0.114], dtype=batch.dtype).view(1, 3, 1, 1)
        return (batch * w).sum(1, keepdim=True)
    raise ValueError(f"cannot convert {c}-channel images to {channels} channels")


def to_pil(image: np.ndarray) -> Image.Image:
    """`(H, W, C) uint8` -> PIL image, for thumbnails."""
    if image.shape[-1] == 1:
        return Image.fromarray(image[..., 0], mode="L")
    return Image.fromarray(image)
