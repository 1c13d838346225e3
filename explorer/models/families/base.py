"""The adapter: what one model family needs for extraction, behind one small interface.

Extraction, the store, the probes and the app see only this: `encode` maps preprocessed
images `(B, C, H, W)` in [-1, 1] to the model's input space, `net_kwargs` gives the
conditioning of the call `net(x_t, t, **kwargs)`, `key_parts` what goes into feature keys.
A family module (`pixel_unet`, `class_cond`, `latent`, `dit`, `sd3`, `flux`, `pixart`) builds one
from a folder; `net` may be a wrapper presenting that call (`token_net`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

PIXEL_UNET = "pixel-unet"


class Condition:
    """Conditioning of the denoiser call; `tag` names it in feature keys and model names."""

    tag = "none"
    leaks_label = False  # True when features see each image's own label

    def kwargs(self, batch: int, labels: np.ndarray | None, device: torch.device) -> dict:
        return {}

    def describe(self) -> str:
        return "none (unconditional)"

    def to(self, device) -> Condition:
        return self


def token_ids(tok, prompt: str, length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """`(1, L)` token ids and attention mask of `prompt`, padded and truncated to `length` (the
    tokenizer's `model_max_length` by default), as the diffusers pipelines tokenize."""
    out = tok(
        prompt,
        padding="max_length",
        max_length=length or tok.model_max_length,
        truncation=True,
        return_tensors="pt",
    )
    return out.input_ids, out.attention_mask


@dataclass
class Adapter:
    """One loaded model of a family: the denoiser `net`, its encoder (None: pixels) and conditioning."""

    family: str  # pixel-unet | class-cond-unet | latent-unet | stable-diffusion | dit | sit | sd3 | flux | pixart ...
    net: torch.nn.Module
    image_size: int  # side of the square images fed to `encode`
    image_channels: int
    encoder: object | None = (
        None  # explorer.models.families.latent.LatentEncoder, or None for pixels
    )
    condition: Condition = field(default_factory=Condition)
    transformer: bool = (
        False  # blocks are transformer blocks (the UI says "block", not "U-Net block")
    )
    loaded_from: str = ""  # how it was loaded, in words (Data & model page)
    # its own `Preprocess` (a reference encoder's normalisation); None: pixels in [-1, 1]
    preprocess: object | None = None
    noised: bool = True  # False: a reference encoder reads x_0 at its one level t=0 (no timestep)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """`(C, H, W)` of the net's input: pixels, or latents."""
        cfg = self.net.config
        s = cfg.sample_size if isinstance(cfg.sample_size, int) else cfg.sample_size[0]
        return int(cfg.in_channels), int(s), int(s)

    @property
    def space(self) -> str:
        return "pixels" if self.encoder is None else "latents"

    @property
    def leaks_label(self) -> bool:
        return self.condition.leaks_label

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """`(B, C, H, W)` images in [-1, 1] -> `(B, *input_shape)` on the net's device."""
        device = next(self.net.parameters()).device
        if self.encoder is None:
            return x.to(device)
        return self.encoder(x.to(device))

    def net_kwargs(self, batch: int, labels: np.ndarray | None = None) -> dict:
        """Keyword arguments of the denoiser call for `batch` images (`labels`: their dataset labels)."""
        return self.condition.kwargs(batch, labels, next(self.net.parameters()).device)

    def key_parts(self) -> dict:
        """Extra feature-key parts: none for the plain unconditional pixel U-Net (old keys stay valid)."""
        if self.family == PIXEL_UNET and self.condition.tag == "none":
            return {}
        return {"family": self.family, "cond": self.condition.tag}

    def to(self, device) -> Adapter:
        self.net.to(device)
        if self.encoder is not None:
            self.encoder.to(device)
        self.condition = self.condition.to(device)
        return self

    def describe(self) -> dict[str, str]:
        """Family, input space, conditioning, in words (for the Data & model page and `explorer layers`)."""
        c, h, w = self.input_shape
        space = (
            f"pixels {c}×{h}×{w}"
            if self.encoder is None
            else (
                f"latents {c}×{h}×{w} ({self.encoder.describe()}) from {self.image_channels}×{self.image_size}"
                f"×{self.image_size} images"
            )
        )
        return {
            "family": self.family,
            "input space": space,
            "conditioning": self.condition.describe(),
            "loaded": self.loaded_from,
        }
