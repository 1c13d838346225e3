"""Alignment maps between two feature sources, read through their workspaces' feature caches.

`align_table(ws, ref, ...)` compares a model (any family: a diffusion model, or a reference
encoder) with a reference (another diffusion model, `random:<model>`, or an encoder) on the SAME
images: the two workspaces must hold the same dataset and the same selection of the split. Both
read their features through their own caches (computed only where missing), and
`alignment.alignment_map` prepares each source once for the whole map.

- block x block: one `t` for the model, every `layers` x `ref_layers` pair;
- block x t (REPA's figure): several `t`, each `layers` x one reference block at a fixed level
  (`ref_timestep`, or the reference encoder's only level).

A reference that is a diffusion model reads, by default, the model's own `t` in every cell
(`ref_timestep=None`); a reference encoder has no timestep (its `ref_t` is missing). An encoder
as the model has none either (its `t` is missing): a diffusion reference is then read at each
of the timesteps given. The result is a tidy table, one row per (t, layer, ref_layer, metric).

Either side may name `pixels` among its layers: the raw-pixel baseline (the model's own
preprocessed input, `layer_index` 0), one source at every level, so `ref=ws, ref_layers="pixels"`
maps how much of the input each block keeps over t.

The map's numbers are cached on disk (`embeddings/align-*.npy`, keyed by the features' content
keys and the metric parameters, as `Workspace.cka` caches CKA): a map asked again needs no
features at all. Values are kept as float32 and rounded to 6 decimals, the same on the first
call as on a cache hit.

The workspaces are used through their public methods only (`setting`, `ensure`, `features`,
`key`, `selection`, `catalogue`, `store.root`), so this module needs no import of the workspace.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from explorer.analysis.alignment import (
    DEFAULT_BOOT,
    DEFAULT_K,
    alignment_map,
    check_k,
    parse_metrics,
)
from explorer.defaults import PIXELS
from explorer.errors import ExplorerError
from explorer.features.store import content_key
from explorer.models.layers import select_layers
from explorer.settings import check_timesteps, parse_timesteps

ALIGN_VERSION = 1  # part of a cached map's key

COLUMNS = [
    "model",
    "reference",
    "t",
    "layer",
    "ref_layer",
    "metric",
    "value",
    "ci_low",
    "ci_high",
    "ref_t",
    "layer_index",
    "ref_layer_index",
    "pool",
    "k",
    "images",
    "split",
]


def noised(ws) -> bool:
    """False for a reference encoder (no timestep: its one level is t=0)."""
    return bool(getattr(ws.model.adapter, "noised", True))


def check_same_images(ws, ref, split: str) -> int:
    """The number of images both workspaces read for `split`; a one-line error unless they are
    the same images in the same order."""
    a, b = ws.selection(split).indices, ref.selection(split).indices
    if len(a) != len(b):
        raise ExplorerError(
            f"the model and the reference read different image counts ({len(a)} and {len(b)} "
            f"{split} images); give both the same dataset and --limit"
        )
    if ws.dataset.fingerprint != ref.dataset.fingerprint or not np.array_equal(a, b):
        raise ExplorerError(
            "the model and the reference read different images; alignment compares the same "
            "images, so open both on the same dataset and selection (e.g. with ws.twin)"
        )
    return len(a)


def align_table(
    ws,
    ref,
    *,
    timesteps: Sequence[int] | int | str | None = None,
    layers: str | int | Sequence = "all",
    ref_layers: str | int | Sequence = "all",
    ref_timestep: int | None = None,
    pool: str | int = 2,
    metrics: str | Sequence[str] = ("cka", "cknna"),
    k: int = DEFAULT_K,
    split: str = "test",
    n_boot: int = DEFAULT_BOOT,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> pd.DataFrame:
    """Tidy alignment table between workspace `ws` (the model) and `ref` (the reference): one
    row per (t, layer, ref_layer, metric) with `value` and a bootstrap interval over the images
    (`ci_low`, `ci_high`; `n_boot=0`: none). `t` is missing (NA) for an encoder model and for
    pixels, `ref_t` for an encoder or pixel reference. Columns: `COLUMNS`. The numbers are read
    from the disk cache when this map was computed before (no features needed then)."""
    metrics = parse_metrics(metrics)
    n = check_same_images(ws, ref, split)
    if any(m != "cka" for m in metrics):
        check_k(k, n, "cknna" if "cknna" in metrics else "mutual_knn")
    elif n < 4:
        raise ExplorerError(f"alignment needs at least 4 images, got {n}")
    pairs = level_pairs(ws, ref, timesteps, ref_timestep)  # (model t, reference t) per cell
    rows_named, cols_named = source_names(ws, layers), source_names(ref, ref_layers)
    row_settings = list(dict.fromkeys(ws.setting(t, x, pool) for t, _ in pairs for x in rows_named))
    col_settings = list(
        dict.fromkeys(ref.setting(rt, x, pool) for _, rt in pairs for x in cols_named)
    )

    def at(s, level: int) -> bool:
        return s.is_pixels or s.t == level  # the pixels are one source at every level

    want = np.array(
        [
            [any(at(r, a) and at(c, b) for a, b in pairs) for c in col_settings]
            for r in row_settings
        ],
        bool,
    )
    cells = np.argwhere(want)
    row_keys = [ws.key(s, split) for s in row_settings]
    col_keys = [ref.key(s, split) for s in col_settings]
    key = content_key({"rows": row_keys, "cols": col_keys, "cells": cells.tolist()})
    params = {"metrics": list(metrics), "k": int(k), "boot": int(n_boot), "seed": int(seed)}
    params |= {"v": ALIGN_VERSION}
    shape = (len(cells), len(metrics), 3 if n_boot > 0 else 1)

    def compute() -> np.ndarray:
        ws.ensure(row_settings, splits=[split])
        ref.ensure(col_settings, splits=[split])
        arrays: dict[str, np.ndarray] = {}  # one per feature key: a shared source read once

        def read(w, s, key) -> np.ndarray:
            if key not in arrays:
                arrays[key] = np.asarray(w.features(s, split), dtype=np.float32)
            return arrays[key]

        maps = alignment_map(
            [read(ws, s, x) for s, x in zip(row_settings, row_keys, strict=True)],
            [read(ref, s, x) for s, x in zip(col_settings, col_keys, strict=True)],
            metrics,
            k=k,
            n_boot=n_boot,
            seed=seed,
            want=want,
            progress=progress,
        )
        parts = ("value", "ci_low", "ci_high")[: shape[2]]
        i, j = cells.T
        return np.stack(
            [np.stack([getattr(maps[m], p)[i, j] for p in parts], -1) for m in metrics], 1
        ).reshape(shape)

    from explorer.analysis.embed import cached_matrix  # umap/numba: on use only

    got = cached_matrix("align", key, params, shape, compute, ws.store.root)
    got = np.round(got.astype(np.float64), 6)
    index = {lay.name: lay.index for lay in ws.catalogue} | {PIXELS: 0}
    ref_index = {lay.name: lay.index for lay in ref.catalogue} | {PIXELS: 0}
    out = []
    for (i, j), numbers in zip(cells, got, strict=True):
        r, c = row_settings[i], col_settings[j]
        for m, (value, *ci) in zip(metrics, numbers, strict=True):
            low, high = ci or (np.nan, np.nan)
            out.append(
                {
                    "model": ws.model.name,
                    "reference": ref.model.name,
                    "t": r.t if noised(ws) and not r.is_pixels else pd.NA,
                    "layer": r.layer,
                    "ref_layer": c.layer,
                    "metric": m,
                    "value": float(value),
                    "ci_low": float(low),
                    "ci_high": float(high),
                    "ref_t": c.t if noised(ref) and not c.is_pixels else pd.NA,
                    "layer_index": index[r.layer],
                    "ref_layer_index": ref_index[c.layer],
                    "pool": r.pool,
                    "k": int(k) if m != "cka" else pd.NA,
                    "images": n,
                    "split": split,
                }
            )
    df = pd.DataFrame(out, columns=COLUMNS)
    for col in ("t", "ref_t", "k"):
        df[col] = df[col].astype("Int64")
    return df


def source_names(ws, spec: str | int | Sequence) -> list[str]:
    """Layer names of a selection (`select_layers`' spellings), with `pixels` allowed among
    them: the raw-pixel baseline, listed first."""
    items = spec if isinstance(spec, list | tuple) else [spec]
    tokens = [
        str(tok).strip() for it in items for tok in (str(it).split(",") if it is not None else [])
    ]
    pixels = PIXELS in (tok.lower() for tok in tokens)
    rest = ",".join(tok for tok in tokens if tok and tok.lower() != PIXELS)
    if not pixels:
        return [lay.name for lay in select_layers(ws.catalogue, spec)]
    return [PIXELS] + ([lay.name for lay in select_layers(ws.catalogue, rest)] if rest else [])


def level_pairs(ws, ref, timesteps, ref_timestep: int | None) -> list[tuple[int, int]]:
    """(model t, reference t) of the map's cells: the model at each of `timesteps` (an encoder
    at its one level, 0) against the reference at `ref_timestep`, at 0 for an encoder, else at
    the model's own t; an encoder model against a diffusion reference reads the reference at
    each of `timesteps` instead."""
    ts = None
    if timesteps is not None:
        ts = parse_timesteps([timesteps] if isinstance(timesteps, int) else timesteps)
    if noised(ref) and ref_timestep is not None:
        ref_timestep = check_timesteps([int(ref_timestep)], ref.num_timesteps)[0]
    if not noised(ws):
        if not noised(ref):
            return [(0, 0)]
        if ref_timestep is not None:
            return [(0, ref_timestep)]
        return [(0, rt) for rt in check_timesteps(_given(ts), ref.num_timesteps)]
    ts = check_timesteps(_given(ts), ws.num_timesteps)
    if not noised(ref):
        return [(t, 0) for t in ts]
    if ref_timestep is not None:
        return [(t, ref_timestep) for t in ts]
    return [(t, t) for t in check_timesteps(ts, ref.num_timesteps)]  # the model's own t


def _given(ts: list[int] | None) -> list[int]:
    if ts is None:
        raise ExplorerError("give the timesteps, e.g. timesteps=[10] or '10,90,150'")
    return ts
