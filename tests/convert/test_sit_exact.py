"""Exactness of `explorer convert sit` against an independent SiT reference with random weights.

Time inputs follow the contract: at path time u = sigma (0 data, 1 noise) the original SiT is
called with 1 - u (its t=1 is data), REPA's with u.
"""

from __future__ import annotations

import argparse
import json

import pytest
import torch

from explorer.models.convert.sit import (
    convert_sit,
    convert_state_dict,
    diffusers_config,
    empty_transformer,
    infer_config,
    patch_converted_sit,
)
from explorer.models.layers import build_catalogue, first_tensor

from .sit_reference import SiTReference, randomise

SIGMAS = (0.0, 0.25, 0.5, 1.0)
SMALL = dict(input_size=8, patch=2, in_channels=4, hidden=64, depth=3, heads=4, num_classes=10)
LABELS = torch.tensor([0, 3, 9, 10])  # 10: the null class


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def load_transformer(folder, patch: bool = True):
    """The converted transformer as diffusers loads it, with the converter's load-time patch."""
    from diffusers import DiTTransformer2DModel

    net = DiTTransformer2DModel.from_pretrained(folder / "transformer").eval()
    if patch:
        assert patch_converted_sit(folder, net) == ["sit-timestep-freq-shift=0"]
    return net


@pytest.fixture(scope="module")
def sit(tmp_path_factory):
    """SiT's layout (learn_sigma), saved as SiT's release is: a bare state dict."""
    tmp = tmp_path_factory.mktemp("sit")
    ref = randomise(SiTReference(**SMALL), seed=0).eval()
    torch.save(ref.state_dict(), tmp / "SiT-tiny.pt")
    done = convert_sit(tmp / "SiT-tiny.pt", tmp / "out", num_heads=4, show_progress=False)
    return ref, load_transformer(done.out), done


def block_outputs(net, x, t, y) -> dict[int, torch.Tensor]:
    """Every probe point's output tokens (B, N, D), read where the explorer hooks them."""
    cat = build_catalogue(net)
    modules = dict(net.named_modules())
    got: dict[int, torch.Tensor] = {}
    handles = [
        modules[lay.hook].register_forward_hook(
            lambda m, i, o, k=lay.index: got.__setitem__(k, first_tensor(o))
        )
        for lay in cat
    ]
    try:
        with torch.no_grad():
            net(x, t, class_labels=y)
    finally:
        for h in handles:
            h.remove()
    return got


def test_no_parameter_is_zero_and_counts(sit):
    ref, net, done = sit
    assert all(p.abs().min() > 0 for n, p in ref.named_parameters() if n != "pos_embed")
    assert done.parameters == sum(p.numel() for p in net.parameters())
    # diffusers stores the position table as a buffer and one label-timestep embedder per block
    emb = sum(p.numel() for p in (*ref.t_embedder.parameters(), *ref.y_embedder.parameters()))
    n_ref = sum(p.numel() for p in ref.parameters())
    assert done.parameters == n_ref - ref.pos_embed.numel() + (SMALL["depth"] - 1) * emb


def test_output_matches_reference_at_every_sigma(sit):
    ref, net, _ = sit
    torch.manual_seed(1)
    x = torch.randn(4, 4, 8, 8)
    for sigma in SIGMAS:
        t = torch.full((4,), 1.0 - sigma)  # SiT's time input: t=1 is data
        with torch.no_grad():
            want_full, want = ref.forward_full(x, t, LABELS), ref(x, t, LABELS)
            got = net(x, t, class_labels=LABELS).sample
        assert got.shape == (4, 8, 8, 8)  # learn_sigma keeps its 8 output channels
        assert rel_err(got, want_full) < 1e-4, f"sigma={sigma}"
        assert rel_err(got[:, :4], want) < 1e-4, f"sigma={sigma}: SiT's returned half"
        assert want.abs().max() > 1e-2


