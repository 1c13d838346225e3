"""Answer a fully cached request without loading torch, the model or the dataset.

A request (model files, dataset files, splits, settings) is identified by the paths,
sizes and mtimes of its inputs. The first run records which feature keys it resolved
to; an identical later run finds them all in the store and answers in milliseconds.
Any change to the inputs changes the identity, so a stale memo is never used. Entries are
verified (checksums) before the memo answers, so it never answers from a damaged entry; the
memo itself carries the checksum of its content, so a damaged memo (or one written before
memos had checksums) is not used either: the request then takes the ordinary path, which
finds its features cached and records the memo again.
"""

from __future__ import annotations

import hashlib
import json
from importlib import metadata
from pathlib import Path

from explorer.defaults import RANDOM_PREFIX
from explorer.features.store import FeatureStore, atomic_write_text, content_key
from explorer.paths import BUILTIN_MODEL_DIRS

MODEL_FILES = tuple(
    f"{sub}*.{ext}"
    for sub in ("", "unet/")
    for ext in ("json", "safetensors", "bin", "pt", "pth", "ckpt", "pkl")
) + ("scheduler/*.json",)


def _stat_list(folder: Path, patterns: tuple[str, ...]) -> list[tuple[str, int, int]]:
    out = []
    for pat in patterns:
        for p in sorted(folder.glob(pat)):
            st = p.stat()
            out.append((str(p.resolve()), st.st_size, st.st_mtime_ns))
    return out


def model_identity(spec: str) -> list | None:
    """Stat identity of a built-in or local model (None for hub ids: no fast path)."""
    base = spec[len(RANDOM_PREFIX) :] if spec.startswith(RANDOM_PREFIX) else spec
    folder = BUILTIN_MODEL_DIRS.get(base) or Path(base).expanduser()
    if not folder.is_dir():
        return None
    return [spec, _stat_list(folder, MODEL_FILES)]


def dataset_identity(spec: str) -> list | None:
    """Stat identity of a built-in dataset (None for user folders: no fast path)."""
    if spec == "digits":
        return ["digits", metadata.version("scikit-learn")]
    if spec == "fashion-mnist":
        from explorer.data.builtin import fashion_mnist_dirs, is_idx_folder  # numpy: on use only

        for d in fashion_mnist_dirs():
            if d.is_dir() and is_idx_folder(d):
                return ["fashion-mnist", _stat_list(d, ("*",))]
    return None


def request_id(model_spec: str, dataset_spec: str, settings: dict) -> str | None:
    m, d = model_identity(model_spec), dataset_identity(dataset_spec)
    if m is None or d is None:
        return None
    return content_key({"model": m, "dataset": d, "settings": settings})


def _memo_path(store: FeatureStore, rid: str) -> Path:
    p = store.root / "requests"
    p.mkdir(parents=True, exist_ok=True)
    return p / f"{rid}.json"


def lookup(store: FeatureStore, rid: str | None) -> dict | None:
    """The recorded `{split: [keys]}` of a request whose features are all still cached and intact, else None."""
    if rid is None:
        return None
    try:
        memo = json.loads(_memo_path(store, rid).read_text())
        body, checksum = memo["memo"], memo["checksum"]
        if _checksum(body) != checksum:
            return None  # damaged: not used (the ordinary path records it again)
        splits = body["splits"]
        keys = [k for keys in splits.values() for k in keys]
        if not all(isinstance(k, str) for k in keys):
            return None
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError):
        return None  # unreadable, damaged, or written before memos had checksums
    if all(store.has(k) for k in keys):
        return body
    return None


def record(store: FeatureStore, rid: str | None, splits: dict[str, list[str]], info: dict) -> None:
    if rid is not None:
        body = {"splits": splits, **info}
        text = json.dumps({"memo": body, "checksum": _checksum(body)})
        atomic_write_text(_memo_path(store, rid), text)


def _checksum(body: dict) -> str:
    """sha256 of a memo's content, in its canonical JSON form."""
    return "sha256:" + hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
