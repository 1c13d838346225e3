"""Fill and read the feature store: the one path from (model, dataset, settings) to cached features.

A job is one (timestep, noise seed): one forward pass per batch serves every requested
layer and pooling. Jobs write chunk by chunk, resume after a kill, and are locked so two
processes asking for the same features compute them once.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from explorer import distributed, host_memory, streaming
from explorer.data import ImageDataset
from explorer.defaults import PIXELS  # the pixel pseudo-layer (re-exported: features.PIXELS)
from explorer.device import autocast_dtype
from explorer.errors import ExplorerError
from explorer.extract import (
    EXTRACTION_VERSION,
    capture_pass,
    check_timesteps,
    image_noise,
    pool,
    pooled_dim,
    to_half,
)
from explorer.layers import LayerSpec
from explorer.store import FeatureStore, content_key

Progress = Callable[[int, int], None]  # (images done, images total)
log = logging.getLogger("explorer.features")


@dataclass(frozen=True)
class Selection:
    """Which images: a dataset split, optionally capped to a fixed stratified subset."""

    split: str
    indices: np.ndarray = field(compare=False, hash=False)

    @classmethod
    def of(cls, dataset: ImageDataset, split: str, limit: int | None = None) -> Selection:
        return cls(split, dataset.subset(split, limit))

    @property
    def fingerprint(self) -> str:
        return content_key(
            {"split": self.split, "idx": np.asarray(self.indices, np.int64).tobytes().hex()}
        )[:16]


def feature_key(
    model,
    dataset: ImageDataset,
    sel: Selection,
    t: int | None,
    layer: str,
    pool_name: str,
    seed: int | None,
) -> str:
    """The content key of one feature matrix. Pixels ignore the model's weights, t and seed."""
    prep = model.preprocess
    parts = {
        "dataset": dataset.fingerprint,
        "selection": sel.fingerprint,
        "preprocess": prep.tag,
        "layer": layer,
        "pool": pool_name,
        "version": EXTRACTION_VERSION,
    }
    if layer != PIXELS:
        parts |= {"model": model.fingerprint, "t": int(t), "seed": int(seed)}
        parts |= {"precision": model.precision}  # bf16/fp16-autocast features are never fp32's
        parts |= model.family.key_parts()  # family and conditioning; none for a plain pixel U-Net
    return content_key(parts)


