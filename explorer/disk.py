"""How much disk cached features take, said before they are computed."""

from __future__ import annotations

from explorer.layers import LayerSpec

VALUE_BYTES = 2  # features are cached as float16 (float32 only where float16 would overflow)


def feature_bytes(n_images: int, layer: LayerSpec, pool: str, *, seeds: int = 1) -> int:
    """Bytes of float16 features for `n_images` images at one (t, `layer`, `pool`) per noise seed.

    E.g. ADM block 24 (1024 x 16 x 16) at pool "map16": 1024*16*16*2 B = 512 KiB per image.
    """
    from explorer.extract import pooled_dim

    return int(n_images) * pooled_dim(layer, pool) * VALUE_BYTES * int(seeds)


def human_bytes(n: float) -> str:
    """`1536` -> "1.5 kB"; decimal units (kB = 1000 B) up to TB."""
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"
