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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from explorer.defaults import PIXEL_POOL, PIXELS, RANDOM_PREFIX
from explorer.errors import ExplorerError
from explorer.models.layers import select_layers
from explorer.probes.metrics import paired_bootstrap_diff
from explorer.probes.registry import parse_head, parse_heads
from explorer.results import (
    accuracy_view,
    best_on_validation,
    best_settings,
    paired_rows,
    paired_words,
    save_table,
    tidy_rows,
    to_frame,
)
from explorer.settings import (
    Fused,
    Setting,
    check_timesteps,
    format_fused,
    is_fused_text,
    parse_pools,
    parse_seeds,
    parse_timesteps,
    shared_pool,
)

if TYPE_CHECKING:  # sweeps run over workspaces; the workspace builds its sweep through here
    from explorer.workspace import Workspace


@dataclass(frozen=True)
class SweepProgress:
    """One progress event of `run_sweep`, sent before each step and once at the end.

    A step is the raw-pixel baseline or one (model, timestep); `done` of `total` are finished,
    `current` names the step now starting ("done" at the end), `elapsed` is in seconds.
    """

    done: int
    total: int
    current: str
    elapsed: float

    @property
    def fraction(self) -> float:
        """Steps finished, in [0, 1]."""
        return self.done / self.total if self.total else 1.0

    @property
    def eta(self) -> float:
        """Seconds left at the pace so far; NaN before the first step finishes."""
        if not self.done:
            return float("nan")
        return self.elapsed / self.done * (self.total - self.done)

    def within(self, images_done: int, images_total: int) -> float:
        """The fraction done while the current step has extracted `images_done` of `images_total`."""
        part = min(images_done / max(images_total, 1), 1.0) if self.done < self.total else 0.0
        return min((self.done + part) / self.total, 1.0) if self.total else 1.0

    def text(self) -> str:
        """ "[ 50%] ddpm: t=10, 9 layers (eta 12s)", the ETA once a step has finished."""
        eta = f" (eta {self.eta:.0f}s)" if self.done else ""
        return f"[{100 * self.fraction:3.0f}%] {self.current}{eta}"


Report = Callable[[SweepProgress], None]


@dataclass
class SweepPlan:
    timesteps: list[int]
    layers: list[str]  # layer names
    pools: list[str]
    heads: list[str] = field(default_factory=lambda: ["linear"])
    seeds: list[int] = field(default_factory=lambda: [0])
    pixels: bool = True  # raw-pixel baseline
    controls: list[Workspace] = field(default_factory=list)  # e.g. the random-weights model
    fused: list[Fused] = field(default_factory=list)  # fused settings, probed on the model only
    seed_average: str = (
        "accuracy"  # several seeds: "accuracy" (mean of probes) or "features" (DIFT)
    )

    @property
    def steps(self) -> int:
        """Progress steps: one per (model, timestep), plus one for the raw-pixel baseline."""
        return (1 + len(self.controls)) * len(self.timesteps) + (1 if self.pixels else 0)


def plan_for(
    ws: Workspace,
    *,
    timesteps: str | int | Sequence[int],
    layers: str | int | Sequence = "all",
    pools: str | int | Sequence = 2,
    heads: str | Sequence[str] = "linear",
    seeds: str | int | Sequence[int] = 0,
    baselines: bool = True,
    fuse: Sequence = (),
    seed_average: str = "accuracy",
    control: Callable[[str], Workspace] | None = None,
) -> SweepPlan:
    """The one sweep plan from what a user typed, as the CLI, the notebook and the Sweep page build it.

    Timesteps, layers, pools, heads and seeds take any spelling `explorer.settings` reads.
    `baselines` adds raw pixels and, unless the model already has random weights, its
    random-weights twin `random:<model name>` (conditioning kept), made by `control(spec)`
    (default `ws.twin`; the app passes its cached workspaces).
    """
    ts = check_timesteps(parse_timesteps(timesteps), ws.num_timesteps)
    names = [lay.name for lay in select_layers(ws.catalogue, layers)]
    head_text = heads if isinstance(heads, str) else ",".join(heads)
    head_labels = [h.label for h in parse_heads(head_text)]
    pool_names = parse_pools(pools)
    if seed_average not in ("accuracy", "features"):
        raise ExplorerError(f"seed_average is 'accuracy' or 'features', not {seed_average!r}")
    controls = []
    if baselines and not ws.model.name.startswith(RANDOM_PREFIX):
        controls.append((control or ws.twin)(RANDOM_PREFIX + ws.model.name))
    return SweepPlan(
        ts,
        names,
        pool_names,
        head_labels,
        parse_seeds(seeds),
        pixels=baselines,
        controls=controls,
        fused=[
            ws.canonical(f if isinstance(f, Fused) else ws.fused(f, pool_names[0])) for f in fuse
        ],
        seed_average=seed_average,
    )