@dataclass
class ExtractReport:
    """What an `ensure_features` call did."""

    computed: int = 0  # entries written by this call
    cached: int = 0  # entries already there
    images: int = 0
    forward_passes: int = 0  # batches x jobs run
    seconds: float = 0.0
    location: str = ""
    skipped: list[str] = field(default_factory=list)

    def summary(self) -> str:
        total = self.computed + self.cached
        s = (
            f"{total} feature sets for {self.images} images: {self.computed} computed, {self.cached} from cache, "
            f"in {self.seconds:.1f}s; stored in {self.location}"
        )
        if self.skipped:
            s += f"; {len(self.skipped)} unreadable images skipped"
        return s


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

    Under torchrun (`explorer.distributed.init` called) every rank calls this with the same
    arguments: rank 0 decides the jobs, each job's batches are spread over the ranks, and the
    entries come out byte for byte as one process would write them (see `_sharded_job`).
    """
    t0 = time.time()
    ts = check_timesteps(timesteps, model.num_timesteps)
    report = ExtractReport(
        images=len(sel.indices), location=str(store.dir), skipped=list(dataset.skipped)
    )
    ranks = distributed.current()
    if ranks.active:
        return _ensure_sharded(
            model,
            dataset,
            sel,
            ts,
            layers,
            pools,
            seeds,
            store,
            batch_size,
            progress,
            workers,
            report,
            t0,
        )
    jobs = _missing_jobs(model, dataset, sel, ts, layers, pools, seeds, store, report)
    meter = _Meter(len(jobs) * len(sel.indices), progress)
    for t, seed, missing in jobs:
        # one lock per job (not per key set), so overlapping requests never write the same entry twice
        with store.lock(_lock_name(model, dataset, sel, t, seed)):
            still = {
                k: v for k, v in missing.items() if not store.has(v)
            }  # another process may have finished
            report.cached += len(missing) - len(still)
            if still:
                report.forward_passes += _run_job(
                    model,
                    dataset,
                    sel,
                    t,
                    seed,
                    layers,
                    still,
                    store,
                    batch_size,
                    meter.advance,
                    workers=workers,
                )
                report.computed += len(still)
            else:
                meter.advance(len(sel.indices))
    meter.close()
    report.seconds = time.time() - t0
    return report


def _missing_jobs(model, dataset, sel, ts, layers, pools, seeds, store, report) -> list:
    """`(t, seed, {(layer, pool): key})` of every job with missing entries; counts the cached ones."""
    jobs = []
    for t in ts:
        for seed in seeds:
            keys = {
                (lay.name, p): feature_key(model, dataset, sel, t, lay.name, p, seed)
                for lay in layers
                for p in pools
            }
            missing = {k: v for k, v in keys.items() if not store.has(v)}
            report.cached += len(keys) - len(missing)
            if missing:
                jobs.append((t, seed, missing))
    return jobs


def _lock_name(model, dataset, sel, t: int, seed: int) -> str:
    """One lock per job (model, data, selection, t, seed), whichever layers a request asks for."""
    return content_key(
        {
            "model": model.fingerprint,
            "dataset": dataset.fingerprint,
            "selection": sel.fingerprint,
            "preprocess": model.preprocess.tag,
            "t": t,
            "seed": seed,
        }
    )


def _ensure_sharded(
    model, dataset, sel, ts, layers, pools, seeds, store, batch_size, progress, workers, report, t0
) -> ExtractReport:
    """`ensure_features` on every torchrun rank: rank 0's job list, each job shared out by batches."""
    ranks = distributed.current()
    jobs = None  # decided on rank 0 alone (it verifies the cached entries), so ranks never disagree
    if ranks.main:
        jobs = _missing_jobs(model, dataset, sel, ts, layers, pools, seeds, store, report)
    jobs, report.cached = distributed.broadcast((jobs, report.cached))
    meter = _Meter(len(jobs) * len(sel.indices), progress if ranks.main else False)
    try:
        for t, seed, missing in jobs:
            computed, passes = _sharded_job(
                model, dataset, sel, t, seed, layers, missing, store, batch_size, meter, workers
            )
            report.computed += computed
            report.cached += len(missing) - computed
            report.forward_passes += passes
    finally:
        meter.close()  # also on a failure, so its one-line message starts a line of its own
    report.seconds = time.time() - t0
    return report


