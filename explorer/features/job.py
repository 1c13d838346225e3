"""One extraction job: a (timestep, noise seed) over a selection, one forward pass per batch.

Every requested layer and pooling of the job is captured by the same pass; entries are written
chunk by chunk and checkpointed, so a killed job resumes where it stopped. On CUDA each batch's
features are copied to pinned host memory asynchronously while the next batch runs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from explorer.data import ImageDataset
from explorer.features import host_memory, streaming, torchrun
from explorer.features.capture import capture_pass, image_noise, to_half
from explorer.features.keys import EXTRACTION_VERSION, Selection, job_lock_name
from explorer.features.sizes import pooled_dim
from explorer.features.store import FeatureStore
from explorer.models.device import autocast_dtype
from explorer.models.layers import LayerSpec

Progress = Callable[[int, int], None]  # (images done, images total)
CHECKPOINT_SECONDS = 2.0  # a kill loses at most this much finished work per job


@dataclass(frozen=True, eq=False)
class Job:
    """One (t, seed) job: what it reads, which entries it writes and where.

    `keys` maps `(layer name, pool)` to the feature key of each entry the job still has to write.
    """

    model: Any  # explorer.models.loader.LoadedModel
    dataset: ImageDataset
    sel: Selection
    t: int
    seed: int
    layers: tuple[LayerSpec, ...]
    keys: Mapping[tuple[str, str], str]
    store: FeatureStore
    batch_size: int = 256
    workers: int | None = None

    @property
    def lock_name(self) -> str:
        return job_lock_name(self.model, self.dataset, self.sel, self.t, self.seed)

    def with_keys(self, keys: Mapping[tuple[str, str], str]) -> Job:
        return dataclasses.replace(self, keys=keys)

    def layer(self, name: str) -> LayerSpec:
        return next(lay for lay in self.layers if lay.name == name)

    def entry_dim(self, k: tuple[str, str]) -> int:
        """Feature length of the entry `(layer name, pool)`."""
        return pooled_dim(self.layer(k[0]), k[1])

    def entry_meta(self, k: tuple[str, str]) -> dict:
        """The manifest fields of one entry (the store adds shape, dtype and checksum)."""
        model, lay = self.model, self.layer(k[0])
        return {
            "model": model.name,
            "model_fingerprint": model.fingerprint,
            "dataset": self.dataset.name,
            "dataset_fingerprint": self.dataset.fingerprint,
            "split": self.sel.split,
            "images": len(self.sel.indices),
            "t": self.t,
            "layer": lay.name,
            "layer_index": lay.index,
            "pool": k[1],
            "seed": self.seed,
            "preprocess": model.preprocess.tag,
            "version": EXTRACTION_VERSION,
            **model.adapter.key_parts(),
            "label_leaking": model.adapter.leaks_label,
            "precision": model.precision,
        }


class Meter:
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


def run_job(job: Job, advance: Callable[[int], None], shard: dict | None = None) -> int:
    """Compute `job`'s entries chunk by chunk; returns the forward passes run.

    `shard` (`{"tag", "batches"}`, torchrun): compute only those grid batches, into this rank's
    shard files, and leave the commit to `FeatureStore.assemble`.
    """
    model, store, sel, n, bs = job.model, job.store, job.sel, len(job.sel.indices), job.batch_size
    needed = {name for name, _ in job.keys}
    lays = [lay for lay in job.layers if lay.name in needed]
    pools_needed = sorted({p for _, p in job.keys})
    if shard is None:
        entries = {
            k: store.begin(key, (n, job.entry_dim(k)), job.entry_meta(k))
            for k, key in job.keys.items()
        }
        start = min(e.rows_done for e in entries.values())
        if start:
            advance(start)
        spans = [(s, min(s + bs, n)) for s in range(start, n, bs)]
        at = {s: s for s, _ in spans}  # where a span's rows go in the partial
    else:
        b_list = shard["batches"]
        entries = {
            k: store.begin_shard(
                key,
                job.entry_dim(k),
                job.entry_meta(k),
                tag=shard["tag"],
                n=n,
                batch_size=bs,
                batches=b_list,
            )
            for k, key in job.keys.items()
        }
        start = 0
        spans = [torchrun.batch_span(b, n, bs) for b in b_list]
        offsets = np.cumsum([0] + [stop - s for s, stop in spans])
        at = {s: int(o) for (s, _), o in zip(spans, offsets, strict=False)}
    device = next(model.denoiser.parameters()).device
    ac = autocast_dtype(model.precision)
    pending: _HostCopy | None = None
    done, saved = start, time.monotonic()  # rows [0, done) of the partial are written
    try:
        for (s, stop), x in streaming.batches(
            job.dataset, sel.indices, spans, model.preprocess, workers=job.workers, device=device
        ):
            idx = sel.indices[s:stop]
            x0 = model.adapter.encode(x.to(device, non_blocking=True))  # pixels, or latents
            noise = image_noise(idx, job.seed, tuple(x0.shape[1:]), x0.device)  # on the device
            feats = capture_pass(
                model.denoiser,
                model.scheduler,
                x0,
                noise,
                timestep=job.t,
                layers=lays,
                pools=pools_needed,
                autocast=ac,
                net_kwargs=model.adapter.net_kwargs(len(idx), job.dataset.labels[idx]),
            )
            copy = _HostCopy(feats, at[s], at[s] + stop - s)  # queued; the device moves on
            if pending is not None:
                done = pending.write(entries, lays, job.t, ac)
            pending = copy
            if time.monotonic() - saved > CHECKPOINT_SECONDS:  # durable, but not every batch
                _checkpoint(entries, done)
                host_memory.release()  # free heap beyond what the next batch reuses
                saved = time.monotonic()
            advance(len(idx))
        if pending is not None:
            done, pending = pending.write(entries, lays, job.t, ac), None
    except BaseException:  # an error or Ctrl-C: keep every finished batch for the resume
        if pending is not None:
            with contextlib.suppress(Exception):
                done = pending.write(entries, lays, job.t, ac)
        _checkpoint(entries, done)
        raise
    if shard is not None:
        _checkpoint(entries, done)  # the shard is finished; a rank assembles the entry
        return len(spans)
    for e in entries.values():
        e.commit()
    return len(spans)


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
