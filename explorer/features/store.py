"""On-disk feature cache: content-addressed `.npy` entries with JSON manifests.

Layout under `<cache>/features/`:
    <kk>/<key>.npy   (N, D) float16 (float32 where float16 would overflow), memory-mapped on load
    <kk>/<key>.json  manifest with the sha256 of the .npy file; written last, so an entry
                     exists only once it is complete
    partial/<key>.npy + <key>.progress.json   an entry being written, chunk by chunk
    partial/<key>.shard-<tag>.*                one torchrun rank's batches of an entry (see
                                               `FeatureStore.shard_sources` and `assemble`)
    quarantine/<key>.*                         damaged entries moved aside (never served)
    locks/<name>.lock                          one process computes a job, others wait
`<cache>/.trash/` holds folders being cleared (renamed there whole, then deleted).

Integrity: an entry is verified when opened (`has`, `load`): its file must hash to the
manifest's checksum. Verification is memoised per process by (path, size, mtime, inode).
A damaged entry is reported (a warning), moved to `quarantine/` and reads as missing, so
the caller recomputes it. Entries written before checksums existed ("legacy") are checked
for size, shape, dtype and finiteness instead, then adopted: their checksum is recorded.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
from filelock import FileLock

from explorer.atomic import atomic_write
from explorer.errors import ExplorerError
from explorer.paths import cache_dir

log = logging.getLogger("explorer.features.store")
FLOAT16_MAX = float(np.finfo(np.float16).max)
SHARD_MARK = ".shard-"  # partial/<key>.shard-<tag>.npy: one torchrun rank's batches of an entry


TRASH = ".trash"  # <cache>/.trash/: folders being deleted, moved there whole first


def remove_tree(path: Path, root: Path) -> None:
    """Delete folder `path` of cache root `root` so that readers see all of it or none of it:
    it is renamed into `<root>/.trash/` (one atomic step), then deleted there. A process killed
    meanwhile leaves only trash behind, which `empty_trash` (every clear) removes."""
    if not path.exists():
        return
    trash = root / TRASH
    trash.mkdir(parents=True, exist_ok=True)
    target = trash / f"{path.name}.{os.getpid()}.{time.time_ns()}"
    with contextlib.suppress(FileNotFoundError):  # deleted meanwhile
        os.rename(path, target)
    shutil.rmtree(target, ignore_errors=True)
    with contextlib.suppress(OSError):  # not empty: another clear is running
        trash.rmdir()


def empty_trash(root: Path) -> None:
    """Delete what interrupted clears left in `<root>/.trash/`."""
    shutil.rmtree(root / TRASH, ignore_errors=True)


def reserve(path: Path) -> None:
    """Allocate the disk blocks of a new (sparse) array file now, so that a full disk is an
    OSError (ENOSPC) here instead of a SIGBUS when a memory-mapped write finds no room."""
    if not hasattr(os, "posix_fallocate"):
        return
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
    except OSError as e:
        if e.errno not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            raise  # ENOSPC, EDQUOT, EIO: the caller reports it
    finally:
        os.close(fd)


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` atomically (`atomic.atomic_write`; kept for `request_memo`)."""
    atomic_write(path, text)


def content_key(parts: dict) -> str:
    """A stable 24-hex key for a dict of JSON-able parts."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


def file_checksum(path: Path) -> str:
    """`"sha256:<hex>"` of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def storage_dtype(rows: np.ndarray) -> np.dtype:
    """float16 when every value fits it, else float32 (so an overflow loses nothing)."""
    if rows.dtype == np.float16:
        return np.dtype(np.float16)
    with np.errstate(over="ignore", invalid="ignore"):
        fits = not rows.size or float(np.abs(rows).max()) <= FLOAT16_MAX
    return np.dtype(np.float16 if fits else np.float32)


class DamagedEntry(ExplorerError):
    """A cache entry failed verification; it has been moved aside."""


