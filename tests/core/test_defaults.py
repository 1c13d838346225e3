"""One module of names and defaults (explorer.defaults): every other module agrees with it."""

from __future__ import annotations

import pandas as pd

from explorer import defaults as D
from explorer.cli import build_parser
from explorer.paths import ASSETS


def test_shared_names_are_the_defaults_module_s():
    from explorer.probes.registry import parse_head
    from explorer.settings import parse_pools
    from explorer.ui import services

    assert parse_pools(",".join(D.POOLS)) == list(D.POOLS), "settings read every pooling named"
    assert set(D.APP_POOLS) <= set(D.POOLS)
    assert set(D.POOL_LABELS) == set(D.POOLS), "every pooling has a label"
    assert dict(parse_head("knn").items)["k"] == D.DEFAULT_K, "knn's k is the documented default"
    assert (services.DEFAULT_TRAIN_LIMIT, services.DEFAULT_TEST_LIMIT) == (
        D.DEFAULT_TRAIN_LIMIT,
        D.DEFAULT_TEST_LIMIT,
    )


def test_cli_option_defaults_come_from_the_defaults_module():
    p = build_parser()
    ex = p.parse_args(["extract"])
    assert ex.timesteps == "10,90,150" == D.timesteps_text(D.EXTRACT_TIMESTEPS)
    assert ex.pool == D.DEFAULT_POOL
    sw = p.parse_args(["sweep"])
    assert sw.timesteps == D.timesteps_text(D.SWEEP_TIMESTEPS) and sw.pools == D.DEFAULT_POOL
    for cmd in ("embed", "export"):
        extra = ["--out", "x"] if cmd == "export" else []
        a = p.parse_args([cmd, *extra])
        assert (a.timestep, a.pool, a.layer) == (D.DEFAULT_T, D.DEFAULT_POOL, D.DEFAULT_LAYER), cmd
    assert p.parse_args(["cka"]).timesteps == str(D.DEFAULT_T), (
        "CKA: block x block at the default t"
    )


def test_default_t_and_timestep_lists_fit_any_schedule():
    assert D.default_t(1000) == D.DEFAULT_T == 10
    assert D.default_t(5) == 4 and D.default_t(1) == 0, "clamped to [0, T)"
    assert D.timestep_defaults(1000) == list(D.SWEEP_TIMESTEPS) == [10, 50, 90, 150, 300], (
        "one timestep set: the shipped sweep's grid"
    )
    assert D.timestep_grid(1000) == D.timestep_defaults(1000, 6), "never more than the grid"
    assert D.timestep_defaults(1000, 2) == [10, 50]
    assert D.timestep_defaults(100) == [1, 5, 9, 15, 30], "scaled to a 100-step schedule"
    assert D.timestep_defaults(3) == [0, 1], "duplicates collapse on a tiny schedule"


def test_default_blocks():
    stages = ["down"] * 6 + ["mid"] + ["up"] * 6
    assert D.default_block(stages) == 6, "block 7: the mid block"
    assert D.default_block(["down", "down", "mid", "up"]) == 2, "wherever the mid block is"
    assert D.default_block(["down", "down", "up", "up", "up"]) == 2, "no mid block: the middle"
    assert D.compare_block(13) == 8, "Compare's block B: block 9 of 13"
    assert D.compare_block(2) == 1 and D.compare_block(1) == 0, "clamped to the blocks there are"


def test_the_app_default_is_the_shipped_sweep_s_best_setting_on_validation():
    """The app opens where the project's story is: the best linear setting on validation."""
    from explorer.results import accuracy_view, best_on_validation

    wide = accuracy_view(pd.read_csv(ASSETS / "results" / "fashion-mnist-sweep.csv"))
    mine = wide[(wide["model"] == "ddpm-fashion-mnist") & (wide["head"] == "linear")]
    best = best_on_validation(mine)
    assert best is not None, "the shipped table has validation accuracies"
    stages = ["down"] * 6 + ["mid"] + ["up"] * 6  # ddpm-fashion-mnist's 13 blocks
    assert int(best["t"]) == D.DEFAULT_T and str(best["pool"]) == D.DEFAULT_POOL
    assert int(best["layer_index"]) == D.default_block(stages) + 1, (
        f"best on validation is block {best['layer_index']}; move the default there"
    )


def test_the_app_seeds_the_pair_the_warm_seed_is_made_for():
    from explorer import warm
    from explorer.ui import services

    assert services.SEED_PAIR == (warm.MODEL, warm.DATASET)
