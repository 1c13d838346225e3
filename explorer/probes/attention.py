"""Head `attention-small` (alias `attention`): a small CPU-friendly transformer head, NOT the paper's.

It reads maps of at most 8x8 positions: the explorer feeds it features average-pooled to
k x k (pool 2, 4 or 8), and `pool_tokens` shrinks larger unpooled maps first. LayerNorm
over channels (per position), a 1x1 conv to `dim` (128) channels, the h*w positions as
tokens after a CLS token, a learned position embedding, `depth` pre-norm
`nn.TransformerEncoderLayer`s (qkv with bias, optional dropout), a final LayerNorm and a
linear layer on the CLS output; AdamW with a cosine schedule and early stopping.

It differs from the paper's head in width (128 vs 1024), token count (<= 64 vs up to 256),
normalisation (per position vs over the whole [C, H, W] map), the position embedding, qkv
bias, the final norm and the optimiser. The faithful head is `attention-paper`
(`explorer.probes.paper_heads`).

`MapProbe` (checks, pooling, `map_shape_`) is shared with the paper's map heads.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from explorer.errors import ExplorerError
from explorer.probes.base import TorchProbe, early_stopping_defaults, estimator_init, scorer

MAX_SIDE = 8
# The training arguments of the small transformer heads (`attention-small`, `fusion`).
TRANSFORMER_TRAINING = early_stopping_defaults(30, 128, 5e-4, 0.05, 8)


def pool_tokens(x: np.ndarray, max_side: int = MAX_SIDE) -> np.ndarray:
    """Average-pool maps `(N, C, H, W)` to at most `max_side` per side, same dtype.

    Maps already that small come back unchanged; larger ones go through adaptive average
    pooling to `(min(H, max_side), min(W, max_side))`, in float32, in batches.
    """
    x = np.asarray(x)
    if x.ndim != 4:
        raise ExplorerError(f"feature maps must be (N, C, H, W), got shape {x.shape}")
    h, w = x.shape[2:]
    if h <= max_side and w <= max_side:
        return x
    size = (min(h, max_side), min(w, max_side))
    out = np.empty((*x.shape[:2], *size), dtype=x.dtype)
    for i in range(0, len(x), 256):
        chunk = torch.from_numpy(np.ascontiguousarray(x[i : i + 256], dtype=np.float32))
        out[i : i + 256] = F.adaptive_avg_pool2d(chunk, size).numpy().astype(x.dtype)
    return out


class AttentionHead(nn.Module):
    """`(N, C, h, w)` maps -> `(N, n_classes)` logits through a CLS-token transformer."""

    def __init__(
        self,
        in_channels: int,
        n_tokens: int,
        n_classes: int,
        *,
        dim: int = 128,
        depth: int = 2,
        heads: int = 8,
        mlp_ratio: int = 4,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if dim % heads:
            raise ExplorerError(f"dim ({dim}) must be a multiple of heads ({heads})")
        self.norm_in = nn.LayerNorm(in_channels)
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=1)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, n_tokens + 1, dim) * 0.02)
        block = nn.TransformerEncoderLayer(
            dim,
            heads,
            dim_feedforward=mlp_ratio * dim,
            dropout=dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.blocks = nn.TransformerEncoder(block, depth, enable_nested_tensor=False)
        self.norm_out = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # 1. LayerNorm over channels at every position, then the 1x1 conv.
        x = self.norm_in(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        tokens = self.proj(x).flatten(2).transpose(1, 2)  # (N, h*w, dim)
        # 2. CLS token first, learned positions, transformer blocks.
        cls = self.cls.expand(len(tokens), -1, -1)
        tokens = self.blocks(torch.cat([cls, tokens], 1) + self.pos)
        # 3. Classify the CLS output.
        return self.fc(self.norm_out(tokens[:, 0]))


class MapProbe(TorchProbe):
    """A `TorchProbe` on maps `(N, C, h, w)`, average-pooled to at most `MAX_SIDE` per side first.

    Subclasses set `NAME` (for messages) and define `_head(n_classes)`, the `nn.Module` for the
    maps' `map_shape_`. Learned besides: `map_shape_ (C, h, w)`.
    """

    NAME = "map"
    MAX_SIDE = MAX_SIDE

    def _check(self, X: np.ndarray, y: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
        X = np.asarray(X)
        if X.ndim != 4:
            raise ExplorerError(
                f"the {self.NAME} head takes maps (N, C, h, w), got shape {X.shape}"
            )
        X = pool_tokens(X, self.MAX_SIDE)
        if y is not None and np.asarray(y).shape != (X.shape[0],):
            raise ExplorerError(f"{X.shape[0]} maps but labels have shape {np.asarray(y).shape}")
        fitted = getattr(self, "map_shape_", None)
        if y is None and fitted is not None and X.shape[1:] != fitted:
            raise ExplorerError(f"maps are {X.shape[1:]} but the head was fitted on {fitted}")
        return X, y

    def _build(self, x: torch.Tensor, fit_idx: torch.Tensor, n_classes: int) -> nn.Module:
        self.map_shape_ = tuple(x.shape[1:])
        return self._head(n_classes)

    def _head(self, n_classes: int) -> nn.Module:
        raise NotImplementedError


class AttentionProbe(MapProbe):
    """The `attention-small` head as a scikit-learn-shaped estimator on maps `(N, C, h, w)`.

    Maps larger than 8 per side are average-pooled to 8 (`pool_tokens`) first.

    `fit` holds out a stratified `val_fraction` of train for early stopping (best epoch
    kept). Learned: `classes_`, `map_shape_`, `model_`, `best_epoch_`, `epochs_run_`, `val_top1_`.
    """

    NAME = "attention"
    __init__ = estimator_init(
        {"dim": 128, "depth": 2, "heads": 8, "dropout": 0.0, **TRANSFORMER_TRAINING}
    )

    def _head(self, n_classes: int) -> nn.Module:
        c, h, w = self.map_shape_
        return AttentionHead(
            c,
            h * w,
            n_classes,
            dim=self.dim,
            depth=self.depth,
            heads=self.heads,
            dropout=self.dropout,
        )


fit_attention = scorer(
    AttentionProbe, "attention-small", ("dim", "heads", "depth")
)  # the head `attention-small`
