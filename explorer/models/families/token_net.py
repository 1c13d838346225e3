"""Text-conditioned diffusion transformers behind the denoiser interface `net(sample, timestep, **cond)`.

SD3's, FLUX's and PixArt's transformers take their inputs by other names, in other shapes
(FLUX: packed 2x2 latent tokens and position ids). A `TokenNet` wraps one so extraction, the
catalogue, FLOP counting and `torch.compile` see what they see for any denoiser:

- `config`: `sample_size` (latent side), `in_channels` (latent channels), `patch_size` (latents
  per token side), what `models.layers` reads, and the transformer's own config to rebuild it;
- `probe_points()`: one point per transformer block in forward order, named by its path in the
  transformer (`transformer_blocks.3`, FLUX's `single_transformer_blocks.0`), hooked on the
  wrapped module; kind `joint` for blocks that return `(text tokens, image tokens)`
  (`models.layers.feature_map` reads the image tokens), `transformer` for image-token blocks;
- `probe_kwargs(batch, device)`: placeholder conditioning for shape-probing and FLOP-counting
  passes, as many text tokens as the model is conditioned with (`config.text_tokens`), so
  `models.layers.layer_flops` counts the joint attention over them;
- `forward(sample (B, C, H, W), timestep (B,), **conditioning)`.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch

JOINT = "joint"  # a block returning (text tokens, image tokens)


class TokenNet(torch.nn.Module):
    """One wrapped transformer; subclasses say how it is called."""

    block_lists: tuple[tuple[str, str], ...] = (("transformer_blocks", "transformer"),)

    def __init__(self, transformer: torch.nn.Module, config: SimpleNamespace):
        super().__init__()
        self.transformer = transformer
        self.config = config

    @classmethod
    def wrap(cls, transformer: torch.nn.Module, **extra) -> TokenNet:
        cfg = transformer.config
        return cls(transformer, cls.net_config(dict(cfg), type(transformer), **extra))

    @classmethod
    def net_config(cls, cfg: dict, net_class, **extra) -> SimpleNamespace:
        """What the catalogue reads, from the transformer's config (`extra`: family settings)."""
        return SimpleNamespace(
            sample_size=int(cfg["sample_size"]),
            in_channels=int(cfg["in_channels"]),
            patch_size=int(cfg["patch_size"]),
            net_class=net_class,
            net_config=cfg,
            **({"text_tokens": 1} | extra),
        )

    @classmethod
    def from_config(cls, config: SimpleNamespace) -> TokenNet:
        """The same architecture with fresh weights (on the meta device, to count FLOPs)."""
        return cls(config.net_class.from_config(config.net_config), config)

    def probe_points(self) -> list[tuple[str, str, str, str]]:
        out = []
        for attr, kind in self.block_lists:
            for i in range(len(getattr(self.transformer, attr))):
                out.append((f"{attr}.{i}", f"transformer.{attr}.{i}", "block", kind))
        return out

    def probe_kwargs(self, batch: int, device) -> dict:
        raise NotImplementedError

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, **cond):
        raise NotImplementedError


class SD3Net(TokenNet):
    """`SD3Transformer2DModel`: joint attention; every block returns (text, image) tokens (the
    last one None for text). Called with the sequence and pooled text embeddings."""

    block_lists = (("transformer_blocks", JOINT),)

    def probe_kwargs(self, batch: int, device) -> dict:
        cfg = self.config.net_config
        return {
            "encoder_hidden_states": torch.zeros(
                batch, self.config.text_tokens, int(cfg["joint_attention_dim"]), device=device
            ),
            "pooled_projections": torch.zeros(
                batch, int(cfg["pooled_projection_dim"]), device=device
            ),
        }

    def forward(self, sample, timestep, *, encoder_hidden_states, pooled_projections):
        return self.transformer(
            hidden_states=sample,
            encoder_hidden_states=encoder_hidden_states,
            pooled_projections=pooled_projections,
            timestep=timestep,
        )


class FluxNet(TokenNet):
    """`FluxTransformer2DModel`: latents `(B, C, H, W)` packed into 2x2 tokens `(B, HW/4, 4C)`
    with position ids (0, row, col), as `FluxPipeline` does; 19 dual-stream then 38
    single-stream blocks (full size), each returning (text, image) tokens; the guidance
    embedding (guidance-distilled models) gets the fixed `config.guidance`."""

    block_lists = (("transformer_blocks", JOINT), ("single_transformer_blocks", JOINT))

    @classmethod
    def net_config(cls, cfg: dict, net_class, **extra) -> SimpleNamespace:
        side = int(extra.pop("sample_size"))  # latent side: FLUX's config has none
        return SimpleNamespace(
            sample_size=side,
            in_channels=int(cfg["in_channels"]) // 4,
            patch_size=2,
            net_class=net_class,
            net_config=cfg,
            **({"text_tokens": 1} | extra),
        )

    probe_kwargs = SD3Net.probe_kwargs  # the same inputs: text tokens and a pooled embedding

    def forward(self, sample, timestep, *, encoder_hidden_states, pooled_projections):
        tokens, img_ids = pack(sample)
        txt_ids = torch.zeros(encoder_hidden_states.shape[1], 3, device=sample.device)
        guidance = None
        if self.config.net_config.get("guidance_embeds"):
            guidance = torch.full((len(sample),), float(self.config.guidance), device=sample.device)
        return self.transformer(
            hidden_states=tokens,
            encoder_hidden_states=encoder_hidden_states,
            pooled_projections=pooled_projections,
            timestep=timestep,
            img_ids=img_ids,
            txt_ids=txt_ids.to(img_ids.dtype),
            guidance=guidance,
        )


def pack(latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """FLUX's packing: `(B, C, H, W)` -> tokens `(B, (H/2)(W/2), 4C)` (row-major 2x2 patches, each
    `C x 2 x 2` flattened channel first) and their ids `((H/2)(W/2), 3)` = (0, row, col)."""
    b, c, h, w = latents.shape
    x = latents.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    tokens = x.reshape(b, (h // 2) * (w // 2), c * 4)
    rows = torch.arange(h // 2, device=latents.device)
    cols = torch.arange(w // 2, device=latents.device)
    ids = torch.zeros(h // 2, w // 2, 3, device=latents.device)
    ids[..., 1] = rows[:, None]
    ids[..., 2] = cols[None, :]
    return tokens, ids.reshape(-1, 3)


class PixArtNet(TokenNet):
    """`PixArtTransformer2DModel`: cross-attention to T5 tokens (with their mask); PixArt-α at
    1024 px also takes the image's resolution and aspect ratio (`added_cond_kwargs`)."""

    def probe_kwargs(self, batch: int, device) -> dict:
        cfg = self.config.net_config
        return {
            "encoder_hidden_states": torch.zeros(
                batch, self.config.text_tokens, int(cfg["caption_channels"]), device=device
            ),
            "encoder_attention_mask": torch.ones(batch, self.config.text_tokens, device=device),
        }

    def forward(self, sample, timestep, *, encoder_hidden_states, encoder_attention_mask):
        added = {"resolution": None, "aspect_ratio": None}
        if self.transformer.use_additional_conditions:
            side = float(self.config.image_size)
            added = {
                "resolution": torch.full((len(sample), 2), side, device=sample.device),
                "aspect_ratio": torch.ones(len(sample), 1, device=sample.device),
            }
        return self.transformer(
            sample,
            encoder_hidden_states=encoder_hidden_states,
            timestep=timestep,
            added_cond_kwargs=added,
            encoder_attention_mask=encoder_attention_mask,
        )
