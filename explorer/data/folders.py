"""Datasets brought by the user as a path: ImageFolder trees, CIFAR batches, HF `datasets`, zips."""

from __future__ import annotations

import errno
import hashlib
import importlib
import json
import os
import pickle
import re
import threading
import warnings
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from explorer.atomic import atomic_write
from explorer.data.base import (
    ImageDataset,
    check_splits,
    fingerprint_arrays,
    name_bytes,
    not_regular,
    shown,
    special_kind,
    stratified_split,
)
from explorer.data.builtin import is_idx_folder, load_idx_folder
from explorer.data.splits import TEST_DIR_NAMES, apply_split_files
from explorer.data.upload import IMAGE_EXTS, extract_zip
from explorer.errors import ExplorerError
from explorer.paths import cache_dir

SCAN_VERSION = 2  # 2: special files and images over the bomb limit are skipped, never opened
GRAY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
HF_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")
NOT_A_DATASET = (
    "{path} is not a dataset folder: expected class subfolders of images (ImageFolder), "
    "CIFAR python batches, or Fashion-MNIST IDX files"
)


def load_path(path: Path) -> ImageDataset:
    """Detect the layout at `path` (CIFAR, HF `datasets`, IDX, ImageFolder or a .zip) and load it."""
    path = Path(path).expanduser()
    if not path.exists():
        raise ExplorerError(f"{path} does not exist; check the dataset path")
    kind = not_regular(path)
    if kind and kind != "a directory":
        raise ExplorerError(
            f"{shown(str(path))} is {kind}, not a dataset folder or a .zip; pass the folder of images"
        )
    if path.is_file():
        if path.suffix.lower() == ".zip":
            return load_zip(path)
        if any(s in (".tar", ".gz", ".tgz") for s in path.suffixes):
            raise ExplorerError(
                f"{path} is an archive; extract it first (tar xzf) and pass the folder"
            )
        raise ExplorerError(NOT_A_DATASET.format(path=path))
    cifar = find_cifar(path)
    if cifar is not None:
        return load_cifar(cifar[0], cifar[1], name=path.name, source=str(path.resolve()))
    if any((path / m).is_file() for m in HF_MARKERS):
        return load_hf_dataset(path)
    if is_idx_folder(path):
        return load_idx_folder(path, name=path.name)
    return load_image_folder(path)


def load_zip(zip_path: Path) -> ImageDataset:
    """A zip of class folders, extracted once into the cache and loaded as an ImageFolder."""
    root, _ = extract_zip(zip_path, cache_dir() / "uploads")
    return load_image_folder(root, name=Path(zip_path).stem, source=str(Path(zip_path).resolve()))


# ---------------------------------------------------------------- CIFAR


class _DataUnpickler(pickle.Unpickler):
    """Unpickles plain data and numpy arrays only: a CIFAR batch never needs any other class."""

    ALLOWED = frozenset({
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
    })  # fmt: skip

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        for mod in (module.replace("numpy.core.", "numpy._core."), module):
            try:
                return getattr(importlib.import_module(mod), name)
            except (ImportError, AttributeError):
                continue
        raise pickle.UnpicklingError(f"cannot find {module}.{name}")


def _unpickle(path: Path) -> dict:
    kind = not_regular(path)
    if kind:  # never opened: a FIFO would block, a device would never end
        raise ExplorerError(
            f"{path} is {kind}, not a regular file; a CIFAR folder holds the batch files themselves"
        )
    try:
        with open(path, "rb") as f:
            obj = _DataUnpickler(f, encoding="bytes").load()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError) as e:
        raise ExplorerError(
            f"cannot read CIFAR batch {path}: {e}; re-extract the official archive"
        ) from e
    if not isinstance(obj, dict):
        raise ExplorerError(
            f"{path} is not a CIFAR batch (a pickled dict); re-extract the official archive"
        )
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def find_cifar(path: Path) -> tuple[Path, str] | None:
    """`(batch folder, "cifar10" | "cifar100")` when `path` (or its official subfolder) holds CIFAR."""
    for d in (path, path / "cifar-10-batches-py", path / "cifar-100-python"):
        if all((d / f).is_file() for f in ("batches.meta", "data_batch_1", "test_batch")):
            return d, "cifar10"
        if all((d / f).is_file() for f in ("meta", "train", "test")):
            return d, "cifar100"
    return None


CIFAR_CLASSES = {"cifar10": ("CIFAR-10", 10), "cifar100": ("CIFAR-100", 100)}


