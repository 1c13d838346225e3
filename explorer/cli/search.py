"""`explorer search`: the validation-best setting of a grid without computing the grid
(successive halving, `explorer.search`); prints the pick, the rounds and the cost."""

from __future__ import annotations

import argparse

from explorer import defaults as D
from explorer.cli.options import Command, grid_args, logger, open_workspace, split_limit_args
from explorer.errors import ExplorerError
from explorer.settings import parse_seeds


def search_args(p: argparse.ArgumentParser) -> None:
    grid_args(
        p,
        D.SWEEP_TIMESTEPS,
        "the grid's timesteps (default: {ts}, the shipped sweep's)",
        ("--pools", "comma-separated poolings (default: {pool})"),
    )
    split_limit_args(p)
    p.add_argument(
        "--eta", type=int, default=3, help="keep 1/eta of the settings each round (default: 3)"
    )
    p.add_argument(
        "--first",
        type=int,
        default=None,
        help="train images per probe in the first round (default: chosen so the last round "
        "uses all of them)",
    )
    p.add_argument(
        "--final",
        type=int,
        default=1,
        help="how many of the last round's best get the whole train and test sets (default: 1; "
        "settings tied with them always do)",
    )
    p.add_argument(
        "--out", default=None, help="also write the rounds (one row per round and setting), .csv"
    )


def cmd_search(a: argparse.Namespace) -> int:
    """Successive halving over timesteps x layers x poolings, scored on validation only."""
    if a.eta < 2 or a.final < 1 or (a.first is not None and a.first < 1):
        raise ExplorerError("--eta must be 2 or more, --final and --first positive integers")
    # torch loads here, not at import: a cached `explorer extract` answers without it
    import json

    from explorer.atomic import atomic_write
    from explorer.search import summary_path

    ws = open_workspace(
        a, train_limit=a.train_limit or a.limit, test_limit=a.test_limit or a.limit, progress=False
    )
    seeds = parse_seeds(a.seeds)
    if len(seeds) != 1:
        raise ExplorerError("search uses one noise seed; give --seeds N")
    found = ws.search(
        a.timesteps,
        a.layers,
        a.pools,
        seed=seeds[0],
        eta=a.eta,
        first=a.first,
        final=a.final,
        progress=lambda text, _: logger.info(text),
    )
    print("\n".join(found.lines()))
    if a.out:
        atomic_write(a.out, found.rounds_frame().to_csv(index=False))
        side = summary_path(a.out)
        atomic_write(side, json.dumps(found.summary(), indent=1, default=float) + "\n")
        print(f"rounds: {a.out} (summary: {side})")
    return 0


SEARCH = Command(
    "search",
    search_args,
    cmd_search,
    "explorer search --dataset fashion-mnist --train-limit 6000 --layers all --out rounds.csv",
)
