"""Stable Diffusion XL's conditioning, built as diffusers' `StableDiffusionXLPipeline` builds it.

- Prompt: the same text goes through both tokenizers (each padded to its own max length) and
  both CLIP text encoders; their penultimate hidden states `(1, L, D1)` and `(1, L, D2)` are
  concatenated to `(1, L, D1 + D2)` for cross-attention, and the pooled, projected embedding
  `(1, P)` of `text_encoder_2` (a `CLIPTextModelWithProjection`) is the added text embedding.
- `force_zeros_for_empty_prompt` only zeroes the negative (unconditional) branch of
  classifier-free guidance; the explorer makes the conditional call alone, so the empty prompt
  is encoded like any prompt (as the pipeline encodes its `prompt`), never zeroed.
- Added time ids `(1, 6)`: original size (h, w), crop top-left (0, 0), target size (h, w),
  all the side in pixels of the images the explorer feeds (square).

Loading the components is `latent.sdxl_adapter`'s work; this module only computes.
"""

from __future__ import annotations

import torch

from explorer.errors import ExplorerError
from explorer.models.families.base import Condition, token_ids

FAMILY = "sdxl"
TIME_IDS = 6  # original size (2), crop top-left (2), target size (2); the refiner's differ


def is_sdxl(config) -> bool:
    """True for a `UNet2DConditionModel` config with SDXL's added text-and-time embedding."""
    get = config.get if isinstance(config, dict) else lambda k: getattr(config, k, None)
    return get("addition_embed_type") == "text_time"


@torch.inference_mode()
def encode_prompt(prompt: str, tokenizers, encoders) -> tuple[torch.Tensor, torch.Tensor]:
    """`(1, L, D1 + D2)` penultimate hidden states of both encoders, concatenated, and the
    `(1, P)` pooled text embedding of the second (`text_embeds` of its projection)."""
    states, pooled = [], None
    for tok, enc in zip(tokenizers, encoders, strict=True):
        out = enc.eval()(token_ids(tok, prompt)[0], output_hidden_states=True)
        states.append(out.hidden_states[-2].float())
        pooled = getattr(out, "text_embeds", None)
    if pooled is None:
        raise ExplorerError(
            "text_encoder_2 gives no pooled text embedding; SDXL's second text encoder is a "
            "CLIPTextModelWithProjection"
        )
    return torch.cat(states, dim=-1).clone(), pooled.float().clone()


def time_ids(side: int) -> torch.Tensor:
    """`(1, 6)` SDXL time ids of a square `side`-pixel image, uncropped and unresized."""
    return torch.tensor([[side, side, 0, 0, side, side]], dtype=torch.float32)


def check_widths(unet, embedding: torch.Tensor, pooled: torch.Tensor) -> None:
    """Refuse text encoders that do not fit the U-Net: the concatenated hidden states must be
    `cross_attention_dim` wide, and pooled + time ids must fill `add_embedding`'s input."""
    cfg = unet.config
    cross = cfg.cross_attention_dim
    cross = cross[0] if isinstance(cross, list | tuple) else cross
    if embedding.shape[-1] != int(cross):
        raise ExplorerError(
            f"the two text encoders give {embedding.shape[-1]} features per token but the U-Net's "
            f"cross_attention_dim is {cross}; the folder's text encoders are not this U-Net's"
        )
    want = int(unet.add_embedding.linear_1.in_features)
    got = pooled.shape[-1] + TIME_IDS * int(cfg.addition_time_embed_dim)
    if got != want:
        raise ExplorerError(
            f"the U-Net's added embedding takes {want} values, but the pooled text embedding "
            f"({pooled.shape[-1]}) and {TIME_IDS} time ids ({cfg.addition_time_embed_dim} each) "
            f"give {got}; only the SDXL base layout (no aesthetic score) is supported"
        )


class TextTime(Condition):
    """SDXL's conditioning for every image: the prompt's `(1, L, D)` hidden states, its `(1, P)`
    pooled embedding and the `(1, 6)` time ids."""

    def __init__(
        self, prompt: str, embedding: torch.Tensor, pooled: torch.Tensor, ids: torch.Tensor
    ):
        self.prompt, self.embedding, self.pooled, self.ids = prompt, embedding, pooled, ids
        self.tag = "prompt:" + prompt  # the family ("sdxl") keeps these keys apart from SD's

    def kwargs(self, batch: int, labels, device) -> dict:
        return {
            "encoder_hidden_states": self.embedding.to(device).expand(batch, -1, -1),
            "added_cond_kwargs": {
                "text_embeds": self.pooled.to(device).expand(batch, -1),
                "time_ids": self.ids.to(device).expand(batch, -1),
            },
        }

    def describe(self) -> str:
        text = (
            "the empty prompt (as in DIFT)"
            if not self.prompt
            else f"the fixed prompt {self.prompt!r}"
        )
        h, w = int(self.ids[0, 0]), int(self.ids[0, 1])
        return (
            f"{text} through both CLIP text encoders, its pooled embedding, and time ids "
            f"(original {h}×{w}, crop (0, 0), target {h}×{w})"
        )

    def to(self, device) -> TextTime:
        self.embedding = self.embedding.to(device)
        self.pooled = self.pooled.to(device)
        self.ids = self.ids.to(device)
        return self