def load_cifar(folder: Path, kind: str, name: str | None = None, source: str = "") -> ImageDataset:
    """CIFAR-10/100 python batches -> `(N, 32, 32, 3) uint8` with the official train/test split.

    Every batch is checked before use: uint8 pixels in rows of 3072, one integer label per
    row, labels within the classes (the names in the meta file, at least 10 or 100)."""
    if kind == "cifar10":
        nums = sorted(
            int(m.group(1))
            for p in folder.iterdir()
            if (m := re.fullmatch(r"data_batch_(\d+)", p.name))
        )
        train_files = [folder / f"data_batch_{i}" for i in nums]
        test_files, meta_file, label_key, names_key = (
            [folder / "test_batch"],
            folder / "batches.meta",
            "labels",
            "label_names",
        )
    else:
        train_files, test_files = [folder / "train"], [folder / "test"]
        meta_file, label_key, names_key = folder / "meta", "fine_labels", "fine_label_names"
    meta = _unpickle(meta_file)
    raw_names = meta.get(names_key)
    names = [
        n.decode(errors="replace") if isinstance(n, bytes) else str(n)
        for n in (raw_names if isinstance(raw_names, list | tuple) else [])
    ]
    title, official = CIFAR_CLASSES[kind]
    n_classes = max(len(names), official)
    allowed = f"{title} labels are 0 to {n_classes - 1}"

    def read(files: list[Path]) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for f in files:
            batch = _unpickle(f)
            if "data" not in batch or label_key not in batch:
                raise ExplorerError(f"{f} lacks 'data' or '{label_key}'; is this a {kind} batch?")
            data = _cifar_pixels(batch["data"], f)
            labels = _cifar_labels(batch[label_key], f, n_classes, allowed)
            if len(data) != len(labels):
                raise ExplorerError(
                    f"{f}: {len(data)} images but {len(labels)} labels; the batch is damaged, "
                    "re-extract the official archive"
                )
            xs.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
            ys.append(labels)
        return np.concatenate(xs), np.concatenate(ys)

    x_train, y_train = read(train_files)
    x_test, y_test = read(test_files)
    images = np.ascontiguousarray(np.concatenate([x_train, x_test]))
    labels = np.concatenate([y_train, y_test])
    if len(labels) and len(names) < int(labels.max()) + 1:
        names = [str(i) for i in range(int(labels.max()) + 1)]
    n_train = len(x_train)
    name = shown(name or folder.name)
    splits = {"train": np.arange(n_train), "test": np.arange(n_train, len(labels))}
    empty = ", ".join(f.name for f in train_files)
    check_splits(
        name,
        splits,
        {
            "train": f"{empty} {'is' if len(train_files) == 1 else 'are'} empty; "
            "re-extract the official archive",
            "test": f"{test_files[0].name} is empty; re-extract the official archive",
        },
    )
    return ImageDataset(
        name=name,
        labels=labels,
        class_names=names,
        splits=splits,
        fingerprint=fingerprint_arrays(images, labels, extra=kind),
        array=images,
        source=shown(source or str(folder.resolve())),
    )


def _cifar_pixels(values, f: Path) -> np.ndarray:
    """A batch's `data` as `(N, 3072) uint8`, or a one-line error naming what is wrong."""
    try:
        data = np.asarray(values)
    except (ValueError, TypeError) as e:
        raise ExplorerError(f"{f}: data is not an array of pixels ({e})") from e
    if data.dtype.kind not in "iu":
        raise ExplorerError(f"{f}: data is {data.dtype}, expected uint8 pixels (0 to 255)")
    if data.dtype != np.uint8 and data.size:
        lo, hi = int(data.min()), int(data.max())
        if lo < 0 or hi > 255:
            raise ExplorerError(
                f"{f}: data holds values from {lo} to {hi}, outside 0 to 255; expected uint8 pixels"
            )
    if data.ndim != 2 or data.shape[1] != 3072:
        raise ExplorerError(f"{f}: data has shape {data.shape}, expected (N, 3072) for 32x32 RGB")
    return data.astype(np.uint8, copy=False)