class PartialEntry:
    """An entry being written: a preallocated `.npy` memmap plus a rows-done marker.

    Starts as float16; a batch with values beyond float16's range widens the whole entry to
    float32 (earlier rows keep their float16 values), recorded in the manifest.
    """

    def __init__(
        self,
        store: FeatureStore,
        key: str,
        shape: tuple[int, int],
        meta: dict,
        *,
        shard: dict | None = None,
    ):
        """`shard`: a torchrun rank's part of entry `key` (`{"tag", "n", "batch_size", "batches"}`),
        its batches' rows stored one after another in a file of its own; None for the whole entry."""
        self.store, self.key, self.shape, self.meta = store, key, tuple(shape), meta
        self.shard = shard
        stem = key if shard is None else f"{key}{SHARD_MARK}{shard['tag']}"
        self.npy = store.partial_dir / f"{stem}.npy"
        self.progress = store.partial_dir / f"{stem}.progress.json"
        self.rows_done = 0
        if self.npy.exists() and self.progress.exists():
            try:
                prog = json.loads(self.progress.read_text())
                mm = np.load(self.npy, mmap_mode="r+")
                if (
                    tuple(mm.shape) == self.shape
                    and prog.get("shape") == list(self.shape)
                    and str(mm.dtype) == prog.get("dtype", "float16")
                ):
                    self.rows_done, self.mm = int(prog["rows_done"]), mm
                    if "widened_at_row" in prog:
                        self.meta["float16_overflow"] = True
                        self.meta["widened_at_row"] = prog["widened_at_row"]
                    return
            except (OSError, ValueError, KeyError):
                pass  # unreadable partial: start this entry over
        self.mm = np.lib.format.open_memmap(self.npy, mode="w+", dtype=np.float16, shape=self.shape)
        try:
            reserve(self.npy)
        except OSError:  # e.g. a full disk: leave nothing behind
            del self.mm
            self.npy.unlink(missing_ok=True)
            raise
        self._mark(0)

    def write(self, start: int, rows: np.ndarray) -> None:
        """Store rows `[start, start + len(rows))`; non-finite values are refused."""
        if not np.isfinite(rows).all():
            raise ExplorerError(
                f"refusing to cache non-finite features for {self.meta.get('layer', self.key)} "
                f"(t={self.meta.get('t')}, rows {start}-{start + len(rows) - 1})"
            )
        if self.mm.dtype == np.float16 and storage_dtype(rows) == np.float32:
            self._widen(start)
        self.mm[start : start + len(rows)] = rows

    def _widen(self, at_row: int) -> None:
        """Rewrite the partial as float32 (rows so far converted exactly), durably."""

        def widen(tmp: Path) -> None:
            mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=self.shape)
            reserve(tmp)
            mm[:] = self.mm
            mm.flush()
            del mm

        atomic_write(self.npy, widen)
        del self.mm
        self.mm = np.load(self.npy, mmap_mode="r+")
        self.meta["float16_overflow"] = True
        self.meta["widened_at_row"] = at_row
        self._mark(self.rows_done)

    def checkpoint(self, rows_done: int) -> None:
        """Make rows [0, rows_done) durable: flush the data, then record the count."""
        self.mm.flush()
        self._mark(rows_done)

    def _mark(self, rows_done: int, dtype: str | None = None) -> None:
        self.rows_done = rows_done
        prog = {
            "rows_done": rows_done,
            "shape": list(self.shape),
            "dtype": dtype or str(self.mm.dtype),
        }
        if "widened_at_row" in self.meta:
            prog["widened_at_row"] = self.meta["widened_at_row"]
        if self.shard is not None:
            prog["shard"] = self.shard
        atomic_write_text(self.progress, json.dumps(prog))

    def commit(self) -> None:
        """Move the finished array into place, then write the manifest (with checksum) that makes it visible."""
        self.mm.flush()
        dtype = str(self.mm.dtype)
        del self.mm
        npy, manifest = self.store.paths(self.key)
        with self.store.entry_lock(self.key):
            if not self.npy.exists() and self.store.has(self.key):
                return  # already committed by another writer
            npy.parent.mkdir(parents=True, exist_ok=True)
            checksum = file_checksum(self.npy)
            os.replace(self.npy, npy)
            meta = {
                **self.meta,
                "key": self.key,
                "shape": list(self.shape),
                "dtype": dtype,
                "checksum": checksum,
                "bytes": npy.stat().st_size,
                "created": time.time(),
            }
            try:
                atomic_write_text(manifest, json.dumps(meta, indent=1, default=str))
            except BaseException:  # e.g. a full disk: keep the rows as a partial to resume from
                os.replace(npy, self.npy)
                with contextlib.suppress(OSError):
                    self._mark(self.shape[0], dtype)
                raise
            self.store._remember(npy)
        self.progress.unlink(missing_ok=True)
        self.store.drop_shards(self.key)  # a torchrun run's leftovers of this entry, if any


