"""Counter-based device noise: a pure function of (seed, image index, element)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from explorer.features.noise import device_noise


def _mix(x: int) -> int:
    """The 32-bit hash, written plainly on Python ints (the reference)."""
    x ^= x >> 16
    x = (x * 0x7FEB352D) & 0xFFFFFFFF
    x ^= x >> 15
    x = (x * 0x846CA68B) & 0xFFFFFFFF
    return x ^ (x >> 16)


def reference_noise(index: int, seed: int, n: int) -> np.ndarray:
    """Element by element, with Python ints and math: the definition in `explorer.features.noise`."""
    s = _mix((seed & 0xFFFFFFFF) ^ 0x9E3779B9)
    s = _mix(s ^ ((seed >> 32) & 0xFFFFFFFF))
    key = _mix(_mix((index & 0xFFFFFFFF) ^ s) ^ ((index >> 32) & 0xFFFFFFFF) ^ 0x85EBCA6B)
    key2 = _mix(key ^ 0x68E31DA4)
    out = []
    for m in range((n + 1) // 2):
        a = _mix(_mix((2 * m) ^ key) ^ key2)
        b = _mix(_mix((2 * m + 1) ^ key) ^ key2)
        u1, u2 = (a + 0.5) * 2.0**-32, (b + 0.5) * 2.0**-32
        r = math.sqrt(-2.0 * math.log(u1))
        out += [r * math.cos(2.0 * math.pi * u2), r * math.sin(2.0 * math.pi * u2)]
    return np.asarray(out[:n], dtype=np.float32)


@pytest.mark.parametrize("index,seed", [(0, 0), (7, 3), (2**33 + 5, 1), (123456, 2**40 + 9)])
def test_matches_the_plain_reference(index, seed):
    shape = (3, 5, 3)  # odd element count: the last pair is cut
    got = device_noise(np.array([index]), seed, shape)[0].flatten().numpy()
    want = reference_noise(index, seed, 45)
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-6)
    assert np.mean(got == want) > 0.9, "float64 math rounded once should agree almost bit for bit"


def test_same_seed_and_index_give_the_same_noise_across_batches_and_orders():
    shape = (2, 8, 8)
    whole = device_noise(np.arange(20), 5, shape)
    for order in (np.arange(20)[::-1], np.random.default_rng(0).permutation(20)):
        for batch in (1, 3, 7, 20):
            parts = [device_noise(order[i : i + batch], 5, shape) for i in range(0, 20, batch)]
            got = torch.cat(parts)
            assert torch.equal(got, whole[order.copy()]), f"batch {batch} changed the noise"
    assert not torch.equal(device_noise(np.arange(20), 6, shape), whole), "seed must matter"
    assert not torch.equal(whole[0], whole[1]), "images must get different noise"


def test_chunked_generation_equals_one_step(monkeypatch):
    from explorer.features import noise

    whole = device_noise(np.arange(9), 1, (4, 4))
    monkeypatch.setattr(noise, "_CHUNK_CPU", 8)  # one image per generation step
    assert torch.equal(device_noise(np.arange(9), 1, (4, 4)), whole)


def test_made_on_the_requested_device_and_shape():
    z = device_noise(np.array([1, 2]), 0, (3, 4, 4), device=torch.device("cpu"))
    assert z.shape == (2, 3, 4, 4) and z.dtype == torch.float32 and z.device.type == "cpu"
    if torch.cuda.is_available():  # pragma: no cover - only on a GPU machine
        g = device_noise(np.array([1, 2]), 0, (3, 4, 4), device="cuda")
        assert torch.allclose(g.cpu(), z, atol=1e-6)


def test_standard_normal_statistics():
    z = device_noise(np.arange(400), 11, (1, 32, 32)).flatten().numpy().astype(np.float64)
    n = z.size  # 409,600 values
    assert abs(z.mean()) < 5 / math.sqrt(n), f"mean {z.mean()}"
    assert abs(z.var() - 1) < 5 * math.sqrt(2 / n), f"variance {z.var()}"
    assert abs(stats.skew(z)) < 0.02 and abs(stats.kurtosis(z)) < 0.04
    assert stats.kstest(z[:100_000], "norm").pvalue > 1e-3, "not normal by Kolmogorov-Smirnov"
    assert np.mean(np.abs(z) > 3) == pytest.approx(2 * stats.norm.sf(3), rel=0.15), "tails"
    flat = z.reshape(400, -1)
    for a, b, what in (
        (flat[:-1], flat[1:], "neighbouring images"),
        (flat[:, :-1], flat[:, 1:], "neighbouring elements"),
        (flat[:, 0::2], flat[:, 1::2], "the two values of a Box-Muller pair"),
    ):
        r = np.corrcoef(a.ravel(), b.ravel())[0, 1]
        assert abs(r) < 0.01, f"{what} correlate: r = {r:.4f}"


def test_bad_seed_is_refused():
    with pytest.raises(ValueError, match="seed"):
        device_noise(np.array([0]), -1, (2,))