def _sharded_job(
    model, dataset, sel, t, seed, layers, missing: dict, store, batch_size, meter, workers
) -> tuple[int, int]:
    """One (t, seed) job over all ranks; returns (entries computed, forward passes on all ranks).

    Rank 0 holds the job's lock throughout (a separate run waits; the ranks of this one do not
    serialise), picks the batches no finished shard holds and deals them out round-robin. Each
    rank writes its batches into shards of its own (`FeatureStore.begin_shard`), resumable per
    batch; then each rank assembles some of the entries in grid order and commits them. A failure
    on any rank ends the job on every rank with that rank's one-line message.
    """
    ranks = distributed.current()
    n = len(sel.indices)
    with distributed.main_holds(lambda: store.lock(_lock_name(model, dataset, sel, t, seed))):
        plan, error = None, None
        if ranks.main:
            try:
                plan = _shard_plan(store, missing, n, batch_size, layers, ranks.world)
            except Exception as e:
                error = distributed.failure_text(e)
        distributed.settle(error)
        still, plan = distributed.broadcast(plan)
        if not still:
            meter.advance(n)
            return 0, 0
        todo, grid = sum(len(b) for b in plan["batches"]), distributed.n_batches(n, batch_size)
        if ranks.main and todo < grid:
            log.info(f"t={t} seed={seed}: resuming, {todo} of {grid} batches left")
        shown = [0]

        def show(k: int) -> None:  # rank 0's bar stands for every rank's, capped at the job
            k = min(k, n - shown[0])
            shown[0] += k
            meter.advance(k)

        show(n - sum(_rows(b, n, batch_size) for part in plan["batches"] for b in part))
        mine = plan["batches"][ranks.rank]
        passes, error = 0, None
        if mine:
            fail_after = distributed.injected_failure(ranks)
            count = [0]

            def advance(k: int) -> None:
                show(k * ranks.world)
                count[0] += 1
                if fail_after is not None and count[0] >= fail_after:
                    raise ExplorerError(
                        f"injected failure after {count[0]} batches ({distributed.FAIL_ENV})"
                    )

            shard = {"tag": f"{plan['nonce']}-{ranks.rank}", "batches": mine}
            try:
                passes = _run_job(
                    model,
                    dataset,
                    sel,
                    t,
                    seed,
                    layers,
                    still,
                    store,
                    batch_size,
                    advance,
                    workers=workers,
                    shard=shard,
                )
            except Exception as e:
                error = distributed.failure_text(e)
        passes = distributed.settle(error, passes)
        error = None
        try:
            by_name = {lay.name: lay for lay in layers}
            for i, (k, key) in enumerate(sorted(still.items())):
                if i % ranks.world == ranks.rank:
                    lay = by_name[k[0]]
                    store.assemble(
                        key,
                        (n, pooled_dim(lay, k[1])),
                        _entry_meta(model, dataset, sel, t, seed, lay, k[1]),
                        batch_size,
                    )
        except Exception as e:
            error = distributed.failure_text(e)
        distributed.settle(error)
    show(n)  # the bar catches up with the job (its per-batch steps are estimates)
    return len(still), passes


def _rows(b: int, n: int, batch_size: int) -> int:
    start, stop = distributed.batch_span(b, n, batch_size)
    return stop - start


def _shard_plan(store, missing: dict, n: int, batch_size: int, layers, world: int):
    """(entries still missing, {"batches": per rank, "nonce"}): the batches of the grid that some
    still-missing entry lacks in every finished shard, dealt out round-robin."""
    still = {k: v for k, v in missing.items() if not store.has(v)}  # another run may have finished
    by_name = {lay.name: lay for lay in layers}
    todo: set[int] = set()
    for (name, p), key in still.items():
        have = store.shard_sources(key, n, batch_size, pooled_dim(by_name[name], p))
        todo |= set(range(distributed.n_batches(n, batch_size))) - set(have)
    nonce = f"{time.time_ns():x}"
    return still, {"batches": distributed.assign(sorted(todo), world), "nonce": nonce}


class _Meter:
    """Progress over images x jobs: a tqdm bar with ETA on the terminal, or a callback (the app)."""

    def __init__(self, total: int, progress: bool | Progress):
        self.total, self.done = total, 0
        self.callback = progress if callable(progress) else None
        self.bar = tqdm(
            total=total,
            desc="extract",
            unit="img",
            dynamic_ncols=True,
            disable=progress is not True or not total,
        )

    def advance(self, n: int) -> None:
        self.done += n
        self.bar.update(n)
        if self.callback:
            self.callback(self.done, self.total)

    def close(self) -> None:
        self.bar.close()


