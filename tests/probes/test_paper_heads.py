"""The paper's attention head and the cnn head: architecture facts, recipe, they learn; map16 pooling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from explorer.errors import ExplorerError
from explorer.features.capture import pool
from explorer.features.sizes import feature_bytes, human_bytes, pooled_dim, pooled_shape
from explorer.models.layers import LayerSpec
from explorer.probes.base import train_classifier
from explorer.probes.paper_heads import (
    CNNHead,
    CNNProbe,
    PaperAttentionHead,
    PaperAttentionProbe,
    fit_attention_paper,
    fit_cnn,
)
from explorer.probes.registry import parse_head
from explorer.settings import parse_pools


def _layer(c: int, h: int, w: int | None = None) -> LayerSpec:
    return LayerSpec(
        24,
        "up_blocks.1.resnets.1",
        "up_blocks.1.attentions.1",
        "up",
        "resnet+attn",
        c,
        h,
        w or h,
        16,
    )


def test_attention_paper_architecture_at_paper_size():
    """ADM block 24: 1024 x 16 x 16, all 256 tokens kept, every fact of the released head."""
    head = PaperAttentionHead((1024, 16, 16), n_classes=1000)
    assert head.norm_in.normalized_shape == (1024, 16, 16), "LayerNorm over the whole [C, H, W] map"
    assert head.proj.weight.shape == (1024, 1024, 1, 1), "1x1 conv to 1024 channels"
    assert head.cls.shape == (1, 1, 1024) and not head.cls.detach().any(), "CLS token zero at init"
    assert not any("pos" in n for n, _ in head.named_parameters()), "no position embedding"
    assert len(head.blocks) == 2, "2 transformer blocks"
    for b in head.blocks:
        assert b.heads == 8, "8 heads"
        assert b.qkv.bias is None and b.qkv.weight.shape == (3 * 1024, 1024), "qkv without bias"
        assert b.fc1.out_features == 4 * 1024, "MLP ratio 4"
    assert head.fc.weight.shape == (1000, 1024), "linear layer on the CLS output"
    assert not any(
        isinstance(m, torch.nn.LayerNorm) and m.normalized_shape == (1024,) for m in [head.fc]
    ), "no final norm before the classifier"
    names = [n for n, _ in head.named_children()]
    assert names == ["norm_in", "proj", "blocks", "fc"], f"nothing else in the head: {names}"


def test_attention_paper_forward_reads_cls_and_layernorm_is_whole_map():
    torch.manual_seed(0)
    head = PaperAttentionHead((6, 4, 4), n_classes=3, dim=16, heads=2).eval()
    x = torch.randn(5, 6, 4, 4)
    assert head(x).shape == (5, 3), "logits (N, n_classes)"
    # Whole-map LayerNorm: scaling and shifting the entire map changes nothing, but scaling ONE
    # position is seen (a per-position LayerNorm over channels would erase exactly that).
    assert torch.allclose(head(x), head(x * 3 + 7), atol=1e-4), "normalised over [C, H, W]"
    loud = x.clone()
    loud[:, :, 0, 0] *= 10
    assert not torch.allclose(head(x), head(loud), atol=1e-3), "one position's scale is kept"
    # The CLS output is token 0: permuting the positions leaves logits unchanged (no positions).
    perm = x.flatten(2)[..., torch.randperm(16)].view(5, 6, 4, 4)
    assert torch.allclose(head(x), head(perm), atol=1e-4), "no position embedding: a token set"


def test_cnn_head_architecture():
    head = CNNHead(32, 5, hidden=8)
    convs = [m for m in head.modules() if isinstance(m, torch.nn.Conv2d)]
    bns = [m for m in head.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert [c.kernel_size for c in convs] == [(3, 3), (3, 3)] and len(bns) == 2, (
        "2 conv-BN-ReLU units"
    )
    assert convs[0].in_channels == 32 and convs[1].out_channels == 8, "C -> hidden -> hidden"
    assert head(torch.randn(4, 32, 5, 7)).shape == (4, 5), "any map size, global average pool"


def test_sgd_step_decay_recipe():
    """SGD without momentum, lr x0.1 every 7 epochs: the lr seen in epoch 8 is 0.005."""
    model = torch.nn.Linear(3, 2)
    lrs = []
    real = torch.optim.SGD.step

    def spy(self, *a, **k):
        lrs.append(self.param_groups[0]["lr"])
        assert self.param_groups[0]["momentum"] == 0, "plain SGD"
        return real(self, *a, **k)

    torch.optim.SGD.step = spy
    try:
        train_classifier(
            model,
            torch.randn(8, 3),
            torch.arange(8) % 2,
            None,
            None,
            epochs=15,
            batch_size=8,
            lr=0.05,
            weight_decay=0.0,
            patience=15,
            seed=0,
            optimizer="sgd",
        )
    finally:
        torch.optim.SGD.step = real
    assert lrs[0] == pytest.approx(0.05) and lrs[6] == pytest.approx(0.05), "first 7 epochs at lr"
    assert lrs[7] == pytest.approx(0.005) and lrs[14] == pytest.approx(0.0005), (
        "x0.1 every 7 epochs"
    )
    with pytest.raises(ExplorerError, match="unknown optimizer"):
        train_classifier(
            model,
            torch.randn(8, 3),
            torch.arange(8) % 2,
            None,
            None,
            epochs=1,
            batch_size=8,
            lr=0.05,
            weight_decay=0.0,
            patience=1,
            seed=0,
            optimizer="lbfgs",
        )


def _token_task(n, seed, side=4):
    """4 classes: which of 4 channel patterns sits at ONE random position of a noisy map.

    No position embedding, so the head sees a set of tokens: the class is in the set's content.
    """
    rng = np.random.default_rng(seed)
    patterns = np.random.default_rng(99).normal(size=(4, 8)) * 2.5
    y = rng.integers(0, 4, n)
    x = rng.normal(size=(n, 8, side, side)).astype(np.float32)
    for i, c in enumerate(y):
        x[i, :, rng.integers(side), rng.integers(side)] += patterns[c]
    return x.astype(np.float16), y


def test_attention_paper_learns_a_separable_problem():
    xtr, ytr = _token_task(400, 0)
    xte, yte = _token_task(120, 1)
    res = fit_attention_paper(
        xtr, ytr, xte, yte, dim=16, heads=2, epochs=14, batch_size=16, lr=0.2, device="cpu"
    )
    assert res.top1 > 0.85, f"attention-paper should learn the task, got {res.top1:.3f}"
    assert res.head == "attention-paper" and res.extra["map_shape"] == "8x4x4", res.extra


def test_cnn_learns_a_separable_problem():
    xtr, ytr = _token_task(400, 0)
    xte, yte = _token_task(120, 1)
    res = fit_cnn(xtr, ytr, xte, yte, hidden=16, epochs=30, batch_size=16, lr=0.2, device="cpu")
    assert res.top1 > 0.85, f"cnn should learn the task, got {res.top1:.3f}"
    assert res.head == "cnn", res


def test_map_heads_pool_large_maps_to_16_and_check_shapes():
    probe = PaperAttentionProbe(dim=8, heads=2, epochs=1, device="cpu")
    x = np.random.default_rng(0).normal(size=(12, 3, 32, 32)).astype(np.float32)
    probe.fit(x, np.arange(12) % 2)
    assert probe.map_shape_ == (3, 16, 16), "maps above 16 per side are pooled to 16"
    with pytest.raises(ExplorerError, match="fitted on"):
        probe.predict(x[:, :, :8, :8])
    with pytest.raises(ExplorerError, match=r"takes maps \(N, C, h, w\)"):
        CNNProbe(epochs=1, device="cpu").fit(np.zeros((4, 3)), np.arange(4) % 2)
    with pytest.raises(ExplorerError, match="not fitted yet"):
        CNNProbe().predict(x)


def test_map16_pooling_and_disk_size():
    assert parse_pools("2,map16,MAP16") == ["2", "map16"], "map16 is a pooling name"
    with pytest.raises(ExplorerError, match="map16"):
        parse_pools("map32")
    big, small = _layer(1024, 16), _layer(64, 8, 4)
    assert pooled_shape(big, "map16") == (1024, 16, 16) and pooled_dim(big, "map16") == 262144
    assert pooled_shape(small, "map16") == (64, 8, 4), "smaller maps are kept as they are"
    assert pooled_shape(_layer(32, 64), "map16") == (32, 16, 16) and pooled_dim(small, "max") == 64
    x = torch.arange(2 * 3 * 32 * 32, dtype=torch.float32).view(2, 3, 32, 32)
    out = pool(x, "map16")
    assert out.shape == (2, 3 * 16 * 16), "flattened C*h*w"
    assert out.view(2, 3, 16, 16)[1, 2, 5, 7] == x[1, 2, 10:12, 14:16].mean(), "2x2 block means"
    assert torch.equal(pool(x[..., :8, :4], "map16"), x[..., :8, :4].flatten(1)), (
        "small maps unchanged"
    )
    # ADM block 24 at map16: 512 KiB per image in float16; 12,811 images (ImageNet 1%) ~ 6.7 GB.
    assert feature_bytes(1, big, "map16") == 1024 * 256 * 2
    assert feature_bytes(12811, big, "map16", seeds=2) == 2 * 12811 * 524288
    assert feature_bytes(10, big, "2") == 10 * 4096 * 2
    assert (
        human_bytes(feature_bytes(12811, big, "map16")) == "6.7 GB" and human_bytes(999) == "999 B"
    )


def test_registry_names_and_alias():
    assert parse_head("attention") == parse_head("attention-small"), "old name is an alias"
    assert parse_head("attention:dim=16:heads=2").label == "attention-small:dim=16:heads=2", (
        "canonical"
    )
    head = parse_head("attention-paper:epochs=3")
    assert head.params["dim"] == 1024 and head.params["lr"] == 0.05 and head.params["step"] == 7
    assert parse_head("mlp:optimizer=SGD").params["optimizer"] == "sgd"
    with pytest.raises(ExplorerError, match="optimizer must be one of adamw, adam, sgd"):
        parse_head("mlp:optimizer=rmsprop")
    with pytest.raises(ExplorerError, match="dim \\(100\\) must be a multiple of heads"):
        parse_head("attention-paper:dim=100")


def test_cli_sweep_runs_the_paper_heads_on_map16(tiny_model_dir, tmp_path, capsys):
    import pandas as pd

    from explorer.cli import main

    out = tmp_path / "res.csv"
    args = [
        "sweep",
        "--model",
        str(tiny_model_dir),
        "--dataset",
        "digits",
        "--limit",
        "40",
        "--timesteps",
        "10",
        "--layers",
        "-1",
        "--pools",
        "map16",
        "--no-baselines",
        "--batch-size",
        "64",
        "--heads",
        "attention-paper:dim=8:heads=2:epochs=2,cnn:hidden=4:epochs=2,attention:dim=8:heads=2:epochs=1",
        "--out",
        str(out),
    ]
    assert main(args) == 0, capsys.readouterr().err
    df = pd.read_csv(out)
    assert set(df["head"]) == {
        "attention-paper:dim=8:heads=2:epochs=2",
        "cnn:hidden=4:epochs=2",
        "attention-small:dim=8:heads=2:epochs=1",
    }, set(df["head"])
    top1 = df[df["metric"] == "top1"]
    assert set(df["pool"].astype(str)) == {"map16"} and len(top1) >= 3, df
    assert top1["value"].between(0, 1).all(), top1
    with_pixels = [a for a in args if a != "--no-baselines"]
    with_pixels[with_pixels.index("--heads") + 1] = "linear,cnn:hidden=4:epochs=1"
    assert main([*with_pixels[:-1], str(tmp_path / "b.csv")]) == 0, (
        "map heads skip the pixel baseline"
    )


def test_mlp_trains_with_sgd():
    rng = np.random.default_rng(0)
    y = np.arange(120) % 3
    x = (np.eye(3)[y] * 6 + rng.normal(size=(120, 3))).astype(np.float32)
    res = parse_head(
        "mlp:hidden=8:optimizer=sgd:lr=0.1:epochs=20:batch_size=16:val_fraction=0"
    ).fit({"a": (x[:90], y[:90], x[90:], y[90:])}, n_classes=3, device="cpu")["a"]
    assert res.extra["optimizer"] == "sgd" and res.top1 > 0.8, res
