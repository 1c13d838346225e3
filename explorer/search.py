"""Find the validation-best setting without the full grid: successive halving over t x block x pool.

The full grid extracts every timestep for every train and test image, to the deepest block.
The search instead scores every setting on a small, class-balanced slice of the train images,
keeps the best third (ties at the cut are kept), scores the survivors on three times as many
images, and so on; only the last survivor (or the settings tied with it) is extracted on the
whole train and test selections and probed exactly as `explorer sweep` does, so its row is the
sweep's row and a later sweep reuses it.

Scores are validation top-1 only: the validation images are the linear probe's own held-out
10% of the train selection (`probes.metrics.validation_split`, the images the sweep picks its
best setting on); test images are read once, for the pick. The fitting slices are nested
prefixes of the other train images, each slice a cached feature entry of its own, so a round
extracts only the images the previous round had not seen, and only to the deepest surviving
block of each timestep (early exit): the cost of a setting is its FLOPs share
(`models.layers.layer_flops`). Everything lands in the usual feature and result caches.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from explorer.errors import ExplorerError
from explorer.features.extract import ensure_features, load_features
from explorer.features.keys import Selection, feature_key
from explorer.models.layers import layer_flops, select_layers
from explorer.probes.metrics import ProbeResult, validation_split
from explorer.probes.registry import parse_head
from explorer.settings import Setting, check_timesteps, parse_pools, parse_timesteps

if TYPE_CHECKING:  # the workspace offers `Workspace.search` through this module
    from explorer.workspace import Workspace

VAL_FRACTION = 0.1  # the linear probe's own validation share (`fit_linear_grid`)


def summary_path(rounds_csv: str | Path) -> Path:
    """Where `explorer search --out ROUNDS.csv` puts its summary: `ROUNDS.summary.json`."""
    p = Path(rounds_csv)
    return p.with_name(p.stem + ".summary.json")


@dataclass(frozen=True)
class Round:
    """One round: `images` fitting images per probe; every scored setting's validation top-1."""

    images: int
    scores: dict[Setting, float]
    kept: tuple[Setting, ...]  # the paid survivors, then the riders
    riders: int = 0  # how many of `kept` ride along for free (shallower, same t, near the cut)

    @property
    def dropped(self) -> tuple[Setting, ...]:
        return tuple(s for s in self.scores if s not in self.kept)


def keep_best(scores: dict[Setting, float], k: int, cost: Callable[[Setting], float]) -> list:
    """The `k` best settings by score (then the cheaper first), plus any tied with the k-th."""
    ranked = sorted(scores, key=lambda s: (-scores[s], cost(s)))
    if k >= len(ranked):
        return ranked
    cut = scores[ranked[k - 1]]
    return [s for s in ranked if scores[s] >= cut]


def halving(
    settings: Sequence[Setting],
    score: Callable[[list[Setting], int], dict[Setting, float]],
    sizes: Sequence[int],
    *,
    eta: int = 3,
    cost: Callable[[Setting], float] = lambda s: 0.0,
    final: int = 1,
    margin: Callable[[float, int], float] = lambda p, n: 0.0,
) -> list[Round]:
    """Successive halving: round r scores the survivors with `score(survivors, sizes[r])` and
    keeps the best `ceil(n / eta)` of the paid ones (ties at the cut kept); it stops when at
    most `final` paid settings (or one tied group) are left, or the sizes run out. Pure:
    `score` does the work.

    Riders: one forward pass per timestep serves every block up to the deepest one read, so a
    dropped setting at the same t and pool as a kept one, and no deeper than the deepest kept
    one there (`cost`), costs no extraction. It rides along while its score stays within
    `margin(cut score, round index)` of the cut (validation noise), and can win at the end."""
    if eta < 2:
        raise ExplorerError(f"eta must be 2 or more (keep 1/eta each round), not {eta}")
    paid, riders, rounds = list(settings), [], []
    for r, n in enumerate(sizes):
        scores = score(paid + riders, n)
        on_paid = {s: scores[s] for s in paid}
        kept = keep_best(on_paid, max(1, math.ceil(len(paid) / eta)), cost)
        cut = min(scores[s] for s in kept)
        deepest: dict[tuple, float] = {}
        for s in kept:
            deepest[(s.t, s.pool)] = max(deepest.get((s.t, s.pool), 0.0), cost(s))
        riders = [
            s
            for s in scores
            if s not in kept
            and cost(s) <= deepest.get((s.t, s.pool), -1.0)
            and scores[s] >= cut - margin(cut, r)
        ]
        rounds.append(Round(n, scores, tuple(kept + riders), len(riders)))
        top = max(scores[s] for s in kept)
        if len(kept) <= final or all(scores[s] == top for s in kept):
            break
        paid = kept
    return rounds


