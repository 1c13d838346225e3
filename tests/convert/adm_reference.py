"""A small, independent reference of guided-diffusion's ADM `UNetModel` forward pass, for the tests.

Written from the architecture's description (Dhariwal & Nichol 2021, "Diffusion Models Beat GANs",
and the structure of guided-diffusion's `unet.py`), not from the converter. Module and parameter
names reproduce ADM's state-dict keys (`input_blocks.3.0.in_layers.2.weight`, ...), so
`state_dict()` is what `torch.save(model.state_dict())` in guided-diffusion would write.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


class GroupNorm32(nn.GroupNorm):
    """32-group GroupNorm computed in float32 and cast back to the input dtype."""

    def __init__(self, channels: int):
        super().__init__(32, channels)  # eps 1e-5

    def forward(self, x):
        return super().forward(x.float()).type(x.dtype)


def sinusoidal(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """[B] timesteps -> [B, dim] embedding: cos of all frequencies, then sin; freq_i = P^(-i/half)."""
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half
    )
    ang = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(ang), torch.sin(ang)], dim=1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


class ResBlock(nn.Module):
    """GN-SiLU-conv, time embedding (added, or as GN scale/shift), GN-SiLU-drop-conv(zero), + skip.

    `up`/`down`: nearest x2 / 2x2 average pool applied to both paths between in_layers' SiLU and conv.
    """

    def __init__(
        self,
        ch: int,
        emb_ch: int,
        out_ch: int,
        scale_shift: bool,
        up: bool = False,
        down: bool = False,
    ):
        super().__init__()
        self.scale_shift, self.up, self.down = scale_shift, up, down
        self.in_layers = nn.Sequential(
            GroupNorm32(ch), nn.SiLU(), nn.Conv2d(ch, out_ch, 3, padding=1)
        )
        self.emb_layers = nn.Sequential(
            nn.SiLU(), nn.Linear(emb_ch, 2 * out_ch if scale_shift else out_ch)
        )
        self.out_layers = nn.Sequential(
            GroupNorm32(out_ch), nn.SiLU(), nn.Dropout(0.0), nn.Conv2d(out_ch, out_ch, 3, padding=1)
        )
        nn.init.zeros_(self.out_layers[3].weight)
        nn.init.zeros_(self.out_layers[3].bias)
        self.skip_connection = nn.Identity() if out_ch == ch else nn.Conv2d(ch, out_ch, 1)

    def _resample(self, x):
        if self.up:
            return F.interpolate(x, scale_factor=2, mode="nearest")
        if self.down:
            return F.avg_pool2d(x, 2, 2)
        return x

    def forward(self, x, emb):
        h = self.in_layers[1](self.in_layers[0](x))
        h = self.in_layers[2](self._resample(h))
        x = self._resample(x)
        e = self.emb_layers(emb)[:, :, None, None]
        if self.scale_shift:
            scale, shift = e.chunk(2, dim=1)
            h = self.out_layers[0](h) * (1 + scale) + shift
            h = self.out_layers[3](self.out_layers[2](self.out_layers[1](h)))
        else:
            h = self.out_layers(h + e)
        return self.skip_connection(x) + h


class AttentionBlock(nn.Module):
    """Self-attention over all positions with a fused 1x1 qkv conv and a zero-initialised projection.

    Legacy order: qkv channels are grouped per head as [q_h, k_h, v_h];
    new order: [q (all heads), k (all heads), v (all heads)]. Logits are q.k / sqrt(head_dim).
    """

    def __init__(self, ch: int, heads: int, new_order: bool):
        super().__init__()
        self.heads, self.new_order = heads, new_order
        self.norm = GroupNorm32(ch)
        self.qkv = nn.Conv1d(ch, 3 * ch, 1)
        self.proj_out = nn.Conv1d(ch, ch, 1)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, x, emb=None):
        b, c, hgt, wid = x.shape
        flat = x.reshape(b, c, hgt * wid)
        qkv = self.qkv(self.norm(flat))  # [B, 3C, L]
        d = c // self.heads
        if self.new_order:
            q, k, v = (part.reshape(b, self.heads, d, -1) for part in qkv.chunk(3, dim=1))
        else:
            q, k, v = qkv.reshape(b, self.heads, 3 * d, -1).split(d, dim=2)
        logits = torch.einsum("bhdt,bhds->bhts", q, k) / math.sqrt(d)
        att = torch.softmax(logits.float(), dim=-1).type(q.dtype)
        a = torch.einsum("bhts,bhds->bhdt", att, v).reshape(b, c, -1)
        return (flat + self.proj_out(a)).reshape(b, c, hgt, wid)


class Downsample(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.op = nn.Conv2d(ch, ch, 3, stride=2, padding=1)

    def forward(self, x, emb=None):
        return self.op(x)


class Upsample(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x, emb=None):
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class EmbSequential(nn.Sequential):
    """A sequence whose ResBlocks also receive the time embedding."""

    def forward(self, x, emb):
        for layer in self:
            x = (
                layer(x, emb)
                if isinstance(layer, ResBlock | AttentionBlock | Downsample | Upsample)
                else layer(x)
            )
        return x


class ADMReference(nn.Module):
    """ADM's U-Net. `attention_ds`: downsampling factors with attention (image_size // resolution).

    forward(x [B,3,H,W], t [B], y [B] or None) -> [B, out_channels, H, W]; with `record` it also
    fills `self.record` with each input block's, the middle block's and each output block's output.
    """

    def __init__(
        self,
        model_channels: int,
        channel_mult,
        num_res_blocks: int,
        attention_ds,
        *,
        out_channels: int = 6,
        num_heads: int = 1,
        num_head_channels: int = -1,
        new_order: bool = False,
        scale_shift: bool = True,
        resblock_updown: bool = True,
        num_classes: int | None = None,
    ):
        super().__init__()
        mc = model_channels
        emb_ch = 4 * mc
        self.model_channels = mc

        def heads(ch):
            return ch // num_head_channels if num_head_channels != -1 else num_heads

        def attn(ch):
            return AttentionBlock(ch, heads(ch), new_order)

        self.time_embed = nn.Sequential(nn.Linear(mc, emb_ch), nn.SiLU(), nn.Linear(emb_ch, emb_ch))
        if num_classes is not None:
            self.label_emb = nn.Embedding(num_classes, emb_ch)
        self.num_classes = num_classes
        ch = int(channel_mult[0] * mc)
        self.input_blocks = nn.ModuleList([EmbSequential(nn.Conv2d(3, ch, 3, padding=1))])
        skips, ds = [ch], 1
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers = [ResBlock(ch, emb_ch, int(mult * mc), scale_shift)]
                ch = int(mult * mc)
                if ds in attention_ds:
                    layers.append(attn(ch))
                self.input_blocks.append(EmbSequential(*layers))
                skips.append(ch)
            if level != len(channel_mult) - 1:
                down = (
                    ResBlock(ch, emb_ch, ch, scale_shift, down=True)
                    if resblock_updown
                    else Downsample(ch)
                )
                self.input_blocks.append(EmbSequential(down))
                skips.append(ch)
                ds *= 2
        self.middle_block = EmbSequential(
            ResBlock(ch, emb_ch, ch, scale_shift), attn(ch), ResBlock(ch, emb_ch, ch, scale_shift)
        )
        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for i in range(num_res_blocks + 1):
                layers = [ResBlock(ch + skips.pop(), emb_ch, int(mult * mc), scale_shift)]
                ch = int(mult * mc)
                if ds in attention_ds:
                    layers.append(attn(ch))
                if level and i == num_res_blocks:
                    layers.append(
                        ResBlock(ch, emb_ch, ch, scale_shift, up=True)
                        if resblock_updown
                        else Upsample(ch)
                    )
                    ds //= 2
                self.output_blocks.append(EmbSequential(*layers))
        self.out = nn.Sequential(
            GroupNorm32(ch), nn.SiLU(), nn.Conv2d(ch, out_channels, 3, padding=1)
        )
        nn.init.zeros_(self.out[2].weight)
        nn.init.zeros_(self.out[2].bias)
        self.record: dict[str, torch.Tensor] | None = None

    def forward(self, x, t, y=None, record: bool = False):
        emb = self.time_embed(sinusoidal(t, self.model_channels))
        if self.num_classes is not None:
            emb = emb + self.label_emb(y)
        rec = {} if record else None
        hs, h = [], x
        for i, block in enumerate(self.input_blocks):
            h = block(h, emb)
            hs.append(h)
            if rec is not None:
                rec[f"input_blocks.{i}"] = h
        h = self.middle_block(h, emb)
        if rec is not None:
            rec["middle_block"] = h
        for j, block in enumerate(self.output_blocks):
            h = block(torch.cat([h, hs.pop()], dim=1), emb)
            if rec is not None:
                rec[f"output_blocks.{j}"] = h
        self.record = rec
        return self.out(h)


def randomise(model: nn.Module, seed: int = 0) -> None:
    """Random non-zero values in every parameter, zero-initialised convolutions included.

    Weights ~ N(0, 1/fan_in), norm gains ~ 1 + N(0, 0.1^2), biases ~ N(0, 0.1^2): activations stay O(1).
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1 and name.endswith("weight"):  # GroupNorm gain
                vals = 1 + 0.1 * torch.randn(p.shape, generator=g)
            elif p.dim() == 1:
                vals = 0.1 * torch.randn(p.shape, generator=g)
            elif "label_emb" in name:
                vals = torch.randn(p.shape, generator=g)
            else:
                vals = torch.randn(p.shape, generator=g) / math.sqrt(p[0].numel())
            p.copy_(vals)
