"""guided-diffusion (ADM) model flags: their defaults, the released ImageNet presets, and validation.

Flag names and defaults follow guided-diffusion's `script_util.py`; the default flags describe
`256x256_diffusion_uncond.pt`, the model of the paper.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from explorer.errors import ExplorerError, suggest

NUM_CLASSES = 1000  # ImageNet, for --class-cond
# guided-diffusion's channel multipliers when --channel-mult is empty, by image size.
DEFAULT_CHANNEL_MULT = {
    512: (0.5, 1, 1, 2, 2, 4, 4),
    256: (1, 1, 2, 2, 4, 4),
    128: (1, 1, 2, 3, 4),
    64: (1, 2, 3, 4),
}


@dataclass(frozen=True)
class ADMConfig:
    """The flags that fix an ADM `UNetModel`'s parameters and its noise schedule."""

    image_size: int = 256
    num_channels: int = 256
    num_res_blocks: int = 2
    channel_mult: tuple[float, ...] | None = None  # None: guided-diffusion's default for image_size
    attention_resolutions: tuple[int, ...] = (32, 16, 8)  # feature-map sides that get attention
    num_head_channels: int = 64  # -1: use num_heads
    num_heads: int = 4
    use_new_attention_order: bool = False
    learn_sigma: bool = True
    resblock_updown: bool = True
    use_scale_shift_norm: bool = True
    class_cond: bool = False
    noise_schedule: str = "linear"  # linear | cosine
    diffusion_steps: int = 1000

    @property
    def mult(self) -> tuple[float, ...]:
        if self.channel_mult is not None:
            return tuple(self.channel_mult)
        if self.image_size not in DEFAULT_CHANNEL_MULT:
            raise ExplorerError(
                f"no default --channel-mult for --image-size {self.image_size} (guided-diffusion has "
                f"{', '.join(map(str, DEFAULT_CHANNEL_MULT))}); pass --channel-mult, e.g. 1,1,2,2,4,4"
            )
        return DEFAULT_CHANNEL_MULT[self.image_size]

    @property
    def widths(self) -> list[int]:
        """Channels per level: int(mult * num_channels), as guided-diffusion computes them."""
        return [int(m * self.num_channels) for m in self.mult]

    @property
    def attention_ds(self) -> set[int]:
        """Downsampling factors (1, 2, 4, ...) at which ADM inserts attention blocks."""
        return {self.image_size // r for r in self.attention_resolutions}

    @property
    def out_channels(self) -> int:
        return 6 if self.learn_sigma else 3

    def heads(self, channels: int) -> int:
        """ADM's head count for an attention block of `channels` channels."""
        return (
            channels // self.num_head_channels if self.num_head_channels != -1 else self.num_heads
        )

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channel_mult"] = list(self.mult)
        d["attention_resolutions"] = list(self.attention_resolutions)
        return d

    def validate(self) -> ADMConfig:
        """Self-check the flags; raise one clear ExplorerError on the first inconsistency."""
        if self.noise_schedule not in ("linear", "cosine"):
            raise ExplorerError(
                f"--noise-schedule must be linear or cosine, not '{self.noise_schedule}'"
            )
        for name in ("image_size", "num_channels", "num_res_blocks", "diffusion_steps"):
            if getattr(self, name) < 1:
                raise ExplorerError(f"--{name.replace('_', '-')} must be a positive integer")
        if not self.attention_resolutions or any(r < 1 for r in self.attention_resolutions):
            raise ExplorerError("--attention-resolutions must be positive sides, e.g. 32,16,8")
        widths = self.widths
        if any(w < 32 or w % 32 for w in widths):
            raise ExplorerError(
                f"channels per level {widths} must be multiples of 32 (ADM normalises with 32 groups)"
            )
        if self.image_size % (2 ** (len(widths) - 1)):
            raise ExplorerError(
                f"--image-size {self.image_size} does not halve {len(widths) - 1} times"
            )
        for ch in self.attention_widths():
            if self.num_head_channels != -1 and ch % self.num_head_channels:
                raise ExplorerError(
                    f"{ch} attention channels do not split into heads of --num-head-channels {self.num_head_channels}"
                )
            if self.num_head_channels == -1 and (self.num_heads < 1 or ch % self.num_heads):
                raise ExplorerError(
                    f"{ch} attention channels do not split into --num-heads {self.num_heads}"
                )
        return self

    def attention_widths(self) -> list[int]:
        """Channel counts of every attention block: attended levels and the middle block."""
        ds, out = 1, []
        for level, w in enumerate(self.widths):
            if ds in self.attention_ds:
                out.append(w)
            if level < len(self.widths) - 1:
                ds *= 2
        return out + [self.widths[-1]]


# The released ImageNet checkpoints (guided-diffusion README, "Download pre-trained models").
_IMAGENET = ADMConfig(learn_sigma=True, resblock_updown=True, use_scale_shift_norm=True)
PRESETS: dict[str, ADMConfig] = {
    "imagenet256-uncond": _IMAGENET,  # 256x256_diffusion_uncond.pt (the paper's model)
    "imagenet256-cond": replace(_IMAGENET, class_cond=True),  # 256x256_diffusion.pt
    "imagenet128-cond": replace(  # 128x128_diffusion.pt
        _IMAGENET, image_size=128, class_cond=True, num_head_channels=-1, num_heads=4
    ),
    "imagenet64-cond": replace(  # 64x64_diffusion.pt
        _IMAGENET,
        image_size=64,
        num_channels=192,
        num_res_blocks=3,
        class_cond=True,
        use_new_attention_order=True,
        noise_schedule="cosine",
    ),
}
PRESET_FILES = {
    "imagenet256-uncond": "256x256_diffusion_uncond.pt",
    "imagenet256-cond": "256x256_diffusion.pt",
    "imagenet128-cond": "128x128_diffusion.pt",
    "imagenet64-cond": "64x64_diffusion.pt",
}


def preset(name: str) -> ADMConfig:
    """The flags of a released checkpoint by preset name."""
    if name not in PRESETS:
        raise ExplorerError(
            f"unknown preset '{name}'; choose from {', '.join(PRESETS)}."
            + suggest(name, list(PRESETS))
        )
    return PRESETS[name]
