"""The dataset every source returns: images, integer labels, class names, splits, fingerprint."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

SPLITS = ("train", "test")


@dataclass
class ImageDataset:
    """A labelled image dataset with a fixed train/test split.

    Images come either from an in-memory array `(N, H, W, C) uint8` or from a
    `loader(indices) -> list[(H, W, C) uint8]` for datasets kept on disk.
    """

    name: str
    labels: np.ndarray  # (N,) int64
    class_names: list[str]
    splits: dict[str, np.ndarray]  # split name -> (n,) int64 indices into the dataset
    fingerprint: str
    array: np.ndarray | None = None  # (N, H, W, C) uint8
    loader: Callable[[np.ndarray], list[np.ndarray]] | None = None
    source: str = ""
    skipped: list[str] = field(default_factory=list)  # unreadable files left out, with reasons

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def images(self, indices: Sequence[int] | np.ndarray) -> np.ndarray | list[np.ndarray]:
        """Raw images at `indices`: `(n, H, W, C) uint8` array, or a list of such images."""
        idx = np.asarray(indices, dtype=np.int64)
        if self.array is not None:
            return self.array[idx]
        assert self.loader is not None, "an ImageDataset needs an array or a loader"
        return self.loader(idx)

    def subset(self, split: str, limit: int | None = None, seed: int = 0) -> np.ndarray:
        """Indices of `split`, optionally capped at `limit` by a fixed stratified sample.

        The sample is deterministic in (dataset, split, limit, seed) and keeps class balance,
        returned in ascending order so results line up across runs.
        """
        if split not in self.splits:
            raise KeyError(split)
        idx = self.splits[split]
        if limit is None or limit >= len(idx):
            return idx
        rng = np.random.default_rng(seed)
        labels = self.labels[idx]
        classes, counts = np.unique(labels, return_counts=True)
        # largest-remainder allocation keeps every class represented in proportion
        quota = counts / counts.sum() * limit
        take = np.floor(quota).astype(int)
        rest = limit - take.sum()
        take[np.argsort(-(quota - take), kind="stable")[:rest]] += 1
        chosen = []
        for c, k in zip(classes, take, strict=True):
            members = idx[labels == c]
            chosen.append(members[rng.permutation(len(members))[:k]])
        return np.sort(np.concatenate(chosen))


def fingerprint_arrays(*arrays: np.ndarray, extra: str = "") -> str:
    """A short sha256 content hash of arrays (and any extra text)."""
    h = hashlib.sha256(extra.encode())
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()[:16]


def stratified_split(
    labels: np.ndarray, test_fraction: float = 0.2, seed: int = 0
) -> dict[str, np.ndarray]:
    """A fixed stratified train/test split of `labels (N,)`, as sorted index arrays."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        members = members[rng.permutation(len(members))]
        n_test = max(1, round(len(members) * test_fraction)) if len(members) > 1 else 0
        test.append(members[:n_test])
        train.append(members[n_test:])
    return {"train": np.sort(np.concatenate(train)), "test": np.sort(np.concatenate(test))}