Point = tuple  # (t, layer, pool, head)


def table_point(ws: Workspace, s: Setting | Fused) -> tuple:
    """`(t, layer, pool)` of a setting's table rows. A DIFT ensemble sits at its members' point; another
    fused setting has t None (NaN in the table) and its text form in `layer` (`"24@150+19@90"`, see
    `explorer.settings`), with the members' shared pooling (or theirs joined by `+`) in `pool`."""
    if not isinstance(s, Fused):
        return s.t, s.layer, s.pool
    if s.is_ensemble:
        return table_point(ws, s.members[0])
    pool = shared_pool(s)
    return None, format_fused(s, lambda name: ws.layer(name).index, pool), pool


def _rows(ws: Workspace, settings: list, head: str) -> tuple[list[dict], dict[Point, tuple]]:
    """Tidy rows per (t, layer, pool) over noise draws, and per point `(base row, correct (N,) bool)`
    of the first draw, for the paired comparisons."""
    res = ws.evaluate(settings, head)
    y = ws.labels("test")
    rows, points = [], {}
    by_point: dict[tuple, list] = {}
    for s in settings:
        by_point.setdefault(table_point(ws, s), []).append(s)
    for (t, layer, pool), group in by_point.items():
        idx = 0 if layer == PIXELS else -1 if t is None else ws.layer(layer).index
        level = t is not None and layer != PIXELS
        base = {
            "model": PIXELS if layer == PIXELS else ws.model.name,
            "dataset": ws.dataset.name,
            "t": t,
            "log_snr": ws.model.log_snr(t) if level else np.nan,
            "layer": layer,
            "layer_index": idx,
            "pool": pool,
            "head": head,
        }
        first = [res[s] for s in group]
        rows += tidy_rows(base, first)
        if isinstance(group[0], Fused) and group[0].is_ensemble:  # features averaged over draws
            rows.append(
                {
                    **base,
                    "split": "test",
                    "metric": "ensemble",
                    "value": float(len(group[0].members)),
                }
            )
        points[(t, layer, pool, head)] = (base, first[0].predictions == y)
    return rows, points


def _paired(
    points: dict[Point, tuple], refs: dict[Point, np.ndarray], name: str, match
) -> list[dict]:
    """`name` rows for every point whose reference `match(point)` is in `refs` (same test images)."""
    rows = []
    for p, (base, correct) in points.items():
        ref = refs.get(match(p))
        if ref is not None and ref.shape == correct.shape:
            rows += paired_rows(base, name, paired_bootstrap_diff(correct, ref))
    return rows


def run_sweep(
    ws: Workspace,
    plan: SweepPlan,
    *,
    out: str | Path | None = None,
    report: Report | None = None,
    progress: bool | Callable[[int, int], None] = False,
) -> pd.DataFrame:
    """Run `plan` on `ws` (and its controls); returns the tidy table, also saved to `out` as it grows.

    `report` gets a `SweepProgress` before each step and at the end; `progress` gets
    (images done, images total) while a step extracts features.
    """
    rows: list[dict] = []
    models = [ws, *plan.controls]
    done = 0
    t0 = time.time()

    def tell(msg: str) -> None:
        if report:
            report(SweepProgress(done, plan.steps, msg, time.time() - t0))

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
            settings = [
                Setting(t, lay, p, s) for lay in plan.layers for p in plan.pools for s in plan.seeds
            ]
            m.ensure(settings, progress=progress)
            if (
                plan.seed_average == "features" and len(plan.seeds) > 1
            ):  # DIFT: one probe on mean features
                settings = [
                    Fused(tuple(Setting(t, lay, p, s) for s in plan.seeds), "mean")
                    for lay in plan.layers
                    for p in plan.pools
                ]
            for head in plan.heads:
                new, pts = _rows(m, settings, head)
                rows += new + _paired(pts, pixels, "vs_pixels", lambda p: p[3])
                if m is ws:
                    mine |= pts
                elif m.model.name.startswith(RANDOM_PREFIX):
                    ctrl = {p: c for p, (_, c) in pts.items()}
                    rows += _paired(
                        {p: mine[p] for p in pts if p in mine}, ctrl, "vs_random", lambda p: p
                    )
            done += 1
            flush()
    for f in plan.fused:
        tell(f"fused {table_point(ws, f)[1]}")
        for head in plan.heads:
            spec = parse_head(head).spec
            if spec.maps and not spec.sets and f.mode == "concat":
                continue  # a one-map head cannot read a concatenation
            new, pts = _rows(ws, [f], head)
            rows += new + _paired(pts, pixels, "vs_pixels", lambda p: p[3])
        flush()
    tell("done")
    return to_frame(rows)


