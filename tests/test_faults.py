"""Faults: broken models, kill -9 during sweep and cache clear, racing sweeps, a full disk,
damaged derived caches and crafted links to a shared app.

Every case checks what the user sees (one `error:` line on stderr, or a notice in the app),
that no cache entry is left damaged, and that no finished work is lost or served wrong.
Kills and races run in forked children of one helper process (`tests/faults_helpers.py`),
which imports torch and the explorer once, so each run costs its work, not its imports.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from explorer.cli import main
from tests.conftest import save_tiny_model


def error_lines(err: str) -> list[str]:
    """The lines of `err` (split as a terminal shows them: at \\n and \\r) that are error messages."""
    return [line for line in err.splitlines() if line.startswith("error:")]


def image_folder(root, classes: int = 2, n: int = 12, size: int = 16):
    """A tiny ImageFolder tree of gray PNGs under `root`."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(classes):
        (root / f"c{c}").mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8)).save(
                root / f"c{c}" / f"{i}.png"
            )
    return root


# --- 1. a model whose weights are NaN ---------------------------------------------------------


@pytest.fixture
def nan_model_dir(tmp_path):
    folder = save_tiny_model(tmp_path / "nan-model")
    from diffusers import UNet2DModel

    unet = UNet2DModel.from_pretrained(folder)
    with torch.no_grad():
        for p in unet.parameters():
            p.fill_(float("nan"))
    unet.save_pretrained(folder)
    return folder


@pytest.mark.parametrize(
    "command, dataset",
    [
        ("extract", "digits"),
        ("extract-workers", "folder"),  # images decoded in DataLoader worker processes
        ("sweep", "digits"),
    ],
)
def test_nan_weights_give_the_guard_line(nan_model_dir, tmp_path, capsys, command, dataset):
    ds = str(image_folder(tmp_path / "imgs")) if dataset == "folder" else dataset
    common = ["--model", str(nan_model_dir), "--dataset", ds, "--timesteps", "10"]
    common += ["--cache-dir", str(tmp_path / "cache")]
    if command == "sweep":
        argv = ["sweep", *common, "--limit", "20", "--layers", "all", "--no-baselines"]
        argv += ["--heads", "linear", "--out", str(tmp_path / "t.csv")]
    else:
        argv = ["extract", *common, "--limit", "20", "--layers", "all"]
        argv += ["--workers", "2"] if command == "extract-workers" else []
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = error_lines(err)
    assert len(lines) == 1, f"want one error line on stderr, got {lines!r} in {err!r}"
    assert "the model produced NaN/inf at layer 1 (conv_in) at t=10" in lines[0], lines
    assert "Traceback" not in err
    from explorer.features.store import FeatureStore

    assert FeatureStore(tmp_path / "cache").entries() == [], "nothing cached from a NaN pass"
