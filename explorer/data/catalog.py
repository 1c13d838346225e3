"""What datasets are available and how each is split, without loading any (`explorer datasets`)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from explorer.data.builtin import fashion_mnist_available, is_idx_folder
from explorer.data.folders import HF_MARKERS, class_dirs, find_cifar, is_image, split_dirs
from explorer.data.splits import describe_splits, find_split_files
from explorer.errors import ExplorerError
from explorer.exposure import ROOTS_ENV, parse_roots


@dataclass(frozen=True)
class DatasetEntry:
    name: str  # a built-in name or a path to pass as --dataset
    kind: str  # built-in | imagefolder | cifar10 | cifar100 | idx | hf | zip
    available: bool
    split: str  # how train/test are chosen, in words


def _builtins() -> list[DatasetEntry]:
    fm = fashion_mnist_available()
    return [
        DatasetEntry(
            "digits", "built-in", True, "fixed stratified 80/20 split (scikit-learn digits)"
        ),
        DatasetEntry(
            "fashion-mnist",
            "built-in",
            fm,
            "official 60k/10k split" + ("" if fm else "; not installed: --download fetches it"),
        ),
    ]


def _direct_images(path: Path) -> bool:
    """Some subfolder holds image files itself: `path/<class>/<image>` (a folder of datasets
    holds them one level deeper, and is listed dataset by dataset instead)."""
    return sum(any(is_image(f) for f in d.iterdir() if f.is_file()) for d in class_dirs(path)) >= 2


def describe_path(path: Path) -> DatasetEntry | None:
    """The entry for a dataset folder or zip at `path`, or None when it is not one."""
    path = Path(path).expanduser()
    if path.is_file():
        return (
            DatasetEntry(str(path), "zip", True, "as its folders")
            if path.suffix == ".zip"
            else None
        )
    if not path.is_dir():
        return None
    if (c := find_cifar(path)) is not None:
        return DatasetEntry(str(path), c[1], True, "official train/test batches")
    if any((path / m).is_file() for m in HF_MARKERS):
        return DatasetEntry(str(path), "hf", True, "its train/test splits, else stratified 80/20")
    if is_idx_folder(path):
        return DatasetEntry(str(path), "idx", True, "official train/test files")
    if split_dirs(path) is not None or find_split_files(path) or _direct_images(path):
        return DatasetEntry(str(path), "imagefolder", True, describe_splits(path))
    return None


def list_datasets(paths: list[str] | None = None) -> list[DatasetEntry]:
    """Built-ins, then datasets at `paths` and one level under them and under `EXPLORER_DATA_ROOTS`."""
    out = _builtins()
    seen: set[str] = set()
    for given in paths or []:
        if not Path(given).expanduser().exists():
            raise ExplorerError(
                f"{given} does not exist; give a dataset folder or a folder of them"
            )
    folders = [Path(p).expanduser() for p in paths or []] + list(
        parse_roots(os.environ.get(ROOTS_ENV))
    )
    for folder in folders:
        entry = describe_path(folder)
        candidates = (
            [folder]
            if entry
            else sorted(p for p in folder.iterdir() if not p.name.startswith("."))
            if folder.is_dir()
            else []
        )
        for p in candidates:
            e = entry if p == folder else describe_path(p)
            if e is not None and e.name not in seen:
                seen.add(e.name)
                out.append(e)
    return out
