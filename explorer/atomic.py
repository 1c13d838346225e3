"""Atomic file writes: a temporary file beside the target, then one `os.replace`.

A reader sees the old file or the new one, never a half-written one, and a killed writer
leaves only a hidden `.tmp` behind. Files a reader may see while they are written (cache
entries' manifests, memos, tables, reports, exports) go through here; files written inside a
private temporary folder that is renamed into place as a whole (a converted model, an unpacked
upload, a warm seed being built) and streamed downloads checked before use do not need to.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path


def _tmp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")


def atomic_write(path: str | os.PathLike, data: str | bytes | Callable[[Path], None]) -> Path:
    """Write `data` to `path` atomically; returns `path`.

    `data` is text, bytes, or a function that writes the temporary file it is given (for
    writers such as `torch.save` or `DataFrame.to_parquet` that want a path).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_path(path)
    try:
        if isinstance(data, str):
            tmp.write_text(data)
        elif isinstance(data, bytes | bytearray | memoryview):
            tmp.write_bytes(bytes(data))
        else:
            data(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
