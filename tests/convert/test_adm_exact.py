"""Exactness of `explorer convert adm` against an independent ADM reference with random weights."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from explorer.models.convert.adm import (
    convert_adm,
    convert_state_dict,
    diffusers_config,
    empty_unet,
)
from explorer.models.convert.adm_presets import ADMConfig, preset
from explorer.models.layers import build_catalogue, first_tensor
from explorer.models.loader import load_model

from .adm_reference import ADMReference, randomise

# The 256 model's structure (6 levels, 2 res blocks, attention at 32/16/8 of 256 = ds 8, 16, 32)
# at reduced width and a 64x64 input: attention at sides 8, 4, 2.
SMALL_256 = ADMConfig(
    image_size=64,
    num_channels=32,
    channel_mult=(1, 1, 2, 2, 4, 4),
    attention_resolutions=(8, 4, 2),
    num_head_channels=16,
)
TIMESTEPS = (0, 90, 150, 999)


def reference_for(cfg: ADMConfig, seed: int = 0) -> ADMReference:
    """The reference network for guided-diffusion flags, every parameter random and non-zero."""
    mult = cfg.channel_mult
    model = ADMReference(
        cfg.num_channels,
        mult,
        cfg.num_res_blocks,
        tuple(cfg.image_size // r for r in cfg.attention_resolutions),
        out_channels=6 if cfg.learn_sigma else 3,
        num_heads=cfg.num_heads,
        num_head_channels=cfg.num_head_channels,
        new_order=cfg.use_new_attention_order,
        scale_shift=cfg.use_scale_shift_norm,
        resblock_updown=cfg.resblock_updown,
        num_classes=1000 if cfg.class_cond else None,
    )
    randomise(model, seed)
    return model.eval()


def convert_saved(ref: ADMReference, cfg: ADMConfig, tmp_path):
    """Save `ref`'s state dict as guided-diffusion does, convert it with the CLI's code path, load it."""
    ckpt = tmp_path / "adm.pt"
    torch.save(ref.state_dict(), ckpt)
    out = convert_adm(ckpt, tmp_path / "converted", cfg, show_progress=False)
    # a class-conditional model has no unconditional class: the explorer needs a label choice to open it
    return load_model(str(out) + ("#class-label=0" if cfg.class_cond else "")), out


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    ref = reference_for(SMALL_256)
    model, out = convert_saved(ref, SMALL_256, tmp_path_factory.mktemp("adm"))
    return ref, model, out


def test_no_parameter_is_zero(small):
    ref, model, _ = small
    assert all(
        p.abs().min() > 0 for p in ref.parameters()
    )  # zero-initialised convs were filled too
    assert sum(p.numel() for p in ref.parameters()) == model.parameters


def test_whole_net_matches_reference(small):
    ref, model, _ = small
    torch.manual_seed(1)
    x = torch.randn(len(TIMESTEPS), 3, 64, 64)
    t = torch.tensor(TIMESTEPS)
    with torch.no_grad():
        want = ref(x, t)
        got = model.denoiser(x, t).sample
    assert got.shape == (4, 6, 64, 64)  # learn_sigma keeps its 6 output channels
    for i, step in enumerate(TIMESTEPS):
        assert rel_err(got[i], want[i]) < 1e-4, f"t={step}"
        assert want[i].abs().max() > 1e-2  # a meaningful output, not a near-zero one


def test_every_block_matches_adm_modules(small):
    """Probe point i+1 = input_blocks[i], 19 = middle_block, 20+j = output_blocks[j]."""
    ref, model, _ = small
    cat = build_catalogue(model.denoiser)
    assert len(cat) == 37
    names = (
        [f"input_blocks.{i}" for i in range(18)]
        + ["middle_block"]
        + [f"output_blocks.{j}" for j in range(18)]
    )
    modules = dict(model.denoiser.named_modules())
    got = {}
    handles = [
        modules[lay.hook].register_forward_hook(
            lambda m, i, o, idx=lay.index: got.__setitem__(idx, first_tensor(o))
        )
        for lay in cat
    ]
    torch.manual_seed(2)
    x, t = torch.randn(2, 3, 64, 64), torch.tensor([150, 999])
    try:
        with torch.no_grad():
            model.denoiser(x, t)
            ref(x, t, record=True)
    finally:
        for h in handles:
            h.remove()
    for lay, name in zip(cat, names, strict=True):
        want = ref.record[name]
        assert got[lay.index].shape == want.shape, f"block {lay.index} vs {name}"
        assert rel_err(got[lay.index], want) < 1e-4, f"block {lay.index} ({lay.name}) vs {name}"
    assert cat[18].name == "mid_block" and (cat[18].height, cat[18].width) == (2, 2)
    assert cat[23].name == "up_blocks.1.resnets.1" and (cat[23].channels, cat[23].height) == (
        128,
        4,
    )


def test_sigma_channels_do_not_change_features(small):
    """Only conv_out's last 3 rows produce the sigma channels; no probe point depends on them."""
    _, model, _ = small
    unet = model.denoiser
    cat = build_catalogue(unet)
    modules = dict(unet.named_modules())
    x, t = torch.randn(1, 3, 64, 64), torch.tensor([90])

    def features():
        seen = {}
        hs = [
            modules[lay.hook].register_forward_hook(
                lambda m, i, o, k=lay.index: seen.__setitem__(k, first_tensor(o).clone())
            )
            for lay in cat
        ]
        with torch.no_grad():
            out = unet(x, t).sample
        for h in hs:
            h.remove()
        return seen, out

    before, out_before = features()
    with torch.no_grad():
        saved = unet.conv_out.weight[3:].clone()
        unet.conv_out.weight[3:].mul_(-3.0)
    after, out_after = features()
    with torch.no_grad():
        unet.conv_out.weight[3:] = saved
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert torch.equal(out_before[:, :3], out_after[:, :3]) and not torch.equal(
        out_before[:, 3:], out_after[:, 3:]
    )


