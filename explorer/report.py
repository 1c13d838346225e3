"""Markdown tables from a sweep's tidy results table (the README's measured section).

`python -m explorer.report results.csv` prints them. Selection follows the results module:
the best setting is the highest validation top-1; test top-1 is reported with its 95%
interval, and differences come from the paired bootstrap stored in the table.
"""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd

from explorer.features import PIXELS
from explorer.paths import RANDOM_PREFIX
from explorer.results import accuracy_view, best_settings, load_table


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%" if np.isfinite(x) else "—"


def _interval(row: pd.Series, name: str) -> str:
    """`+4.40 [+3.70, +5.10]` points, with ✓ when the paired interval excludes 0."""
    d, low, high = (float(row.get(f"{name}{s}", np.nan)) for s in ("", "_low", "_high"))
    if not np.isfinite(d):
        return "—"
    mark = " ✓" if low > 0 or high < 0 else ""
    return f"{100 * d:+.2f} [{100 * low:+.2f}, {100 * high:+.2f}]{mark}"


def _where(row: pd.Series) -> str:
    if row["layer"] == PIXELS:
        return "—"
    return f"block {int(row['layer_index'])} (`{row['layer']}`), t={int(row['t'])}"


def best_table(df: pd.DataFrame) -> str:
    """One row per (model, head): the setting best on validation, its val and test top-1 (95%
    interval), and its paired difference in points vs raw pixels and vs random weights."""
    best = best_settings(df)
    order = {PIXELS: 2}
    best = best.assign(_o=[order.get(m, 1 if m.startswith(RANDOM_PREFIX) else 0) for m in best["model"]])
    lines = [
        "| features | head | best setting (on validation) | val top-1 | test top-1 [95% CI] "
        "| vs pixels, points [paired 95%] | vs random weights, points [paired 95%] |",
        "|---|---|---|---|---|---|---|",
    ]
    for _, r in best.sort_values(["head", "_o"]).iterrows():
        test = f"{_pct(r['top1'])} [{_pct(r['ci_low'])}, {_pct(r['ci_high'])}]"
        lines.append(
            f"| {r['model']} | {r['head']} | {_where(r)} | {_pct(r['val_top1'])} | {test} "
            f"| {_interval(r, 'vs_pixels')} | {_interval(r, 'vs_random')} |"
        )
    return "\n".join(lines)


def grid_table(df: pd.DataFrame, model: str, head: str, metric: str = "top1") -> str:
    """Blocks (rows) × timesteps (columns) of `metric` in % for one model and head; the cell
    best on validation is bold. `metric` may be any accuracy_view column (top1, val_top1, ...)."""
    wide = accuracy_view(df, head)
    wide = wide[wide["model"] == model]
    if wide.empty:
        return ""
    best = best_settings(df[(df["model"] == model) & (df["head"] == head)])
    pick = (best["layer_index"].iloc[0], best["t"].iloc[0]) if len(best) else None
    ts = sorted(wide["t"].unique())
    lines = ["| block | layer | " + " | ".join(f"t={int(t)}" for t in ts) + " |",
             "|---|---|" + "---|" * len(ts)]
    for (idx, layer), g in wide.groupby(["layer_index", "layer"], sort=True):
        vals = g.set_index("t")[metric]
        cells = []
        for t in ts:
            v = vals.get(t, np.nan)
            text = f"{100 * v:.1f}" if np.isfinite(v) else "—"
            cells.append(f"**{text}**" if pick == (idx, t) else text)
        lines.append(f"| {int(idx)} | `{layer}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report(df: pd.DataFrame) -> str:
    """The best-setting table, then per model and head the test and val grids."""
    parts = ["Best settings (chosen on validation top-1; ✓: paired 95% interval excludes 0):",
             "", best_table(df)]
    wide = accuracy_view(df)
    for (model, head), g in wide[wide["model"] != PIXELS].groupby(["model", "head"], sort=True):
        for metric, what in (("top1", "test"), ("val_top1", "validation")):
            if g[metric].notna().any():
                grid = grid_table(df, model, head, metric)
                parts += ["", f"{head} {what} top-1 (%), {model} (bold: best on validation):", "", grid]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m explorer.report RESULTS.csv", file=sys.stderr)
        return 2
    print(report(load_table(args[0])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
