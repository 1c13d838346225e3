"""The timm path of the reference encoders, checked without timm: this machine's torch is a CPU
build, and timm needs torchvision, whose PyPI wheels are CUDA builds (its `_C` extension links
`libc10_cuda.so`; `import torchvision` fails), so `test_encoders`' real-timm case skips here.

A stand-in `timm` module keeps timm's contract as its documentation gives it:
`timm.create_model(name, pretrained=..., pretrained_cfg_overlay=dict(file=...), **model_args)`
loads local weights from `file`; a ViT has `patch_embed` (`patch_size`, `img_size`), a `blocks`
Sequential whose outputs are `(B, 1 + N, D)` tokens (a class token first) and
`forward_features`. With it, our loader's timm code runs: the folder's config and
`model_args`, the weights file passed as the overlay, the input size and patch read from the
built model, the normalisation from `pretrained_cfg`, one probe point per block, features equal
to the blocks' patch tokens pooled by hand, random weights for `random:`, and a one-line error
when timm is missing."""

from __future__ import annotations

import json
import sys
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from explorer.errors import ExplorerError
from explorer.features.store import FeatureStore
from explorer.models.layers import build_catalogue
from explorer.models.loader import load_model
from explorer.workspace import Workspace
from tests.conftest import make_tiny_dataset

SIDE, PATCH, WIDTH, DEPTH = 16, 4, 8, 2
GRID = SIDE // PATCH
NORM = {"mean": [0.3, 0.4, 0.5], "std": [0.2, 0.25, 0.3]}
ARGS = {"img_size": SIDE, "patch_size": PATCH, "embed_dim": WIDTH, "depth": DEPTH}


class PatchEmbed(torch.nn.Module):
    def __init__(self, img_size: int, patch_size: int, dim: int, in_chans: int):
        super().__init__()
        self.img_size, self.patch_size = (img_size, img_size), (patch_size, patch_size)
        self.proj = torch.nn.Conv2d(in_chans, dim, patch_size, stride=patch_size)

    def forward(self, x):  # (B, C, H, W) -> (B, N, D)
        return self.proj(x).flatten(2).transpose(1, 2)


class Block(torch.nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.norm, self.mix = torch.nn.LayerNorm(dim), torch.nn.Linear(dim, dim)

    def forward(self, x):
        return x + self.mix(self.norm(x))


class TinyViT(torch.nn.Module):
    """A ViT with timm's attribute names: `patch_embed`, `cls_token`, `pos_embed`, `blocks`."""

    def __init__(self, img_size, patch_size, embed_dim, depth, in_chans=3, num_classes=0):
        super().__init__()
        self.patch_embed = PatchEmbed(img_size, patch_size, embed_dim, in_chans)
        n = (img_size // patch_size) ** 2
        self.cls_token = torch.nn.Parameter(torch.randn(1, 1, embed_dim) * 0.02)
        self.pos_embed = torch.nn.Parameter(torch.randn(1, 1 + n, embed_dim) * 0.02)
        self.blocks = torch.nn.Sequential(*(Block(embed_dim) for _ in range(depth)))
        self.norm = torch.nn.LayerNorm(embed_dim)
        self.num_classes = num_classes

    def tokens(self, x):
        t = self.patch_embed(x)
        return torch.cat([self.cls_token.expand(len(t), -1, -1), t], 1) + self.pos_embed

    def forward_features(self, x):
        return self.norm(self.blocks(self.tokens(x)))


@pytest.fixture
def fake_timm(monkeypatch):
    """`timm` in sys.modules as the stand-in; its `calls` record every create_model."""
    module = types.ModuleType("timm")
    module.calls = []

    def create_model(name, pretrained=False, pretrained_cfg_overlay=None, **kw):
        module.calls.append((name, pretrained, pretrained_cfg_overlay, kw))
        model = TinyViT(**kw)
        if pretrained:
            model.load_state_dict(load_file(pretrained_cfg_overlay["file"]))
        return model

    module.create_model = create_model
    monkeypatch.setitem(sys.modules, "timm", module)
    return module


@pytest.fixture
def timm_folder(tmp_path):
    """A folder in timm's hub layout: config.json (architecture, model_args, pretrained_cfg)
    and model.safetensors, written from a seeded TinyViT."""
    torch.manual_seed(123)  # not the random control's seed
    model = TinyViT(**ARGS)
    folder = tmp_path / "tiny-timm"
    folder.mkdir()
    cfg = {"input_size": [3, 224, 224], **NORM}  # the built model's img_size wins
    config = {"architecture": "tiny_vit_standin", "num_classes": 0, "model_args": ARGS}
    (folder / "config.json").write_text(json.dumps(config | {"pretrained_cfg": cfg}))
    save_file(model.state_dict(), str(folder / "model.safetensors"))
    return folder


def test_the_timm_path_loads_and_extracts_the_blocks_tokens(fake_timm, timm_folder, tmp_path):
    model = load_model(f"encoder:{timm_folder}")
    (name, pretrained, overlay, kw), *_ = fake_timm.calls
    assert (name, pretrained) == ("tiny_vit_standin", True)
    assert overlay == {"file": str(timm_folder / "model.safetensors"), "num_classes": 0}
    assert kw == {**ARGS, "num_classes": 0}, "model_args from the folder's config"
    assert model.preprocess.mean == tuple(NORM["mean"]) and model.preprocess.std == tuple(
        NORM["std"]
    ), "normalised by the folder's pretrained_cfg"
    assert model.preprocess.size == SIDE, "the input size of the built model, not input_size"
    cat = build_catalogue(model.denoiser)
    assert [lay.name for lay in cat] == ["blocks.0", "blocks.1"]
    assert all((lay.channels, lay.height, lay.width) == (WIDTH, GRID, GRID) for lay in cat)

    ds = make_tiny_dataset(n=24, size=SIDE)
    ws = Workspace(model, ds, store=FeatureStore(tmp_path / "cache"), batch_size=8, device="cpu")
    imgs = ds.array[ws.selection("test").indices]
    x = torch.from_numpy(imgs).float().permute(0, 3, 1, 2).expand(-1, 3, -1, -1) / 255.0
    x = (x - torch.tensor(NORM["mean"]).view(1, 3, 1, 1)) / torch.tensor(NORM["std"]).view(
        1, 3, 1, 1
    )
    backbone = model.denoiser.backbone
    with torch.no_grad():
        h = backbone.tokens(x)
        for i, block in enumerate(backbone.blocks, start=1):
            h = block(h)
            grid = h[:, 1:].transpose(1, 2).reshape(len(h), WIDTH, GRID, GRID)  # class token off
            want = F.adaptive_avg_pool2d(grid, 2).flatten(1).numpy()
            got = np.asarray(ws.features(ws.setting(0, i, 2), "test"), dtype=np.float32)
            np.testing.assert_allclose(got, want, rtol=2e-3, atol=2e-3)  # stored as float16


def test_random_weights_and_a_missing_timm(fake_timm, timm_folder, monkeypatch):
    trained = load_model(f"encoder:{timm_folder}")
    control = load_model(f"random:encoder:{timm_folder}")
    assert fake_timm.calls[-1][1:3] == (False, None), "random weights: nothing loaded"
    assert control.fingerprint != trained.fingerprint
    a, b = (m.denoiser.backbone.blocks[0].mix.weight for m in (trained, control))
    assert not torch.equal(a, b)
    monkeypatch.setitem(sys.modules, "timm", None)  # `import timm` raises ImportError
    with pytest.raises(ExplorerError, match="install timm"):
        load_model(f"encoder:{timm_folder}")
