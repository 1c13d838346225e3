"""On-disk feature cache: content-addressed `.npy` entries with JSON manifests.

Layout under `<cache>/features/`:
    <kk>/<key>.npy   (N, D) float16, memory-mapped on load
    <kk>/<key>.json  manifest; written last, so an entry exists only once it is complete
    partial/<key>.npy + <key>.progress.json   an entry being written, chunk by chunk
    locks/<name>.lock                          one process computes a job, others wait
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
from filelock import FileLock

from explorer.paths import cache_dir


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file and a rename."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def content_key(parts: dict) -> str:
    """A stable 24-hex key for a dict of JSON-able parts."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


class PartialEntry:
    """An entry being written: a preallocated `.npy` memmap plus a rows-done marker."""

    def __init__(self, store: FeatureStore, key: str, shape: tuple[int, int], meta: dict):
        self.store, self.key, self.shape, self.meta = store, key, tuple(shape), meta
        self.npy = store.partial_dir / f"{key}.npy"
        self.progress = store.partial_dir / f"{key}.progress.json"
        self.rows_done = 0
        if self.npy.exists() and self.progress.exists():
            try:
                prog = json.loads(self.progress.read_text())
                mm = np.load(self.npy, mmap_mode="r+")
                if tuple(mm.shape) == self.shape and prog.get("shape") == list(self.shape):
                    self.rows_done, self.mm = int(prog["rows_done"]), mm
                    return
            except (OSError, ValueError, KeyError):
                pass  # unreadable partial: start this entry over
        self.mm = np.lib.format.open_memmap(self.npy, mode="w+", dtype=np.float16, shape=self.shape)
        self._mark(0)

    def write(self, start: int, rows: np.ndarray) -> None:
        self.mm[start : start + len(rows)] = rows

    def checkpoint(self, rows_done: int) -> None:
        """Make rows [0, rows_done) durable: flush the data, then record the count."""
        self.mm.flush()
        self._mark(rows_done)

    def _mark(self, rows_done: int) -> None:
        self.rows_done = rows_done
        atomic_write_text(self.progress, json.dumps({"rows_done": rows_done, "shape": list(self.shape)}))

    def commit(self) -> None:
        """Move the finished array into place, then write the manifest that makes it visible."""
        self.mm.flush()
        del self.mm
        npy, manifest = self.store.paths(self.key)
        if not self.npy.exists() and self.store.has(self.key):
            return  # already committed by another writer
        npy.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.npy, npy)
        meta = {**self.meta, "key": self.key, "shape": list(self.shape), "dtype": "float16", "created": time.time()}
        atomic_write_text(manifest, json.dumps(meta, indent=1, default=str))
        self.progress.unlink(missing_ok=True)


class FeatureStore:
    """Content-addressed cache of `(N, D) float16` feature matrices."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = cache_dir(root)
        self.dir = self.root / "features"
        self.partial_dir = self.dir / "partial"
        self.lock_dir = self.dir / "locks"
        for d in (self.dir, self.partial_dir, self.lock_dir):
            d.mkdir(parents=True, exist_ok=True)

    def paths(self, key: str) -> tuple[Path, Path]:
        sub = self.dir / key[:2]
        return sub / f"{key}.npy", sub / f"{key}.json"

    def has(self, key: str) -> bool:
        npy, manifest = self.paths(key)
        return manifest.exists() and npy.exists()

    def load(self, key: str, mmap: bool = True) -> np.ndarray:
        """The `(N, D) float16` array of a complete entry (memory-mapped by default)."""
        npy, _ = self.paths(key)
        return np.load(npy, mmap_mode="r" if mmap else None)

    def manifest(self, key: str) -> dict:
        return json.loads(self.paths(key)[1].read_text())

    def begin(self, key: str, shape: tuple[int, int], meta: dict) -> PartialEntry:
        """Start, or resume, writing entry `key`."""
        return PartialEntry(self, key, shape, meta)

    def lock(self, name: str) -> FileLock:
        return FileLock(str(self.lock_dir / f"{name}.lock"))

    def put(self, key: str, array: np.ndarray, meta: dict) -> None:
        """Write a whole array as a complete entry (for small ones such as pixel baselines)."""
        entry = self.begin(key, array.shape, meta)
        entry.write(0, array.astype(np.float16))
        entry.commit()

    def entries(self) -> list[dict]:
        """Manifests of all complete entries."""
        out = []
        for m in self.dir.glob("??/*.json"):
            try:
                out.append(json.loads(m.read_text()))
            except (OSError, json.JSONDecodeError):
                continue
        return out

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.dir.rglob("*") if p.is_file())

    def clear(self) -> None:
        """Delete every entry (partials included)."""
        shutil.rmtree(self.dir, ignore_errors=True)
        for d in (self.dir, self.partial_dir, self.lock_dir):
            d.mkdir(parents=True, exist_ok=True)
