"""The sweep page's table views: one model/head/pool slice, and cells ranked best first."""

from __future__ import annotations

import numpy as np
import pandas as pd

from explorer.results import ranked_cells, sweep_slice


def _wide(val):
    return pd.DataFrame(
        {
            "model": ["m", "m", "m", "px"],
            "head": ["linear", "linear", "knn", "linear"],
            "pool": ["1", "1", "1", "full"],
            "t": [90.0, 10.0, 10.0, np.nan],
            "layer": ["a", "b", "a", "pixels"],
            "layer_index": [0, 1, 0, 0],
            "top1": [0.8, 0.9, 0.7, 0.5],
            "val_top1": val,
        }
    )


def test_sweep_slice_filters_model_head_and_pool():
    w = _wide([0.7, 0.7, 0.6, 0.4])
    assert len(sweep_slice(w, "m")) == 3 and len(sweep_slice(w, "m", "linear")) == 2
    assert sweep_slice(w, "m", "linear", "2").empty and list(
        sweep_slice(w, "px", pool="full")["layer"]
    ) == ["pixels"]


def test_ranked_cells_by_validation_then_smaller_t_else_by_test():
    w = sweep_slice(_wide([0.7, 0.7, 0.6, 0.4]), "m", "linear")
    cells, by_val = ranked_cells(w)
    assert by_val and list(cells["layer"]) == ["b", "a"], "a val tie goes to the smaller t"
    cells, by_val = ranked_cells(sweep_slice(_wide([np.nan] * 4), "m"))
    assert not by_val and list(cells["top1"]) == [0.9, 0.8, 0.7], "no validation: test top-1"


def test_with_text_columns_keeps_pools_as_text():
    from explorer.results import COLUMNS, TEXT_COLUMNS, with_text_columns

    df = pd.DataFrame(
        [["m", "d", 10, 4.5, "a", 0, 1, "linear", "test", "top1", 0.5]], columns=COLUMNS
    )
    out = with_text_columns(df)
    assert (
        out["pool"].tolist() == ["1"]
        and out["t"].tolist() == [10]
        and out["value"].tolist() == [0.5]
    )
    assert set(TEXT_COLUMNS) <= set(COLUMNS) and df["pool"].tolist() == [1], (
        "the input is untouched"
    )