def _cifar_labels(values, f: Path, n_classes: int, allowed: str) -> np.ndarray:
    """A batch's labels as `(N,) int64` in `[0, n_classes)`, or a one-line error naming the bad one."""
    try:
        raw = np.asarray(values)
    except (ValueError, TypeError, OverflowError) as e:
        raise ExplorerError(f"{f}: labels must be a list of integers ({e})") from e
    if raw.size == 0:
        return np.zeros(0, np.int64)
    if raw.ndim != 1:
        raise ExplorerError(f"{f}: labels have shape {raw.shape}, expected one integer per image")
    whole = raw.dtype.kind in "iu" or (
        raw.dtype == object and all(isinstance(v, int) and not isinstance(v, bool) for v in raw)
    )
    if not whole:
        first = raw[:1].tolist()[0]
        raise ExplorerError(
            f"{f}: labels must be integers (got {raw.dtype} values like {first!r}); "
            "re-extract the official archive"
        )
    lo, hi = (min(raw), max(raw)) if raw.dtype == object else (int(raw.min()), int(raw.max()))
    if lo < 0 or hi >= n_classes:
        raise ExplorerError(
            f"{f}: labels out of range ({lo if lo < 0 else hi}); {allowed}; "
            "re-extract the official archive"
        )
    return raw.astype(np.int64)


# ---------------------------------------------------------------- ImageFolder


def is_image(p: Path) -> bool:
    return p.suffix.lower() in IMAGE_EXTS


def _visible(p: Path) -> bool:
    return not p.name.startswith(".") and p.name != "__MACOSX"


def class_dirs(root: Path) -> list[Path]:
    return sorted(d for d in root.iterdir() if d.is_dir() and _visible(d))


def _class_files(d: Path) -> list[Path]:
    """Image files under class folder `d`, recursively, skipping hidden files and folders."""
    out = []
    for dirpath, dirnames, filenames in os.walk(d):
        dirnames[:] = sorted(n for n in dirnames if not n.startswith(".") and n != "__MACOSX")
        out += [
            Path(dirpath) / n
            for n in sorted(filenames)
            if not n.startswith(".") and is_image(Path(n))
        ]
    return out


def _has_images(d: Path) -> bool:
    return any(_class_files(c) for c in class_dirs(d)) if d.is_dir() else False


def split_dirs(root: Path) -> tuple[Path, Path] | None:
    """`(train, test)` folders when `root` is split into ImageFolders, else None."""
    train = root / "train"
    if not (train.is_dir() and _has_images(train)):
        return None
    for name in TEST_DIR_NAMES:
        if (root / name).is_dir() and _has_images(root / name):
            return train, root / name
    return None


_OPEN_LOCK = threading.Lock()


def _open_image(path: Path) -> Image.Image:
    """`Image.open`, where an image over PIL's decompression-bomb limit (`Image.MAX_IMAGE_PIXELS`,
    89 megapixels) is an error, not a warning on the console: such a file is skipped, never
    decoded. Opening reads only the header; the lock keeps the warning filter to this call."""
    with _OPEN_LOCK, warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        return Image.open(path)


def check_image(path: Path) -> dict:
    """Open and verify one image file; `{"mode", "w", "h"}` or raise on an unreadable one."""
    with _open_image(path) as im:
        im.verify()
    with _open_image(path) as im:  # verify() leaves the image unusable; decode for real
        mode, (w, h) = im.mode, im.size
        if im.format == "JPEG":
            im.draft(im.mode, (64, 64))  # a cheap reduced decode still catches truncation
        im.load()
    if w <= 0 or h <= 0:
        raise ValueError(f"empty image ({w}x{h})")
    return {"mode": mode, "w": w, "h": h}


def _unopenable(path: Path) -> str | None:
    """Why `path` must not be opened as an image (a special file, a symlink loop, ...), or None.

    A FIFO would block the scan forever and a device (`/dev/zero` behind a symlink) never
    ends: only regular files are ever opened."""
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "a symlink loop (too many levels of symbolic links)"
        if e.errno == errno.ENOENT and os.path.islink(path):
            return "a broken symlink (its target does not exist)"
        return f"cannot read it ({e.strerror or type(e).__name__})"
    kind = special_kind(mode)
    return f"not a regular file ({kind}), never opened" if kind else None


def _scan_one(path: Path) -> dict:
    """Verify and content-hash one file: `{"ok", "sha256", "mode", ...}` or `{"ok": False, "reason"}`."""
    if why := _unopenable(path):
        return {"ok": False, "reason": why}
    try:
        info = check_image(path)
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        return {"ok": True, "sha256": h.hexdigest(), **info}
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        return {"ok": False, "reason": f"too large, over PIL's decompression-bomb limit ({e})"}
    except Exception as e:  # any failure to read is a skip, never fatal
        reason = shown(str(e).splitlines()[0]) if str(e) else type(e).__name__
        return {"ok": False, "reason": f"{type(e).__name__}: {reason}"}


