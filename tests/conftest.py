"""Shared fixtures: a hermetic cache for every test, a tiny saved diffusers U-Net, a tiny dataset.

Everything here is built in the test itself in milliseconds: no download, no ~/.cache.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from explorer.data.base import ImageDataset, fingerprint_arrays, stratified_split

# The CI box has 2 cores shared with other jobs: OpenMP spin-waiting across threads makes tiny
# forwards ~50x slower there, and tiny models gain nothing from threads anyway.
torch.set_num_threads(1)

# A 2-level U-Net with one attention level: 9 probe points, 16x16 input, runs in milliseconds.
TINY_UNET = dict(
    sample_size=16,
    in_channels=1,
    out_channels=1,
    block_out_channels=(8, 16),
    down_block_types=("DownBlock2D", "AttnDownBlock2D"),
    up_block_types=("AttnUpBlock2D", "UpBlock2D"),
    layers_per_block=1,
    norm_num_groups=4,
    attention_head_dim=8,
)


@pytest.fixture(autouse=True)
def _hermetic_cache(tmp_path, monkeypatch):
    """Every test gets its own cache root, so nothing reads or writes ~/.cache."""
    monkeypatch.setenv("EXPLORER_CACHE", str(tmp_path / "explorer-cache"))
    monkeypatch.delenv("EXPLORER_DEBUG", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # for CLI subprocesses, as above
    # ... and for this process again: numba (UMAP) can change the OpenMP thread count torch reads,
    # and CPU passes split reductions by it, so the byte-equality tests compare like with like.
    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _restore_explorer_logger():
    """An in-process CLI run configures the "explorer" logger (its own stderr handler, no
    propagation); put it back afterwards so later tests' `caplog` sees the core's warnings."""
    import logging

    log = logging.getLogger("explorer")
    saved = (list(log.handlers), log.level, log.propagate)
    yield
    log.handlers[:], log.level, log.propagate = saved[0], saved[1], saved[2]


@pytest.fixture(scope="session")
def tiny_unet_config() -> dict:
    """The tiny U-Net's constructor arguments (do not mutate: shared by the session)."""
    return dict(TINY_UNET)


def build_tiny_unet(seed: int = 0):
    from diffusers import UNet2DModel

    torch.manual_seed(seed)
    return UNet2DModel(**TINY_UNET)


def save_tiny_model(folder, seed: int = 0, **save_kwargs):
    """Save a tiny U-Net (safetensors unless told otherwise) and a 1000-step DDPM scheduler into `folder`."""
    from diffusers import DDPMScheduler

    unet = build_tiny_unet(seed)
    unet.save_pretrained(folder, **save_kwargs)
    DDPMScheduler(num_train_timesteps=1000).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def model_factory():
    """`save_tiny_model(folder, seed=0, **save_pretrained_kwargs)`, for tests that need variants."""
    return save_tiny_model


@pytest.fixture
def tiny_model_dir(tmp_path):
    """A folder holding a tiny `UNet2DModel` (config.json + safetensors) and scheduler_config.json."""
    return save_tiny_model(tmp_path / "tiny-model")


def make_tiny_dataset(n: int = 60, classes: int = 3, size: int = 16, seed: int = 0) -> ImageDataset:
    """`n` random `(size, size, 1) uint8` images in `classes` balanced classes, split 80/20 stratified."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, size, size, 1), dtype=np.uint8)
    labels = (np.arange(n) % classes).astype(np.int64)
    return ImageDataset(
        name="tiny",
        labels=labels,
        class_names=[f"class{c}" for c in range(classes)],
        splits=stratified_split(labels, 0.2, seed=0),
        fingerprint=fingerprint_arrays(images, labels, extra="tiny"),
        array=images,
        source="tests",
    )


@pytest.fixture
def tiny_dataset() -> ImageDataset:
    return make_tiny_dataset()