def _run_job(
    model,
    dataset,
    sel,
    t,
    seed,
    layers,
    keys: dict,
    store: FeatureStore,
    batch_size: int,
    advance,
    workers: int | None = None,
    shard: dict | None = None,
) -> int:
    """Compute one (t, seed) job for the missing `keys`, chunk by chunk; returns forward passes run.

    `shard` (`{"tag", "batches"}`, torchrun): compute only those grid batches, into this rank's
    shard files, and leave the commit to `FeatureStore.assemble`.
    """
    needed = {name for name, _ in keys}
    lays = [lay for lay in layers if lay.name in needed]
    pools_needed = sorted({p for _, p in keys})
    by_name = {lay.name: lay for lay in lays}
    n = len(sel.indices)
    if shard is None:
        entries = {
            k: store.begin(
                key,
                (n, pooled_dim(by_name[k[0]], k[1])),
                _entry_meta(model, dataset, sel, t, seed, by_name[k[0]], k[1]),
            )
            for k, key in keys.items()
        }
        start = min(e.rows_done for e in entries.values())
        if start:
            advance(start)
        spans = [(s, min(s + batch_size, n)) for s in range(start, n, batch_size)]
        at = {s: s for s, _ in spans}  # where a span's rows go in the partial
    else:
        b_list = shard["batches"]
        entries = {
            k: store.begin_shard(
                key,
                pooled_dim(by_name[k[0]], k[1]),
                _entry_meta(model, dataset, sel, t, seed, by_name[k[0]], k[1]),
                tag=shard["tag"],
                n=n,
                batch_size=batch_size,
                batches=b_list,
            )
            for k, key in keys.items()
        }
        start = 0
        spans = [distributed.batch_span(b, n, batch_size) for b in b_list]
        offsets = np.cumsum([0] + [stop - s for s, stop in spans])
        at = {s: int(o) for (s, _), o in zip(spans, offsets, strict=False)}
    device = next(model.unet.parameters()).device
    ac = autocast_dtype(model.precision)
    pending: _HostCopy | None = None
    done, saved = start, time.monotonic()  # rows [0, done) of the partial are written
    try:
        for (s, stop), x in streaming.batches(
            dataset, sel.indices, spans, model.preprocess, workers=workers, device=device
        ):
            idx = sel.indices[s:stop]
            x0 = model.family.encode(x.to(device, non_blocking=True))  # pixels, or latents
            noise = image_noise(idx, seed, tuple(x0.shape[1:]), x0.device)  # made on the device
            feats = capture_pass(
                model.unet,
                model.scheduler,
                x0,
                noise,
                timestep=t,
                layers=lays,
                pools=pools_needed,
                autocast=ac,
                net_kwargs=model.family.net_kwargs(len(idx), dataset.labels[idx]),
            )
            copy = _HostCopy(feats, at[s], at[s] + stop - s)  # queued; the device moves on
            if pending is not None:
                done = pending.write(entries, lays, t, ac)
            pending = copy
            if time.monotonic() - saved > CHECKPOINT_SECONDS:  # durable, but not every batch
                _checkpoint(entries, done)
                host_memory.release()  # free heap beyond what the next batch reuses
                saved = time.monotonic()
            advance(len(idx))
        if pending is not None:
            done, pending = pending.write(entries, lays, t, ac), None
    except BaseException:  # an error or Ctrl-C: keep every finished batch for the resume
        if pending is not None:
            with contextlib.suppress(Exception):
                done = pending.write(entries, lays, t, ac)
        _checkpoint(entries, done)
        raise
    if shard is not None:
        _checkpoint(entries, done)  # the shard is finished; a rank assembles the entry
        return len(spans)
    for e in entries.values():
        e.commit()
    return len(spans)


def _entry_meta(model, dataset, sel, t: int, seed: int, lay: LayerSpec, pool_name: str) -> dict:
    """The manifest fields of one feature entry (the store adds shape, dtype and checksum)."""
    return {
        "model": model.name,
        "model_fingerprint": model.fingerprint,
        "dataset": dataset.name,
        "dataset_fingerprint": dataset.fingerprint,
        "split": sel.split,
        "images": len(sel.indices),
        "t": t,
        "layer": lay.name,
        "layer_index": lay.index,
        "pool": pool_name,
        "seed": seed,
        "preprocess": model.preprocess.tag,
        "version": EXTRACTION_VERSION,
        **model.family.key_parts(),
        "label_leaking": model.family.leaks_label,
        "precision": model.precision,
    }