def _scan_cache_dir() -> Path:
    d = cache_dir() / "scans"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _read_json(path: Path) -> dict | None:
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) and obj.get("version") == SCAN_VERSION else None


def scan_files(root: Path, files: list[Path]) -> dict[str, dict]:
    """`relpath -> scan record` for `files` under `root`, cached in `cache_dir()/scans`.

    The cache entry is keyed by the absolute root and every file's (relpath, size, mtime_ns),
    so an unchanged folder is not re-verified; after a change only changed files are re-read.
    """
    root = root.resolve()
    stats = []
    for p in files:
        try:
            st = p.stat()
            stats.append((p.relative_to(root).as_posix(), st.st_size, st.st_mtime_ns))
        except OSError:
            stats.append((p.relative_to(root).as_posix(), -1, -1))
    stats.sort()
    # json.dumps escapes any name that is not UTF-8 (a surrogate), so the key always encodes
    key = hashlib.sha256(json.dumps([str(root), SCAN_VERSION, stats]).encode()).hexdigest()[:32]
    cdir = _scan_cache_dir()
    entry_path = cdir / f"{key}.json"
    entry = _read_json(entry_path)
    if entry is not None:
        return entry["files"]

    # reuse records of files unchanged since the last scan of this root
    latest = cdir / f"root-{hashlib.sha256(name_bytes(str(root))).hexdigest()[:32]}.txt"
    previous: dict[str, dict] = {}
    try:
        old_key = latest.read_text().strip()
        old = _read_json(cdir / f"{old_key}.json")
        previous = old["files"] if old else {}
    except OSError:
        old_key = ""
    records: dict[str, dict] = {}
    todo = []
    for rel, size, mtime in stats:
        rec = previous.get(rel)
        if (
            rec is not None
            and rec.get("size") == size
            and rec.get("mtime_ns") == mtime
            and size >= 0
        ):
            records[rel] = rec
        else:
            todo.append((rel, size, mtime))
    workers = max(1, min(8, os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool:
        results = pool.map(lambda t: _scan_one(root / t[0]), todo)
        for (rel, size, mtime), rec in zip(todo, results, strict=True):
            records[rel] = {**rec, "size": size, "mtime_ns": mtime}
    try:
        atomic_write(
            entry_path, json.dumps({"version": SCAN_VERSION, "root": str(root), "files": records})
        )
        atomic_write(latest, key)
        if old_key and old_key != key:
            (cdir / f"{old_key}.json").unlink(missing_ok=True)
    except OSError:
        pass  # a read-only cache only costs a rescan next time
    return records


class FolderLoader:
    """`loader(indices) -> list[(H, W, C) uint8]` reading image files, with a small LRU of decoded images."""

    def __init__(self, paths: list[str], channels: int, cache_bytes: int = 64 * 2**20):
        self.paths = paths
        self.channels = channels
        self.cache_bytes = cache_bytes
        self._init_cache()

    def _init_cache(self) -> None:
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._cached = 0
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:
        return {"paths": self.paths, "channels": self.channels, "cache_bytes": self.cache_bytes}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._init_cache()

    def __call__(self, indices: np.ndarray) -> list[np.ndarray]:
        return [self.read(int(i)) for i in np.asarray(indices).reshape(-1)]

    def read(self, i: int) -> np.ndarray:
        with self._lock:
            hit = self._cache.get(i)
            if hit is not None:
                self._cache.move_to_end(i)
                return hit.copy()
        arr = read_image(Path(self.paths[i]), self.channels)
        with self._lock:
            if i not in self._cache and arr.nbytes <= self.cache_bytes:
                self._cache[i] = arr
                self._cached += arr.nbytes
                while self._cached > self.cache_bytes:
                    _, old = self._cache.popitem(last=False)
                    self._cached -= old.nbytes
        return arr.copy()


def read_image(path: Path, channels: int) -> np.ndarray:
    """One image file -> `(H, W, channels) uint8`; channels is 1 (grayscale) or 3 (RGB)."""
    try:
        if why := _unopenable(path):  # replaced by a FIFO or a device since the scan
            raise OSError(why)
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            if channels == 1:
                if im.mode.startswith("I;16"):
                    arr = (np.asarray(im, dtype=np.uint16) >> 8).astype(np.uint8)
                else:
                    arr = np.asarray(im.convert("L"))
                return np.ascontiguousarray(arr)[..., None]
            return np.ascontiguousarray(np.asarray(im.convert("RGB")))
    except Exception as e:
        raise ExplorerError(
            f"cannot read {shown(str(path))} ({type(e).__name__}: {shown(str(e))}); the folder "
            "changed since it was scanned, load it again"
        ) from e


def load_image_folder(
    root: Path, name: str | None = None, source: str | None = None
) -> ImageDataset:
    """An ImageFolder tree (`root/<class>/**/<image>`, or `root/{train,test}/<class>/...`).

    Unreadable images are left out and listed in `skipped`; the split comes from split files
    `train.txt`/`test.txt` at the root (`explorer.data.splits`), else from `train/` + `test/`
    folders when present, else a fixed stratified 80/20 split.
    """
    root = Path(root).resolve()
    name = shown(name or root.name)  # a folder name that is not UTF-8 is shown escaped
    tree_splits = split_dirs(root)
    bases = list(tree_splits) if tree_splits else [root]
    skipped: list[str] = []
    # (split or None, class name, file)
    items: list[tuple[str | None, str, Path]] = []
    for base, split in zip(bases, ("train", "test") if tree_splits else (None,), strict=True):
        for d in class_dirs(base):
            items += [(split, d.name, p) for p in _class_files(d)]
        if not tree_splits:
            skipped += [
                f"{shown(p.name)}: not inside a class folder"
                for p in sorted(base.iterdir())
                if p.is_file() and _visible(p) and is_image(p)
            ]
    if not items:
        raise ExplorerError(NOT_A_DATASET.format(path=shown(str(root))))
    records = scan_files(root, [p for _, _, p in items])

    kept: list[tuple[str | None, str, str, dict]] = []
    unreadable: dict[str | None, list[str]] = {"train": [], "test": [], None: []}
    for split, cls, p in items:
        rel = p.relative_to(root).as_posix()
        rec = records[rel]
        if rec.get("ok"):
            kept.append((split, cls, rel, rec))
        else:  # logged by its escaped name: a name that is not UTF-8 still prints and saves
            unreadable[split].append(f"{shown(rel)}: {rec.get('reason', 'unreadable')}")
            skipped.append(unreadable[split][-1])
    if not kept:
        raise ExplorerError(
            f"no readable images in {shown(str(root))} ({len(items)} files skipped, e.g. "
            f"{skipped[0]}); check the files"
        )
    names = {"train": tree_splits[0].name, "test": tree_splits[1].name} if tree_splits else {}
    folder_splits = None
    if tree_splits:
        is_train = np.array([s == "train" for s, _, _, _ in kept])
        folder_splits = {"train": np.flatnonzero(is_train), "test": np.flatnonzero(~is_train)}
    listed = apply_split_files(
        root,
        [rel for _, _, rel, _ in kept],
        [names.get(s or "", "") for s, _, _, _ in kept],
        folder_splits,
        names,
    )
    if listed is not None:
        kept = [kept[i] for i in listed[1]]
    class_names = sorted({cls for _, cls, _, _ in kept})
    if len(class_names) < 2:
        raise ExplorerError(
            f"{shown(str(root))} has readable images in only one class folder "
            f"({shown(class_names[0])}); an ImageFolder needs at least 2 class subfolders"
        )
    index = {c: i for i, c in enumerate(class_names)}
    labels = np.array([index[cls] for _, cls, _, _ in kept], dtype=np.int64)
    if listed is not None:
        splits, why = listed[0], {}  # split files never leave a split empty (splits.py)
    elif folder_splits is not None:
        splits = folder_splits
        why = {
            s: f"all {len(bad)} files in {names[s]}/ are unreadable (e.g. {bad[0]}); check the files"
            if (bad := unreadable[s])
            else f"{names[s]}/ holds no images"
            for s in ("train", "test")
        }
    else:
        splits = stratified_split(labels, 0.2, seed=0)
        why = {
            "test": "1 image per class cannot be split 80/20; add images or give train/ and "
            "test/ folders"
        }
    check_splits(name, splits, why)  # before any work, never an empty table later
    h = hashlib.sha256(b"imagefolder-v2-admresize")  # v2: files are resized as ADM's loader does
    h.update(np.asarray(splits["test"], dtype=np.int64).tobytes())
    for rel, cls, digest in sorted((rel, cls, rec["sha256"]) for _, cls, rel, rec in kept):
        h.update(name_bytes(f"{rel}\0{cls}\0{digest}\n"))  # the OS's bytes: any name hashes
    channels = 1 if all(rec["mode"] in GRAY_MODES for _, _, _, rec in kept) else 3
    return ImageDataset(
        name=name,
        labels=labels,
        class_names=[shown(c) for c in class_names],
        splits=splits,
        fingerprint=h.hexdigest()[:16],
        loader=FolderLoader([str(root / rel) for _, _, rel, _ in kept], channels),
        source=shown(source or str(root)),  # shown: a where, never reopened
        skipped=skipped,
    )


# ---------------------------------------------------------------- Hugging Face datasets


def load_hf_dataset(path: Path) -> ImageDataset:
    """A Hugging Face dataset saved with `save_to_disk` (image + ClassLabel columns); needs `datasets`."""
    try:
        import datasets
    except ImportError as e:
        raise ExplorerError(
            f"{path} is a Hugging Face `datasets` folder; run `pip install datasets` to load it"
        ) from e
    try:
        obj = datasets.load_from_disk(str(path))
    except Exception as e:
        raise ExplorerError(f"cannot load the Hugging Face dataset at {path}: {e}") from e
    if isinstance(obj, datasets.DatasetDict):
        train_key = "train" if "train" in obj else next(iter(obj))
        test_key = next((k for k in TEST_DIR_NAMES if k in obj and k != train_key), None)
        parts = [obj[train_key]] + ([obj[test_key]] if test_key else [])
    else:
        parts, test_key = [obj], None
    features = parts[0].features
    img_col = next((c for c, f in features.items() if isinstance(f, datasets.Image)), None)
    label_col = next((c for c, f in features.items() if isinstance(f, datasets.ClassLabel)), None)
    label_col = label_col or next((c for c in ("label", "labels") if c in features), None)
    if img_col is None or label_col is None:
        raise ExplorerError(
            f"{path}: the dataset needs an Image column and a label column (found {list(features)})"
        )
    raw = [np.asarray(list(ds[label_col])) for ds in parts]
    if isinstance(features[label_col], datasets.ClassLabel):
        class_names = list(features[label_col].names)
        labels = np.concatenate(raw).astype(np.int64)
    else:
        class_names = sorted({str(v) for r in raw for v in r})
        lookup = {c: i for i, c in enumerate(class_names)}
        labels = np.array([lookup[str(v)] for r in raw for v in r], dtype=np.int64)
    sizes = [len(ds) for ds in parts]
    if len(parts) == 2:
        splits = {"train": np.arange(sizes[0]), "test": np.arange(sizes[0], sum(sizes))}
    else:
        splits = stratified_split(labels, 0.2, seed=0)
    check_splits(
        shown(path.name),
        splits,
        {
            "train": "its train part holds no rows",
            "test": f"its {test_key} part holds no rows"
            if len(parts) == 2
            else "1 image per class cannot be split 80/20; add images or save a test split",
        },
    )
    first = parts[0][0][img_col]
    channels = 1 if getattr(first, "mode", "RGB") in GRAY_MODES else 3
    fp = hashlib.sha256(
        ("hf-v2-admresize" + "".join(getattr(ds, "_fingerprint", "") for ds in parts)).encode()
    )
    fp.update(labels.tobytes())
    return ImageDataset(
        name=shown(path.name),
        labels=labels,
        class_names=class_names,
        splits=splits,
        fingerprint=fp.hexdigest()[:16],
        loader=_HFLoader(parts, img_col, channels, np.cumsum([0, *sizes])),
        source=shown(str(path.resolve())),
    )


class _HFLoader:
    """Decodes images from one or two HF datasets concatenated: `(indices,) -> list[(H, W, C) uint8]`."""

    def __init__(self, parts: list, column: str, channels: int, offsets: np.ndarray):
        self.parts, self.column, self.channels, self.offsets = parts, column, channels, offsets

    def __call__(self, indices: np.ndarray) -> list[np.ndarray]:
        out = []
        for i in np.asarray(indices).reshape(-1):
            k = int(np.searchsorted(self.offsets, i, side="right")) - 1
            im = self.parts[k][int(i - self.offsets[k])][self.column]
            if not isinstance(im, Image.Image):
                im = Image.fromarray(np.asarray(im))
            im = im.convert("L" if self.channels == 1 else "RGB")
            arr = np.asarray(im)
            out.append(np.ascontiguousarray(arr[..., None] if arr.ndim == 2 else arr))
        return out
