"""SiT sizes, time conventions and paths, and the size read off a checkpoint's tensor shapes.

SiT (Ma et al. 2024, willisma/SiT) and REPA (Yu et al. 2025, sihyun-yu/REPA) share DiT's
network: S/B/L/XL widths with patches 2/4/8. A state dict gives every size but the head count
(the fused `qkv` is `[3D, D]` for any split), which the released sizes fix per width.
The two codebases differ in their time axis (for the contract's path time u, u=0 data):
- SiT (`transport/path.py`): `x_t = t x1 + (1 - t) x0`, x1 data, x0 noise, the model called
  with t: t = 1 - u (t=1 is data). GVP: `sin(pi t/2) x1 + cos(pi t/2) x0`. VP: refused.
- REPA (`loss.py`): `x_t = (1 - t) x + t eps`, the model called with t = u (t=0 is data);
  its "cosine" path `cos(pi t/2) x + sin(pi t/2) eps` is the contract's gvp.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from explorer.errors import ExplorerError

# name -> (depth, hidden width, heads): SiT's and REPA's `SiT_models`
SIZES: dict[str, tuple[int, int, int]] = {
    "S": (12, 384, 6),
    "B": (12, 768, 12),
    "L": (24, 1024, 16),
    "XL": (28, 1152, 16),
}
PATCHES = (2, 4, 8)
MLP_RATIO = 4  # DiTTransformer2DModel's feed-forward is 4x wide, as every released SiT

# flavor -> how the denoiser is called at path time u (the contract's `time_input`), and its VAE
FLAVORS: dict[str, dict[str, str]] = {
    "sit": {"time_input": "1-u", "vae": "stabilityai/sd-vae-ft-ema"},  # or -mse: same training
    "repa": {"time_input": "u", "vae": "stabilityai/sd-vae-ft-mse"},
}
# each codebase's own path names -> the contract's flow_path
PATH_NAMES = {"linear": "linear", "gvp": "gvp", "cosine": "gvp"}


@dataclass(frozen=True)
class SiTConfig:
    """What fixes a SiT network's parameters: widths, patches and the embedding tables."""

    depth: int
    hidden: int
    heads: int
    patch: int
    in_channels: int
    input_size: int  # latent side (SiT's input_size; 32 for 256x256 images)
    out_channels: int  # 2 * in_channels with learn_sigma (SiT), in_channels (REPA)
    num_classes: int  # embedding_table rows - 1 (the last row is the null class)

    @property
    def name(self) -> str:
        """`SiT-XL/2` for a released size, else `SiT custom (depth D, width W)`."""
        for size, dims in SIZES.items():
            if dims == (self.depth, self.hidden, self.heads):
                return f"SiT-{size}/{self.patch}"
        return f"SiT custom (depth {self.depth}, width {self.hidden}, {self.heads} heads)"

    @property
    def learn_sigma(self) -> bool:
        return self.out_channels == 2 * self.in_channels

    def to_dict(self) -> dict:
        return asdict(self) | {"name": self.name}


def heads_for(depth: int, hidden: int, num_heads: int | None) -> int:
    """The head count of a released size, or `num_heads` for another; a one-line error else."""
    if num_heads is not None:
        if num_heads < 1 or hidden % num_heads:
            raise ExplorerError(f"--num-heads {num_heads} does not divide the width {hidden}")
        return num_heads
    for dims in SIZES.values():
        if dims[:2] == (depth, hidden):
            return dims[2]
    known = ", ".join(f"{k} (depth {d}, width {w})" for k, (d, w, _) in SIZES.items())
    raise ExplorerError(
        f"the checkpoint's net (depth {depth}, width {hidden}) is not a released SiT size "
        f"({known}); pass --num-heads N to convert it anyway"
    )


def flow_path(name: str) -> str:
    """SiT's `Linear`/`GVP` or REPA's `linear`/`cosine` -> the contract's `linear`/`gvp`."""
    key = str(name).lower()
    if key not in PATH_NAMES:
        why = "SiT's VP path is not a linear or GVP flow" if key == "vp" else "unknown path"
        raise ExplorerError(
            f"path '{name}' cannot be converted ({why}); the explorer reads linear and "
            "gvp (REPA: cosine) paths"
        )
    return PATH_NAMES[key]