def extract_plan(
    ws: Workspace, plan: SweepPlan, progress: bool | Callable[[int, int], None] = False
) -> int:
    """Compute every model feature `plan` reads (its controls' and fused members' too), raw pixels
    excepted; returns entries computed. Under torchrun all ranks call this together, then rank 0
    alone runs `run_sweep`, which finds them cached."""
    grid = [
        Setting(t, lay, p, s)
        for t in plan.timesteps
        for lay in plan.layers
        for p in plan.pools
        for s in plan.seeds
    ]
    computed = sum(m.ensure(grid, progress=progress) for m in [ws, *plan.controls])
    members = [m for f in plan.fused for m in ws.members(ws.canonical(f)) if not m.is_pixels]
    return computed + (ws.ensure(members, progress=progress) if members else 0)


def describe_best(df: pd.DataFrame) -> str:
    """Lines naming the best setting per (model, head), chosen on validation top-1, with its test
    top-1, 95% interval, and its paired differences vs raw pixels and random weights in words."""
    best = best_settings(df)
    lines = []
    for _, r in best.iterrows():
        where = (
            "raw pixels"
            if r["layer"] == PIXELS
            else f"t={int(r['t'])}, layer {int(r['layer_index'])} ({r['layer']}), pool {r['pool']}"
            + snr_words(r.get("log_snr", np.nan))
        )
        how = f"val {100 * r['val_top1']:.2f}%, " if np.isfinite(r["val_top1"]) else ""
        line = (
            f"best {r['head']:>9} for {r['model']} (on validation): {where}; {how}"
            f"test {100 * r['top1']:.2f}% [{100 * r['ci_low']:.2f}, {100 * r['ci_high']:.2f}]"
        )
        vs = [
            w
            for n, ref in (("vs_pixels", "raw pixels"), ("vs_random", "random weights"))
            if (w := paired_words(r, n, ref))
        ]
        lines.append("; ".join([line, *vs]))
    fused = accuracy_view(df, fused=True)
    for _, r in fused[fused["layer"].map(is_fused_text)].iterrows():
        lines.append(
            f"fused {r['layer']} (pool {r['pool']}), {r['head']}: test {100 * r['top1']:.2f}% "
            f"[{100 * r['ci_low']:.2f}, {100 * r['ci_high']:.2f}]"
        )
    skipped = set(map(tuple, accuracy_groups(df))) - set(
        zip(best["model"], best["head"], strict=True)
    )
    for model, head in sorted(skipped):
        lines.append(
            f"{head} for {model}: no validation accuracy in this table, so no best setting "
            "is named (re-run the sweep)"
        )
    return "\n".join(lines)


def snr_words(log_snr) -> str:
    """ ", logSNR +2.20" (the level on the axis shared by all families); "" when unknown."""
    v = float(log_snr)
    return "" if np.isnan(v) else f", logSNR {v:+.2f}"


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
        return [
            "This table has no validation accuracy, so no best setting is named and no cell is "
            "marked ▲: re-run the sweep to get them."
        ]
    where = f"t={int(best['t'])}, block {int(best['layer_index'])} ({best['layer']})"
    out = [
        f"Best on validation ({100 * best['val_top1']:.2f}%): {where}, test top-1 "
        f"{100 * best['top1']:.2f}% (95% interval {100 * best['ci_low']:.2f}–{100 * best['ci_high']:.2f})."
    ]
    for name, ref in (
        ("vs_pixels", "raw pixels"),
        ("vs_random", f"{random_model or 'random weights'} at the same setting"),
    ):
        if words := paired_words(best, name, ref):
            out.append(f"Against {ref}: {words}.")
    for name, ref, mark in (
        ("vs_pixels", "raw pixels", "▲, "),
        ("vs_random", "random weights at the same setting", ""),
    ):
        paired = wide[np.isfinite(wide[f"{name}_low"].astype(float))]
        if not paired.empty:
            up = int((paired[f"{name}_low"] > 0).sum())
            down = int((paired[f"{name}_high"] < 0).sum())
            out.append(
                f"{up} of {len(paired)} cells beat {ref} beyond noise ({mark}paired 95% interval "
                f"above 0); {len(paired) - up - down} are within noise of it; {down} are below."
            )
    near = wide[(wide["ci_high"] >= best["ci_low"]) & (wide["ci_low"] <= best["ci_high"])]
    if len(near) > 1:
        out.append(
            f"{len(near) - 1} other cells have test intervals overlapping the best's: "
            "their order is within noise."
        )
    return out
