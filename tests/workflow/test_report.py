"""Markdown tables from a results table: validation selection, test CI, paired intervals."""

from __future__ import annotations

import pandas as pd

from explorer.defaults import PIXELS
from explorer.report import best_table, grid_table, main, report
from explorer.results import COLUMNS


def _rows(model, t, layer, idx, test, val=None, vs_px=None, vs_rnd=None, head="linear"):
    base = {
        "model": model,
        "dataset": "d",
        "t": t,
        "layer": layer,
        "layer_index": idx,
        "pool": "2",
        "head": head,
    }
    out = [
        {**base, "split": "test", "metric": m, "value": v}
        for m, v in (("top1", test), ("ci_low", test - 0.01), ("ci_high", test + 0.01))
    ]
    if val is not None:
        out.append({**base, "split": "val", "metric": "top1", "value": val})
    for name, trio in (("vs_pixels", vs_px), ("vs_random", vs_rnd)):
        if trio is not None:
            out += [
                {**base, "split": "test", "metric": name + s, "value": v}
                for s, v in zip(("", "_low", "_high"), trio, strict=True)
            ]
    return out


def _table() -> pd.DataFrame:
    rows = (
        _rows("m", 10, "a", 1, 0.80, 0.90, (0.05, 0.03, 0.07), (0.004, -0.002, 0.01))
        + _rows("m", 10, "b", 2, 0.85, 0.70, (0.10, 0.08, 0.12))  # best on test, not on val
        + _rows("m", 50, "a", 1, 0.78, 0.88)
        + _rows("random:m", 10, "a", 1, 0.79, 0.80, (0.04, 0.02, 0.06))
        + _rows(PIXELS, None, PIXELS, 0, 0.75)
    )
    return pd.DataFrame(rows, columns=COLUMNS)


def test_best_table_uses_validation_and_paired_intervals():
    md = best_table(_table()).splitlines()
    assert len(md) == 5, "header, rule, and one row per model"
    m, rnd, px = md[2], md[3], md[4]
    assert m.startswith("| m | linear | block 1 (`a`), t=10 | 90.00% | 80.00% [79.00%, 81.00%]"), m
    assert "+5.00 [+3.00, +7.00] ✓" in m, "an interval above 0 is marked"
    assert m.endswith("| +0.40 [-0.20, +1.00] |"), "an interval across 0 has no mark"
    assert rnd.startswith("| random:m |") and px.startswith("| pixels | linear | — | — | 75.00%"), (
        md
    )


def test_grid_bolds_the_validation_pick_and_report_runs(tmp_path, capsys):
    grid = grid_table(_table(), "m", "linear").splitlines()
    assert grid[0] == "| block | layer | t=10 | t=50 |"
    assert grid[2] == "| 1 | `a` | **80.0** | 78.0 |", "the pick on validation is bold"
    assert grid[3] == "| 2 | `b` | 85.0 | — |", "a missing cell is a dash"
    assert "linear validation top-1 (%), m" in report(_table())
    path = tmp_path / "r.csv"
    _table().to_csv(path, index=False)
    assert main([str(path)]) == 0 and "| m | linear |" in capsys.readouterr().out
    assert main([]) == 2
