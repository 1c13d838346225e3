"""Extraction under torchrun: each (t, seed) job's batches shared out over the ranks.

Rank 0 decides which jobs are missing and holds each job's lock (a separate run waits; the
ranks of this one do not serialise). It deals the batches no finished shard holds out
round-robin; each rank writes its batches into shards of its own (`FeatureStore.begin_shard`),
resumable per batch; then each rank assembles some of the entries in grid order and commits
them, byte for byte as one process would write them. A failure on any rank ends the job on
every rank with that rank's one-line message.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable

from explorer.errors import ExplorerError
from explorer.features import torchrun
from explorer.features.job import Job, Meter, run_job
from explorer.features.reports import ExtractReport

log = logging.getLogger("explorer.features.sharded")


def run_sharded(
    template: Job, plan_jobs: Callable[[], list[Job]], report: ExtractReport, progress
) -> ExtractReport:
    """Every rank runs this with the same arguments. `plan_jobs()` lists the missing jobs (and
    counts the cached entries in `report`); it runs on rank 0 alone, so ranks never disagree.
    Only each job's (t, seed, keys) travels; every rank rebuilds the job from `template`."""
    ranks = torchrun.current()
    plan = [(j.t, j.seed, dict(j.keys)) for j in plan_jobs()] if ranks.main else None
    plan, report.cached = torchrun.broadcast((plan, report.cached))
    jobs = [dataclasses.replace(template, t=t, seed=seed, keys=keys) for t, seed, keys in plan]
    meter = Meter(len(jobs) * report.images, progress if ranks.main else False)
    try:
        for job in jobs:
            computed, passes = sharded_job(job, meter)
            report.computed += computed
            report.cached += len(job.keys) - computed
            report.forward_passes += passes
    finally:
        meter.close()  # also on a failure, so its one-line message starts a line of its own
    return report


def sharded_job(job: Job, meter: Meter) -> tuple[int, int]:
    """One job over all ranks; returns (entries computed, forward passes on all ranks)."""
    ranks = torchrun.current()
    store, n, bs = job.store, len(job.sel.indices), job.batch_size
    with torchrun.main_holds(lambda: store.lock(job.lock_name)):
        plan, error = None, None
        if ranks.main:
            try:
                plan = shard_plan(job, ranks.world)
            except Exception as e:
                error = torchrun.failure_text(e)
        torchrun.settle(error)
        still, plan = torchrun.broadcast(plan)
        if not still:
            meter.advance(n)
            return 0, 0
        job = job.with_keys(still)
        todo, grid = sum(len(b) for b in plan["batches"]), torchrun.n_batches(n, bs)
        if ranks.main and todo < grid:
            log.info(f"t={job.t} seed={job.seed}: resuming, {todo} of {grid} batches left")
        shown = [0]

        def show(k: int) -> None:  # rank 0's bar stands for every rank's, capped at the job
            k = min(k, n - shown[0])
            shown[0] += k
            meter.advance(k)

        show(n - sum(_rows(b, n, bs) for part in plan["batches"] for b in part))
        mine = plan["batches"][ranks.rank]
        passes, error = 0, None
        if mine:
            fail_after = torchrun.injected_failure(ranks)
            count = [0]

            def advance(k: int) -> None:
                show(k * ranks.world)
                count[0] += 1
                if fail_after is not None and count[0] >= fail_after:
                    raise ExplorerError(
                        f"injected failure after {count[0]} batches ({torchrun.FAIL_ENV})"
                    )

            shard = {"tag": f"{plan['nonce']}-{ranks.rank}", "batches": mine}
            try:
                passes = run_job(job, advance, shard=shard)
            except Exception as e:
                error = torchrun.failure_text(e)
        passes = torchrun.settle(error, passes)
        error = None
        try:
            for i, (k, key) in enumerate(sorted(still.items())):
                if i % ranks.world == ranks.rank:
                    store.assemble(key, (n, job.entry_dim(k)), job.entry_meta(k), bs)
        except Exception as e:
            error = torchrun.failure_text(e)
        torchrun.settle(error)
    show(n)  # the bar catches up with the job (its per-batch steps are estimates)
    return len(still), passes


def _rows(b: int, n: int, batch_size: int) -> int:
    start, stop = torchrun.batch_span(b, n, batch_size)
    return stop - start


def shard_plan(job: Job, world: int) -> tuple[dict, dict]:
    """(entries still missing, {"batches": per rank, "nonce"}): the batches of the grid that some
    still-missing entry lacks in every finished shard, dealt out round-robin."""
    store, n, bs = job.store, len(job.sel.indices), job.batch_size
    still = {k: v for k, v in job.keys.items() if not store.has(v)}  # another run may be done
    todo: set[int] = set()
    for k, key in still.items():
        have = store.shard_sources(key, n, bs, job.entry_dim(k))
        todo |= set(range(torchrun.n_batches(n, bs))) - set(have)
    nonce = f"{time.time_ns():x}"
    return still, {"batches": torchrun.assign(sorted(todo), world), "nonce": nonce}
