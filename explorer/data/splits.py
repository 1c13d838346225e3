"""Split files for ImageFolder trees: which images are train and which are test.

Beside the class folders (at the dataset's root) a tree may hold `train.txt` and/or
`test.txt` (`val.txt` is read as `test.txt` when there is none). Each non-empty line that
does not start with `#` names one image by its path relative to the root
(`n01440764/n01440764_10026.JPEG`, or `train/n01440764/...` in a train/val layout), relative
to its split folder, or by its bare file name when that is unique in the tree (the form of
SimCLR's ImageNet 1% / 10% lists). Anything after the first whitespace is ignored (e.g. a
label column: the class is always the image's folder).

- both files: the splits are exactly the listed images; images in neither are left out;
- only `train.txt`: train is the listed images; test is the `val/`/`test/` folder of a
  train/val layout, or else every image not listed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from explorer.data.base import shown
from explorer.errors import ExplorerError

TEST_DIR_NAMES = ("test", "val", "valid", "validation")  # a tree's test split folder

SPLIT_FILES = {"train": ("train.txt",), "test": ("test.txt", "val.txt")}


def find_split_files(root: Path) -> dict[str, Path]:
    """`{"train": path, "test": path}` for the split files present at `root` (maybe empty)."""
    found = {}
    for split, names in SPLIT_FILES.items():
        for n in names:
            if (Path(root) / n).is_file():
                found[split] = Path(root) / n
                break
    return found


def read_split_file(path: Path) -> list[str]:
    """The image entries of one split file (first field of each line; blanks and # skipped)."""
    try:  # names that are not UTF-8 are read as the OS gives them (surrogates), so they match
        lines = Path(path).read_text(encoding="utf-8", errors="surrogateescape").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ExplorerError(f"cannot read split file {path}: {e}") from e
    return [ln.split()[0] for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]


def resolve_entries(
    entries: list[str], rels: list[str], bases: list[str], path: Path, prefer: str = ""
) -> np.ndarray:
    """Indices into `rels` (root-relative posix paths) named by `entries`, in file order.

    An entry matches a root-relative path, a path relative to the image's split folder
    (`bases[i]`, "" if none), or a file name unique in the tree (or in the `prefer` split
    folder: train.txt names are looked up in train/ first). Unknown or ambiguous entries are
    one error.
    """
    index: dict[str, int] = {}
    names: dict[str, list[int]] = {}
    for i, (rel, base) in enumerate(zip(rels, bases, strict=True)):
        index[rel] = i
        if base:
            index.setdefault(rel[len(base) + 1 :], i)
        names.setdefault(rel.rsplit("/", 1)[-1], []).append(i)
    out, missing, ambiguous = [], [], []
    for i_list in names.values():
        if len(i_list) > 1 and prefer:
            mine = [i for i in i_list if bases[i] == prefer]
            i_list[:] = mine if len(mine) == 1 else i_list
    for e in entries:
        e = e.strip().removeprefix("./")
        if e in index:
            out.append(index[e])
        elif "/" not in e and len(names.get(e, [])) == 1:
            out.append(names[e][0])
        elif "/" not in e and e in names:
            ambiguous.append(e)
        else:
            missing.append(e)
    if missing or ambiguous:
        what = (
            f"{len(missing)} entries name no readable image (e.g. '{shown(missing[0])}')"
            if missing
            else f"{len(ambiguous)} file names are not unique (e.g. '{shown(ambiguous[0])}'); "
            "write their folder"
        )
        raise ExplorerError(f"split file {path}: {what}; paths are relative to {path.parent}")
    idx = np.asarray(out, dtype=np.int64)
    if len(np.unique(idx)) != len(idx):
        raise ExplorerError(f"split file {path} lists some images twice")
    return idx


def apply_split_files(
    root: Path,
    rels: list[str],
    bases: list[str],
    folder_splits: dict[str, np.ndarray] | None,
    folder_names: dict[str, str] | None = None,
) -> tuple[dict[str, np.ndarray], np.ndarray] | None:
    """`(splits, kept)` from the split files at `root`, or None when there are none.

    `kept` are the indices of `rels` to keep (in order); `splits` index into the kept list.
    `folder_splits` are the splits of a train/val layout, if it is one, and `folder_names` its
    folder per split (`{"train": "train", "test": "val"}`).
    """
    files = find_split_files(root)
    if not files:
        return None
    prefer = folder_names or {}
    chosen = {
        s: resolve_entries(read_split_file(p), rels, bases, p, prefer.get(s, ""))
        for s, p in files.items()
    }
    if "test" not in chosen:
        if folder_splits is not None:
            test = folder_splits["test"]
        else:
            test = np.setdiff1d(np.arange(len(rels)), chosen["train"])
        chosen["test"] = test
    if "train" not in chosen:
        chosen["train"] = np.setdiff1d(
            folder_splits["train"] if folder_splits is not None else np.arange(len(rels)),
            chosen["test"],
        )
    overlap = np.intersect1d(chosen["train"], chosen["test"])
    if len(overlap):
        raise ExplorerError(
            f"{len(overlap)} images are in both train and test split files (e.g. "
            f"'{shown(rels[overlap[0]])}')"
        )
    kept = np.sort(np.concatenate([chosen["train"], chosen["test"]]))
    pos = {int(k): i for i, k in enumerate(kept)}
    splits = {
        s: np.sort(np.array([pos[int(i)] for i in chosen[s]], dtype=np.int64))
        for s in ("train", "test")
    }
    if not len(splits["train"]) or not len(splits["test"]):
        raise ExplorerError(
            f"the split files at {root} leave {'train' if not len(splits['train']) else 'test'} empty"
        )
    return splits, kept


def describe_splits(root: Path) -> str:
    """How an ImageFolder tree at `root` is split, in words (for `explorer datasets`)."""
    files = find_split_files(root)
    if files:
        return "split files: " + ", ".join(f"{s}={p.name}" for s, p in files.items())
    for n in TEST_DIR_NAMES:
        if (Path(root) / "train").is_dir() and (Path(root) / n).is_dir():
            return f"folders: train/ and {n}/"
    return "fixed stratified 80/20 split"