def test_every_block_matches_at_every_sigma(sit):
    """Probe point i+1 = SiT's blocks[i]; prints the max relative error per block and sigma."""
    ref, net, _ = sit
    torch.manual_seed(2)
    x = torch.randn(4, 4, 8, 8)
    table = {}
    for sigma in SIGMAS:
        t = torch.full((4,), 1.0 - sigma)
        got = block_outputs(net, x, t, LABELS)
        with torch.no_grad():
            ref(x, t, LABELS, record=True)
        assert sorted(got) == [1, 2, 3]
        for i in range(SMALL["depth"]):
            want = ref.record[f"blocks.{i}"]
            assert got[i + 1].shape == want.shape == (4, 16, 64)
            table[(i, sigma)] = rel_err(got[i + 1], want)
    print("\nmax relative error, SiT block x sigma:")
    for i in range(SMALL["depth"]):
        print(f"  blocks.{i}: " + "  ".join(f"{s:g}: {table[(i, s)]:.1e}" for s in SIGMAS))
    assert max(table.values()) < 1e-4, table


def test_diffusers_timestep_frequencies_need_the_patch(sit, tmp_path):
    """Unpatched, diffusers' DiT spaces its timestep frequencies by half-1 instead of SiT's half:
    the output drifts beyond 1e-4 wherever t > 0 (at t = 0 every frequency gives cos 1, sin 0)."""
    ref, _, done = sit
    raw = load_transformer(done.out, patch=False)
    assert raw.transformer_blocks[0].norm1.emb.time_proj.downscale_freq_shift == 1
    torch.manual_seed(3)
    x = torch.randn(4, 4, 8, 8)
    errs = {}
    for sigma in SIGMAS:
        t = torch.full((4,), 1.0 - sigma)
        with torch.no_grad():
            errs[sigma] = rel_err(
                raw(x, t, class_labels=LABELS).sample, ref.forward_full(x, t, LABELS)
            )
    print(f"\nunpatched relative error by sigma: {errs}")
    assert errs[0.0] > 1e-4 and errs[1.0] < 1e-6
    assert patch_converted_sit(tmp_path, raw) == []  # not a converted SiT folder: untouched


def test_converted_folder_follows_the_contract(sit):
    _, net, done = sit
    out = done.out
    sched = json.loads((out / "scheduler" / "scheduler_config.json").read_text())
    assert sched["_class_name"] == "FlowMatchEulerDiscreteScheduler"
    assert (sched["num_train_timesteps"], sched["shift"]) == (1000, 1.0)
    assert (sched["flow_path"], sched["time_input"]) == ("linear", "1-u")
    index = json.loads((out / "model_index.json").read_text())
    assert index["_class_name"] == "DiTPipeline" and index["converted_from"] == "sit"
    assert "vae" not in index and not (out / "vae").exists()  # no --vae given
    record = json.loads((out / "sit.json").read_text())
    assert record["timestep_freq_shift"] == 0 and record["weights"] == "state dict"
    assert record["network"]["num_classes"] == 10 and record["kept_out"]["projectors"] == []
    assert net.config.num_embeds_ada_norm == 10 and net.config.norm_eps == 1e-6
    from diffusers import FlowMatchEulerDiscreteScheduler

    FlowMatchEulerDiscreteScheduler.from_pretrained(out / "scheduler")  # diffusers reads it


def repa_checkpoint(path, seed: int = 4) -> tuple[SiTReference, SiTReference]:
    """REPA's training checkpoint: model and EMA (different weights), optimizer, args, steps."""
    kw = dict(SMALL, learn_sigma=False, projector_dims=(16, 24), encoder_depth=2)
    model = randomise(SiTReference(**kw), seed=seed).eval()
    ema = randomise(SiTReference(**kw), seed=seed + 1).eval()
    args = argparse.Namespace(
        model="SiT-B/2",
        path_type="cosine",
        prediction="v",
        enc_type="dinov2-vit-b",
        proj_coeff=0.5,
        encoder_depth=2,
        qk_norm=False,
        resolution=256,
    )
    opt = {"state": {0: {"step": torch.tensor(3.0)}}, "param_groups": [{"lr": 1e-4, "params": [0]}]}
    torch.save(
        {
            "model": model.state_dict(),
            "ema": ema.state_dict(),
            "opt": opt,
            "args": args,
            "steps": 3,
        },
        path,
    )
    return model, ema


