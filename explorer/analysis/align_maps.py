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

The workspaces are used through their public methods only (`setting`, `ensure`, `features`,
`selection`, `catalogue`), so this module needs no import of the workspace.
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
from explorer.errors import ExplorerError
from explorer.models.layers import select_layers
from explorer.settings import check_timesteps, parse_timesteps

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
    (`ci_low`, `ci_high`; `n_boot=0`: none). `t` is missing (NA) for an encoder model, `ref_t`
    for an encoder reference. Columns: `COLUMNS`."""
    metrics = parse_metrics(metrics)
    n = check_same_images(ws, ref, split)
    if any(m != "cka" for m in metrics):
        check_k(k, n, "cknna" if "cknna" in metrics else "mutual_knn")
    elif n < 4:
        raise ExplorerError(f"alignment needs at least 4 images, got {n}")
    pairs = level_pairs(ws, ref, timesteps, ref_timestep)  # (model t, reference t) per cell
    lays = select_layers(ws.catalogue, layers)
    ref_lays = select_layers(ref.catalogue, ref_layers)
    row_settings = list(
        dict.fromkeys(ws.setting(t, lay.name, pool) for t, _ in pairs for lay in lays)
    )
    col_settings = list(
        dict.fromkeys(ref.setting(rt, lay.name, pool) for _, rt in pairs for lay in ref_lays)
    )
    ws.ensure(row_settings, splits=[split])
    ref.ensure(col_settings, splits=[split])
    arrays: dict[str, np.ndarray] = {}  # one per feature key: a shared source is prepared once

    def read(w, s) -> np.ndarray:
        key = w.key(s, split)
        if key not in arrays:
            arrays[key] = np.asarray(w.features(s, split), dtype=np.float32)
        return arrays[key]

    rows = [read(ws, s) for s in row_settings]
    cols = [read(ref, s) for s in col_settings]
    want = np.array([[(r.t, c.t) in pairs for c in col_settings] for r in row_settings], bool)
    maps = alignment_map(
        rows, cols, metrics, k=k, n_boot=n_boot, seed=seed, want=want, progress=progress
    )
    index = {lay.name: lay.index for lay in ws.catalogue}
    ref_index = {lay.name: lay.index for lay in ref.catalogue}
    out = []
    for i, r in enumerate(row_settings):
        for j, c in enumerate(col_settings):
            if not want[i, j]:
                continue
            for m in metrics:
                res = maps[m]
                out.append(
                    {
                        "model": ws.model.name,
                        "reference": ref.model.name,
                        "t": r.t if noised(ws) else pd.NA,
                        "layer": r.layer,
                        "ref_layer": c.layer,
                        "metric": m,
                        "value": float(res.value[i, j]),
                        "ci_low": float(res.ci_low[i, j]),
                        "ci_high": float(res.ci_high[i, j]),
                        "ref_t": c.t if noised(ref) else pd.NA,
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
