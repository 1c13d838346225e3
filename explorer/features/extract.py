"""Fill and read the feature store: the one path from (model, dataset, settings) to cached features.

A job is one (timestep, noise seed) (`explorer.features.job`): one forward pass per batch serves
every requested layer and pooling. Jobs are locked, so two processes asking for the same
features compute them once; under torchrun each job's batches are shared out over the ranks
(`explorer.features.sharded`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence

import numpy as np

from explorer.data import ImageDataset
from explorer.features import torchrun
from explorer.features.job import Job, Meter, Progress, run_job
from explorer.features.keys import Selection, feature_key
from explorer.features.reports import ExtractReport
from explorer.features.sharded import run_sharded
from explorer.features.store import FeatureStore
from explorer.models.layers import LayerSpec
from explorer.settings import check_timesteps


def ensure_features(
    model,
    dataset: ImageDataset,
    sel: Selection,
    *,
    timesteps: Sequence[int],
    layers: Sequence[LayerSpec],
    pools: Sequence[str],
    seeds: Sequence[int] = (0,),
    store: FeatureStore,
    batch_size: int = 256,
    progress: bool | Progress = True,
    workers: int | None = None,
) -> ExtractReport:
    """Make sure every (t, layer, pool, seed) feature of `sel` is in `store`; compute only what is missing.

    Under torchrun (`explorer.features.torchrun.init` called) every rank calls this with the same
    arguments: rank 0 decides the jobs, each job's batches are spread over the ranks, and the
    entries come out byte for byte as one process would write them.
    """
    t0 = time.time()
    ts = check_timesteps(timesteps, model.num_timesteps)
    report = ExtractReport(
        images=len(sel.indices), location=str(store.dir), skipped=list(dataset.skipped)
    )
    template = Job(model, dataset, sel, 0, 0, tuple(layers), {}, store, batch_size, workers)

    def plan() -> list[Job]:
        return missing_jobs(template, ts, pools, seeds, report)

    if torchrun.current().active:
        run_sharded(template, plan, report, progress)
        report.seconds = time.time() - t0
        return report
    jobs = plan()
    meter = Meter(len(jobs) * len(sel.indices), progress)
    try:
        for job in jobs:
            # one lock per job (not per key set), so overlapping requests never write the same entry twice
            with store.lock(job.lock_name):
                still = {k: v for k, v in job.keys.items() if not store.has(v)}  # another process
                report.cached += len(job.keys) - len(still)  # may have finished some meanwhile
                if still:
                    report.forward_passes += run_job(job.with_keys(still), meter.advance)
                    report.computed += len(still)
                else:
                    meter.advance(len(sel.indices))
    finally:
        meter.close()  # also on a failure, so its one-line message starts a line of its own
    report.seconds = time.time() - t0
    return report


def missing_jobs(
    template: Job, ts: Sequence[int], pools: Sequence[str], seeds: Sequence[int], report
) -> list[Job]:
    """Every (t, seed) job with missing entries, in grid order; counts the cached entries."""
    model, dataset, sel, store = template.model, template.dataset, template.sel, template.store
    jobs = []
    for t in ts:
        for seed in seeds:
            keys = {
                (lay.name, p): feature_key(model, dataset, sel, t, lay.name, p, seed)
                for lay in template.layers
                for p in pools
            }
            missing = {k: v for k, v in keys.items() if not store.has(v)}
            report.cached += len(keys) - len(missing)
            if missing:
                jobs.append(dataclasses.replace(template, t=t, seed=seed, keys=missing))
    return jobs


def load_features(
    model,
    dataset,
    sel: Selection,
    *,
    t: int | None,
    layer: str,
    pool_name: str,
    seed: int | None = 0,
    store: FeatureStore,
) -> np.ndarray:
    """The cached `(N, D)` float16 (float32 if float16 overflowed) features of one setting; KeyError
    if not computed yet (or found damaged: it is then moved aside, to be recomputed)."""
    key = feature_key(model, dataset, sel, t, layer, pool_name, seed)
    if not store.has(key):
        raise KeyError(f"features not cached: t={t} layer={layer} pool={pool_name} seed={seed}")
    return store.load(key)
