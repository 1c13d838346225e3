"""Host memory of CPU passes: reuse freed activation buffers instead of faulting in new pages.

glibc serves every allocation above its mmap threshold (128 KiB, rising to at most 32 MiB)
with a fresh `mmap` and unmaps it on `free`. A CPU forward pass allocates and frees its
activations layer by layer, so every batch zero-fills every page of every activation again:
a quarter of the built-in model's full pass on a 2-core CPU, most of it in the
high-resolution up path (which made its time share lag its FLOP share, BENCHMARKS.md
figure 3).

`tune()` asks glibc, once per process, to serve large buffers from the heap and keep what is
freed (`mallopt`: no mmap, one arena so that Streamlit's threads share that heap, trim
threshold `KEEP_BYTES`). `release()` hands free heap memory back to the system only when
more than `KEEP_BYTES` of it is free, so a long run keeps at most that beyond what is live.
Only where buffers come from changes; every number computed is the same.
`EXPLORER_HOST_MALLOC=system` keeps glibc's defaults (`tuned`, or unset, tunes).
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys

ENV = "EXPLORER_HOST_MALLOC"
KEEP_BYTES = 512 << 20  # free heap kept for the next batch; more than this is handed back

_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8  # <malloc.h>


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd")
        + ("usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")
    ]


_libc: ctypes.CDLL | None | bool = None  # None: not looked up yet; False: not glibc
_tuned = False


def _glibc() -> ctypes.CDLL | None:
    global _libc
    if _libc is None:
        _libc = False
        if sys.platform.startswith("linux"):
            try:
                lib = ctypes.CDLL("libc.so.6")
                lib.gnu_get_libc_version.restype = ctypes.c_char_p  # glibc only, not musl
                lib.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
                _libc = lib
            except (OSError, AttributeError):
                pass
    return _libc or None


def tune() -> bool:
    """Keep freed large buffers in the heap for reuse (once per process; later calls are free).
    Returns whether glibc's allocator is tuned now."""
    global _tuned
    if _tuned:
        return True
    mode = os.environ.get(ENV, "").strip().lower()
    if mode == "system":
        return False
    if mode not in ("", "tuned"):
        logging.getLogger("explorer.features.host_memory").warning(
            f"{ENV}={mode!r} is not a choice; tuning glibc's allocator (set {ENV}=system for "
            "glibc's defaults)"
        )
    lib = _glibc()
    if lib is None:
        return False
    ok = lib.mallopt(_M_MMAP_MAX, 0) == 1  # large buffers from the heap, not fresh mappings
    ok &= lib.mallopt(_M_TRIM_THRESHOLD, KEEP_BYTES) == 1
    lib.mallopt(_M_ARENA_MAX, 1)  # threads started from now on share the main heap
    _tuned = ok
    return ok


def is_tuned() -> bool:
    return _tuned


def free_bytes() -> int | None:
    """Bytes free inside the heap (glibc's `mallinfo2().fordblks`), None where unknown."""
    lib = _glibc()
    fn = getattr(lib, "mallinfo2", None) if lib is not None else None
    if fn is None:
        return None
    fn.restype = _MallInfo2
    return int(fn().fordblks)


def release() -> None:
    """Hand free heap memory back to the system. Untuned: always (decode and batch buffers come
    and go by the megabyte, and glibc would otherwise keep them, growing the process image by
    image). Tuned: only when more than `KEEP_BYTES` is free, so the next batch reuses the rest."""
    lib = _glibc()
    if lib is None:
        return
    if _tuned:
        free = free_bytes()
        if free is not None and free <= KEEP_BYTES:
            return
    lib.malloc_trim(0)
