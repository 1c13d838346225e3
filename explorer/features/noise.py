"""Counter-based Gaussian noise, made on the compute device.

Every noise value is a pure function of (seed, image index, element index): a keyed integer
hash gives two uniform 32-bit words per element, and Box–Muller turns them into one standard
normal value. Nothing depends on the batch, its order, the process rank or the device, and no
per-image host loop or generator state exists, so noise for a whole batch is a handful of
element-wise kernels on the GPU.

The hash is 32-bit arithmetic carried exactly in int64 tensors (products split so they never
overflow), so the integer words are bit-identical on every device; the float step runs in
float64 and is rounded to float32 once, so devices agree to the last float32 bit in all but
vanishingly rare rounding ties.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

MASK32 = 0xFFFFFFFF
_GOLDEN = 0x9E3779B9  # key-schedule constants (any odd 32-bit words would do)
_TWEAK = 0x85EBCA6B
_SECOND = 0x68E31DA4
_MUL_A = 0x7FEB352D  # the two multipliers of a well-mixing 32-bit integer hash
_MUL_B = 0x846CA68B
_CHUNK_CPU = 2**21  # elements per generation step: bounds the float64 temporaries
_CHUNK_CUDA = 2**24


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """`(x * c) mod 2**32` for int64 `x` in [0, 2**32), without int64 overflow (a new tensor)."""
    hi = x * (c >> 16)
    hi.bitwise_and_(0xFFFF).bitwise_left_shift_(16)
    return hi.add_(x * (c & 0xFFFF)).bitwise_and_(MASK32)


def mix32(x: torch.Tensor) -> torch.Tensor:
    """A bijective avalanche hash of 32-bit words held in int64 (same shape; `x` is kept)."""
    x = _mul32(x ^ (x >> 16), _MUL_A)
    x.bitwise_xor_(x >> 15)
    x = _mul32(x, _MUL_B)
    return x.bitwise_xor_(x >> 16)


def _mix_int(x: int) -> int:
    """`mix32` on one Python int (the seed's word: no tensor, so no device copy)."""
    return int(mix32(torch.tensor([x], dtype=torch.int64))[0])


def image_keys(indices: torch.Tensor, seed: int) -> torch.Tensor:
    """`(B,)` int64 image indices -> `(B,)` 32-bit keys (in int64), one per (seed, index)."""
    if seed < 0 or seed >= 2**63:
        raise ValueError(f"noise seed must be a non-negative 64-bit integer, got {seed}")
    s = _mix_int(_mix_int((seed & MASK32) ^ _GOLDEN) ^ ((seed >> 32) & MASK32))
    k = mix32((indices & MASK32) ^ s)
    return mix32(k ^ ((indices >> 32) & MASK32) ^ _TWEAK)


def device_noise(
    indices: np.ndarray | Sequence[int] | torch.Tensor,
    seed: int,
    shape: tuple[int, ...],
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """`(B, *shape)` float32 standard normal noise on `device` for images `indices (B,)`.

    Value `[b, e]` (element `e` of the flattened `shape`) depends only on
    `(seed, indices[b], e)`: elements `2m` and `2m + 1` are the Box–Muller pair of the words
    hashed from counters `2m` and `2m + 1` under the image's key.
    """
    if isinstance(indices, torch.Tensor):
        idx = indices.to(device=device, dtype=torch.int64)
    else:
        idx = torch.from_numpy(np.array(indices, dtype=np.int64))  # a copy: strides are plain
        if torch.device(device).type == "cuda":  # pinned, so the copy does not wait for the GPU
            idx = idx.pin_memory().to(device, non_blocking=True)
    n = math.prod(shape)
    if n >= 2**31:
        raise ValueError(f"noise of {n} elements per image is beyond the 2**31 counter range")
    pairs = (n + 1) // 2
    out = torch.empty((len(idx), 2 * pairs), dtype=torch.float32, device=idx.device)
    counter = torch.arange(pairs, dtype=torch.int64, device=idx.device)[None, :] * 2  # (1, m)
    step = max(1, (_CHUNK_CUDA if idx.device.type == "cuda" else _CHUNK_CPU) // pairs)
    for r in range(0, len(idx), step):  # bounded temporaries: a few (step, m) tensors
        key = image_keys(idx[r : r + step], seed)[:, None]  # (b, 1)
        key2 = mix32(key ^ _SECOND)
        u1 = _uniform(mix32(mix32(counter ^ key) ^ key2))  # (b, m) in (0, 1)
        u2 = _uniform(mix32(mix32((counter + 1) ^ key) ^ key2))
        radius = u1.log_().mul_(-2.0).sqrt_()
        angle = u2.mul_(2.0 * math.pi)
        out[r : r + step, 0::2] = radius * torch.cos(angle)
        out[r : r + step, 1::2] = radius.mul_(torch.sin(angle))
    return out[:, :n].reshape(len(idx), *shape)


def _uniform(words: torch.Tensor) -> torch.Tensor:
    """32-bit words (int64) -> float64 in (0, 1), never 0 or 1."""
    return words.to(torch.float64).add_(0.5).mul_(2.0**-32)
