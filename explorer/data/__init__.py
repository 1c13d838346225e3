"""Image datasets by name or path: built-ins, IDX folders, ImageFolder trees, CIFAR batches."""

from __future__ import annotations

from pathlib import Path

from explorer.data.base import SPLITS, ImageDataset
from explorer.data.builtin import (
    fashion_mnist_available,
    is_idx_folder,
    load_digits,
    load_fashion_mnist,
    load_idx_folder,
)
from explorer.errors import ExplorerError, suggest

BUILTIN_DATASETS = ("fashion-mnist", "digits")

__all__ = [
    "BUILTIN_DATASETS",
    "SPLITS",
    "ImageDataset",
    "Preprocess",
    "default_dataset",
    "load_dataset",
]


def __getattr__(name: str):
    # Preprocess pulls in torch; importing it lazily keeps cache look-ups (CLI fast path) light.
    if name == "Preprocess":
        from explorer.data.preprocess import Preprocess

        return Preprocess
    raise AttributeError(name)


def default_dataset() -> str:
    """Fashion-MNIST when its files are here, else the always-available digits."""
    return "fashion-mnist" if fashion_mnist_available() else "digits"


def load_dataset(spec: str, *, download: bool = False) -> ImageDataset:
    """A dataset by built-in name (`digits`, `fashion-mnist`) or by path; the layout is detected."""
    if spec == "digits":
        return load_digits()
    if spec == "fashion-mnist":
        return load_fashion_mnist(download=download)
    path = Path(spec).expanduser()
    if path.exists():
        return _load_path(path)
    raise ExplorerError(
        f"unknown dataset '{spec}': not a built-in ({', '.join(BUILTIN_DATASETS)}) and no such path."
        + suggest(spec, list(BUILTIN_DATASETS))
    )


def _load_path(path: Path) -> ImageDataset:
    if path.is_dir() and is_idx_folder(path):
        return load_idx_folder(path, name=path.name)
    from explorer.data import folders  # PIL and the file scanners: only for a path

    return folders.load_path(path)
