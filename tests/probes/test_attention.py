"""The paper's attention head: shapes, pooling helper, and it learns a spatial task."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from explorer.errors import ExplorerError
from explorer.probes.attention import AttentionHead, AttentionProbe, fit_attention, pool_tokens
from explorer.probes.linear import LinearProbe


def _spatial_task(n, seed):
    """4 classes told apart only by WHERE a fixed channel pattern sits in a 4x4 map.

    Every map holds the same pattern once, so the global-average-pooled features are the
    same in distribution for every class: a pooled linear probe is at chance, a head that
    sees positions is not.
    """
    rng = np.random.default_rng(seed)
    pattern = np.random.default_rng(99).normal(size=8) * 2.0
    y = rng.integers(0, 4, n)
    x = rng.normal(size=(n, 8, 4, 4)).astype(np.float32)
    corners = [(0, 0), (0, 3), (3, 0), (3, 3)]
    for i, c in enumerate(y):
        r, col = corners[c]
        x[i, :, r, col] += pattern
    return x.astype(np.float16), y


def test_attention_head_learns_positions():
    xtr, ytr = _spatial_task(480, 0)
    xte, yte = _spatial_task(160, 1)
    torch.manual_seed(0)
    res = fit_attention(
        xtr, ytr, xte, yte, dim=32, heads=4, epochs=25, batch_size=32, lr=2e-3, device="cpu"
    )
    pooled = LinearProbe(1e-3, device="cpu").fit(xtr.mean((2, 3)), ytr)
    pooled_acc = pooled.score(xte.mean((2, 3)), yte)
    assert pooled_acc < 0.45, f"sanity: pooled features should be near chance, got {pooled_acc}"
    assert res.top1 > 0.85, f"attention head should learn positions, got {res.top1:.3f}"
    assert res.head == "attention-small" and res.extra["heads"] == 4, f"bad result labels: {res}"
    assert res.confusion.shape == (4, 4), "confusion is (C, C)"


def test_attention_head_shapes():
    head = AttentionHead(in_channels=6, n_tokens=9, n_classes=5, dim=16, heads=2)
    out = head(torch.randn(3, 6, 3, 3))
    assert out.shape == (3, 5), f"logits must be (N, n_classes), got {tuple(out.shape)}"
    n_blocks = len(head.blocks.layers)
    assert n_blocks == 2, f"paper uses 2 transformer blocks, got {n_blocks}"
    ffn = head.blocks.layers[0].linear1.out_features
    assert ffn == 4 * 16, f"MLP ratio must be 4, got hidden {ffn}"
    assert head.pos.shape == (1, 10, 16), "one position per token plus CLS"
    with pytest.raises(ExplorerError, match="multiple of heads"):
        AttentionHead(6, 9, 5, dim=10, heads=4)


def test_pool_tokens():
    x = np.arange(2 * 3 * 16 * 16, dtype=np.float32).reshape(2, 3, 16, 16)
    out = pool_tokens(x, max_side=8)
    assert out.shape == (2, 3, 8, 8) and out.dtype == np.float32, f"got {out.shape} {out.dtype}"
    block = x[1, 2, 2:4, 6:8].mean()
    assert out[1, 2, 1, 3] == pytest.approx(block), "each token must be its 2x2 block mean"
    small = np.ones((2, 3, 4, 4), dtype=np.float16)
    assert pool_tokens(small) is small, "maps within the limit come back untouched"
    assert pool_tokens(x.astype(np.float16)).dtype == np.float16, "dtype must be kept"


def test_attention_probe_errors():
    probe = AttentionProbe(dim=16, heads=2, epochs=1, device="cpu")
    maps = np.zeros((4, 3, 4, 4), dtype=np.float32)
    with pytest.raises(ExplorerError, match="not fitted yet"):
        probe.predict(maps)
    probe.fit(np.zeros((4, 3, 16, 16), dtype=np.float32), np.arange(4) % 2)
    assert probe.map_shape_ == (3, 8, 8), "maps above 8 per side are pooled to 8 first"
    with pytest.raises(ExplorerError, match=r"\(N, C, h, w\)"):
        probe.fit(np.zeros((4, 3), dtype=np.float32), np.arange(4) % 2)
