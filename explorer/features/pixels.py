"""The raw-pixel baseline: the preprocessed images themselves as features, cached like any entry."""

from __future__ import annotations

import time

import numpy as np
import torch

from explorer.data import ImageDataset
from explorer.defaults import PIXELS
from explorer.features import streaming
from explorer.features.capture import pool
from explorer.features.job import CHECKPOINT_SECONDS
from explorer.features.keys import EXTRACTION_VERSION, Selection, feature_key
from explorer.features.store import FeatureStore


def ensure_pixels(
    model,
    dataset: ImageDataset,
    sel: Selection,
    pool_name: str,
    *,
    store: FeatureStore,
    batch_size: int = 1024,
    workers: int | None = None,
) -> np.ndarray:
    """The raw-pixel baseline at the model's input size: `(N, C*H*W)` for pool "full", else pooled.

    Written batch by batch into a partial entry (resumable), so it never sits whole in memory;
    returned memory-mapped.
    """
    key = feature_key(model, dataset, sel, None, PIXELS, pool_name, None)
    if not store.has(key):
        with store.lock(f"pixels-{key}"):  # like feature jobs: two processes never write one entry
            if not store.has(key):  # another process may have finished it meanwhile
                _put_pixels(model, dataset, sel, pool_name, key, store, batch_size, workers)
    return store.load(key)


PIXEL_BATCH_BYTES = 64 * 2**20  # float32 pixels per batch: 85 images at 256x256 RGB


def _put_pixels(
    model,
    dataset,
    sel: Selection,
    pool_name: str,
    key: str,
    store: FeatureStore,
    batch_size: int,
    workers: int | None = None,
) -> None:
    """Compute the pixel entry `key` chunk by chunk (`batch_size` rows, fewer for big images)."""
    prep = model.preprocess
    n = len(sel.indices)
    probe = torch.zeros(1, prep.channels, prep.size, prep.size)
    dim = probe.flatten(1).shape[1] if pool_name == "full" else pool(probe, pool_name).shape[1]
    entry = store.begin(
        key,
        (n, dim),
        {
            "layer": PIXELS,
            "pool": pool_name,
            "dataset": dataset.name,
            "split": sel.split,
            "images": n,
            "version": EXTRACTION_VERSION,
        },
    )
    rows = max(1, min(batch_size, PIXEL_BATCH_BYTES // (4 * probe.numel())))
    spans = [(s, min(s + rows, n)) for s in range(entry.rows_done, n, rows)]
    done, saved = entry.rows_done, time.monotonic()
    try:
        for (s, stop), x in streaming.batches(dataset, sel.indices, spans, prep, workers=workers):
            feats = x.flatten(1) if pool_name == "full" else pool(x, pool_name)
            entry.write(s, feats.to(torch.float16).numpy())
            done = stop
            if time.monotonic() - saved > CHECKPOINT_SECONDS:
                entry.checkpoint(done)
                saved = time.monotonic()
    except BaseException:  # keep the finished rows for the next try
        entry.checkpoint(done)
        raise
    entry.commit()
