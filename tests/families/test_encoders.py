"""Reference encoders (transformers DINOv2/CLIP/SigLIP/ViT, timm ViT) as feature sources: their
catalogue, a stored feature recomputed by hand, their own preprocessing, keys that never meet a
diffusion model's, and t that does not apply. Tiny random encoders built here; no download."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from explorer.errors import ExplorerError
from explorer.features.keys import Selection, feature_key
from explorer.features.store import FeatureStore
from explorer.models.families.encoder import IMAGENET, EncoderPreprocess
from explorer.models.layers import build_catalogue
from explorer.models.loader import load_model
from explorer.workspace import Workspace
from tests.conftest import make_tiny_dataset
from tests.families.tiny_encoders import CLIP_NORM, GRID, SIDE, TIMM_NORM, WIDTH, save_encoder

HF_KINDS = ("dinov2", "clip", "siglip", "vit")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("encoders")
    return {kind: save_encoder(kind, root / kind) for kind in HF_KINDS}


@pytest.fixture(scope="module")
def timm_folder(tmp_path_factory):
    pytest.importorskip("timm")
    return save_encoder("timm", tmp_path_factory.mktemp("encoders") / "timm")


def workspace(model, tmp_path, n=24):
    ds = make_tiny_dataset(n=n)  # 16x16 grey images: resized to 32x32, three channels
    return Workspace(model, ds, store=FeatureStore(tmp_path / "cache"), batch_size=8, device="cpu")


def hand_input(ws, split, mean, std) -> torch.Tensor:
    """The encoder's input written out: grey to RGB, bilinear to 32x32, [0, 1], its mean/std."""
    imgs = ws.dataset.array[ws.selection(split).indices]
    x = torch.from_numpy(imgs).float().permute(0, 3, 1, 2).expand(-1, 3, -1, -1) / 255.0
    x = F.interpolate(x, size=(SIDE, SIDE), mode="bilinear", align_corners=False)
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    return (x - m) / s


def pool2(tokens: torch.Tensor) -> np.ndarray:
    """Patch tokens (B, GRID*GRID, D) -> the grid (B, D, GRID, GRID) -> 2x2 average, flattened."""
    b, n, d = tokens.shape
    grid = tokens.transpose(1, 2).reshape(b, d, GRID, GRID)
    return F.adaptive_avg_pool2d(grid, 2).flatten(1).numpy()


@pytest.mark.parametrize("kind", HF_KINDS)
def test_catalogue_one_point_per_block_on_the_patch_grid(folders, kind):
    model = load_model(str(folders[kind]))
    assert model.family == "encoder" and model.adapter.transformer
    assert model.num_timesteps == 1 and not model.adapter.noised, "one level: t does not apply"
    cat = build_catalogue(model.denoiser)
    assert [lay.index for lay in cat] == [1, 2], "one probe point per transformer block"
    assert all(lay.kind == "transformer" and lay.stage == "block" for lay in cat)
    assert all((lay.channels, lay.height, lay.width) == (WIDTH, GRID, GRID) for lay in cat)
    assert cat[0].name.endswith("0") and cat[1].name.endswith("1"), [lay.name for lay in cat]
    assert "no timestep" in model.scheduler_text


@pytest.mark.parametrize("kind", ["dinov2", "clip"])
def test_stored_feature_equals_the_hidden_state_pooled_by_hand(folders, kind, tmp_path):
    model = load_model(str(folders[kind]))
    ws = workspace(model, tmp_path)
    for block in (1, 2):
        s = ws.setting(0, block, 2)
        got = np.asarray(ws.features(s, "test"), dtype=np.float32)
        prep = model.preprocess
        x = hand_input(ws, "test", prep.mean, prep.std)
        with torch.no_grad():
            hidden = model.denoiser.backbone(pixel_values=x, output_hidden_states=True)
        tokens = hidden.hidden_states[block][:, 1:]  # block i's output; CLS dropped
        want = pool2(tokens)
        assert got.shape == want.shape == (len(ws.test.indices), WIDTH * 4)
        np.testing.assert_allclose(got, want, rtol=2e-3, atol=2e-3)  # stored as float16