VARIANTS = {
    # the 64x64 model's structure at reduced width: new head order, class-conditional, 3 res blocks
    "new-order-cond": ADMConfig(
        image_size=32,
        num_channels=32,
        channel_mult=(1, 2, 3, 4),
        num_res_blocks=3,
        attention_resolutions=(16, 8, 4),
        num_head_channels=16,
        class_cond=True,
        use_new_attention_order=True,
        noise_schedule="cosine",
    ),
    # conv up/down, additive time embedding, 3 output channels, a fixed number of heads
    "plain": ADMConfig(
        image_size=16,
        num_channels=32,
        channel_mult=(1, 2, 2),
        attention_resolutions=(8, 4),
        num_head_channels=-1,
        num_heads=2,
        resblock_updown=False,
        use_scale_shift_norm=False,
        learn_sigma=False,
    ),
}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_variants_match_reference(name, tmp_path):
    cfg = VARIANTS[name]
    ref = reference_for(cfg, seed=3)
    model, out = convert_saved(ref, cfg, tmp_path)
    torch.manual_seed(4)
    x, t = torch.randn(4, 3, cfg.image_size, cfg.image_size), torch.tensor(TIMESTEPS)
    y = torch.tensor([0, 7, 500, 999]) if cfg.class_cond else None
    with torch.no_grad():
        want = ref(x, t, y)
        got = model.denoiser(x, t, class_labels=y).sample
    assert got.shape == want.shape == (4, cfg.out_channels, cfg.image_size, cfg.image_size)
    assert rel_err(got, want) < 1e-4
    if cfg.class_cond:  # the label embedding really is used
        with torch.no_grad():
            other = model.denoiser(x, t, class_labels=torch.tensor([1, 8, 501, 998])).sample
        assert rel_err(other, want) > 1e-3
        assert not (out / "model_index.json").exists()


def test_head_orders_differ():
    """The two head layouts are not interchangeable: a wrong order would fail the exactness tests."""
    cfg = replace(SMALL_256, use_new_attention_order=True)
    ref_new = reference_for(cfg)
    ref_legacy = reference_for(SMALL_256)
    ref_legacy.load_state_dict(ref_new.state_dict())
    x, t = torch.randn(1, 3, 64, 64), torch.tensor([90])
    with torch.no_grad():
        assert rel_err(ref_legacy(x, t), ref_new(x, t)) > 1e-3


def test_scheduler_matches_adm_schedules(small, tmp_path):
    """Linear: scaled linspace(1e-4, 0.02); cosine: 1 - abar(t+1)/abar(t), abar = cos^2((t/T+s)/(1+s) pi/2)."""
    import math

    _, model, out = small
    betas = model.scheduler.betas.double()
    want = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    assert torch.allclose(betas, want, atol=1e-7)
    assert (
        json.loads((out / "scheduler" / "scheduler_config.json").read_text())["variance_type"]
        == "learned_range"
    )
    cfg = replace(VARIANTS["plain"], noise_schedule="cosine", diffusion_steps=500)
    ref = reference_for(cfg)
    m, _ = convert_saved(ref, cfg, tmp_path)

    def abar(s):
        return math.cos((s / 500 + 0.008) / 1.008 * math.pi / 2) ** 2

    cos = torch.tensor(
        [min(1 - abar(i + 1) / abar(i), 0.999) for i in range(500)], dtype=torch.float64
    )
    assert m.num_timesteps == 500
    assert torch.allclose(m.scheduler.betas.double(), cos, atol=1e-6)


def test_full_width_256_preset_on_meta():
    """The paper's model converts to ~552.8M parameters and 37 points; 19 = 8x8 middle, 24 = 1024x16x16."""
    cfg = preset("imagenet256-uncond")
    with torch.device("meta"):
        ref = ADMReference(
            256, (1, 1, 2, 2, 4, 4), 2, (8, 16, 32), out_channels=6, num_head_channels=64
        )
    unet = empty_unet(diffusers_config(cfg))
    target = {k: v.shape for k, v in unet.state_dict().items()}
    weights = convert_state_dict(ref.state_dict(), cfg, target)
    unet.load_state_dict(weights, assign=True, strict=True)
    n = sum(p.numel() for p in unet.parameters())
    assert n == sum(p.numel() for p in ref.parameters())
    assert abs(n / 1e6 - 552.8) < 0.1
    cat = build_catalogue(unet)
    assert len(cat) == 37
    assert (cat[18].name, cat[18].channels, cat[18].height, cat[18].width) == (
        "mid_block",
        1024,
        8,
        8,
    )
    assert (cat[23].channels, cat[23].height, cat[23].width) == (1024, 16, 16)
