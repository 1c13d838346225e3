"""Speed options (`explorer.models.accel`): compiled units keep the capture hooks and early exit exact,
channels_last changes no value, the Inductor cache goes under the explorer cache, and neither
option enters a key. Compile is traced with Dynamo's `aot_eager` backend (same graphs and
graph breaks as Inductor, no C++ toolchain or minutes of codegen); the GPU check compares
Inductor-compiled features with eager ones on CUDA."""

from __future__ import annotations

import os

import pytest
import torch
from diffusers import DDPMScheduler

from explorer.features.capture import forward_features
from explorer.models import accel
from explorer.models.hooks import listen
from explorer.models.layers import build_catalogue, probe_points
from tests.conftest import build_tiny_unet


@pytest.fixture(scope="module")
def compiled():
    """(eager tiny U-Net, the same weights compiled per unit, catalogue, scheduler)."""
    eager, fast = build_tiny_unet().eval(), build_tiny_unet().eval()
    accel.prepare(fast, "cpu", compile=True, backend="aot_eager")
    return eager, fast, build_catalogue(eager), DDPMScheduler(num_train_timesteps=1000)


def _feats(unet, sched, cat, layers, batch=4, **kw):
    g = torch.Generator().manual_seed(1)
    x0 = torch.rand(batch, 1, 16, 16, generator=g) * 2 - 1
    noise = torch.randn(batch, 1, 16, 16, generator=g)
    return forward_features(
        unet, sched, x0, noise, timestep=90, layers=layers, pools=["2", "max"], **kw
    )


def test_units_hold_no_hook_target_below_them():
    unet = build_tiny_unet()
    hooked = {hook for _, hook, _, _ in probe_points(unet)}
    units = dict(accel.compile_units(unet))
    assert hooked <= units.keys(), f"hook targets not compiled: {sorted(hooked - units.keys())}"
    for path in units:
        inside = [h for h in hooked if h.startswith(path + ".")]
        assert not inside, f"unit {path} would trace the hooks of {inside}"
    assert "" not in units and "down_blocks.0" not in units, "containers of hooks stay eager"


def test_compiled_capture_matches_eager_with_early_exit(compiled):
    eager, fast, cat, sched = compiled
    for layers in (cat[:3], cat, [cat[4]]):  # early exits at 3 and 5, and the full pass
        want = _feats(eager, sched, cat, layers)
        got = _feats(fast, sched, cat, layers)
        assert got.keys() == want.keys()
        for k in want:
            torch.testing.assert_close(got[k], want[k], rtol=1e-3, atol=1e-3, msg=str(k))
    assert accel.is_compiled(fast) and not accel.is_compiled(eager)


def test_compiled_early_exit_equals_full_pass_and_batch_size_changes(compiled):
    _, fast, cat, sched = compiled
    early = _feats(fast, sched, cat, cat[:2], batch=3)
    full = _feats(fast, sched, cat, cat[:2], batch=3, stop_early=False)
    assert all(torch.equal(early[k], full[k]) for k in early)


def test_hook_installed_after_compile_fires(compiled):
    """What whole-model compile gets wrong: a hook added after the first compiled pass."""
    _, fast, cat, sched = compiled
    _feats(fast, sched, cat, cat)  # compiled and run without this listener
    seen = []
    with listen(fast, {cat[5].hook}, lambda name, out: seen.append(name)):
        _feats(fast, sched, cat, cat[:1])
        fast(torch.zeros(4, 1, 16, 16), torch.zeros(4, dtype=torch.long))
    assert seen == [cat[5].hook], seen


def test_prepare_twice_does_not_wrap_twice(compiled):
    _, fast, _, _ = compiled
    before = {p: m.forward for p, m in accel.compile_units(fast)}
    accel.prepare(fast, "cpu", compile=True, backend="aot_eager")
    assert all(m.forward is before[p] for p, m in accel.compile_units(fast))


def test_channels_last_stores_conv_weights_nhwc_and_keeps_values():
    eager, nhwc = build_tiny_unet().eval(), build_tiny_unet().eval()
    accel.prepare(nhwc, "cpu", channels_last=True)
    w = nhwc.down_blocks[0].resnets[0].conv1.weight  # (8, 8, 3, 3): the two layouts differ
    assert w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()
    cat, sched = build_catalogue(eager), DDPMScheduler(num_train_timesteps=1000)
    want, got = _feats(eager, sched, cat, cat), _feats(nhwc, sched, cat, cat)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-3, atol=1e-3, msg=str(k))


def test_cpu_default_leaves_the_model_alone():
    unet = build_tiny_unet()
    accel.prepare(unet, "cpu")
    assert unet.conv_in.weight.is_contiguous() and not accel.is_compiled(unet)


def test_inductor_cache_under_explorer_cache_unless_user_chose(monkeypatch, tmp_path):
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", default_cache_dir())  # what torch's import sets
    got = accel.use_compile_cache()
    assert got == os.path.join(os.environ["EXPLORER_CACHE"], "inductor") and os.path.isdir(got)
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    assert accel.use_compile_cache() == str(tmp_path / "mine")


def test_compile_is_not_in_the_fingerprint(tiny_model_dir):
    from explorer.models.loader import load_model

    plain = load_model(str(tiny_model_dir))
    fast = load_model(str(tiny_model_dir), compile=True)  # compiles lazily: no pass is run here
    assert accel.is_compiled(fast.denoiser) and not accel.is_compiled(plain.denoiser)
    assert fast.fingerprint == plain.fingerprint


def test_cli_takes_compile_on_extract_and_sweep():
    from explorer.cli import parse

    assert parse(["extract", "--compile"]).compile is True
    assert parse(["extract"]).compile is False
    assert parse(["sweep", "--compile"]).compile is True


def test_gpu_check_smoke_on_cpu():
    """benchmarks/gpu_check.py's whole path (build, flop count, capture, bare cut, compile,
    ensure_features into cold stores, eager-vs-compiled check) on a tiny layout; no timings."""
    from benchmarks import gpu_check

    rows = gpu_check.run(
        torch.device("cpu"), quick=True, peak=1.0, backend="aot_eager", seconds=0.01,
        log=lambda *_: None,
    )  # fmt: skip
    assert [r["figure"] for r in rows] == ["8a", "8b", "8a", "8b", "8e"]
    assert all(r["value"] > 0 and isinstance(r["met"], bool) for r in rows), rows
    assert "(eager)" in rows[0]["name"] and "(compiled)" in rows[2]["name"]
    assert "GFLOP/img" in rows[0]["note"] and "img/s end to end" in rows[1]["note"]
    assert rows[4]["value"] >= 0.999 and rows[4]["met"], rows[4]


def test_gpu_check_peaks_by_card_name(monkeypatch):
    from benchmarks import gpu_check

    cuda = torch.device("cuda")
    for name, want in [
        ("NVIDIA H100 PCIe", 756.0),
        ("NVIDIA H100 80GB HBM3", 989.0),
        ("NVIDIA H200", 989.0),
        ("NVIDIA A100-SXM4-80GB", 312.0),
        ("NVIDIA L40S", 362.0),
        ("NVIDIA GeForce RTX 4090", None),
    ]:
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda _d, n=name: n)
        assert gpu_check.peak_tflops(cuda, None) == want, name
    assert gpu_check.peak_tflops(cuda, 500.0) == 500.0
    assert gpu_check.peak_tflops(torch.device("cpu"), None) is None
