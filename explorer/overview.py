"""Plain facts about a dataset, a model, its layer catalogue and the cache (the Data & model page).

Pure: every function returns plain values or a DataFrame, so the page only lays them out.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from explorer.features.cache_admin import inventory
from explorer.features.store import FeatureStore

LAYER_COLUMNS = ["index", "name", "stage", "kind", "channels", "height", "width"]
ENTRY_COLUMNS = [
    "model",
    "dataset",
    "split",
    "t",
    "layer_index",
    "layer",
    "pool",
    "seed",
    "images",
    "shape",
    "created",
]


def size_text(n: int) -> str:
    """Bytes in words: "3.2 MB" from 1 MiB up, else "12 KB"."""
    return f"{n / 2**20:.1f} MB" if n >= 2**20 else f"{n / 2**10:.0f} KB"


def describe_dataset(ds, n_train: int, n_test: int) -> dict:
    """Name, sizes, the images in use (`n_train`, `n_test`), source and skipped files of `ds`."""
    return {
        "name": ds.name,
        "images": len(ds),
        "classes": int(ds.num_classes),
        "class_names": [str(c) for c in ds.class_names],
        "train_split": len(ds.splits["train"]),
        "test_split": len(ds.splits["test"]),
        "used_train": int(n_train),
        "used_test": int(n_test),
        "source": ds.source or ds.name,
        "skipped": list(ds.skipped),
    }


def describe_model(model) -> dict:
    """Name, size in parameters, input, timesteps, family words, scheduler, provenance."""
    fam = model.adapter
    c, h, w = fam.input_shape
    info = fam.describe()
    return {
        "name": model.name,
        "parameters": int(model.parameters),
        "input": f"{c}×{h}×{w} {fam.space}",
        "input_from": f"{fam.image_channels}×{model.resolution}×{model.resolution} images",
        "timesteps": int(model.num_timesteps),
        "family": info["family"],
        "loaded": info["loaded"],
        "input_space": info["input space"],
        "conditioning": info["conditioning"],
        "scheduler": model.scheduler_text,
        "leaks_label": bool(fam.leaks_label),
        "transformer": bool(fam.transformer),
        "source": model.source,
        "path": str(model.path or ""),
        "fingerprint": model.fingerprint,
    }


def layer_table(catalogue) -> pd.DataFrame:
    """One row per probe point, in forward order, with its features at pool 1 and pool 2."""
    layers = pd.DataFrame([lay.to_dict() for lay in catalogue])
    layers["features (pool 1 / 2)"] = [f"{lay.channels} / {lay.channels * 4}" for lay in catalogue]
    return layers


def class_rows(
    labels: np.ndarray, indices: np.ndarray, n_classes: int, per: int
) -> list[np.ndarray]:
    """The first `per` of `indices` `(N,)` of each class 0..C-1 (by `labels`), one array a class."""
    indices = np.asarray(indices)
    own = np.asarray(labels)[indices]
    return [indices[own == k][:per] for k in range(n_classes)]


@dataclass
class CacheOverview:
    """The cache under `root`: feature manifests, feature bytes, and bytes of every other part."""

    root: str
    entries: pd.DataFrame
    feature_bytes: int
    other: dict[str, int] = field(default_factory=dict)

    @property
    def other_bytes(self) -> int:
        return sum(self.other.values())

    def other_text(self) -> str:
        """ "results: 12 KB, umaps: 1.0 MB" for the non-empty parts."""
        return ", ".join(f"{k}: {size_text(v)}" for k, v in self.other.items() if v)

    def table(self) -> pd.DataFrame:
        """The entries newest first, with readable `created` and `shape` columns."""
        e = self.entries
        if e.empty:
            return e
        view = e.sort_values("created", ascending=False) if "created" in e else e
        view = view[[c for c in ENTRY_COLUMNS if c in e]].copy()
        if "created" in view:
            view["created"] = pd.to_datetime(view["created"], unit="s").dt.strftime(
                "%Y-%m-%d %H:%M"
            )
        if "shape" in view:
            view["shape"] = view["shape"].map(
                lambda s: "×".join(str(x) for x in s) if isinstance(s, list) else s
            )
        return view


def cache_overview(root: str | os.PathLike | None = None) -> CacheOverview:
    """What `cache_admin.inventory` finds under `root`, and the feature store's manifests."""
    parts = {p.name: p.bytes for p in inventory(root)}
    store = FeatureStore(root)
    features = parts.pop("features")
    return CacheOverview(str(store.root), pd.DataFrame(store.entries()), features, parts)