def test_repa_checkpoint_converts_its_ema_without_projectors(tmp_path):
    model, ema = repa_checkpoint(tmp_path / "last.pt")
    done = convert_sit(tmp_path / "last.pt", tmp_path / "out", num_heads=4, show_progress=False)
    assert done.decisions.flavor == "repa" and done.weights == "ema"
    assert done.dropped and all(k.startswith("projectors.") for k in done.dropped)
    assert len(done.dropped) == 12  # two projectors of three linear layers, weight + bias
    assert done.ignored == ["args", "model", "opt", "steps"]
    sched = json.loads((done.out / "scheduler" / "scheduler_config.json").read_text())
    assert (sched["flow_path"], sched["time_input"]) == ("gvp", "u")  # REPA's cosine path
    record = json.loads((done.out / "sit.json").read_text())
    assert record["kept_out"]["projectors"] == done.dropped
    net = load_transformer(done.out)
    assert net.config.out_channels == 4  # REPA: no learned sigma
    torch.manual_seed(5)
    x = torch.randn(4, 4, 8, 8)
    worst = 0.0
    for sigma in SIGMAS:
        t = torch.full((4,), sigma)  # REPA's time input: t=0 is data
        got = block_outputs(net, x, t, LABELS)
        with torch.no_grad():
            want = ema(x, t, LABELS, record=True)
            out = net(x, t, class_labels=LABELS).sample
            other = model(x, t, LABELS)
        assert rel_err(out, want) < 1e-4, f"sigma={sigma}"
        assert rel_err(out, other) > 1e-2  # the EMA weights, not the online model's
        worst = max(worst, *(rel_err(got[i + 1], ema.record[f"blocks.{i}"]) for i in range(3)))
    assert worst < 1e-4
    picked = convert_sit(
        tmp_path / "last.pt", tmp_path / "m", num_heads=4, weights="model", show_progress=False
    )
    with torch.no_grad():
        t = torch.full((4,), 0.5)
        got = load_transformer(picked.out)(x, t, class_labels=LABELS).sample
        assert rel_err(got, model(x, t, LABELS)) < 1e-4


def test_full_width_sit_xl_2_on_meta():
    """SiT-XL/2 (256x256: 32x32 latents) is 675,129,632 parameters with its fixed position
    table; its size is read off the shapes alone, 28 blocks of 1152 x 16 x 16 tokens."""
    with torch.device("meta"):
        ref = SiTReference(
            input_size=32, patch=2, hidden=1152, depth=28, heads=16, num_classes=1000
        )
    state = ref.state_dict()
    n_ref = sum(p.numel() for p in ref.parameters())
    assert n_ref == 675_129_632
    cfg = infer_config(state)  # no --num-heads: a released size
    assert (cfg.name, cfg.heads, cfg.out_channels, cfg.input_size) == ("SiT-XL/2", 16, 8, 32)
    net = empty_transformer(diffusers_config(cfg))
    weights = convert_state_dict(state, cfg, {k: v.shape for k, v in net.state_dict().items()})
    net.load_state_dict(weights, assign=True, strict=True)
    n = sum(p.numel() for p in net.parameters())
    per_block_emb = 1001 * 1152 + (256 * 1152 + 1152) + (1152 * 1152 + 1152)
    assert n == n_ref - 256 * 1152 + 27 * per_block_emb == 749_826_464
    cat = build_catalogue(net)
    assert len(cat) == 28 == len(net.transformer_blocks)
    assert {(lay.channels, lay.height, lay.width) for lay in cat} == {(1152, 16, 16)}
    assert cat[-1].name == "transformer_blocks.27"
