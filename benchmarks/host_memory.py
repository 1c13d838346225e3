"""The host allocator tuning of CPU passes (`explorer.features.host_memory`) vs glibc's defaults, in one
run: full-pass time, page faults per pass and the early-exit time shares of figure 3.

Each side runs in its own interpreter (the tuning is process-wide and one-way), the two
alternating round by round so that a shared machine's load falls on both alike:

    python benchmarks/host_memory.py [--rounds 2] [--out benchmarks/results/host_memory_cpu.txt]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHILD = """
import json, resource
from explorer.features import host_memory
from benchmarks.common import Context
from benchmarks import extraction as E

tuned = host_memory.tune()  # does nothing under EXPLORER_HOST_MALLOC=system
ctx = Context()
cat = ctx.catalogue()
picks = [cat[len(cat) // 4], cat[len(cat) // 2], cat[len(cat) // 2 + 2], cat[(3 * len(cat)) // 4]]
shares, full_s, _ = E.early_exit_shares(ctx, picks, 3)
flt = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
E._ours(ctx, cat, stop_early=False)
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - flt
names = {lay.index: lay.name for lay in picks}
shares = {f"{k} {names[k]}": list(v) for k, v in shares.items()}
print(json.dumps({"tuned": tuned, "full_s": full_s, "faults": faults, "shares": shares}))
"""


def side(system: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "EXPLORER_HOST_MALLOC"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    if system:
        env["EXPLORER_HOST_MALLOC"] = "system"
    out = subprocess.run(
        [sys.executable, "-c", CHILD], env=env, cwd=ROOT, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=2, help="interpreters per side (default 2)")
    ap.add_argument("--out", default=None, help="also write the result here")
    a = ap.parse_args(argv)
    runs: dict[str, list[dict]] = {"tuned": [], "system": []}
    for _ in range(a.rounds):
        for name in runs:
            runs[name].append(side(name == "system"))
            r = runs[name][-1]
            print(
                f"{name:6} full pass {r['full_s']:.3f} s, {r['faults']:,} page faults", flush=True
            )
    best = {name: min(rs, key=lambda r: r["full_s"]) for name, rs in runs.items()}
    t, s = best["tuned"], best["system"]
    lines = [
        f"date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"load average (1 min) at the end: {os.getloadavg()[0]:.1f}",
        f"command: python benchmarks/host_memory.py {' '.join(argv or sys.argv[1:])}".rstrip(),
        "built-in ddpm-fashion-mnist, 256 test images, t=90, every layer pooled 2, CPU",
        "",
        "| allocator | full pass (s, best) | page faults per pass | "
        + " | ".join(f"block {k.split()[0]}: time / FLOPs share" for k in t["shares"])
        + " |",
        "|---|---|---|" + "---|" * len(t["shares"]),
        *(
            f"| {label} | {r['full_s']:.3f} | {r['faults']:,} | "
            + " | ".join(f"{ts:.2f} / {fs:.2f}" for ts, fs in r["shares"].values())
            + " |"
            for label, r in (("glibc defaults", s), ("tuned (explorer.features.host_memory)", t))
        ),
        "",
        f"full pass: glibc defaults / tuned = {s['full_s'] / t['full_s']:.2f}x",
        "worst |time share - FLOPs share|: "
        f"defaults {max(abs(a - b) for a, b in s['shares'].values()):.2f}, "
        f"tuned {max(abs(a - b) for a, b in t['shares'].values()):.2f}",
    ]
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    if a.out:
        Path(a.out).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
