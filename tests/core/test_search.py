"""The setting search: the halving schedule on synthetic scores, then the real search on a tiny model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from explorer.cli import main
from explorer.errors import ExplorerError
from explorer.features.store import FeatureStore
from explorer.models.loader import load_model
from explorer.search import balanced_order, halving, keep_best, round_sizes
from explorer.settings import Setting
from explorer.workspace import Workspace
from tests.conftest import make_tiny_dataset

GRID = [Setting(t, f"block{b}", "2") for t in (10, 50, 100, 200, 400) for b in range(13)]


def noisy(quality: dict, seed: int = 0):
    """Scores whose noise shrinks as rounds use more images (1/sqrt(n)), as validation does."""
    rng = np.random.default_rng(seed)
    asked = []

    def score(alive, n):
        asked.append((len(alive), n))
        return {s: quality[s] + rng.normal(0, 0.3 / np.sqrt(n)) for s in alive}

    return score, asked


def test_halving_finds_a_planted_best_among_65():
    quality = {s: 0.5 + 0.001 * i for i, s in enumerate(GRID)}  # all close ...
    planted = GRID[17]
    quality[planted] = 0.7  # ... but one is clearly best
    score, asked = noisy(quality)
    rounds = halving(GRID, score, [20, 60, 180, 540])
    assert rounds[-1].kept == (planted,), f"the planted best must survive alone: {rounds[-1]}"
    assert [a for a, _ in asked] == [65, 22, 8, 3][: len(asked)], f"1/3 kept each round: {asked}"
    assert all(planted in r.kept for r in rounds), "the best is never dropped"
    dropped = {s for r in rounds for s in r.dropped}
    assert len(dropped) == 64 and planted not in dropped


def test_halving_keeps_and_reports_a_tie():
    quality = {s: 0.5 + 0.001 * i for i, s in enumerate(GRID)}
    a, b = GRID[3], GRID[40]
    quality[a] = quality[b] = 0.9  # two equally good settings
    rounds = halving(GRID, lambda alive, n: {s: quality[s] for s in alive}, [10, 30, 90, 270])
    assert set(rounds[-1].kept) == {a, b}, "a tie at the top is kept whole, never broken"
    assert all(r.scores[a] == r.scores[b] for r in rounds)
    assert len(rounds) == 4 and len(rounds[-2].kept) == 3, [len(r.kept) for r in rounds]


def test_a_cheaper_near_tie_at_a_kept_timestep_rides_along_for_free():
    deep, near, other_t, deeper = (
        Setting(10, "b9", "2"),
        Setting(10, "b6", "2"),
        Setting(50, "b6", "2"),
        Setting(10, "b12", "2"),
    )
    quality = {deep: 0.90, other_t: 0.895, near: 0.885, deeper: 0.885}
    quality |= {Setting(t, f"b{i}", "2"): 0.5 for t in (90, 150) for i in range(4)}
    rounds = halving(
        list(quality),
        lambda alive, n: {s: quality[s] for s in alive},
        [10, 30, 90],
        eta=6,
        cost=lambda s: int(s.layer[1:]),  # deeper blocks cost more
        margin=lambda p, r: 0.02,  # validation noise
    )
    assert rounds[0].kept == (deep, other_t, near) and rounds[0].riders == 1, (
        "2 paid survivors; the shallower near-tie at t=10 rides, the deeper one (a longer pass) not"
    )
    assert len(rounds) == 2 and rounds[1].kept == (deep, near) and rounds[1].riders == 1, (
        "the rider is still there at the end, to be decided on every train image"
    )


def test_keep_best_keeps_ties_at_the_cut_and_breaks_order_by_cost():
    s = [Setting(10, f"b{i}", "2") for i in range(5)]
    scores = {s[0]: 0.9, s[1]: 0.8, s[2]: 0.8, s[3]: 0.8, s[4]: 0.1}
    kept = keep_best(scores, 2, cost=lambda x: -int(x.layer[1]))
    assert kept[0] == s[0] and set(kept[1:]) == {s[1], s[2], s[3]}, "all tied at the cut stay"
    assert kept[1:] == [s[3], s[2], s[1]], "among equals the cheaper comes first"
    assert keep_best(scores, 9, cost=lambda x: 0) == sorted(scores, key=lambda x: -scores[x])


def test_round_sizes_grow_by_eta_towards_every_image():
    assert round_sizes(5400, 65, 3, None) == [66, 198, 594, 1782], "x3, the final probe next"
    assert round_sizes(5400, 65, 3, None, final=3) == [200, 600, 1800], "one round fewer for 3"
    assert round_sizes(5400, 65, 3, 100) == [100, 300, 900, 2700]
    assert round_sizes(5400, 65, 3, 3000) == [3000, 5400], "capped at every fitting image"
    assert round_sizes(50, 65, 3, None, min_first=12) == [12, 36, 50], "never below min_first"
    with pytest.raises(ExplorerError, match="eta"):
        halving(GRID, lambda a, n: {}, [1], eta=1)


def test_every_prefix_of_the_balanced_order_keeps_the_classes_in_proportion():
    y = np.repeat(np.arange(4), [100, 50, 30, 20])
    order = balanced_order(y, seed=0)
    assert sorted(order) == list(range(len(y))), "a permutation"
    for n in (20, 50, 100):
        counts = np.bincount(y[order[:n]], minlength=4) / n
        assert np.abs(counts - np.array([0.5, 0.25, 0.15, 0.1])).max() <= 0.06, (n, counts)


@pytest.fixture
def ws(tiny_model_dir, tmp_path):
    ds = make_tiny_dataset(n=240, classes=3)
    return Workspace(
        load_model(str(tiny_model_dir)), ds, store=FeatureStore(tmp_path / "cache"), batch_size=64
    )


def test_search_on_a_tiny_model_gives_the_sweeps_row_for_less(ws):
    events = []
    found = ws.search(
        timesteps=[10, 100, 500], layers="all", pools="1,2", progress=lambda *e: events.append(e)
    )
    grid = {Setting(t, lay.name, p) for t in (10, 100, 500) for lay in ws.catalogue for p in "12"}
    assert found.pick in grid and set(found.rounds[0].scores) == grid, "round 1 scores the grid"
    assert found.passes < found.grid_passes, f"cheaper than the grid: {found.lines()[-1]}"
    assert events and events[-1][0].startswith("final"), events
    assert found.finalists[found.pick] == found.result.extra["val_top1"], (
        "the finalists' validation top-1 is the sweep's own (it reads train features only)"
    )
    again = ws.evaluate([found.pick], "linear")[found.pick]
    assert (
        again.top1 == found.result.top1
        and again.extra["val_top1"] == found.result.extra["val_top1"]
    ), "the pick's final probe is the sweep's own (cached) linear probe"
    for split in ("train", "test"):
        assert ws.store.has(ws.key(found.pick, split)), (
            "the pick's features are the sweep's entries"
        )
    sweep = ws.sweep([10, 100, 500], "all", "1,2", "linear", baselines=False)
    row = sweep[
        (sweep.t == found.pick.t)
        & (sweep.layer == found.pick.layer)
        & (sweep.pool == found.pick.pool)
    ]
    val = row[(row.split == "val") & (row.metric == "top1")]["value"]
    assert list(val) == [found.result.extra["val_top1"]], (
        "the sweep's row for the pick is the search's"
    )
    best_val = sweep[(sweep.split == "val") & (sweep.metric == "top1")]["value"].max()
    assert found.result.extra["val_top1"] <= best_val, "the grid's validation best bounds the pick"
    frame = found.rounds_frame()
    assert frame["kept"].sum() >= 1 and set(frame["round"]) == set(range(1, len(found.rounds) + 2))
    assert found.lines()[0].startswith("pick (best on validation)")


def test_cli_search_writes_the_rounds_and_refuses_a_bad_eta(tiny_model_dir, tmp_path, capsys):
    args = ["search", "--model", str(tiny_model_dir), "--dataset", "digits", "--limit", "200"]
    args += ["--timesteps", "10,200", "--layers", "1-4", "--cache-dir", str(tmp_path / "c")]
    assert main([*args, "--out", str(tmp_path / "rounds.csv")]) == 0
    out = capsys.readouterr().out
    assert "pick (best on validation)" in out and "weighted forward passes" in out, out
    assert (tmp_path / "rounds.csv").read_text().startswith("round,images,t,layer")
    summary = json.loads((tmp_path / "rounds.summary.json").read_text())
    assert summary["passes"] < summary["grid_passes"] and summary["lines"][0].startswith("pick")
    sweep = [
        "sweep",
        *args[1:],
        "--heads",
        "linear",
        "--no-baselines",
        "--out",
        str(tmp_path / "s.csv"),
    ]
    assert main(sweep) == 0
    html = tmp_path / "r.html"
    assert (
        main(
            [
                "report",
                "--sweep",
                str(tmp_path / "s.csv"),
                "--search",
                str(tmp_path / "rounds.csv"),
                "--out",
                str(html),
            ]
        )
        == 0
    )
    page = html.read_text()
    assert "Setting search" in page and "Search rounds" in page and summary["lines"][0] in page
    capsys.readouterr()
    assert main([*args, "--eta", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "--eta" in err[0], err
