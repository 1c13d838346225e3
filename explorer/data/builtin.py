"""Built-in datasets that need no download: scikit-learn's digits and Fashion-MNIST (IDX files)."""

from __future__ import annotations

import gzip
import hashlib
import os
import urllib.request
import zlib
from pathlib import Path

import numpy as np

from explorer.atomic import atomic_write
from explorer.data.base import (
    ImageDataset,
    check_splits,
    fingerprint_arrays,
    shown,
    stratified_split,
)
from explorer.errors import ExplorerError
from explorer.paths import cache_dir

FASHION_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
# md5 of the official gzip files (as published by zalandoresearch/fashion-mnist)
FASHION_FILES = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}


def load_digits() -> ImageDataset:
    """scikit-learn's 1,797 8x8 digits as `(N, 8, 8, 1) uint8`, with a fixed 80/20 stratified split."""
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    images = np.clip(np.rint(bunch.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)[..., None]
    labels = bunch.target.astype(np.int64)
    return ImageDataset(
        name="digits",
        labels=labels,
        class_names=[str(i) for i in range(10)],
        splits=stratified_split(labels, 0.2, seed=0),
        fingerprint=fingerprint_arrays(images, labels, extra="digits"),
        array=images,
        source="scikit-learn load_digits",
    )


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped) into a numpy array."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (
        OSError,
        EOFError,
        zlib.error,
    ) as e:  # a cut gzip raises EOFError, a garbled one zlib.error
        raise ExplorerError(
            f"cannot read IDX file {path}: {e}; check the file or re-download it"
        ) from e
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ExplorerError(
            f"{path} is not an unsigned-byte IDX file; expected Fashion-MNIST/MNIST IDX data"
        )
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise ExplorerError(
            f"{path} is truncated ({body.size} of {int(np.prod(dims))} bytes); re-download it"
        )
    return body.reshape(dims)


def find_idx(folder: Path, stem: str) -> Path | None:
    """The IDX file `stem` in `folder`, gzipped or not."""
    for name in (f"{stem}.gz", stem, stem.replace("-idx", ".idx")):
        if (folder / name).is_file():
            return folder / name
    return None


def is_idx_folder(folder: Path) -> bool:
    return all(find_idx(folder, s) for s in ("train-images-idx3-ubyte", "t10k-images-idx3-ubyte"))


def load_idx_folder(
    folder: Path, name: str = "fashion-mnist", class_names: list[str] | None = None
) -> ImageDataset:
    """A folder of MNIST-layout IDX files (train + t10k) -> dataset with the official split."""
    parts = {}
    for key in (
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ):
        p = find_idx(folder, key)
        if p is None:
            raise ExplorerError(
                f"{folder} has no {key}[.gz]; a Fashion-MNIST folder needs all four IDX files"
            )
        parts[key] = read_idx(p)
        want = 3 if "images" in key else 1  # (N, H, W) images, (N,) labels
        if parts[key].ndim != want:
            raise ExplorerError(
                f"{p} holds a {parts[key].ndim}-D array, but {key} must be {want}-D; "
                "the IDX files are mixed up or damaged"
            )
    train_x, test_x = parts["train-images-idx3-ubyte"], parts["t10k-images-idx3-ubyte"]
    if train_x.shape[1:] != test_x.shape[1:]:
        raise ExplorerError(
            f"{folder}: train images are {train_x.shape[1:]} but t10k images "
            f"{test_x.shape[1:]}; the IDX files come from different datasets"
        )
    images = np.concatenate([train_x, test_x])[..., None]
    labels = np.concatenate(
        [parts["train-labels-idx1-ubyte"], parts["t10k-labels-idx1-ubyte"]]
    ).astype(np.int64)
    if len(images) != len(labels):
        raise ExplorerError(
            f"{folder}: {len(images)} images but {len(labels)} labels; the IDX files do not match"
        )
    n_train = len(train_x)
    splits = {"train": np.arange(n_train), "test": np.arange(n_train, len(labels))}
    check_splits(
        shown(name),
        splits,
        {
            "train": "its train-*-ubyte IDX files hold no images; check them or re-download",
            "test": "its t10k-*-ubyte IDX files hold no images; check them or re-download",
        },
    )
    n_classes = int(labels.max()) + 1
    names = class_names or (
        FASHION_CLASSES if n_classes == 10 else [str(i) for i in range(n_classes)]
    )
    return ImageDataset(
        name=shown(name),
        labels=labels,
        class_names=names,
        splits=splits,
        fingerprint=fingerprint_arrays(images, labels, extra="idx"),
        array=images,
        source=shown(str(folder)),
    )


def fashion_mnist_dirs() -> list[Path]:
    """Where Fashion-MNIST is looked for, in order."""
    dirs = []
    if os.environ.get("FASHION_MNIST_DIR"):
        dirs.append(Path(os.environ["FASHION_MNIST_DIR"]))
    dirs += [DEBIAN_FASHION_DIR, cache_dir() / "datasets" / "fashion-mnist"]
    return dirs


def fashion_mnist_available() -> bool:
    return any(is_idx_folder(d) for d in fashion_mnist_dirs() if d.is_dir())


def load_fashion_mnist(folder: str | Path | None = None, download: bool = False) -> ImageDataset:
    """Fashion-MNIST (60k train / 10k test, 28x28x1) from `folder`, Debian's package or the cache.

    With `download=True` and no local copy, fetches the official files and checks their md5.
    """
    candidates = [Path(folder)] if folder else fashion_mnist_dirs()
    for d in candidates:
        if d.is_dir() and is_idx_folder(d):
            return load_idx_folder(d)
    if download:
        target = fashion_mnist_dirs()[-1]
        download_fashion_mnist(target)
        return load_idx_folder(target)
    raise ExplorerError(
        "Fashion-MNIST not found (looked in "
        + ", ".join(str(d) for d in candidates)
        + "); install it with `apt-get install dataset-fashion-mnist`, set FASHION_MNIST_DIR, "
        "or pass --download"
    )


def download_fashion_mnist(
    target: Path, base_url: str = FASHION_URL, files: dict[str, str] = FASHION_FILES
) -> Path:
    """Download the official Fashion-MNIST files into `target`, verifying each md5; atomic per file."""
    target.mkdir(parents=True, exist_ok=True)
    for fname, md5 in files.items():
        dest = target / fname
        if dest.is_file() and _md5(dest) == md5:
            continue
        atomic_write(
            dest, lambda tmp, url=base_url + fname, md5=md5: _download_checked(url, tmp, md5)
        )
    return target


def _download_checked(url: str, path: Path, md5: str) -> None:
    """Download `url` into `path` and check its md5; a clear error (and no file kept) otherwise."""
    try:
        with urllib.request.urlopen(url, timeout=30) as r, open(path, "wb") as f:
            while chunk := r.read(1 << 20):
                f.write(chunk)
    except OSError as e:
        raise ExplorerError(
            f"could not download {url} ({e}); you seem to be offline: "
            "install `dataset-fashion-mnist` or copy the four IDX files into a folder and pass it"
        ) from e
    got = _md5(path)
    if got != md5:
        raise ExplorerError(
            f"checksum mismatch for {url.rsplit('/', 1)[-1]}: md5 {got}, expected {md5}; "
            "try the download again"
        )


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
