"""Preprocessed image batches for extraction, read batch by batch (never the whole dataset).

`batches` yields the model-ready pixels of each requested row span of a selection, in span
order; memory is bounded by a few batches whatever the dataset's size.

Datasets read from files (a `loader`: ImageFolder trees, zips, HF `datasets`) are decoded and
resized in `torch.utils.data.DataLoader` worker processes, a few batches ahead of the forward
pass, into shared memory (pinned on CUDA). In-memory arrays are sliced and resized in process:
a worker would only copy what is already in RAM through a pipe (see `default_workers`).

Workers start by *forkserver* (spawn where there is none), never by plain fork: the app
serves pages from threads, and a fork taken while another thread holds a lock (logging,
tqdm, the CUDA/OpenMP runtimes) can deadlock the child. The fork server is a fresh
single-threaded process that imports torch and these modules once (`_PRELOAD`); each job's
workers are then forked from it in milliseconds and receive only the small picklable
`_Spans` object (the loader's file list, the selection and the preprocess settings).
"""

from __future__ import annotations

import copy
import functools
import multiprocessing
import os
import pickle
import threading
import time
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch

from explorer.errors import ExplorerError
from explorer.features import host_memory

Span = tuple[int, int]  # rows [start, stop) of a selection

PREP_CHUNK = 8  # images decoded and resized at a time inside one batch (bounds the transients)
IN_FLIGHT_BYTES = 1 << 30  # batches decoded ahead of the forward pass stay under this (float32)
MAX_AUTO_WORKERS = 4
WATCH_SECONDS = 1.0  # how often a worker checks that the main process still runs
_PRELOAD = ["explorer.features.streaming", "explorer.data.folders", "explorer.data.preprocess"]


def default_workers(dataset) -> int:
    """Worker processes for `dataset` when not told: min(4, CPUs) for files, 0 for in-memory arrays."""
    if getattr(dataset, "loader", None) is None:
        return 0
    return max(1, min(MAX_AUTO_WORKERS, os.cpu_count() or 1))


