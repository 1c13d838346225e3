"""Extraction: early exit equals the full pass, fixed per-image noise, pooling, hook hygiene, parsing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from explorer.errors import ExplorerError
from explorer.features.capture import capture, extract_features, forward_features, image_noise
from explorer.features.sizes import pooled_dim
from explorer.models.layers import build_catalogue, first_tensor
from explorer.models.loader import LoadedModel
from explorer.settings import check_timesteps, parse_pools, parse_timesteps

POOLS = ["1", "2", "4", "8", "max"]


@pytest.fixture(scope="module")
def model(tiny_unet_config) -> LoadedModel:
    from diffusers import DDPMScheduler, UNet2DModel

    torch.manual_seed(0)
    unet = UNet2DModel(**tiny_unet_config).eval()
    return LoadedModel("tiny", unet, DDPMScheduler(num_train_timesteps=1000), "tiny-fp", "local")


@pytest.fixture(scope="module")
def cat(model):
    return build_catalogue(model.denoiser)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.rand(20, 1, 16, 16, generator=g) * 2 - 1


def _forward(model, x0, layers, *, t=90, seed=0, pools=("2",), stop_early=True):
    noise = image_noise(np.arange(len(x0)), seed, tuple(x0.shape[1:]))
    return forward_features(
        model.denoiser,
        model.scheduler,
        x0,
        noise,
        timestep=t,
        layers=layers,
        pools=pools,
        stop_early=stop_early,
    )


class CallCounter:
    """Counts forward calls of named modules of a model while active."""

    def __init__(self, unet, names):
        mods = dict(unet.named_modules())
        self.calls = dict.fromkeys(names, 0)
        self.handles = [mods[n].register_forward_hook(self._hook(n)) for n in names]

    def _hook(self, name):
        def hook(*_):
            self.calls[name] += 1

        return hook

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()


def test_early_exit_equals_full_pass_for_every_layer(model, cat, images):
    full = _forward(model, images[:6], cat, pools=POOLS, stop_early=False)
    for lay in cat:
        early = _forward(model, images[:6], [lay], pools=POOLS, stop_early=True)
        assert set(early) == {(lay.name, p) for p in POOLS}, (
            f"{lay.name}: wrong keys {sorted(early)}"
        )
        for p in POOLS:
            assert early[(lay.name, p)].dtype == torch.float16, early[(lay.name, p)].dtype
            assert torch.equal(early[(lay.name, p)], full[(lay.name, p)]), (
                f"early-exit features of {lay.name} pool {p} differ from the full pass"
            )


def test_early_exit_really_stops(model, cat, images):
    shallow = cat[2]  # down_blocks.0.downsamplers.0
    with CallCounter(model.denoiser, ["conv_out", "mid_block", shallow.hook]) as c:
        _forward(model, images[:4], [cat[0], shallow], stop_early=True)
    assert c.calls[shallow.hook] == 1, f"the deepest requested layer should run once: {c.calls}"
    assert c.calls["mid_block"] == 0 and c.calls["conv_out"] == 0, (
        f"the pass ran past layer 3: {c.calls}"
    )

    with CallCounter(model.denoiser, ["conv_out", "conv_norm_out"]) as c:
        _forward(model, images[:4], [cat[-1]], stop_early=True)
    assert c.calls == {"conv_out": 0, "conv_norm_out": 0}, (
        f"even the last point should skip the output head: {c.calls}"
    )

    with CallCounter(model.denoiser, ["conv_out"]) as c:
        _forward(model, images[:4], [shallow], stop_early=False)
    assert c.calls["conv_out"] == 1, f"stop_early=False should run the whole U-Net: {c.calls}"


def test_one_forward_per_timestep_and_batch_serves_every_layer(model, cat, images):
    calls = []
    handle = model.denoiser.register_forward_pre_hook(
        lambda m, args: calls.append(args[0].shape[0])
    )
    try:
        extract_features(
            model, images, timesteps=[10, 90, 150], layers=cat, pools=["1", "2"], batch_size=8
        )
    finally:
        handle.remove()
    assert calls == [8, 8, 8, 8, 8, 8, 4, 4, 4], (
        f"expected 3 batches x 3 timesteps forward passes, got {calls}"
    )


def test_same_seed_same_features_different_seed_different(model, cat, images):
    kw = dict(timesteps=[50], layers=cat, pools=["2"])
    a = extract_features(model, images, seed=0, **kw)
    b = extract_features(model, images, seed=0, **kw)
    c = extract_features(model, images, seed=1, **kw)
    for k in a:
        assert np.array_equal(a[k], b[k]), f"{k}: same seed must give identical features"
    assert any(not np.array_equal(a[k], c[k]) for k in a), (
        "a different seed must change the features"
    )
    mid = (50, "mid_block", "2")
    assert not np.array_equal(a[mid], c[mid]), (
        "a different seed must change the bottleneck features"
    )


def assert_same_up_to_rounding(a: dict, b: dict, what: str) -> None:
    """Equal but for float16 rounding flips: CPU GEMM kernels pick their blocking by batch size, so
    the float32 maps can differ in the last bits, which moves a rare value by one float16 ulp."""
    assert a.keys() == b.keys(), f"{what}: different settings {sorted(a)} vs {sorted(b)}"
    exact = total = 0
    for k in a:
        np.testing.assert_allclose(
            a[k].astype(np.float32),
            b[k].astype(np.float32),
            rtol=2e-3,
            atol=1e-5,
            err_msg=f"{what}: {k} differs beyond float16 rounding",
        )
        exact += int((a[k] == b[k]).sum())
        total += a[k].size
    assert exact / total > 0.99, f"{what}: only {exact}/{total} values are bit-identical"


def test_batch_size_does_not_change_features(model, cat, images):
    kw = dict(timesteps=[10, 500], layers=cat, pools=["1", "max"], seed=3)
    small = extract_features(model, images, batch_size=7, **kw)
    big = extract_features(model, images, batch_size=64, **kw)
    assert_same_up_to_rounding(small, big, "batch size 7 vs 64")


def test_noise_is_per_image_index(model, cat, images):
    """A subset given its dataset indices gets exactly the rows of the full run."""
    kw = dict(timesteps=[90], layers=[cat[4]], pools=["2"], seed=0)
    full = extract_features(model, images, **kw)[(90, "mid_block", "2")]
    idx = np.array([12, 3, 17])
    part = extract_features(model, images[idx], indices=idx, **kw)[(90, "mid_block", "2")]
    assert_same_up_to_rounding(
        {"mid": part}, {"mid": full[idx]}, "a subset with its dataset indices"
    )
    shuffled = extract_features(model, images[idx], **kw)[(90, "mid_block", "2")]  # indices 0, 1, 2
    assert not np.allclose(shuffled, full[idx], atol=1e-2), (
        "without its indices a subset must draw other noise"
    )


def test_image_noise_fixed_per_seed_and_index():
    shape = (1, 4, 4)
    a = image_noise(np.array([0, 1, 2, 3]), 7, shape)
    b = image_noise(np.array([3, 1]), 7, shape)
    assert a.shape == (4, 1, 4, 4) and a.dtype == torch.float32, (a.shape, a.dtype)
    assert torch.equal(b[0], a[3]) and torch.equal(b[1], a[1]), (
        "noise must depend only on (seed, index)"
    )
    assert not torch.equal(a[0], a[1]), "different images need different noise"
    assert not torch.equal(image_noise(np.array([0]), 8, shape)[0], a[0]), (
        "a different seed needs different noise"
    )


def test_every_timestep_sees_the_same_noise(model, cat, images, monkeypatch):
    from explorer.models.families.noise_process import VPProcess

    seen = []
    real = VPProcess.add_noise

    def spy(self, x0, noise, t):
        seen.append((int(t[0]), noise.clone()))
        return real(self, x0, noise, t)

    monkeypatch.setattr(VPProcess, "add_noise", spy)
    extract_features(model, images[:5], timesteps=[500, 10, 90], layers=cat, pools=["2"], seed=4)
    assert [t for t, _ in seen] == [10, 90, 500], (
        f"timesteps should run sorted, once each: {[t for t, _ in seen]}"
    )
    for t, noise in seen[1:]:
        assert torch.equal(noise, seen[0][1]), (
            f"t={t} drew different noise; noise must not depend on t"
        )
    assert torch.equal(seen[0][1], image_noise(np.arange(5), 4, (1, 16, 16))), (
        "noise must come from image_noise"
    )


@pytest.mark.parametrize("how", POOLS)
def test_pooling_shapes_and_values(model, cat, images, how):
    lay = cat[4]  # mid_block, 16 x 8 x 8
    maps = {}
    handle = dict(model.denoiser.named_modules())[lay.hook].register_forward_hook(
        lambda m, i, o: maps.__setitem__("x", first_tensor(o).detach().clone())
    )
    try:
        got = _forward(model, images[:5], [lay], pools=[how])[(lay.name, how)]
    finally:
        handle.remove()
    x = maps["x"]
    assert x.shape == (5, lay.channels, lay.height, lay.width), x.shape
    if how == "max":
        want = x.amax(dim=(2, 3))
    else:
        want = F.adaptive_avg_pool2d(x.float(), int(how)).flatten(1)
    assert got.shape == (5, pooled_dim(lay, how)), f"pool {how}: shape {tuple(got.shape)}"
    assert got.shape[1] == (lay.channels if how == "max" else lay.channels * int(how) ** 2), (
        got.shape
    )
    assert got.dtype == torch.float16, got.dtype
    assert torch.equal(got, want.to(torch.float16)), (
        f"pool {how}: values differ from a manual pooling"
    )


def test_capture_restores_mode_and_removes_hooks_on_error(model, cat):
    unet = model.denoiser
    unet.train()
    try:
        with pytest.raises(ValueError, match="boom"), capture(unet, cat, ["1"]) as store:
            assert not unet.training, "capture must run the model in eval mode"
            assert isinstance(store, dict)
            raise ValueError("boom")
        assert unet.training, "capture must restore train mode after an exception"
    finally:
        unet.eval()
    leftover = [n for n, m in unet.named_modules() if m._forward_hooks]
    assert not leftover, f"hooks left behind after an exception: {leftover}"


def test_forward_features_leaves_model_clean(model, cat, images):
    model.denoiser.train()
    try:
        _forward(model, images[:2], [cat[2]], stop_early=True)
        assert model.denoiser.training, (
            "forward_features must restore the caller's mode after an early exit"
        )
    finally:
        model.denoiser.eval()
    leftover = [
        n for n, m in model.denoiser.named_modules() if m._forward_hooks or m._forward_pre_hooks
    ]
    assert not leftover, f"hooks left behind after an early exit: {leftover}"


def test_extract_features_output(model, cat, images):
    out = extract_features(
        model, images[:6], timesteps=[0, 999], layers=[cat[0], cat[-1]], pools=["1", "max"]
    )
    assert set(out) == {
        (t, lay.name, p) for t in (0, 999) for lay in (cat[0], cat[-1]) for p in ("1", "max")
    }, out.keys()
    for (_t, name, p), v in out.items():
        lay = next(lay for lay in cat if lay.name == name)
        assert isinstance(v, np.ndarray) and v.dtype == np.float16, (name, type(v), v.dtype)
        assert v.shape == (6, pooled_dim(lay, p)), (name, p, v.shape)
        assert np.isfinite(v).all(), f"{name} {p}: non-finite features"


@pytest.mark.parametrize("t", [1000, -1, 5000])
def test_timestep_out_of_range(model, cat, images, t):
    with pytest.raises(ExplorerError, match=r"\[0, 1000\)") as e:
        extract_features(model, images[:2], timesteps=[10, t], layers=cat, pools=["1"])
    assert str(t) in str(e.value) and "999" in str(e.value), (
        f"should name the bad t and the last valid one: {e.value}"
    )


def test_check_timesteps():
    assert check_timesteps([90, 10, 90], 1000) == [10, 90], "sorted and unique"
    with pytest.raises(ExplorerError, match="no timesteps"):
        check_timesteps([], 1000)


def test_parse_timesteps():
    assert parse_timesteps("0:100:25") == [0, 25, 50, 75], parse_timesteps("0:100:25")
    assert parse_timesteps("10, 90,150") == [10, 90, 150], parse_timesteps("10, 90,150")
    assert parse_timesteps("0:3,500") == [0, 1, 2, 500], parse_timesteps("0:3,500")
    assert parse_timesteps([5, 6]) == [5, 6]
    with pytest.raises(ExplorerError, match="cannot read timesteps"):
        parse_timesteps("ten")


def test_parse_pools():
    assert parse_pools("1,max") == ["1", "max"], parse_pools("1,max")
    assert parse_pools(2) == ["2"], parse_pools(2)
    assert parse_pools(["gap", "2", "1"]) == ["1", "2"], (
        "aliases map to canonical names, duplicates dropped"
    )
    for bad in ("3", "mean", "1,16"):
        with pytest.raises(ExplorerError, match="unknown pooling"):
            parse_pools(bad)