def round_sizes(
    fit_images: int,
    n_settings: int,
    eta: int,
    first: int | None,
    min_first: int = 1,
    final: int = 1,
) -> list[int]:
    """Fitting images per round, enough rounds to cut `n_settings` to `final`: `first`, then
    x eta each round, capped at `fit_images`. The default `first` makes the final probe (on
    every train image) the next step of the x eta growth; it is never below `min_first`."""
    rounds = max(1, math.ceil(math.log(max(n_settings / max(final, 1), 2), eta)))
    chosen = first or max(min_first, fit_images // eta**rounds)
    return sorted({min(fit_images, chosen * eta**r) for r in range(rounds)})


def balanced_order(y: np.ndarray, seed: int = 0) -> np.ndarray:
    """A permutation of `y (N,)` whose every prefix keeps the classes in proportion."""
    rng = np.random.default_rng(seed)
    place = np.empty(len(y))
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        place[rng.permutation(idx)] = (np.arange(idx.size) + rng.random()) / idx.size
    return np.argsort(place, kind="stable")


@dataclass
class SearchResult:
    """The pick, its final probe on the whole selections, the rounds and what they cost."""

    pick: Setting
    result: ProbeResult  # the pick's linear probe on ws.train / ws.test (the sweep's row)
    finalists: dict[Setting, float]  # validation top-1 of each finalist on every train image
    rounds: list[Round]
    passes: float  # image-forward passes computed, weighted by the FLOPs to the deepest block
    grid_passes: float  # the same for the full grid (train + test, every t, deepest block)
    feature_sets: int  # feature entries computed
    grid_feature_sets: int
    seconds: float
    final_images: int = 0  # train images of the final probes (the workspace's selection)
    labels: dict[str, str] = field(default_factory=dict)  # layer name -> "7 · mid_block"

    @property
    def tie(self) -> tuple[Setting, ...]:
        """Finalists whose validation top-1 equals the pick's (the pick is then the cheapest)."""
        top = self.finalists[self.pick]
        return tuple(s for s, v in self.finalists.items() if v == top)

    @property
    def saving(self) -> float:
        """How many times fewer weighted forward passes than the full grid."""
        return self.grid_passes / self.passes if self.passes else float("inf")

    def name(self, s: Setting) -> str:
        return f"block {self.labels.get(s.layer, s.layer)}, t={s.t}, pool {s.pool}"

    def lines(self) -> list[str]:
        r = self.result
        val = r.extra.get("val_top1", float("nan"))
        out = [
            f"pick (best on validation): {self.name(self.pick)}; val {100 * val:.2f}%, "
            f"test {100 * r.top1:.2f}% [{100 * r.ci_low:.2f}, {100 * r.ci_high:.2f}]"
        ]
        if len(self.tie) > 1:
            out.append(
                "tie on validation between "
                + "; ".join(self.name(s) for s in self.tie)
                + " (the cheapest is shown)"
            )
        for i, rd in enumerate(self.rounds, start=1):
            best = max(rd.scores.values())
            out.append(
                f"round {i}: {len(rd.scores)} settings on {rd.images} images, kept "
                f"{len(rd.kept) - rd.riders}"
                + (f" + {rd.riders} riding free" if rd.riders else "")
                + f" (best val {100 * best:.1f}%)"
            )
        out.append(
            f"cost: {self.passes:,.0f} weighted forward passes vs {self.grid_passes:,.0f} for the "
            f"full grid ({self.saving:.1f}x fewer); {self.feature_sets} feature sets computed vs "
            f"{self.grid_feature_sets}; {self.seconds:.0f}s"
        )
        return out

    def summary(self) -> dict:
        """Plain values for a sidecar file or a report: the pick, its scores and the cost."""
        r = self.result
        return {
            "pick": {"t": self.pick.t, "layer": self.pick.layer, "pool": self.pick.pool},
            "block": self.labels.get(self.pick.layer, self.pick.layer),
            "val_top1": r.extra.get("val_top1"),
            "top1": r.top1,
            "ci_low": r.ci_low,
            "ci_high": r.ci_high,
            "tie": [self.name(s) for s in self.tie] if len(self.tie) > 1 else [],
            "passes": self.passes,
            "grid_passes": self.grid_passes,
            "feature_sets": self.feature_sets,
            "grid_feature_sets": self.grid_feature_sets,
            "seconds": self.seconds,
            "lines": self.lines(),
        }

    def rounds_frame(self) -> pd.DataFrame:
        """One row per (round, setting): its validation top-1 and whether it was kept."""
        rows = [
            {
                "round": i,
                "images": rd.images,
                "t": s.t,
                "layer": s.layer,
                "block": self.labels.get(s.layer, s.layer),
                "pool": s.pool,
                "val_top1": v,
                "kept": s in rd.kept,
            }
            for i, rd in enumerate(self.rounds, start=1)
            for s, v in rd.scores.items()
        ]
        final = len(self.rounds) + 1
        rows += [
            {
                "round": final,
                "images": self.final_images,
                "t": s.t,
                "layer": s.layer,
                "block": self.labels.get(s.layer, s.layer),
                "pool": s.pool,
                "val_top1": v,
                "kept": s == self.pick,
            }
            for s, v in self.finalists.items()
        ]
        return pd.DataFrame(rows)


def _slices(ws: Workspace, positions: np.ndarray, sizes: Sequence[int]) -> list[Selection]:
    """Disjoint train selections: the positions' (in order) slices between successive `sizes`;
    the first k of them together are the first `sizes[k-1]` positions."""
    bounds = [0, *sorted(set(sizes))]
    return [
        Selection("train", np.sort(ws.train.indices[positions[a:b]]))
        for a, b in zip(bounds, bounds[1:], strict=False)
    ]


def chunks_upto(sizes: Sequence[int], k: int) -> int:
    """How many of `_slices(..., sizes)` make up the first `sizes[k]` positions."""
    return sorted(set(sizes)).index(sizes[k]) + 1


class _Costs:
    """Weighted forward passes and feature sets computed, counted before each extraction."""

    def __init__(self, ws: Workspace):
        flops = layer_flops(ws.model.denoiser)
        self.share = {lay.name: f / max(flops) for lay, f in zip(ws.catalogue, flops, strict=True)}
        self.ws, self.passes, self.sets = ws, 0.0, 0

    def ensure(self, sel: Selection, settings: Sequence[Setting]) -> None:
        ws = self.ws
        for t in sorted({s.t for s in settings}):
            at_t = [s for s in settings if s.t == t]
            missing = [
                s
                for s in at_t
                if not ws.store.has(
                    feature_key(ws.model, ws.dataset, sel, t, s.layer, s.pool, s.seed)
                )
            ]
            if not missing:
                continue
            self.passes += len(sel.indices) * max(self.share[s.layer] for s in missing)
            self.sets += len(missing)
            layers = [lay for lay in ws.catalogue if lay.name in {s.layer for s in at_t}]
            ensure_features(
                ws.model,
                ws.dataset,
                sel,
                timesteps=[t],
                layers=layers,
                pools=sorted({s.pool for s in at_t}),
                seeds=sorted({s.seed for s in at_t}),
                store=ws.store,
                batch_size=ws.batch_size,
                progress=False,
                workers=ws.workers,
            )


def search(
    ws: Workspace,
    *,
    timesteps: str | int | Sequence[int],
    layers: str | int | Sequence = "all",
    pools: str | int | Sequence = 2,
    seed: int = 0,
    eta: int = 3,
    first: int | None = None,
    final: int = 1,
    progress: Callable[[str, float], None] | None = None,
) -> SearchResult:
    """The validation-best linear-probe setting of the grid timesteps x layers x pools of `ws`.

    `eta`: keep 1/eta each round (default 3); `first`: fitting images of the first round
    (default: the train images / eta^rounds); `final`: how many settings the halving leaves for
    the final probe on every train image (default 3; settings tied at a cut always stay), of
    which the validation best (the sweep's own validation top-1) is then probed on test.
    `progress(text, fraction)` is called before each round.
    """
    t0 = time.time()
    ts = check_timesteps(parse_timesteps(timesteps), ws.num_timesteps)
    names = [lay.name for lay in select_layers(ws.catalogue, layers)]
    grid = [Setting(t, n, p, seed) for t in ts for n in names for p in parse_pools(pools)]
    costs = _Costs(ws)
    y = ws.labels("train")
    fit_pos, val_pos = validation_split(y, VAL_FRACTION, seed=0)
    if len(np.unique(y[fit_pos])) < 2:
        raise ExplorerError("the search needs train images of at least 2 classes")
    fit_pos = fit_pos[balanced_order(y[fit_pos], seed=0)]
    val_pos = val_pos[balanced_order(y[val_pos], seed=1)]
    n_classes = len(np.unique(y[fit_pos]))
    sizes = round_sizes(
        len(fit_pos), len(grid), eta, first, min(len(fit_pos), 4 * n_classes), final
    )
    # validation slices grow too: early rounds only drop the clearly worse settings
    val_sizes = [min(len(val_pos), max(n, 20 * n_classes)) for n in sizes]
    fit_chunks, val_chunks = _slices(ws, fit_pos, sizes), _slices(ws, val_pos, val_sizes)
    n_rounds = len(sizes) + 1
    head = parse_head("linear")  # the sweep's linear head, its parameters and all

    def linear(tasks: dict) -> dict[str, ProbeResult]:
        return head.fit(tasks, n_classes=ws.dataset.num_classes, device=ws.device)

    def read(sel: Selection, s: Setting) -> np.ndarray:
        return load_features(
            ws.model,
            ws.dataset,
            sel,
            t=s.t,
            layer=s.layer,
            pool_name=s.pool,
            seed=s.seed,
            store=ws.store,
        )

    def stack(chunks: list[Selection], alive: list[Setting]) -> dict[Setting, tuple]:
        for sel in chunks:
            costs.ensure(sel, alive)
        y_all = np.concatenate([ws.dataset.labels[c.indices] for c in chunks])
        return {s: (np.vstack([read(c, s) for c in chunks]), y_all) for s in alive}

    def score(alive: list[Setting], n: int) -> dict[Setting, float]:
        k = sizes.index(n)
        if progress:
            text = f"round {k + 1} of {n_rounds}: {len(alive)} settings on {n} images"
            progress(text + f" (validation {val_sizes[k]})", k / n_rounds)
        fit = stack(fit_chunks[: chunks_upto(sizes, k)], alive)
        val = stack(val_chunks[: chunks_upto(val_sizes, k)], alive)
        res = linear({repr(s): (*fit[s], *val[s]) for s in alive})
        return {s: float(res[repr(s)].top1) for s in alive}

    cheap = lambda s: costs.share[s.layer]  # noqa: E731

    def noise(p: float, r: int) -> float:  # two standard errors of a validation top-1
        return 2 * math.sqrt(max(p * (1 - p), 1e-4) / val_sizes[r])

    rounds = halving(grid, score, sizes, eta=eta, cost=cheap, final=max(1, final), margin=noise)
    finalists = list(rounds[-1].kept)
    if progress:
        text = f"final: {len(finalists)} on every train image, the pick on every test image"
        progress(text, (n_rounds - 1) / n_rounds)
    # the sweep's own validation top-1 (it depends on the train features only), then test for
    # the pick alone
    costs.ensure(ws.train, finalists)
    y_train = ws.labels("train")
    x = {s: read(ws.train, s) for s in finalists}
    probe = linear({repr(s): (x[s], y_train, x[s][:1], y_train[:1]) for s in finalists})
    val = {s: float(probe[repr(s)].extra["val_top1"]) for s in finalists}
    best = max(val.values())
    pick = min((s for s in finalists if val[s] == best), key=cheap)
    costs.ensure(ws.test, [pick])
    result = ws.evaluate([pick], "linear")[pick]
    deepest = max(costs.share[n] for n in names)
    n_img = len(ws.train.indices) + len(ws.test.indices)
    return SearchResult(
        pick=pick,
        result=result,
        finalists=val,
        rounds=rounds,
        passes=costs.passes,
        grid_passes=n_img * len(ts) * deepest,
        feature_sets=costs.sets,
        grid_feature_sets=2 * len(grid),
        seconds=time.time() - t0,
        final_images=len(ws.train.indices),
        labels={lay.name: f"{lay.index} · {lay.name}" for lay in ws.catalogue},
    )