def batches(
    dataset,
    indices: np.ndarray,
    spans: Sequence[Span],
    prep,
    *,
    workers: int | None = None,
    device: torch.device | str | None = None,
) -> Iterator[tuple[Span, torch.Tensor]]:
    """`((start, stop), x (stop - start, C, H, W) float32 in [-1, 1])` for each span, in order.

    `x` is `prep(dataset.images(indices[start:stop]))`, byte for byte, however it is made.
    `workers`: processes decoding ahead (None: `default_workers`; 0: in this process; ignored
    for in-memory arrays). On a CUDA `device` the batches come in pinned memory, ready for a
    `non_blocking` copy.
    """
    spans = [(int(a), int(b)) for a, b in spans]
    pin = torch.device(device).type == "cuda" if device is not None else False
    workers = default_workers(dataset) if workers is None else int(workers)
    if workers < 0:
        raise ExplorerError(f"--workers must be 0 or more, not {workers}")
    if dataset.loader is None or workers == 0 or len(spans) < 2:
        for start, stop in spans:
            x = _prepare(dataset, indices[start:stop], prep)
            yield (start, stop), (x.pin_memory() if pin else x)
        return
    rows = max(b - a for a, b in spans)
    per_batch = rows * _image_bytes(prep)
    workers = min(workers, len(spans), max(1, IN_FLIGHT_BYTES // per_batch))
    loader = torch.utils.data.DataLoader(
        _Spans(dataset.loader, np.asarray(indices), spans, prep),
        batch_size=None,  # each item is already a whole batch
        shuffle=False,
        num_workers=workers,
        prefetch_factor=max(1, min(2, IN_FLIGHT_BYTES // (per_batch * workers))),
        pin_memory=pin,
        multiprocessing_context=_context(),
        worker_init_fn=functools.partial(_watch_main, os.getpid()),
    )
    it = iter(loader)
    try:
        for span, x in zip(spans, it, strict=True):
            if isinstance(x, _Failure):
                raise x.error
            yield span, x
    finally:
        shutdown = getattr(it, "_shutdown_workers", None)
        if shutdown is not None:  # stop the workers now, not when the iterator is collected
            shutdown()


def _prepare(source, idx: np.ndarray, prep, share: bool = False) -> torch.Tensor:
    """`prep(source.images(idx))` (or `prep(source(idx))` for a bare loader), `(n, C, H, W)`.

    Files are decoded and resized `PREP_CHUNK` images at a time into one preallocated tensor
    (in shared memory when `share`, so a worker hands it over without a copy); `prep` treats
    a list of images one by one, so the bytes are those of a single call. An in-memory array
    goes through `prep` in one call, as its batched resize always has.
    """
    read: Callable = getattr(source, "images", source)
    if getattr(source, "array", None) is not None:
        return prep(read(idx))
    out = None
    for a in range(0, len(idx), PREP_CHUNK):
        part = prep(read(idx[a : a + PREP_CHUNK]))
        if out is None:
            out = torch.empty((len(idx), *part.shape[1:]), dtype=part.dtype)
            if share:
                out.share_memory_()
        out[a : a + len(part)] = part
    assert out is not None, "a span holds at least one image"
    return out


def _image_bytes(prep) -> int:
    """float32 bytes of one preprocessed image (a 256x256 RGB guess for an unknown `prep`)."""
    size, channels = getattr(prep, "size", 256), getattr(prep, "channels", 3)
    return 4 * int(channels) * int(size) ** 2


def _context():
    """The worker start method: forkserver with our modules preloaded, else spawn (module doc)."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(_PRELOAD)  # used when the server starts (once per process)
        return ctx
    return multiprocessing.get_context("spawn")


def _watch_main(main_pid: int, _worker_id: int) -> None:
    """In a worker: exit once the main process is gone (killed by SIGKILL, say).

    DataLoader's own watchdog watches the worker's parent, which under forkserver is the fork
    server, and the fork server lives as long as any worker does: without this, a killed run
    would leave its workers and fork server behind for good.
    """

    def watch() -> None:
        while True:
            time.sleep(WATCH_SECONDS)
            if not _alive(main_pid):
                os._exit(1)

    threading.Thread(target=watch, name="explorer-watch-main", daemon=True).start()


def _alive(pid: int) -> bool:
    """Whether process `pid` runs (a zombie, killed but not yet reaped, counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True  # no /proc (macOS): os.kill said it exists


class _Failure:
    """An error raised in a worker, carried back as a value so it surfaces as its own one-line
    message rather than DataLoader's re-raise with the worker's traceback in the text."""

    def __init__(self, error: BaseException):
        try:
            pickle.dumps(error)
            self.error = error
        except Exception:
            self.error = ExplorerError(f"{type(error).__name__}: {error}")


class _Spans(torch.utils.data.Dataset):
    """What a worker receives: item `i` is span `i`'s preprocessed batch (or a `_Failure`)."""

    def __init__(self, loader, indices: np.ndarray, spans: list[Span], prep):
        lo, hi = min(a for a, _ in spans), max(b for _, b in spans)
        if getattr(loader, "cache_bytes", 0):  # a job reads each image once: no decoded-image LRU
            loader = copy.copy(loader)
            loader.cache_bytes = 0
        self.loader, self.prep = loader, prep
        self.indices = np.ascontiguousarray(indices[lo:hi])  # only the rows this job reads
        self.spans = [(a - lo, b - lo) for a, b in spans]

    def __len__(self) -> int:
        return len(self.spans)

    def __getitem__(self, i: int) -> torch.Tensor | _Failure:
        a, b = self.spans[i]
        try:
            return _prepare(self.loader, self.indices[a:b], self.prep, share=True)
        except Exception as e:
            return _Failure(e)
        finally:
            host_memory.release()