def test_timm_feature_equals_its_intermediates(timm_folder, tmp_path):
    model = load_model(f"encoder:{timm_folder}")
    cat = build_catalogue(model.denoiser)
    assert [lay.name for lay in cat] == ["blocks.0", "blocks.1"]
    assert model.preprocess.mean == tuple(TIMM_NORM["mean"]), "timm's pretrained_cfg mean"
    ws = workspace(model, tmp_path)
    x = hand_input(ws, "test", TIMM_NORM["mean"], TIMM_NORM["std"])
    with torch.no_grad():
        inter = model.denoiser.backbone.forward_intermediates(
            x, indices=[0, 1], norm=False, output_fmt="NCHW", intermediates_only=True
        )
    for block, grid in zip((1, 2), inter, strict=True):
        got = np.asarray(ws.features(ws.setting(0, block, 2), "test"), dtype=np.float32)
        want = F.adaptive_avg_pool2d(grid, 2).flatten(1).numpy()
        np.testing.assert_allclose(got, want, rtol=2e-3, atol=2e-3)


def test_preprocessing_is_the_encoders_own(folders):
    clip = load_model(str(folders["clip"]))
    prep = clip.preprocess
    assert isinstance(prep, EncoderPreprocess)
    assert prep.mean == tuple(CLIP_NORM["image_mean"]) and prep.std == tuple(CLIP_NORM["image_std"])
    assert prep.size == SIDE and prep.channels == 3
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, size=(3, SIDE, SIDE, 3), dtype=np.uint8)
    x = torch.from_numpy(imgs).float().permute(0, 3, 1, 2) / 255.0
    m = torch.tensor(CLIP_NORM["image_mean"]).view(1, 3, 1, 1)
    s = torch.tensor(CLIP_NORM["image_std"]).view(1, 3, 1, 1)
    torch.testing.assert_close(prep(imgs), (x - m) / s, rtol=1e-5, atol=1e-5)
    dino = load_model(str(folders["dinov2"]))  # no preprocessor_config.json: its family's
    assert (dino.preprocess.mean, dino.preprocess.std) == IMAGENET
    assert prep.tag != dino.preprocess.tag and "norm" in prep.tag, "normalisation in the key"


def test_keys_never_meet_a_diffusion_models(folders, tiny_model_dir, tmp_path):
    ds = make_tiny_dataset(n=24)
    sel = Selection.of(ds, "test")
    enc = load_model(str(folders["dinov2"]))
    rnd = load_model(f"random:{folders['dinov2']}")
    unet = load_model(str(tiny_model_dir))
    keys = {feature_key(m, ds, sel, 0, "encoder.layer.0", "2", 0) for m in (enc, rnd, unet)}
    keys.add(feature_key(unet, ds, sel, 0, "conv_in", "2", 0))
    assert len(keys) == 4, "encoder, its random twin and the U-Net never share a key"
    assert enc.adapter.key_parts() == {"family": "encoder", "cond": "none"}
    assert enc.fingerprint != rnd.fingerprint and rnd.source == "random"
    again = load_model(f"encoder:{folders['dinov2']}")
    assert again.fingerprint == enc.fingerprint, "the prefix names the same weights"


def test_timestep_is_ignored(folders, tmp_path):
    ws = workspace(load_model(str(folders["siglip"])), tmp_path)
    assert ws.setting(500, 1, 2).t == 0, "any t reads the encoder's one level"
    out = ws.extract_grid([10, 90], layers="all", pools="2", splits=["test"])
    assert len(out.keys["test"]) == 2, "two blocks at one level, not two levels"
    assert ws.describe()["model"]["timesteps"] == 1


def test_refusals_are_one_line(folders, tmp_path):
    with pytest.raises(ExplorerError, match="do not apply to a reference encoder"):
        load_model(str(folders["vit"]), prompt="a photo")
    bad = tmp_path / "bert"
    bad.mkdir()
    (bad / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(ExplorerError, match="reference encoders are"):
        load_model(f"encoder:{bad}")
    empty = tmp_path / "noweights"
    empty.mkdir()
    (empty / "config.json").write_text('{"model_type": "dinov2"}')
    with pytest.raises(ExplorerError, match="no weights"):
        load_model(str(empty))
