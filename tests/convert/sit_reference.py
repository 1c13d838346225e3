"""A small, independent reference of SiT's forward pass (and REPA's variant), for the tests.

Written from the architecture (Ma et al. 2024, "SiT"; Peebles & Xie 2023, "DiT": adaLN-Zero
blocks, sin-cos positions, GLIDE timestep embedding; Yu et al. 2025, "REPA": projector heads on
one block's tokens), not from the converter or diffusers. Module and parameter names reproduce
the released code's state-dict keys (`blocks.3.attn.qkv.weight`, `t_embedder.mlp.0.bias`, ...),
so `state_dict()` is what SiT's and REPA's `torch.save` write. Attention is written out
(softmax(q k^T / sqrt(d)) v), the sin-cos table in float64 as SiT builds it.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


def timestep_embedding(t: torch.Tensor, dim: int = 256, max_period: float = 10000.0):
    """[B] times (fractional) -> [B, dim]: cos of every frequency, then sin; f_i = P^(-i/half)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
    ang = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(ang), torch.sin(ang)], dim=-1)


def sincos_table(dim: int, grid: int) -> torch.Tensor:
    """[grid*grid, dim] fixed positions, row-major: the first half of the channels encodes the
    column, the second the row, each [sin(p w_k), cos(p w_k)] with w_k = 10000^(-k / (dim/4))
    (computed in float64, as SiT's MAE-derived table)."""

    def one_axis(d: int, pos: np.ndarray) -> np.ndarray:
        w = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
        ang = np.outer(pos.reshape(-1), w)
        return np.concatenate([np.sin(ang), np.cos(ang)], axis=1)

    cols, rows = np.meshgrid(np.arange(grid, dtype=np.float32), np.arange(grid, dtype=np.float32))
    table = np.concatenate([one_axis(dim // 2, cols), one_axis(dim // 2, rows)], axis=1)
    return torch.from_numpy(table).float()


def modulate(x, shift, scale):
    return x * (1 + scale[:, None]) + shift[:, None]


class Attention(nn.Module):
    """Multi-head self-attention with one fused qkv projection: rows [q | k | v], head-major."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        weights = (q @ k.transpose(-2, -1) / math.sqrt(d // self.heads)).softmax(dim=-1)
        return self.proj((weights @ v).transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class Block(nn.Module):
    """adaLN-Zero: (shift, scale, gate) for attention and for the MLP from SiLU(c)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.attn = Attention(dim, heads)
        self.mlp = Mlp(dim, 4 * dim)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def forward(self, x, c):
        shift1, scale1, gate1, shift2, scale2, gate2 = self.adaLN_modulation(c).chunk(6, dim=1)
        h = modulate(F.layer_norm(x, x.shape[-1:], eps=1e-6), shift1, scale1)
        x = x + gate1[:, None] * self.attn(h)
        h = modulate(F.layer_norm(x, x.shape[-1:], eps=1e-6), shift2, scale2)
        return x + gate2[:, None] * self.mlp(h)


class FinalLayer(nn.Module):
    def __init__(self, dim: int, patch: int, out_channels: int):
        super().__init__()
        self.linear = nn.Linear(dim, patch * patch * out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))

    def forward(self, x, c):
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(modulate(F.layer_norm(x, x.shape[-1:], eps=1e-6), shift, scale))


class TimestepEmbedder(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(256, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t):
        return self.mlp(timestep_embedding(t))


class LabelEmbedder(nn.Module):
    """num_classes rows plus the null class (index num_classes) that class dropout trains."""

    def __init__(self, num_classes: int, dim: int):
        super().__init__()
        self.embedding_table = nn.Embedding(num_classes + 1, dim)

    def forward(self, y):
        return self.embedding_table(y)


class SiTReference(nn.Module):
    """SiT (learn_sigma: 2x the input channels out, `forward` returns the first half as SiT's
    does; `forward_full` all of them) or REPA's SiT (`projectors`, input channels out).

    `record=True` keeps every block's output tokens `(B, N, D)` in `self.record["blocks.i"]`.
    """

    def __init__(
        self,
        input_size: int = 8,
        patch: int = 2,
        in_channels: int = 4,
        hidden: int = 64,
        depth: int = 3,
        heads: int = 4,
        num_classes: int = 10,
        learn_sigma: bool = True,
        projector_dims: tuple[int, ...] = (),  # REPA: one projector per teacher encoder
        projector_hidden: int = 32,
        encoder_depth: int = 2,
    ):
        super().__init__()
        self.patch, self.in_channels = patch, in_channels
        self.out_channels = 2 * in_channels if learn_sigma else in_channels
        self.learn_sigma = learn_sigma
        self.encoder_depth = encoder_depth
        self.x_embedder = nn.Module()
        self.x_embedder.proj = nn.Conv2d(in_channels, hidden, patch, stride=patch)
        self.t_embedder = TimestepEmbedder(hidden)
        self.y_embedder = LabelEmbedder(num_classes, hidden)
        grid = input_size // patch
        self.pos_embed = nn.Parameter(sincos_table(hidden, grid)[None], requires_grad=False)
        self.blocks = nn.ModuleList(Block(hidden, heads) for _ in range(depth))
        if projector_dims:
            self.projectors = nn.ModuleList(
                nn.Sequential(
                    nn.Linear(hidden, projector_hidden),
                    nn.SiLU(),
                    nn.Linear(projector_hidden, projector_hidden),
                    nn.SiLU(),
                    nn.Linear(projector_hidden, z),
                )
                for z in projector_dims
            )
        self.final_layer = FinalLayer(hidden, patch, self.out_channels)
        self.record: dict[str, torch.Tensor] = {}

    def forward_full(self, x, t, y, record: bool = False):
        """[B, C, H, W], [B] times, [B] labels -> [B, out_channels, H, W] (all channels)."""
        b, _, h, w = x.shape
        tokens = self.x_embedder.proj(x).flatten(2).transpose(1, 2) + self.pos_embed
        c = self.t_embedder(t) + self.y_embedder(y)
        for i, block in enumerate(self.blocks):
            tokens = block(tokens, c)
            if record:
                self.record[f"blocks.{i}"] = tokens.detach().clone()
        out = self.final_layer(tokens, c)  # [B, N, p*p*C]
        p, gh, gw = self.patch, h // self.patch, w // self.patch
        out = out.reshape(b, gh, gw, p, p, self.out_channels).permute(0, 5, 1, 3, 2, 4)
        return out.reshape(b, self.out_channels, h, w)

    def forward(self, x, t, y, record: bool = False):
        out = self.forward_full(x, t, y, record)
        return out[:, : self.in_channels] if self.learn_sigma else out

    def projections(self, x, t, y) -> list[torch.Tensor]:
        """REPA's projector outputs on block `encoder_depth`'s tokens (training only)."""
        self.forward_full(x, t, y, record=True)
        tokens = self.record[f"blocks.{self.encoder_depth - 1}"]
        return [proj(tokens) for proj in self.projectors]


def randomise(model: nn.Module, seed: int = 0) -> nn.Module:
    """Every trainable parameter random and non-zero (SiT zero-initialises adaLN and the final
    layer; those must be live for the test to see them); the sin-cos table stays fixed."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name == "pos_embed":
                continue
            fan_in = p[0].numel() if p.dim() > 1 else p.numel()
            r = torch.randn(p.shape, generator=g) / math.sqrt(fan_in)
            p.copy_(r.sign() * r.abs().clamp_min(1e-3))
    return model
