"""Preprocess: raw uint8 images -> (B, C, size, size) float32 in [-1, 1]."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from explorer.data.preprocess import Preprocess, to_pil


def test_shape_dtype_and_range():
    images = np.zeros((4, 8, 8, 1), np.uint8)
    images[:, :4] = 255
    out = Preprocess(size=8, channels=1)(images)
    assert out.shape == (4, 1, 8, 8), f"expected (4, 1, 8, 8), got {tuple(out.shape)}"
    assert out.dtype == torch.float32, f"expected float32, got {out.dtype}"
    assert out.min().item() == -1.0 and out.max().item() == 1.0, "0 -> -1 and 255 -> 1"


def test_resize_up_stays_in_range():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    out = Preprocess(size=32, channels=3)(images)
    assert out.shape == (3, 3, 32, 32), f"expected (3, 3, 32, 32), got {tuple(out.shape)}"
    assert out.min() >= -1.0 and out.max() <= 1.0, "output must stay inside [-1, 1]"


def test_gray_to_rgb_repeats_the_channel():
    images = np.arange(16, dtype=np.uint8).reshape(1, 4, 4, 1) * 16
    out = Preprocess(size=4, channels=3)(images)
    assert out.shape == (1, 3, 4, 4), f"gray -> 3 channels, got {tuple(out.shape)}"
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 1], out[:, 2]), (
        "channels are copies"
    )


def test_rgb_to_gray_uses_luma():
    images = np.zeros((1, 4, 4, 3), np.uint8)
    images[..., 1] = 255  # pure green
    out = Preprocess(size=4, channels=1)(images)
    assert out.shape == (1, 1, 4, 4), f"rgb -> 1 channel, got {tuple(out.shape)}"
    expected = 0.587 * 255 / 127.5 - 1
    assert torch.allclose(out, torch.full_like(out, expected), atol=1e-5), "green maps to its luma"


def test_rgba_drops_alpha():
    images = np.full((1, 4, 4, 4), 255, np.uint8)
    images[..., 3] = 0
    out = Preprocess(size=4, channels=3)(images)
    assert out.shape == (1, 3, 4, 4) and torch.all(out == 1.0), "alpha is dropped, colour kept"


def test_non_square_is_center_cropped():
    image = np.zeros((1, 4, 8, 1), np.uint8)  # H=4, W=8: the centre 4 columns survive
    image[:, :, 2:6] = 255
    out = Preprocess(size=4, channels=1)(image)
    assert out.shape == (1, 1, 4, 4), f"expected a square, got {tuple(out.shape)}"
    assert torch.all(out == 1.0), "the centre crop holds only the white middle columns"


def test_list_of_different_sizes():
    rng = np.random.default_rng(1)
    images = [
        rng.integers(0, 256, (10, 12, 3), dtype=np.uint8),
        rng.integers(0, 256, (32, 20, 3), dtype=np.uint8),
        rng.integers(0, 256, (16, 16, 3), dtype=np.uint8),
    ]
    out = Preprocess(size=16, channels=3)(images)
    assert out.shape == (3, 3, 16, 16), f"a list becomes one batch, got {tuple(out.shape)}"
    assert out.min() >= -1.0 and out.max() <= 1.0, "output must stay inside [-1, 1]"
    direct = Preprocess(size=16, channels=3)(images[2][None])
    assert torch.allclose(out[2], direct[0]), (
        "an image already at size is unchanged by the list path"
    )


def test_list_with_mixed_channels():
    images = [
        np.zeros((8, 8, 1), np.uint8),
        np.full((9, 9, 3), 255, np.uint8),
        np.zeros((8, 8), np.uint8),
    ]
    out = Preprocess(size=8, channels=3)(images)
    assert out.shape == (3, 3, 8, 8), f"mixed gray/rgb lists must batch, got {tuple(out.shape)}"
    assert torch.all(out[0] == -1.0), "black stays -1"
    assert torch.allclose(out[1], torch.ones_like(out[1]), atol=1e-5), (
        "white stays 1: values survive the channel match"
    )


def test_tag_and_to_pil():
    assert Preprocess(32, 3).tag != Preprocess(32, 1).tag, "the tag must change with the channels"
    assert Preprocess(32, 3).tag != Preprocess(64, 3).tag, "the tag must change with the size"
    assert to_pil(np.zeros((4, 5, 1), np.uint8)).mode == "L", "1 channel -> L"
    assert to_pil(np.zeros((4, 5, 3), np.uint8)).size == (5, 4), "PIL size is (W, H)"
    with pytest.raises(ValueError):
        Preprocess(4, 3)(np.zeros((1, 4, 4, 2), np.uint8))


def _read_only(a: np.ndarray) -> np.ndarray:
    a = a.copy()
    a.flags.writeable = False
    return a


def _read_only_inputs() -> list[tuple[Preprocess, np.ndarray | list[np.ndarray]]]:
    """Inputs whose arrays reach `torch.from_numpy` read-only unless preprocess copes.

    The list path turns each image into PIL's pixels (`np.asarray` of a PIL image is
    read-only); a square image already at size, or one cropped whole, stays that array.
    """
    rng = np.random.default_rng(2)
    rgb = rng.integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    return [
        (Preprocess(16, 3), [rgb[0], rgb[1]]),  # decoded files: the per-worker path
        (Preprocess(8, 3), [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)]),
        (Preprocess(16, 1), [rng.integers(0, 256, (16, 16), dtype=np.uint8)]),
        (Preprocess(16, 3), _read_only(rgb)),  # a read-only (e.g. memory-mapped) batch
        (Preprocess(8, 3), _read_only(rgb)),
    ]


def test_read_only_arrays_reach_torch_writable(monkeypatch):
    """Every array handed to torch.from_numpy is writable (so torch cannot warn), and the
    values are those of a writable copy of the input."""
    real = torch.from_numpy
    seen = []

    def checked(a):
        seen.append(a.flags.writeable)
        return real(a)

    monkeypatch.setattr(torch, "from_numpy", checked)
    for prep, images in _read_only_inputs():
        out = prep(images)
        writable = [im.copy() for im in images] if isinstance(images, list) else images.copy()
        monkeypatch.setattr(torch, "from_numpy", real)
        assert torch.equal(out, prep(writable)), "read-only input gives the same batch"
        monkeypatch.setattr(torch, "from_numpy", checked)
    assert seen and all(seen), f"torch.from_numpy got a read-only array: {seen}"


def test_no_not_writable_warning_in_a_fresh_process():
    """torch warns about a non-writable array once per process (then stays silent), so the
    check runs where nothing has triggered it yet, as in a decoding worker, with warnings as errors."""
    code = (
        "import warnings\n"
        "warnings.simplefilter('error')\n"
        "from tests.data.test_preprocess import _read_only_inputs\n"
        "for prep, images in _read_only_inputs():\n"
        "    prep(images)\n"
        "print('ok')\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr


def test_no_warning_in_this_process(recwarn):
    for prep, images in _read_only_inputs():
        prep(images)
    assert not [str(w.message) for w in recwarn], "preprocessing warns"
