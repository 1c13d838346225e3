"""Checksummed files for the derived caches: probe results, UMAP layouts and CKA matrices.

Each file `<name>` is written atomically, then its sha256 beside it in `<name>.sha256`. A read
hashes the bytes it got and hands them back only when they match; a damaged file (or checksum)
is reported with a warning and reads as missing, so the caller recomputes and rewrites it: it
is never served. A file written before checksums existed (no `.sha256`, e.g. an older cache)
is served when the caller's `adopt(data)` finds it readable and whole, and its checksum is then
recorded; otherwise it is recomputed. A writer killed between the two writes leaves a whole
file without checksum, which is adopted the same way.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections.abc import Callable
from pathlib import Path

from explorer.atomic import atomic_write

log = logging.getLogger("explorer.features.checked")
SUFFIX = ".sha256"


def checksum_path(path: Path) -> Path:
    return path.with_name(path.name + SUFFIX)


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def write_checked(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically, then its checksum beside it; returns `path`."""
    path = Path(path)
    atomic_write(path, data)
    atomic_write(checksum_path(path), digest(data) + "\n")
    return path


def read_checked(path: str | os.PathLike, adopt: Callable[[bytes], bool]) -> bytes | None:
    """The bytes of `path` when they match its recorded checksum; None when it is missing or
    damaged (with a warning). Without a checksum, `adopt(data)` decides (see the module doc)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        return _damaged(path, f"unreadable ({e.strerror or e})")
    try:
        want = checksum_path(path).read_text().strip()
    except FileNotFoundError:
        want = None
    except (OSError, UnicodeDecodeError):
        want = "unreadable"
    if want is None:  # written before checksums: served only if whole, then checksummed
        if not adopt(data):
            return _damaged(path, "unreadable file without checksum")
        with contextlib.suppress(OSError):  # a read-only or full cache: served all the same
            atomic_write(checksum_path(path), digest(data) + "\n")
        return data
    if want != digest(data):
        return _damaged(path, "checksum mismatch")
    return data


def _damaged(path: Path, why: str) -> None:
    log.warning("damaged cache file %s (%s); it is recomputed", path, why)
    return None