class FeatureStore:
    """Content-addressed cache of `(N, D)` float16 (or float32) feature matrices, verified on open."""

    _verified: dict[str, tuple[int, int, int]] = {}  # per process: npy path -> (size, mtime, inode)
    _verified_lock = threading.Lock()

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = cache_dir(root)
        self.dir = self.root / "features"
        self.partial_dir = self.dir / "partial"
        self.lock_dir = self.dir / "locks"
        self.quarantine_dir = self.dir / "quarantine"
        for d in (self.dir, self.partial_dir, self.lock_dir):
            d.mkdir(parents=True, exist_ok=True)

    def paths(self, key: str) -> tuple[Path, Path]:
        sub = self.dir / key[:2]
        return sub / f"{key}.npy", sub / f"{key}.json"

    def exists(self, key: str) -> bool:
        """Both files of entry `key` are present (unverified)."""
        npy, manifest = self.paths(key)
        return manifest.exists() and npy.exists()

    def has(self, key: str) -> bool:
        """Entry `key` is complete and intact; a damaged one is moved aside and reads as missing."""
        return self.check(key)[0] in ("ok", "adopted")

    def load(self, key: str, mmap: bool = True) -> np.ndarray:
        """The `(N, D)` float16 (or float32) array of a verified entry (memory-mapped by default)."""
        status, detail = self.check(key)
        if status == "missing":
            raise KeyError(f"feature entry {key} is not cached")
        if status not in ("ok", "adopted"):
            raise DamagedEntry(
                f"cached features {key} were damaged ({detail}); moved aside, compute them again"
            )
        return np.load(self.paths(key)[0], mmap_mode="r" if mmap else None)

    def manifest(self, key: str) -> dict:
        return json.loads(self.paths(key)[1].read_text())

    # --- integrity ------------------------------------------------------------------------------

    def check(self, key: str) -> tuple[str, str]:
        """Verify entry `key`: ("ok" | "adopted" | "missing" | "damaged", detail).

        Adopts an intact legacy entry (records its checksum); quarantines a damaged one.
        """
        status, detail = self._verify(key)
        if status == "legacy":
            return self._adopt(key)
        if status == "damaged":
            return self.quarantine(key, detail)
        return status, detail

    def _verify(self, key: str, memo: bool = True) -> tuple[str, str]:
        """Pure check, no side effects: ok | missing | legacy (intact, no checksum) | damaged."""
        npy, manifest = self.paths(key)
        if not manifest.exists():
            return "missing", ""  # an .npy without manifest is an interrupted commit: not an entry
        try:
            st = npy.stat()
        except FileNotFoundError:
            return "damaged", "array file missing"
        stamp = (st.st_size, st.st_mtime_ns, st.st_ino)
        if memo and self._verified.get(str(npy)) == stamp:
            return "ok", ""
        try:
            meta = json.loads(manifest.read_text())
            shape, dtype = tuple(meta["shape"]), str(meta["dtype"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            return "damaged", f"unreadable manifest ({type(e).__name__})"
        if st.st_size == 0:
            return "damaged", "empty array file"
        if "checksum" in meta:
            if st.st_size != meta.get("bytes", st.st_size):
                return "damaged", f"size {st.st_size} bytes, manifest says {meta['bytes']}"
            if file_checksum(npy) != meta["checksum"]:
                return "damaged", "checksum mismatch"
            self._remember(npy, stamp)
            return "ok", ""
        try:
            arr = np.load(npy, mmap_mode="r")
        except (OSError, ValueError, EOFError) as e:
            return "damaged", f"unreadable array ({e})"
        if tuple(arr.shape) != shape or str(arr.dtype) != dtype:
            return (
                "damaged",
                f"array is {arr.dtype}{tuple(arr.shape)}, manifest says {dtype}{shape}",
            )
        for s in range(0, len(arr), 4096):
            if not np.isfinite(arr[s : s + 4096]).all():
                return "damaged", "non-finite values"
        return "legacy", ""

    def _remember(self, npy: Path, stamp: tuple[int, int, int] | None = None) -> None:
        if stamp is None:
            st = npy.stat()
            stamp = (st.st_size, st.st_mtime_ns, st.st_ino)
        with self._verified_lock:
            self._verified[str(npy)] = stamp

    def _forget(self, npy: Path) -> None:
        with self._verified_lock:
            self._verified.pop(str(npy), None)

    def _adopt(self, key: str) -> tuple[str, str]:
        """Record the checksum of an intact legacy entry (no recompute)."""
        npy, manifest = self.paths(key)
        with self.entry_lock(key):
            status, detail = self._verify(key, memo=False)
            if status == "legacy":
                meta = json.loads(manifest.read_text())
                meta |= {
                    "checksum": file_checksum(npy),
                    "bytes": npy.stat().st_size,
                    "adopted": time.time(),
                }
                atomic_write_text(manifest, json.dumps(meta, indent=1, default=str))
                self._remember(npy)
                return "adopted", ""
        if status == "damaged":  # changed under us; outside the lock, which quarantine takes
            return self.quarantine(key, detail)
        return ("adopted", "") if status == "ok" else (status, detail)

    def quarantine(self, key: str, reason: str) -> tuple[str, str]:
        """Move a damaged entry to `quarantine/` (if still damaged), with a warning; it then reads as missing."""
        npy, manifest = self.paths(key)
        with self.entry_lock(key):
            status, _ = self._verify(key, memo=False)
            if status != "damaged":
                return status, ""
            self.quarantine_dir.mkdir(parents=True, exist_ok=True)
            stem = f"{key}.{time.time_ns()}"
            moved = []
            for src in (npy, manifest):
                if src.exists():
                    os.replace(src, self.quarantine_dir / f"{stem}{src.suffix}")
                    moved.append(src.suffix)
            atomic_write(self.quarantine_dir / f"{stem}.reason.txt", reason + "\n")
            self._forget(npy)
        log.warning(
            "damaged cache entry %s (%s) moved to %s; it will be recomputed",
            key,
            reason,
            self.quarantine_dir,
        )
        return "damaged", reason

    def entry_lock(self, key: str) -> FileLock:
        """Serialises commit, adoption and quarantine of entries (256 stripes by key prefix)."""
        return FileLock(str(self.lock_dir / f"entry-{key[:2]}.lock"))

    # --- writing --------------------------------------------------------------------------------

    def begin(self, key: str, shape: tuple[int, int], meta: dict) -> PartialEntry:
        """Start, or resume, writing entry `key`."""
        return PartialEntry(self, key, shape, meta)

    def begin_shard(
        self, key: str, width: int, meta: dict, *, tag: str, n: int, batch_size: int, batches: list
    ) -> PartialEntry:
        """Start one rank's shard of entry `key` (n x `width`): the rows of grid `batches`
        (of `range(0, n, batch_size)`), in that order, in a file of their own."""
        rows = sum(min((b + 1) * batch_size, n) - b * batch_size for b in batches)
        shard = {"tag": tag, "n": n, "batch_size": batch_size, "batches": [int(b) for b in batches]}
        return PartialEntry(self, key, (rows, width), meta, shard=shard)

    def _shards(self, key: str) -> list[tuple[Path, dict]]:
        """(array file, progress) of every readable shard of entry `key`."""
        out = []
        for prog_file in sorted(self.partial_dir.glob(f"{key}{SHARD_MARK}*.progress.json")):
            try:
                prog = json.loads(prog_file.read_text())
                shard = prog["shard"]
                int(prog["rows_done"]), int(shard["n"]), int(shard["batch_size"]), shard["batches"]
            except (OSError, ValueError, KeyError, TypeError):
                continue  # unreadable: its batches are simply computed again
            npy = prog_file.with_name(prog_file.name.removesuffix(".progress.json") + ".npy")
            if npy.exists():
                out.append((npy, prog))
        return out

    def shard_sources(
        self, key: str, n: int, batch_size: int, width: int
    ) -> dict[int, tuple[Path, int]]:
        """The finished batches of entry `key` held in shards of the same grid and width:
        batch -> (shard file, its first row there)."""
        out: dict[int, tuple[Path, int]] = {}
        for npy, prog in self._shards(key):
            sh = prog["shard"]
            if (int(sh["n"]), int(sh["batch_size"])) != (n, batch_size):
                continue
            if len(prog.get("shape", ())) != 2 or int(prog["shape"][1]) != width:
                continue
            row, done = 0, int(prog["rows_done"])
            for b in sh["batches"]:
                stop = row + min((b + 1) * batch_size, n) - b * batch_size
                if stop > done:
                    break
                out.setdefault(int(b), (npy, row))
                row = stop
        return out

    def assemble(self, key: str, shape: tuple[int, int], meta: dict, batch_size: int) -> None:
        """Write entry `key` from its shards in grid order and commit it (checksum manifest).

        Rows pass through `PartialEntry.write` batch by batch in grid order, so the entry widens
        to float32 exactly where a one-process run would: the bytes equal that run's.
        """
        n, width = shape
        sources = self.shard_sources(key, n, batch_size, width)
        grid = range(0, -(-n // batch_size))
        if lost := [b for b in grid if b not in sources]:
            raise ExplorerError(
                f"cannot assemble features {key}: {len(lost)} batches (first: {lost[0]}) are in "
                "no finished shard; run the same command again to compute them"
            )
        self.discard_partial(key)  # a stale one-process partial must not set the dtype
        entry = self.begin(key, shape, meta)
        opened: dict[Path, np.ndarray] = {}
        for b in grid:
            npy, row = sources[b]
            if npy not in opened:
                opened[npy] = np.load(npy, mmap_mode="r")
            start, stop = b * batch_size, min((b + 1) * batch_size, n)
            entry.write(start, np.asarray(opened[npy][row : row + stop - start]))
        opened.clear()
        entry.commit()

    def drop_shards(self, key: str) -> None:
        """Delete every shard of entry `key` (once the entry is committed)."""
        for f in self.partial_dir.glob(f"{key}{SHARD_MARK}*"):
            f.unlink(missing_ok=True)

    def discard_partial(self, key: str) -> None:
        """Delete the one-process partial of entry `key`, if any."""
        for f in (self.partial_dir / f"{key}.npy", self.partial_dir / f"{key}.progress.json"):
            f.unlink(missing_ok=True)

    def lock(self, name: str) -> FileLock:
        return FileLock(str(self.lock_dir / f"{name}.lock"))

    def put(self, key: str, array: np.ndarray, meta: dict) -> None:
        """Write a whole array as a complete entry (for small ones such as pixel baselines)."""
        entry = self.begin(key, array.shape, meta)
        entry.write(0, np.asarray(array))
        entry.commit()

    def entry_keys(self) -> list[str]:
        """Keys of all entries that have a manifest (unverified)."""
        return sorted(m.stem for m in self.dir.glob("??/*.json"))

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
        """Delete every entry (partials and quarantine included): all at once for any reader,
        even if this process is killed meanwhile (`remove_tree`)."""
        remove_tree(self.dir, self.root)
        with self._verified_lock:
            for k in [k for k in self._verified if k.startswith(str(self.dir))]:
                del self._verified[k]
        for d in (self.dir, self.partial_dir, self.lock_dir):
            d.mkdir(parents=True, exist_ok=True)
