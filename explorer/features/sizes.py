"""How big pooled features are: their shape per image and the disk they take, said before they
are computed. Free of torch."""

from __future__ import annotations

import math

from explorer.models.layers import LayerSpec

MAP_SIDE = (
    16  # "map16": the map average-pooled to min(H, 16) x min(W, 16) (the paper's attention head)
)

VALUE_BYTES = 2  # features are cached as float16 (float32 only where float16 would overflow)


def feature_bytes(n_images: int, layer: LayerSpec, pool: str, *, seeds: int = 1) -> int:
    """Bytes of float16 features for `n_images` images at one (t, `layer`, `pool`) per noise seed.

    E.g. ADM block 24 (1024 x 16 x 16) at pool "map16": 1024*16*16*2 B = 512 KiB per image.
    """
    return int(n_images) * pooled_dim(layer, pool) * VALUE_BYTES * int(seeds)


def human_bytes(n: float) -> str:
    """`1536` -> "1.5 kB"; decimal units (kB = 1000 B) up to TB."""
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def pooled_shape(layer: LayerSpec, how: str) -> tuple[int, ...]:
    """Shape of one pooled feature before flattening: `(C,)` for max, else the map `(C, h, w)`."""
    if how == "max":
        return (layer.channels,)
    if how == "map16":
        return (layer.channels, min(layer.height, MAP_SIDE), min(layer.width, MAP_SIDE))
    return (layer.channels, int(how), int(how))


def pooled_dim(layer: LayerSpec, how: str) -> int:
    """Length of one flattened pooled feature."""
    return math.prod(pooled_shape(layer, how))
