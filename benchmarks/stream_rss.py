"""Figure 3b: peak memory while extracting a 50,000-image 256x256 ImageFolder (issue 11.3).

The script writes a synthetic ImageFolder into a temporary folder: 10 class folders of smooth
random 256x256 RGB JPEGs (an 8x8 random image bicubically enlarged, quality 90, ~10 kB each).
It saves a small random `UNet2DModel` with a 256x256 input (3 channels, blocks of 8 and 16
channels, one resnet per block; the model is not what is measured) and a DDPM scheduler, loads
it on the CPU, and records the process tree's resident memory. Then it runs the real path:
`load_dataset(FOLDER)` (the scan: verify and hash every file) and `Workspace.extract_grid`
-> `ensure_features` at t=10, layer 1 (`conv_in`: the pass exits right after it, so the CPU
time goes to reading the images and making the noise) and pool 2, on both splits, batch 32,
with the default `--workers` (DataLoader processes decoding the JPEGs). A thread samples, every 50 ms, the memory of the whole process tree (this process,
the fork server, the workers) from /proc:
- RSS: the sum of VmRSS over the tree. It counts pages shared between processes (torch's
  libraries in each worker, a batch in shared memory) once per process, so it over-states;
- PSS: the sum of Pss (shared pages split between their sharers): the tree's real footprint.
The figure is the conservative one: peak tree RSS minus the RSS after the model was loaded.

    python -m benchmarks.stream_rss                   # 50,000 images
    python -m benchmarks.stream_rss --images 5000     # smaller, same path
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a file: this checkout's `explorer`
    sys.path.insert(0, str(ROOT))

IMAGES = 50_000
SIZE = 256
CLASSES = 10
BATCH = 32
TARGET_GB = 2.0
UNET = dict(
    sample_size=SIZE,
    in_channels=3,
    out_channels=3,
    block_out_channels=(8, 16),
    down_block_types=("DownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "UpBlock2D"),
    layers_per_block=1,
    norm_num_groups=4,
)
LAYER = "1"  # conv_in: the pass stops there


def write_folder(root: Path, n: int, seed: int = 0) -> Path:
    """`n` smooth random SIZE x SIZE RGB JPEGs in CLASSES class folders under `root`."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for c in range(CLASSES):
        (root / f"class{c}").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        small = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
        im = small.resize((SIZE, SIZE), Image.Resampling.BICUBIC)
        im.save(root / f"class{i % CLASSES}" / f"{i:06d}.jpg", quality=90)
    return root


def _children() -> dict[int, list[int]]:
    """ppid -> pids, for every process visible in /proc."""
    out: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        out.setdefault(ppid, []).append(int(d))
    return out