CHECKPOINT_SECONDS = 2.0  # a kill loses at most this much finished work per job


def _checkpoint(entries: dict, rows_done: int) -> None:
    for e in entries.values():
        e.checkpoint(rows_done)


class _HostCopy:
    """One batch's pooled features on their way to the host: an asynchronous device-to-host copy
    into pinned memory on CUDA (waited for only when written, one batch later), as is on the CPU."""

    def __init__(self, feats: dict[tuple[str, str], torch.Tensor], start: int, stop: int):
        self.start, self.stop = start, stop
        self.event = None
        if any(v.is_cuda for v in feats.values()):  # one (B, sum D) copy, not one per setting
            keys = list(feats)
            flat = torch.cat([feats[k] for k in keys], dim=1)
            host = torch.empty(flat.shape, dtype=flat.dtype, pin_memory=True)
            host.copy_(flat, non_blocking=True)
            self.event = torch.cuda.Event()
            self.event.record()
            parts = host.split([feats[k].shape[1] for k in keys], dim=1)
            feats = dict(zip(keys, parts, strict=True))
        self.feats = feats

    def write(self, entries: dict, layers, t: int, autocast) -> int:
        """Wait for the copy, check and narrow each matrix, and write its rows; returns `stop`."""
        if self.event is not None:
            self.event.synchronize()
        for k, e in entries.items():
            e.write(self.start, to_half(self.feats[k], k[0], layers, t, autocast).numpy())
        return self.stop


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


def ensure_pixels(
    model,
    dataset: ImageDataset,
    sel: Selection,
    pool_name: str,
    *,
    store: FeatureStore,
    batch_size: int = 1024,
    workers: int | None = None,
) -> np.ndarray:
    """The raw-pixel baseline at the model's input size: `(N, C*H*W)` for pool "full", else pooled.

    Written batch by batch into a partial entry (resumable), so it never sits whole in memory;
    returned memory-mapped.
    """
    key = feature_key(model, dataset, sel, None, PIXELS, pool_name, None)
    if not store.has(key):
        with store.lock(f"pixels-{key}"):  # like feature jobs: two processes never write one entry
            if not store.has(key):  # another process may have finished it meanwhile
                _put_pixels(model, dataset, sel, pool_name, key, store, batch_size, workers)
    return store.load(key)


PIXEL_BATCH_BYTES = 64 * 2**20  # float32 pixels per batch: 85 images at 256x256 RGB


def _put_pixels(
    model,
    dataset,
    sel: Selection,
    pool_name: str,
    key: str,
    store: FeatureStore,
    batch_size: int,
    workers: int | None = None,
) -> None:
    """Compute the pixel entry `key` chunk by chunk (`batch_size` rows, fewer for big images)."""
    prep = model.preprocess
    n = len(sel.indices)
    probe = torch.zeros(1, prep.channels, prep.size, prep.size)
    dim = probe.flatten(1).shape[1] if pool_name == "full" else pool(probe, pool_name).shape[1]
    entry = store.begin(
        key,
        (n, dim),
        {
            "layer": PIXELS,
            "pool": pool_name,
            "dataset": dataset.name,
            "split": sel.split,
            "images": n,
            "version": EXTRACTION_VERSION,
        },
    )
    rows = max(1, min(batch_size, PIXEL_BATCH_BYTES // (4 * probe.numel())))
    spans = [(s, min(s + rows, n)) for s in range(entry.rows_done, n, rows)]
    done, saved = entry.rows_done, time.monotonic()
    try:
        for (s, stop), x in streaming.batches(dataset, sel.indices, spans, prep, workers=workers):
            feats = x.flatten(1) if pool_name == "full" else pool(x, pool_name)
            entry.write(s, feats.to(torch.float16).numpy())
            done = stop
            if time.monotonic() - saved > CHECKPOINT_SECONDS:
                entry.checkpoint(done)
                saved = time.monotonic()
    except BaseException:  # keep the finished rows for the next try
        entry.checkpoint(done)
        raise
    entry.commit()
