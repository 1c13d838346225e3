"""Turn raw uint8 images into model input: resize, match channels, scale to [-1, 1].

Two resizing paths, by how images arrive:
- a list of images (datasets read from files: ImageFolder trees, zips, HF `datasets`) is
  resized as ADM's (guided-diffusion's) loader does, `adm_resize`: halve with BOX filtering
  while the short side is >= 2x the model's size, BICUBIC so the short side is the model's
  size, then a centre crop. That is what the paper's features were computed on.
- an array batch (the in-memory built-ins: digits, Fashion-MNIST, CIFAR) is centre-cropped to
  a square and bilinearly resized with antialiasing, as before (these are small images scaled
  up, where ADM's loader has nothing to add).
`Preprocess.tag` names the array path; the file path is versioned by the file datasets'
fingerprints (`imagefolder-v2`, `hf-v2`), so cached features of both stay correct.
"""

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
            batch = _float_tensor(images).permute(0, 3, 1, 2)
            if batch.shape[-1] != self.size or batch.shape[-2] != self.size:
                batch = _resize_square(batch, self.size)
        else:
            # match channels per image: a list may mix gray and colour
            batch = torch.cat(
                [
                    _match_channels(_to_tensor(adm_resize(im, self.size)), self.channels)
                    for im in images
                ]
            )
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
    return F.interpolate(
        batch, size=(size, size), mode="bilinear", antialias=s > size, align_corners=False
    )


def adm_resize(image: np.ndarray, size: int) -> np.ndarray:
    """`(H, W[, C]) uint8` -> `(size, size, C) uint8`, resized as ADM's image loader does.

    While the short side is at least `2 * size`, halve both sides (integer division) with BOX
    filtering; then BICUBIC-resize so the short side is `size` (the long side rounded); then
    crop the centre `size x size` (offsets rounded down).
    """
    if image.ndim == 2:
        image = image[..., None]
    c = image.shape[-1]
    im = Image.fromarray(np.ascontiguousarray(image[..., 0] if c == 1 else image))
    while min(im.size) >= 2 * size:
        im = im.resize((im.width // 2, im.height // 2), resample=Image.Resampling.BOX)
    scale = size / min(im.size)
    w, h = max(size, round(im.width * scale)), max(size, round(im.height * scale))
    arr = np.asarray(im.resize((w, h), resample=Image.Resampling.BICUBIC))
    top, left = (h - size) // 2, (w - size) // 2
    arr = arr[top : top + size, left : left + size]
    return arr[..., None] if arr.ndim == 2 else arr


def _to_tensor(image: np.ndarray) -> torch.Tensor:
    """`(H, W, C) uint8` -> `(1, C, H, W)` float32 in [0, 255]."""
    return _float_tensor(image).permute(2, 0, 1)[None]


def _float_tensor(array: np.ndarray) -> torch.Tensor:
    """`array` as a float32 tensor of its shape, laid out C-contiguously, never warning.

    `torch.from_numpy` warns on a read-only array (PIL's pixels from `np.asarray`, a
    memory-mapped or shared batch). Such an array is converted to float32 in NumPy instead:
    the one copy `.float()` makes anyway, so nothing is copied twice. A writable array is
    wrapped without a copy and converted by torch, as before.
    """
    array = np.ascontiguousarray(array)
    if not array.flags.writeable:
        array = array.astype(np.float32)  # a new, writable array
    return torch.from_numpy(array).float()


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
