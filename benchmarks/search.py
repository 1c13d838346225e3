"""The setting search against the full grid on the shipped Fashion-MNIST grid (issue 22, points 2-3).

Both run in the same process on fresh, separate caches, on the built-in `ddpm-fashion-mnist`:
the shipped sweep's grid (t in 10,50,90,150,300 x 13 blocks x pool 2, 6,000 stratified train
images, the whole 10,000-image test set, linear head, no baselines). Printed:

- the search's pick and the full grid's validation pick, their test top-1, and whether the
  pick is the grid's or within the paired 95% interval of it (a paired bootstrap over the same
  test images, `probes.metrics.compare_results`);
- image-forward passes weighted by the FLOPs to the deepest block read: search vs grid;
- wall-clock seconds: search vs grid (features and probes), and their ratio.

    python benchmarks/search.py [--train-limit 6000] [--test-limit N] [--out FILE]

`--test-limit`/`--train-limit` make a quicker, smaller run (the ratios then differ).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from explorer.data import load_dataset  # noqa: E402
from explorer.features.store import FeatureStore  # noqa: E402
from explorer.models.loader import load_model  # noqa: E402
from explorer.probes.metrics import compare_results  # noqa: E402
from explorer.results import best_settings  # noqa: E402
from explorer.settings import Setting  # noqa: E402
from explorer.workspace import Workspace  # noqa: E402

TIMESTEPS = [10, 50, 90, 150, 300]


def workspace(root: Path, train: int | None, test: int | None) -> Workspace:
    return Workspace(
        load_model("ddpm-fashion-mnist", device="cpu"),
        load_dataset("fashion-mnist"),
        store=FeatureStore(root),
        train_limit=train,
        test_limit=test,
        batch_size=256,
        device="cpu",
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train-limit", type=int, default=6000)
    ap.add_argument("--test-limit", type=int, default=None)
    ap.add_argument("--out", default=None, help="also write the report to this file")
    a = ap.parse_args(argv)
    lines = []

    def say(text: str) -> None:
        print(text, flush=True)
        lines.append(text)

    with tempfile.TemporaryDirectory() as tmp:
        ws = workspace(Path(tmp) / "search", a.train_limit, a.test_limit)
        t0 = time.perf_counter()
        found = ws.search(
            TIMESTEPS, "all", 2, progress=lambda text, _: print("  " + text, flush=True)
        )
        search_s = time.perf_counter() - t0
        for line in found.lines():
            say(line)

        grid_ws = workspace(Path(tmp) / "grid", a.train_limit, a.test_limit)
        t0 = time.perf_counter()
        table = grid_ws.sweep(TIMESTEPS, "all", 2, "linear", baselines=False)
        grid_s = time.perf_counter() - t0
        best = best_settings(table).iloc[0]
        grid_pick = Setting(int(best["t"]), str(best["layer"]), str(best["pool"]))
        grid_res = grid_ws.evaluate([grid_pick], "linear")[grid_pick]
        mine = grid_ws.evaluate([found.pick], "linear")[found.pick]  # cached: the grid has it
        diff = compare_results(mine, grid_res, grid_ws.labels("test"))
        say(
            f"grid's validation pick: {found.name(grid_pick)}; val {100 * best['val_top1']:.2f}%, "
            f"test {100 * grid_res.top1:.2f}%"
        )
        same = found.pick == grid_pick
        within = diff.low <= 0 <= diff.high
        say(
            f"search pick vs grid pick on test: {100 * diff.diff:+.2f} points "
            f"[{100 * diff.low:+.2f}, {100 * diff.high:+.2f}] (paired 95%): "
            + ("the same setting" if same else ("within the interval" if within else "OUTSIDE"))
        )
        say(
            f"weighted forward passes: search {found.passes:,.0f} vs grid {found.grid_passes:,.0f} "
            f"= {found.saving:.2f}x fewer (target >= 5x: {'MET' if found.saving >= 5 else 'MISSED'})"
        )
        say(
            f"wall clock on this CPU: search {search_s:.0f}s vs grid {grid_s:.0f}s = "
            f"{grid_s / search_s:.2f}x faster"
        )
    if a.out:
        Path(a.out).write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
