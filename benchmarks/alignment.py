"""Alignment metrics: CKNNA on one large pair, and a block x block map batched vs one call per cell.

1. CKNNA between two 10,000 x 1,024 float32 feature sets (random, the second a noisy copy of
   the first), k = 10: wall-clock seconds, median of `--repeats`. Target: under 2 s.
2. A 13 x 13 block x block CKNNA map (13 random sources against 13, 2,000 images x 512 features
   each, k = 10): `alignment_map` (each source's k-NN graph once, reused by the 13 cells of its
   row or column) against `naive_map` (one independent `cknna` call per cell, 2 graphs each);
   their ratio, and that the two maps agree. Then the batched map with every metric (CKA,
   CKNNA, mutual k-NN) and its 100-resample bootstrap interval.

    python benchmarks/alignment.py [--images 10000] [--dim 1024] [--map-images 2000]
                                   [--map-dim 512] [--blocks 13] [--repeats 3] [--quick]

Numbers depend on how busy the cores are: the 1-minute load average is printed beside them.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from explorer.analysis.alignment import alignment_map, cknna, knn, naive_map  # noqa: E402

TARGET_S = 2.0


def sources(rng, count: int, n: int, d: int) -> list[np.ndarray]:
    """`count` related feature sets: a shared signal plus independent noise, float32."""
    base = rng.normal(size=(n, d)).astype(np.float32)
    return [
        (base + rng.normal(scale=0.5 + i / count, size=(n, d))).astype(np.float32)
        for i in range(count)
    ]


def timed(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def load() -> str:
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except OSError:
        return "n/a"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=10_000)
    p.add_argument("--dim", type=int, default=1024)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--map-images", type=int, default=2000)
    p.add_argument("--map-dim", type=int, default=512)
    p.add_argument("--blocks", type=int, default=13)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    a = p.parse_args(argv)
    if a.quick:
        a.images, a.dim, a.map_images, a.map_dim, a.blocks, a.repeats = 1500, 128, 300, 64, 4, 1
    rng = np.random.default_rng(0)
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__} with {torch.get_num_threads()} threads"
    )

    # 1. one large CKNNA
    x, y = sources(rng, 2, a.images, a.dim)
    graph_s, _ = timed(lambda: knn(x, a.k), a.repeats)
    load1 = load()
    total_s, value = timed(lambda: cknna(x, y, a.k), a.repeats)
    met = "MET" if total_s < TARGET_S else "MISSED"
    print(
        f"[1] CKNNA {a.images:,} x {a.dim:,} (k={a.k}): {total_s:.2f} s (median of {a.repeats}; "
        f"one k-NN graph {graph_s:.2f} s) target < {TARGET_S:.0f} s: {met}; value {value:.4f}; "
        f"load average {load1}"
    )

    # 2. a block x block map, batched vs one call per cell
    rows = sources(rng, a.blocks, a.map_images, a.map_dim)
    cols = sources(rng, a.blocks, a.map_images, a.map_dim)
    batched_s, maps = timed(
        lambda: alignment_map(rows, cols, ("cknna",), k=a.k, n_boot=0), a.repeats
    )
    naive_s, naive = timed(lambda: naive_map(rows, cols, "cknna", a.k), 1)
    gap = float(np.nanmax(np.abs(maps["cknna"].value - naive)))
    print(
        f"[2] {a.blocks}x{a.blocks} CKNNA map, {a.map_images:,} images x {a.map_dim} features "
        f"(k={a.k}): batched {batched_s:.2f} s, one call per cell {naive_s:.2f} s: "
        f"{naive_s / batched_s:.1f}x faster; largest difference {gap:.1e}; load average {load()}"
    )
    every_s, _ = timed(
        lambda: alignment_map(rows, cols, ("cka", "cknna", "mutual_knn"), k=a.k, n_boot=100), 1
    )
    print(
        f"[2b] the same map, CKA + CKNNA + mutual k-NN with 100-resample intervals: {every_s:.2f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
