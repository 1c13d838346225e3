"""The README's "Reproduce the paper" recipe, end to end at toy scale on CPU.

Builds a reduced-width ADM checkpoint with the 256 model's structure (random non-zero weights,
saved as guided-diffusion saves a state dict, via the tests' independent reference), an
ImageNet-shaped ImageFolder (`train/`, `val/`, a `train.txt` subset list) from built-in images,
then runs the recipe's commands and times each:

    python benchmarks/recipe_small.py --out /tmp/recipe --images 300

Prints a Markdown table: command, seconds, cache size after it. Everything is written under
`--out` (the feature cache too), nothing elsewhere.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# reduced width (32 channels instead of 256), 64x64 input, the 256 model's levels and attention sides
FLAGS = (
    "--image-size 64 --num-channels 32 --channel-mult 1,1,2,2,4,4 --attention-resolutions 8,4,2 "
    "--num-head-channels 16"
)


def build_checkpoint(path: Path) -> int:
    """A guided-diffusion-style state dict of the reduced ADM, every parameter random non-zero."""
    import torch

    sys.path.insert(0, str(ROOT))
    from tests.convert.adm_reference import ADMReference, randomise

    model = ADMReference(32, (1, 1, 2, 2, 4, 4), 2, (8, 16, 32), num_head_channels=16)
    randomise(model)
    torch.save(model.state_dict(), path)
    return sum(p.numel() for p in model.parameters())


def build_folder(root: Path, n: int, seed: int = 0) -> str:
    """`root/{train,val}/<class>/*.png` from built-in images (Fashion-MNIST if present, else digits)
    and `root/train.txt` listing half of train (the "1%/10% subset" list). Returns the source name."""
    from PIL import Image

    from explorer.data import load_dataset

    try:
        ds = load_dataset("fashion-mnist")
    except Exception:  # noqa: BLE001 - not installed here: the always-present digits
        ds = load_dataset("digits")
    rng = np.random.default_rng(seed)
    listed = []
    for split, count in (("train", n), ("val", max(n // 4, 10))):
        idx = rng.choice(ds.splits["train" if split == "train" else "test"], count, replace=False)
        for i in idx:
            img = np.asarray(ds.images([int(i)])[0])
            cls = ds.class_names[int(ds.labels[int(i)])].replace("/", "-").replace(" ", "_")
            out = root / split / cls / f"{split}_{int(i)}.png"
            out.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img.squeeze().astype(np.uint8)).convert("RGB").save(out)
            if split == "train" and len(listed) < n // 2:
                listed.append(f"{cls}/{out.name}")
    (root / "train.txt").write_text("\n".join(listed) + "\n")
    return ds.name


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="/tmp/recipe_small")
    ap.add_argument(
        "--images", type=int, default=300, help="train images in the folder (val: a quarter)"
    )
    ap.add_argument("--timesteps", default="10,90,150,400", help="for the block x t figure")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "EXPLORER_CACHE": str(out / "cache")}
    t0 = time.perf_counter()
    n_params = build_checkpoint(out / "adm_small.pt")
    src = build_folder(out / "imagenet_small", a.images)
    print(
        f"built {n_params / 1e6:.2f}M-parameter checkpoint and a folder from {src} "
        f"in {time.perf_counter() - t0:.1f}s",
        flush=True,
    )
    m, d = out / "adm_small", out / "imagenet_small"
    common = f"--model {m} --dataset {d} --batch-size 64"
    commands = [
        f"explorer convert adm {out / 'adm_small.pt'} --out {m} {FLAGS} --overwrite",
        f"explorer layers --model {m}",
        f"explorer datasets {d}",
        f"explorer sweep {common} --timesteps 150 --layers 24 --pools 2 --heads linear --no-baselines "
        f"--out {out / 'probe24.csv'}",
        f"explorer sweep {common} --timesteps {a.timesteps} --layers all --pools 2 --heads linear "
        f"--out {out / 'grid.csv'}",
        f"explorer report --sweep {out / 'grid.csv'} --out {out / 'grid.html'}",
        f"explorer sweep {common} --timesteps 150 --layers 24 --pools map16 --heads attention-paper:epochs=5 "
        f"--no-baselines --out {out / 'attention24.csv'}",
        f"explorer sweep {common} --timesteps 90,150 --layers 19,24 --pools 2 --heads linear,fusion:epochs=5 "
        f"--no-baselines --fuse 24@150+19@90 --out {out / 'fused.csv'}",
    ]
    print("| command | seconds | cache after |\n|---|---:|---:|")
    for cmd in commands:
        t = time.perf_counter()
        r = subprocess.run(shlex.split(cmd), env=env, capture_output=True, text=True)
        secs = time.perf_counter() - t
        if r.returncode:
            print(r.stdout[-2000:], r.stderr[-2000:], file=sys.stderr)
            raise SystemExit(f"failed ({r.returncode}): {cmd}")
        short = cmd.replace(str(out) + "/", "")
        print(f"| `{short}` | {secs:.1f} | {du(out / 'cache') / 1e6:.1f} MB |", flush=True)
        if "probe24" in cmd or "fused" in cmd:
            print(
                "\n".join("  " + ln for ln in r.stdout.strip().splitlines()[-4:]), file=sys.stderr
            )


if __name__ == "__main__":
    main()
