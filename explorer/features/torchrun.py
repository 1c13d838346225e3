"""Extraction over torchrun ranks: who this process is, the batch plan, and the few collectives.

A plain process is rank 0 of 1 and never touches `torch.distributed`. Under `torchrun`
(`WORLD_SIZE` > 1) `init` joins the process group (NCCL for CUDA tensors with rank r on
`cuda:LOCAL_RANK`, gloo for the small control messages and on the CPU). Work is split by whole
batches of the single-process grid `range(0, n, batch_size)`, never by contiguous halves: a
batch computes the same bytes whichever rank runs it, so the assembled entry equals a
one-process run's. Everything but `init`, the collectives and `finish` is pure.

Torch is imported lazily, so `explorer.cli.extract` stays torch-free at import time.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from explorer.errors import ExplorerError

TIMEOUT_ENV = "EXPLORER_DIST_TIMEOUT"  # seconds a collective may wait (default 30 minutes)
FAIL_ENV = "EXPLORER_TEST_FAIL_AT"  # test-only: "RANK:K" makes that rank fail after K batches
LOCK_POLL_SECONDS = 5.0


@dataclass(frozen=True)
class Ranks:
    """This process's place in a torchrun job (rank 0 of 1 when run plainly)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


class RankFailed(ExplorerError):
    """A rank failed during a sharded job; every rank raises it with the first failure's message
    (printed once, by rank 0: `echo` is False elsewhere)."""

    def __init__(self, message: str, echo: bool = True):
        super().__init__(message)
        self.echo = echo


_current = Ranks()


def from_env(env: Mapping[str, str] = os.environ) -> Ranks:
    """The ranks torchrun describes in `RANK`, `WORLD_SIZE`, `LOCAL_RANK` (pure)."""
    try:
        world = int(env.get("WORLD_SIZE", "1"))
        rank, local = int(env.get("RANK", "0")), int(env.get("LOCAL_RANK", "0"))
    except ValueError:
        raise ExplorerError(
            "RANK, WORLD_SIZE and LOCAL_RANK must be integers (they are set by torchrun)"
        ) from None
    if world < 1 or not 0 <= rank < world or local < 0:
        raise ExplorerError(
            f"rank {rank} of world size {world} makes no sense; launch with torchrun"
        )
    return Ranks(rank, world, local)


def current() -> Ranks:
    """This process's ranks: set by `init`, rank 0 of 1 otherwise."""
    return _current


def launched(env: Mapping[str, str] = os.environ) -> bool:
    """Started by torchrun with more than one process."""
    return from_env(env).active


def rank_device(device: str | None, ranks: Ranks, cuda_available: bool) -> str:
    """The device a rank computes on (pure): "auto"/"cuda" become `cuda:LOCAL_RANK` when CUDA is
    there, the CPU otherwise; an explicit choice is kept."""
    if device in (None, "", "auto", "cuda"):
        return f"cuda:{ranks.local_rank}" if cuda_available else "cpu"
    return device


def init(device: str | None = "auto") -> str:
    """Join the torchrun process group, if launched by one; returns this rank's device.

    Plain runs return `device` unchanged and start nothing. Ranks other than 0 log only errors,
    so progress and summaries appear once.
    """
    global _current
    ranks = from_env()
    if not ranks.active or _current.active:
        return device if not ranks.active else rank_device(device, ranks, _cuda())
    import datetime

    import torch
    import torch.distributed as dist

    dev = rank_device(device, ranks, torch.cuda.is_available())
    on_cuda = dev.startswith("cuda")
    if on_cuda:
        torch.cuda.set_device(torch.device(dev))
    dist.init_process_group(
        "cpu:gloo,cuda:nccl" if on_cuda else "gloo",
        timeout=datetime.timedelta(seconds=timeout_seconds()),
    )
    _current = ranks
    if not ranks.main:
        logging.getLogger("explorer").setLevel(logging.ERROR)
    return dev


def timeout_seconds(env: Mapping[str, str] = os.environ) -> float:
    try:
        return float(env.get(TIMEOUT_ENV, "1800"))
    except ValueError:
        raise ExplorerError(f"{TIMEOUT_ENV} must be a number of seconds") from None


def finish() -> None:
    """Leave the process group (a no-op for a plain run)."""
    global _current
    if _current.active:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
        _current = Ranks()


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


# --- collectives (identity for a plain run) ------------------------------------------------------


def broadcast(obj):
    """Rank 0's `obj` on every rank."""
    if not _current.active:
        return obj
    import torch.distributed as dist

    box = [obj if _current.main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(obj) -> list:
    """Every rank's `obj`, in rank order, on every rank."""
    if not _current.active:
        return [obj]
    import torch.distributed as dist

    out = [None] * _current.world
    dist.all_gather_object(out, obj)
    return out


def settle(error: str | None, value: int = 0) -> int:
    """Meet every rank after a step: raise `RankFailed` everywhere if any rank failed (with the
    lowest failing rank's message), else return the sum of `value` over ranks."""
    results = gather((error, value))
    failed = [(r, e) for r, (e, _) in enumerate(results) if e is not None]
    if failed:
        r, msg = failed[0]
        where = f" (rank {r} of {_current.world})" if _current.active else ""
        raise RankFailed(f"{msg}{where}", echo=_current.main)
    return sum(v for _, v in results)


def failure_text(e: BaseException) -> str:
    """One line for an exception caught on a rank."""
    return str(e) if isinstance(e, ExplorerError) else f"{type(e).__name__}: {e}"


@contextmanager
def main_holds(make_lock):
    """Rank 0 holds the lock `make_lock()` for the block (two separate runs never write one job),
    polling so the other ranks wait in short broadcasts, not in one long collective."""
    from filelock import Timeout

    lock = None
    while True:
        state = "wait"
        if _current.main:
            try:
                if lock is None:
                    lock = make_lock()
                lock.acquire(timeout=LOCK_POLL_SECONDS)
                state = "held"
            except Timeout:
                pass
            except Exception as e:  # e.g. an unwritable cache: every rank stops with it
                state = failure_text(e)
        state = broadcast(state)
        if state == "held":
            break
        if state != "wait":
            raise RankFailed(state, echo=_current.main)
    try:
        yield
    finally:
        if lock is not None:
            lock.release()


# --- the batch plan (pure) ---------------------------------------------------------------------


def batch_span(b: int, n: int, batch_size: int) -> tuple[int, int]:
    """Rows `[start, stop)` of batch `b` of the grid `range(0, n, batch_size)`."""
    return b * batch_size, min((b + 1) * batch_size, n)


def n_batches(n: int, batch_size: int) -> int:
    return -(-n // batch_size)


def assign(todo: Sequence[int], world: int) -> list[list[int]]:
    """Batches to compute, round-robin over ranks: `todo[i]` goes to rank `i % world` (on a fresh
    job, batch b to rank b % world; a resume spreads what is left evenly again)."""
    return [list(todo[r::world]) for r in range(world)]


def injected_failure(ranks: Ranks, env: Mapping[str, str] = os.environ) -> int | None:
    """Test-only hook: the number of batches after which this rank fails, from `EXPLORER_TEST_FAIL_AT`
    ("RANK:K"); None when unset or meant for another rank."""
    spec = env.get(FAIL_ENV)
    if not spec:
        return None
    rank, _, k = spec.partition(":")
    return int(k or 0) if int(rank) == ranks.rank else None
