"""Feature keys: which images (`Selection`) and the content key of one feature matrix.

A key hashes (model fingerprint, dataset fingerprint, selection, preprocessing, t, layer, pool,
seed, precision, family and conditioning, extraction version). A request asks for the same keys
many times (is it cached, load it, train on it), so keys are memoised per loaded model: the
model's part and each selection's fingerprint are computed once, and each key once.
"""

from __future__ import annotations

import contextlib
import weakref
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from explorer.data import ImageDataset
from explorer.defaults import PIXELS
from explorer.features.store import content_key

# 2: counter-based device noise (explorer.features.noise); precision in the key
# 3: VP alphas_cumprod in float64, cast after indexing (sqrt(1 - a_0) moved by 8.3e-5)
EXTRACTION_VERSION = 3


@dataclass(frozen=True)
class Selection:
    """Which images: a dataset split, optionally capped to a fixed stratified subset."""

    split: str
    indices: np.ndarray = field(compare=False, hash=False)

    @classmethod
    def of(cls, dataset: ImageDataset, split: str, limit: int | None = None) -> Selection:
        return cls(split, dataset.subset(split, limit))

    @cached_property
    def fingerprint(self) -> str:
        """16 hex digits of the split name and the indices (hashed once per selection)."""
        return content_key(
            {"split": self.split, "idx": np.asarray(self.indices, np.int64).tobytes().hex()}
        )[:16]


# model -> {(dataset, selection, t, layer, pool, seed): key}; dropped with the model
_memo: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def feature_key(
    model,
    dataset: ImageDataset,
    sel: Selection,
    t: int | None,
    layer: str,
    pool_name: str,
    seed: int | None,
) -> str:
    """The content key of one feature matrix. Pixels ignore the model's weights, t and seed."""
    args = (dataset.fingerprint, sel.fingerprint, t, layer, pool_name, seed)
    try:
        keys = _memo[model]
    except (KeyError, TypeError):  # TypeError: an object that takes no weak reference
        keys = {}
        with contextlib.suppress(TypeError):
            _memo[model] = keys
    if args not in keys:
        keys[args] = compute_key(model, dataset, sel, t, layer, pool_name, seed)
    return keys[args]


def compute_key(model, dataset, sel, t, layer: str, pool_name: str, seed) -> str:
    """`feature_key` without the memo: hash the key's parts."""
    parts = {
        "dataset": dataset.fingerprint,
        "selection": sel.fingerprint,
        "preprocess": model.preprocess.tag,
        "layer": layer,
        "pool": pool_name,
        "version": EXTRACTION_VERSION,
    }
    if layer != PIXELS:
        parts |= {"model": model.fingerprint, "t": int(t), "seed": int(seed)}
        parts |= {"precision": model.precision}  # bf16/fp16-autocast features are never fp32's
        parts |= model.adapter.key_parts()  # family and conditioning; none for a plain pixel U-Net
    return content_key(parts)


def job_lock_name(model, dataset, sel: Selection, t: int, seed: int) -> str:
    """One lock per job (model, data, selection, t, seed), whichever layers a request asks for."""
    return content_key(
        {
            "model": model.fingerprint,
            "dataset": dataset.fingerprint,
            "selection": sel.fingerprint,
            "preprocess": model.preprocess.tag,
            "t": t,
            "seed": seed,
        }
    )
