"""The dataset every source returns: images, integer labels, class names, splits, fingerprint."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from explorer.errors import ExplorerError

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


_KINDS = (
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISDIR, "a directory"),
)


def special_kind(mode: int) -> str | None:
    """What a non-regular file is ("a FIFO", "a socket", ...) from its `st_mode`; None when regular.

    Such a file is never opened: reading a FIFO blocks until a writer comes, a device never ends."""
    if stat.S_ISREG(mode):
        return None
    return next((name for test, name in _KINDS if test(mode)), "a special file")


def not_regular(path: str | os.PathLike) -> str | None:
    """`special_kind` of what `path` leads to (symlinks followed); None for a regular file or
    one that cannot be stat'ed (its reader reports that)."""
    try:
        return special_kind(os.stat(path).st_mode)
    except OSError:
        return None


def name_bytes(text: str) -> bytes:
    """The bytes of a file name as the OS has them (`os.fsencode` of a UTF-8 file system): what
    fingerprints hash, so a name that is not valid UTF-8 hashes too (valid names as before)."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate that did not come from the OS
        return text.encode("utf-8", "surrogatepass")


def shown(text: str) -> str:
    """`text` (a file or folder name) as printable UTF-8: bytes that were not UTF-8 (kept by
    Python as surrogates) become `\\xff` escapes, so logs, tables and messages never fail on them."""
    return name_bytes(text).decode("utf-8", "backslashreplace")


def check_splits(name: str, splits: dict[str, np.ndarray], why: dict[str, str]) -> None:
    """A one-line ExplorerError when a split is empty: `why[split]` says why, and what to do."""
    for split in SPLITS:
        if split in splits and not len(splits[split]):
            raise ExplorerError(f"the {split} split of {name} has no images: {why[split]}")
