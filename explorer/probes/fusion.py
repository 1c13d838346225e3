"""Head `fusion`: a transformer over the token set of several settings (after DifFormer).

Our compact take on the follow-up paper's idea (arXiv 2311.17921): each member map
`(N, C_i, h_i, w_i)` (pooled to at most 8x8) gives h_i*w_i tokens; LayerNorm over channels and
a linear projection per member bring them to a common width `dim`, plus a learned embedding
of their source (member i); a zero CLS token goes first; `depth` pre-norm ViT blocks; a
LayerNorm and a linear layer on the CLS output. AdamW, cosine schedule, early stopping.

Inputs are lists of member maps; a plain map `(N, C, h, w)` is a one-member set.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from explorer.errors import ExplorerError
from explorer.probes.attention import TRANSFORMER_TRAINING, pool_tokens
from explorer.probes.base import TorchProbe, estimator_init, scorer
from explorer.probes.paper_heads import ViTBlock

MAX_SIDE = 8


class FusionHead(nn.Module):
    """Packed rows `(N, sum C_i*h_i*w_i)` of member maps `shapes` -> `(N, n_classes)` logits."""

    def __init__(
        self,
        shapes: list[tuple[int, int, int]],
        n_classes: int,
        *,
        dim: int = 128,
        depth: int = 2,
        heads: int = 4,
    ) -> None:
        super().__init__()
        self.shapes = [tuple(s) for s in shapes]
        self.sizes = [c * h * w for c, h, w in self.shapes]
        self.norms = nn.ModuleList(nn.LayerNorm(c) for c, _, _ in self.shapes)
        self.projs = nn.ModuleList(nn.Linear(c, dim) for c, _, _ in self.shapes)
        self.source = nn.Parameter(torch.randn(len(shapes), dim) * 0.02)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.blocks = nn.ModuleList(ViTBlock(dim, heads) for _ in range(depth))
        self.norm_out = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = []
        for i, part in enumerate(x.split(self.sizes, dim=1)):
            c, h, w = self.shapes[i]
            t = part.reshape(len(x), c, h * w).transpose(1, 2)  # (N, h*w, C_i)
            tokens.append(self.projs[i](self.norms[i](t)) + self.source[i])
        z = torch.cat([self.cls.expand(len(x), -1, -1), *tokens], 1)
        for block in self.blocks:
            z = block(z)
        return self.fc(self.norm_out(z[:, 0]))


def pack_maps(maps) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
    """Member maps `[(N, C_i, h_i, w_i)]` (or one map) -> `(N, sum C_i*h'_i*w'_i)` rows, shapes.

    Maps larger than `MAX_SIDE` per side are average-pooled first; the dtype is kept when shared.
    """
    maps = [maps] if isinstance(maps, np.ndarray) else list(maps)
    if not maps or any(np.asarray(m).ndim != 4 for m in maps):
        raise ExplorerError(
            "the fusion head takes a list of maps (N, C, h, w), got shapes "
            f"{[np.asarray(m).shape for m in maps]}"
        )
    maps = [pool_tokens(np.asarray(m), MAX_SIDE) for m in maps]
    if len({len(m) for m in maps}) != 1:
        raise ExplorerError(f"fused maps have different image counts: {[len(m) for m in maps]}")
    return np.hstack([m.reshape(len(m), -1) for m in maps]), [tuple(m.shape[1:]) for m in maps]


class FusionProbe(TorchProbe):
    """`fusion` as a scikit-learn-shaped estimator on lists of member maps.

    Learned: `classes_`, `shapes_`, `model_`, `best_epoch_`, `epochs_run_`, `val_top1_`.
    """

    __init__ = estimator_init({"dim": 128, "depth": 2, "heads": 4, **TRANSFORMER_TRAINING})

    def _check(self, X, y):
        rows, shapes = pack_maps(X)
        fitted = getattr(self, "shapes_", None)
        if y is None and fitted is not None and shapes != fitted:
            raise ExplorerError(f"members are {shapes} but the head was fitted on {fitted}")
        self._shapes_seen = shapes
        if y is not None and np.asarray(y).shape != (len(rows),):
            raise ExplorerError(f"{len(rows)} images but labels have shape {np.asarray(y).shape}")
        return rows, y

    def _build(self, x: torch.Tensor, fit_idx: torch.Tensor, n_classes: int) -> nn.Module:
        self.shapes_ = self._shapes_seen
        return FusionHead(self.shapes_, n_classes, dim=self.dim, depth=self.depth, heads=self.heads)

    def _result_extra(self) -> dict:
        return {"members": len(self.shapes_)}


fit_fusion = scorer(FusionProbe, "fusion", ("dim",))  # the head `fusion`, on lists of member maps
