"""A grid of settings -> a tidy results table, written as results arrive.

For each timestep, one forward pass per batch serves every layer and pooling; then every
head is trained (linear probes all at once); rows are appended and the table is saved, so
an interrupted sweep loses nothing and a re-run reads everything from the caches.

Every setting is also paired, image by image on the same test set, with the raw-pixel probe
of its head (`vs_pixels`), and the model's settings with the random-weights control at the
same t, layer, pool and head (`vs_random`): a difference and its paired-bootstrap 95%
interval, so "beats pixels" can be read from the table without predictions.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from explorer.features import PIXELS
from explorer.heads import parse_head
from explorer.paths import RANDOM_PREFIX
from explorer.probes.metrics import paired_bootstrap_diff
from explorer.results import (
    best_on_validation,
    best_settings,
    paired_rows,
    paired_words,
    save_table,
    tidy_rows,
    to_frame,
)
from explorer.workspace import PIXEL_POOL, Setting, Workspace

Report = Callable[[str, float], None]  # (message, fraction done)


@dataclass
class SweepPlan:
    timesteps: list[int]
    layers: list[str]  # layer names
    pools: list[str]
    heads: list[str] = field(default_factory=lambda: ["linear"])
    seeds: list[int] = field(default_factory=lambda: [0])
    pixels: bool = True  # raw-pixel baseline
    controls: list[Workspace] = field(default_factory=list)  # e.g. the random-weights model


Point = tuple  # (t, layer, pool, head)


def _rows(ws: Workspace, settings: list[Setting], head: str) -> tuple[list[dict], dict[Point, tuple]]:
    """Tidy rows per (t, layer, pool) over noise draws, and per point `(base row, correct (N,) bool)`
    of the first draw, for the paired comparisons."""
    res = ws.evaluate(settings, head)
    y = ws.labels("test")
    rows, points = [], {}
    by_point: dict[tuple, list[Setting]] = {}
    for s in settings:
        by_point.setdefault((s.t, s.layer, s.pool), []).append(s)
    for (t, layer, pool), group in by_point.items():
        idx = 0 if layer == PIXELS else ws.layer(layer).index
        base = {"model": PIXELS if layer == PIXELS else ws.model.name, "dataset": ws.dataset.name, "t": t,
                "layer": layer, "layer_index": idx, "pool": pool, "head": head}
        first = [res[s] for s in group]
        rows += tidy_rows(base, first)
        points[(t, layer, pool, head)] = (base, first[0].predictions == y)
    return rows, points


def _paired(points: dict[Point, tuple], refs: dict[Point, np.ndarray], name: str, match) -> list[dict]:
    """`name` rows for every point whose reference `match(point)` is in `refs` (same test images)."""
    rows = []
    for p, (base, correct) in points.items():
        ref = refs.get(match(p))
        if ref is not None and ref.shape == correct.shape:
            rows += paired_rows(base, name, paired_bootstrap_diff(correct, ref))
    return rows


def run_sweep(ws: Workspace, plan: SweepPlan, *, out: str | Path | None = None,
              report: Report | None = None,
              progress: bool | Callable[[int, int], None] = False) -> pd.DataFrame:
    """Run `plan` on `ws` (and its controls); returns the tidy table, also saved to `out` as it grows."""
    rows: list[dict] = []
    models = [ws, *plan.controls]
    steps = len(models) * len(plan.timesteps) + (1 if plan.pixels else 0)
    done = 0
    t0 = time.time()

    def tell(msg: str) -> None:
        if report:
            eta = (time.time() - t0) / done * (steps - done) if done else float("nan")
            report(f"{msg} (eta {eta:.0f}s)" if done else msg, done / steps)

    def flush() -> None:
        if out is not None:
            save_table(to_frame(rows), out)

    pixels: dict[str, np.ndarray] = {}  # head -> raw-pixel correctness (N_test,)
    mine: dict[Point, tuple] = {}  # the model's points, paired later with the random control's
    if plan.pixels:
        tell("raw-pixel baseline")
        px = [Setting(None, PIXELS, PIXEL_POOL)]
        for head in plan.heads:
            if not parse_head(head).spec.maps:  # raw pixels are not a map
                new, pts = _rows(ws, px, head)
                rows += new
                pixels[head] = next(iter(pts.values()))[1]
        done += 1
        flush()
    for m in models:
        for t in plan.timesteps:
            tell(f"{m.model.name}: t={t}, {len(plan.layers)} layers")
            settings = [Setting(t, lay, p, s) for lay in plan.layers for p in plan.pools for s in plan.seeds]
            m.ensure(settings, progress=progress)
            for head in plan.heads:
                new, pts = _rows(m, settings, head)
                rows += new + _paired(pts, pixels, "vs_pixels", lambda p: p[3])
                if m is ws:
                    mine |= pts
                elif m.model.name.startswith(RANDOM_PREFIX):
                    ctrl = {p: c for p, (_, c) in pts.items()}
                    rows += _paired({p: mine[p] for p in pts if p in mine}, ctrl, "vs_random", lambda p: p)
            done += 1
            flush()
    tell("done")
    return to_frame(rows)


def describe_best(df: pd.DataFrame) -> str:
    """Lines naming the best setting per (model, head), chosen on validation top-1, with its test
    top-1, 95% interval, and its paired differences vs raw pixels and random weights in words."""
    best = best_settings(df)
    lines = []
    for _, r in best.iterrows():
        where = "raw pixels" if r["layer"] == PIXELS else f"t={int(r['t'])}, layer {int(r['layer_index'])} ({r['layer']}), pool {r['pool']}"
        how = f"val {100 * r['val_top1']:.2f}%, " if np.isfinite(r["val_top1"]) else ""
        line = (f"best {r['head']:>9} for {r['model']} (on validation): {where}; {how}"
                f"test {100 * r['top1']:.2f}% [{100 * r['ci_low']:.2f}, {100 * r['ci_high']:.2f}]")
        vs = [w for n, ref in (("vs_pixels", "raw pixels"), ("vs_random", "random weights"))
              if (w := paired_words(r, n, ref))]
        lines.append("; ".join([line, *vs]))
    skipped = set(map(tuple, accuracy_groups(df))) - set(zip(best["model"], best["head"], strict=True))
    for model, head in sorted(skipped):
        lines.append(f"{head} for {model}: no validation accuracy in this table, so no best setting "
                     "is named (re-run the sweep)")
    return "\n".join(lines)


def accuracy_groups(df: pd.DataFrame) -> list[tuple[str, str]]:
    """The (model, head) pairs that have test top-1 rows."""
    d = df[(df["split"] == "test") & (df["metric"] == "top1")]
    return list(d[["model", "head"]].drop_duplicates().itertuples(index=False, name=None))


def summary_lines(wide: pd.DataFrame, random_model: str | None = None) -> list[str]:
    """Plain sentences about one model/head/pool's accuracy_view rows `wide`: the setting best on
    validation with its test top-1 and interval, its paired differences vs raw pixels and random
    weights, how many cells beat pixels beyond noise, and which cells are within noise of the best."""
    if wide.empty:
        return []
    best = best_on_validation(wide)
    if best is None:
        return ["This table has no validation accuracy, so no best setting is named and no cell is "
                "marked ▲: re-run the sweep to get them."]
    where = f"t={int(best['t'])}, block {int(best['layer_index'])} ({best['layer']})"
    out = [f"Best on validation ({100 * best['val_top1']:.2f}%): {where}, test top-1 "
           f"{100 * best['top1']:.2f}% (95% interval {100 * best['ci_low']:.2f}–{100 * best['ci_high']:.2f})."]
    for name, ref in (("vs_pixels", "raw pixels"), ("vs_random", f"{random_model or 'random weights'} at the same setting")):
        if words := paired_words(best, name, ref):
            out.append(f"Against {ref}: {words}.")
    for name, ref, mark in (("vs_pixels", "raw pixels", "▲, "), ("vs_random", "random weights at the same setting", "")):
        paired = wide[np.isfinite(wide[f"{name}_low"].astype(float))]
        if not paired.empty:
            up = int((paired[f"{name}_low"] > 0).sum())
            down = int((paired[f"{name}_high"] < 0).sum())
            out.append(f"{up} of {len(paired)} cells beat {ref} beyond noise ({mark}paired 95% interval "
                       f"above 0); {len(paired) - up - down} are within noise of it; {down} are below.")
    near = wide[(wide["ci_high"] >= best["ci_low"]) & (wide["ci_low"] <= best["ci_high"])]
    if len(near) > 1:
        out.append(f"{len(near) - 1} other cells have test intervals overlapping the best's: "
                   "their order is within noise.")
    return out
