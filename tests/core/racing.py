"""Two processes started at one barrier on the same store: the harness the race tests share."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np


def race_two_workers(
    script: str, model_dir: Path, dataset, store_dir: Path, tmp_path: Path
) -> list[dict]:
    """Run `script` in 2 processes (`argv`: model dir, store dir, dataset .npz, barrier dir, name)
    and return each one's last stdout line as JSON; a worker failure fails the test."""
    data = tmp_path / "data.npz"
    np.savez(
        data,
        images=dataset.array,
        labels=dataset.labels,
        train=dataset.splits["train"],
        test=dataset.splits["test"],
        fp=dataset.fingerprint,
    )
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    env = dict(os.environ, OMP_NUM_THREADS="1")
    args = [str(model_dir), str(store_dir), str(data), str(barrier)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, *args, name],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for name in ("a", "b")
    ]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=240)
        assert p.returncode == 0, f"worker failed:\n{err[-3000:]}"
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results
