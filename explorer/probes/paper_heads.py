"""The paper's attention head (`attention-paper`) and a small convolutional head (`cnn`).

`attention-paper` follows the released reference code (docs/method.md, "Where the explorer
differs from the paper's released protocol"): the map is pooled to at most 16x16 (block 24
of ADM-256 keeps all 256 tokens);
LayerNorm over the whole `[C, H, W]` map; a 1x1 conv to `dim` = 1024 channels; a
zero-initialised CLS token before the H*W tokens, no position embedding; `depth` = 2 pre-norm
ViT blocks (8 heads, MLP ratio 4, GELU, qkv without bias); a linear layer on the CLS output,
no final norm. Trained with plain SGD at lr 0.05, lr x0.1 every 7 epochs, 28 epochs.

`cnn`: the released code has no convolutional classifier (its conv units are
Conv-BatchNorm-ReLU feedback layers), so this is our small head built from that unit:
2 x (3x3 conv - BatchNorm - ReLU) at `hidden` channels, global average pooling, a linear
layer; trained like `attention-paper`.

Both take maps `(N, C, h, w)`; maps larger than `MAX_SIDE` per side are average-pooled first.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from explorer.errors import ExplorerError
from explorer.probes.attention import MapProbe
from explorer.probes.base import estimator_init, scorer

MAX_SIDE = 16
# The released code's training arguments: plain SGD, lr x`gamma` every `step` epochs, no
# validation split (the last epoch is kept).
PAPER_TRAINING = {
    "epochs": 28,
    "batch_size": 64,
    "lr": 0.05,
    "step": 7,
    "gamma": 0.1,
    "weight_decay": 0.0,
    "val_fraction": 0.0,
    "device": "auto",
    "seed": 0,
}


class ViTBlock(nn.Module):
    """Pre-norm transformer block on tokens `(N, L, dim)`: attention (no qkv bias) then MLP."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int = 4) -> None:
        super().__init__()
        if dim % heads:
            raise ExplorerError(f"dim ({dim}) must be a multiple of heads ({heads})")
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, mlp_ratio * dim)
        self.fc2 = nn.Linear(mlp_ratio * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, length, dim = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(n, length, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v)  # (N, heads, L, dim/heads)
        x = x + self.proj(a.transpose(1, 2).reshape(n, length, dim))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class PaperAttentionHead(nn.Module):
    """`(N, C, h, w)` maps -> `(N, n_classes)` logits, as the paper's released attention head."""

    def __init__(
        self,
        map_shape: tuple[int, int, int],
        n_classes: int,
        *,
        dim: int = 1024,
        depth: int = 2,
        heads: int = 8,
        mlp_ratio: int = 4,
    ) -> None:
        super().__init__()
        c = map_shape[0]
        self.norm_in = nn.LayerNorm(list(map_shape))  # over the whole [C, h, w] map
        self.proj = nn.Conv2d(c, dim, kernel_size=1)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.blocks = nn.ModuleList(ViTBlock(dim, heads, mlp_ratio) for _ in range(depth))
        self.fc = nn.Linear(dim, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.proj(self.norm_in(x)).flatten(2).transpose(1, 2)  # (N, h*w, dim)
        x = torch.cat([self.cls.expand(len(tokens), -1, -1), tokens], 1)
        for block in self.blocks:
            x = block(x)
        return self.fc(x[:, 0])


class CNNHead(nn.Module):
    """`(N, C, h, w)` -> logits: 2 x (3x3 conv - BatchNorm - ReLU), global average pool, linear."""

    def __init__(self, in_channels: int, n_classes: int, *, hidden: int = 256) -> None:
        super().__init__()

        def unit(cin: int) -> list[nn.Module]:
            return [
                nn.Conv2d(cin, hidden, 3, padding=1, bias=False),
                nn.BatchNorm2d(hidden),
                nn.ReLU(),
            ]

        self.features = nn.Sequential(*unit(in_channels), *unit(hidden))
        self.fc = nn.Linear(hidden, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean((2, 3)))


class _PaperMapProbe(MapProbe):
    """Shared flow of the map heads: pool to <= 16 per side, SGD + step decay; results report
    `map_shape` ("CxHxW")."""

    MAX_SIDE = MAX_SIDE

    def _train_options(self) -> dict:
        # No early stopping: with a validation split the best epoch is kept, else the last one.
        return {
            "weight_decay": self.weight_decay,
            "patience": self.epochs,
            "optimizer": "sgd",
            "step": self.step,
            "gamma": self.gamma,
        }

    def _result_extra(self) -> dict:
        return {"map_shape": "x".join(map(str, self.map_shape_))}


class PaperAttentionProbe(_PaperMapProbe):
    """`attention-paper` as a scikit-learn-shaped estimator on maps `(N, C, h, w)`.

    Learned: `classes_`, `map_shape_ (C, h, w)`, `model_`, `best_epoch_`, `epochs_run_`, `val_top1_`.
    """

    NAME = "attention-paper"
    __init__ = estimator_init({"dim": 1024, "depth": 2, "heads": 8, **PAPER_TRAINING})

    def _head(self, n_classes: int) -> nn.Module:
        return PaperAttentionHead(
            self.map_shape_, n_classes, dim=self.dim, depth=self.depth, heads=self.heads
        )


class CNNProbe(_PaperMapProbe):
    """`cnn` as a scikit-learn-shaped estimator on maps `(N, C, h, w)` (learned as above)."""

    NAME = "cnn"
    __init__ = estimator_init({"hidden": 256, **PAPER_TRAINING})

    def _head(self, n_classes: int) -> nn.Module:
        return CNNHead(self.map_shape_[0], n_classes, hidden=self.hidden)


fit_attention_paper = scorer(PaperAttentionProbe, "attention-paper", ("dim", "heads", "depth"))
fit_cnn = scorer(CNNProbe, "cnn", ("hidden",))