def _tree(pid: int) -> list[int]:
    kids, out, todo = _children(), [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += kids.get(p, [])
    return out


def _field_kb(path: str, name: str) -> int:
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(name):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0  # the process ended meanwhile


def tree_memory(pid: int | None = None) -> tuple[int, int, int]:
    """(summed RSS bytes, summed PSS bytes, processes) of `pid` (default: this one) and its descendants."""
    pids = _tree(pid or os.getpid())
    rss = sum(_field_kb(f"/proc/{p}/status", "VmRSS:") for p in pids)
    pss = sum(_field_kb(f"/proc/{p}/smaps_rollup", "Pss:") for p in pids)
    return rss * 1024, pss * 1024, len(pids)


class Sampler(threading.Thread):
    """Samples `tree_memory()` every `every` seconds; keeps the peaks (and prints them to
    stderr every `report` seconds, over `base` bytes, so a long run shows where it stands)."""

    def __init__(self, every: float = 0.05, base: int = 0, report: float = 60.0):
        super().__init__(daemon=True)
        self.every, self.base, self.report = every, base, report
        self.stopped = threading.Event()
        self.peak_rss = self.peak_pss = self.peak_procs = self.samples = 0

    def run(self) -> None:
        t0 = last = time.monotonic()
        while not self.stopped.is_set():
            rss, pss, procs = tree_memory()
            self.peak_rss, self.peak_pss = max(self.peak_rss, rss), max(self.peak_pss, pss)
            self.peak_procs, self.samples = max(self.peak_procs, procs), self.samples + 1
            if time.monotonic() - last > self.report:
                last = time.monotonic()
                print(
                    f"{last - t0:.0f} s: peak tree RSS +{(self.peak_rss - self.base) / 1e9:.2f} GB "
                    f"over the model, {procs} processes",
                    file=sys.stderr,
                    flush=True,
                )
            self.stopped.wait(self.every)

    def stop(self) -> None:
        self.stopped.set()
        self.join()


def measure(images: int = IMAGES, workers: int | None = None, keep: Path | None = None) -> dict:
    """Run the extraction and return the measurements (bytes, seconds)."""
    tmp = Path(tempfile.mkdtemp(prefix="stream-rss-"))
    old_cache = os.environ.get("EXPLORER_CACHE")
    os.environ["EXPLORER_CACHE"] = str(tmp / "cache")  # the scan cache too, never the user's
    try:
        import torch
        from diffusers import DDPMScheduler, UNet2DModel

        from explorer.data import load_dataset
        from explorer.features.store import FeatureStore
        from explorer.features.streaming import default_workers
        from explorer.models.loader import load_model
        from explorer.workspace import Workspace

        t0 = time.perf_counter()
        folder = keep if keep is not None else tmp / "folder"
        if not (folder / "class0").is_dir():
            write_folder(folder, images)
        made = time.perf_counter() - t0
        torch.manual_seed(0)
        UNet2DModel(**UNET).save_pretrained(tmp / "model")
        DDPMScheduler(num_train_timesteps=1000).save_pretrained(tmp / "model")
        model = load_model(str(tmp / "model"), device=torch.device("cpu"))
        base_rss, base_pss, _ = tree_memory()
        sampler = Sampler(base=base_rss)
        sampler.start()
        t1 = time.perf_counter()
        try:
            ds = load_dataset(str(folder))
            scanned = time.perf_counter() - t1
            after_scan = tree_memory()[0]
            ws = Workspace(
                model,
                ds,
                store=FeatureStore(tmp / "cache"),
                batch_size=BATCH,
                device="cpu",
                workers=workers,
            )
            t2 = time.perf_counter()
            out = ws.extract_grid([10], LAYER, "2", [0], ["train", "test"])
            extracted = time.perf_counter() - t2
        finally:
            sampler.stop()
        n = sum(out.images.values())
        return {
            "images": n,
            "workers": default_workers(ds) if workers is None else workers,
            "base_rss": base_rss,
            "base_pss": base_pss,
            "after_scan_rss": after_scan,
            "peak_rss": sampler.peak_rss,
            "peak_pss": sampler.peak_pss,
            "processes": sampler.peak_procs,
            "samples": sampler.samples,
            "generate_s": made,
            "scan_s": scanned,
            "extract_s": extracted,
            "computed": sum(r.computed for r in out.reports.values() if r is not None),
        }
    finally:
        if old_cache is None:
            os.environ.pop("EXPLORER_CACHE", None)
        else:
            os.environ["EXPLORER_CACHE"] = old_cache
        shutil.rmtree(tmp, ignore_errors=True)


def figure(
    images: int = IMAGES, quick: bool = False, workers: int | None = None, folder=None
) -> dict:
    """Figure 3b of BENCHMARKS.md: GB of peak tree RSS beyond the model while extracting."""
    m = measure(2_000 if quick else images, workers, folder)
    gb = 1e9
    over = (m["peak_rss"] - m["base_rss"]) / gb
    over_pss = (m["peak_pss"] - m["base_pss"]) / gb
    per_1k = m["extract_s"] / m["images"] * 1000
    return {
        "figure": "3b",
        "name": f"peak RSS extracting {m['images']:,} {SIZE}×{SIZE} images (ImageFolder)",
        "value": round(over, 3),
        "unit": "GB",
        "target": f"< {TARGET_GB:g} GB beyond the model",
        "met": over < TARGET_GB,
        "note": (
            f"peak RSS summed over the process tree ({m['processes']} processes at most: this "
            f"one, its resource tracker and fork server, {m['workers']} DataLoader workers), sampled every 50 ms, minus the "
            f"{m['base_rss'] / gb:.2f} GB after loading the model; PSS (shared pages split) "
            f"{over_pss:.2f} GB. Random UNet2DModel at 256×256 (blocks 8, 16 channels), early "
            f"exit at layer 1 (conv_in), t=10, pool 2, batch {BATCH}, on the "
            f"CPU; synthetic JPEGs (8×8 noise enlarged, ~10 kB). Scan {m['scan_s']:.0f} s "
            f"(RSS after it +{(m['after_scan_rss'] - m['base_rss']) / gb:.2f} GB), extraction "
            f"{m['extract_s']:.0f} s = {per_1k:.1f} s per 1,000 images"
        ),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=IMAGES, help=f"default {IMAGES:,}")
    ap.add_argument("--workers", type=int, default=None, help="default: explorer's default")
    ap.add_argument("--folder", type=Path, help="write the images here (kept) or reuse them")
    a = ap.parse_args(argv)
    fig = figure(a.images, workers=a.workers, folder=a.folder)
    print(json.dumps(fig, indent=1, ensure_ascii=False))
    return 0 if fig["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
