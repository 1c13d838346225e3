"""A grid of settings -> a tidy results table, written as results arrive.

For each timestep, one forward pass per batch serves every layer and pooling; then every
head is trained (linear probes all at once); rows are appended and the table is saved, so
an interrupted sweep loses nothing and a re-run reads everything from the caches.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from explorer.features import PIXELS
from explorer.results import best_settings, save_table, tidy_rows, to_frame
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


def _rows(ws: Workspace, settings: list[Setting], head: str) -> list[dict]:
    res = ws.evaluate(settings, head)
    rows = []
    by_point: dict[tuple, list[Setting]] = {}
    for s in settings:
        by_point.setdefault((s.t, s.layer, s.pool), []).append(s)
    for (t, layer, pool), group in by_point.items():
        idx = 0 if layer == PIXELS else ws.layer(layer).index
        base = {"model": PIXELS if layer == PIXELS else ws.model.name, "dataset": ws.dataset.name, "t": t,
                "layer": layer, "layer_index": idx, "pool": pool, "head": head}
        rows += tidy_rows(base, [res[s] for s in group])
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

    if plan.pixels:
        tell("raw-pixel baseline")
        px = [Setting(None, PIXELS, PIXEL_POOL)]
        for head in plan.heads:
            if head != "attention":
                rows += _rows(ws, px, head)
        done += 1
        flush()
    for m in models:
        for t in plan.timesteps:
            tell(f"{m.model.name}: t={t}, {len(plan.layers)} layers")
            settings = [Setting(t, lay, p, s) for lay in plan.layers for p in plan.pools for s in plan.seeds]
            m.ensure(settings, progress=progress)
            for head in plan.heads:
                rows += _rows(m, settings, head)
            done += 1
            flush()
    tell("done")
    return to_frame(rows)


def describe_best(df: pd.DataFrame) -> str:
    """Lines naming the best setting per (model, head)."""
    best = best_settings(df)
    lines = []
    for _, r in best.iterrows():
        where = "raw pixels" if r["layer"] == PIXELS else f"t={int(r['t'])}, layer {int(r['layer_index'])} ({r['layer']}), pool {r['pool']}"
        lines.append(f"best {r['head']:>9} for {r['model']}: {100 * r['top1']:.2f}% at {where}")
    return "\n".join(lines)
