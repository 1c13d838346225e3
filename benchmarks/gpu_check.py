"""Figure 8: extraction throughput on a GPU against the card's dense bf16 peak (issue 11, point 5).

For the ADM-256 layout (guided-diffusion's imagenet256-uncond preset as a diffusers
`UNet2DModel`, random weights built on the device) and the google/ddpm-cifar10-32 layout:

- forward to the cut block (ADM: block 24; CIFAR: its deepest, 25) through the project's
  early-exit capture with no pooling, and through a bare cut forward (a plain hook that
  raises): images/s, and TFLOP/s from `torch.utils.flop_counter` on one batch;
- end to end: `ensure_features` for every block at one t into a temporary store, against
  the bare forward to the deepest block (the same pass without capture, noise or writes);
- compiled features against eager ones (worst per-image cosine similarity over all blocks).

All in bf16 autocast with channels_last, batches sized to fill the card, eager and with
`--compile` (`explorer.models.accel`). About 6 minutes on an H100 from a cold compile cache.

    python -m benchmarks.gpu_check [--quick] [--compile both|on|off] [--peak TFLOPS]
    python benchmarks/gpu_check.py --device cpu --quick     # CPU smoke of the same code (tiny)
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

if __package__ in (None, ""):  # run as a script: make `benchmarks` and `explorer` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from explorer.data.base import ImageDataset
from explorer.defaults import DEFAULT_POOL
from explorer.features.capture import _StopForward, capture
from explorer.features.extract import ensure_features
from explorer.features.keys import Selection
from explorer.features.store import FeatureStore
from explorer.models import accel
from explorer.models.layers import build_catalogue
from explorer.models.loader import LoadedModel

T = 90  # the one timestep measured
FORWARD_SHARE = 0.40  # target: achieved / dense bf16 peak
E2E_RATIO = 0.8  # target: ensure_features / bare forward to the deepest block
# dense bf16 tensor-core peaks, TFLOP/s (vendor datasheets, no sparsity); first match wins
PEAKS = (
    ("H100 PCIe", 756.0),
    ("H100", 989.0),  # SXM (and GH200's H100)
    ("H200", 989.0),
    ("A100", 312.0),
    ("L40S", 362.0),
)

TINY = dict(  # CPU smoke only: numbers mean nothing
    sample_size=16,
    in_channels=3,
    out_channels=3,
    block_out_channels=(32, 64),
    down_block_types=("DownBlock2D", "AttnDownBlock2D"),
    up_block_types=("AttnUpBlock2D", "UpBlock2D"),
    layers_per_block=1,
    norm_num_groups=8,
    attention_head_dim=8,
)
DDPM_CIFAR10_32 = dict(  # google/ddpm-cifar10-32's config.json, its values
    sample_size=32,
    in_channels=3,
    out_channels=3,
    block_out_channels=(128, 256, 256, 256),
    down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    layers_per_block=2,
    act_fn="silu",
    attention_head_dim=None,
    center_input_sample=False,
    downsample_padding=0,
    flip_sin_to_cos=False,
    freq_shift=1,
    mid_block_scale_factor=1,
    norm_eps=1e-6,
    norm_num_groups=32,
    time_embedding_type="positional",
)


def adm256_config() -> dict:
    """The converter's UNet2DModel config for guided-diffusion's imagenet256-uncond."""
    from explorer.models.convert.adm import diffusers_config
    from explorer.models.convert.adm_presets import preset

    return diffusers_config(preset("imagenet256-uncond"))


@dataclass(frozen=True)
class Layout:
    key: str
    name: str
    config: dict
    cut: int | None  # 1-based block of the forward figure; None: the deepest
    max_batch: int  # cap of the memory-sized batch
    images: int  # end-to-end images (rounded to whole batches)


def layouts(device: torch.device, quick: bool) -> list[Layout]:
    if device.type != "cuda":
        return [Layout("tiny", "tiny U-Net (CPU smoke)", TINY, 4, 8, 16)]
    return [
        Layout("adm256", "ADM-256", adm256_config(), 24, 32 if quick else 128, 256 if quick else 2048),
        Layout("cifar32", "ddpm-cifar10-32", DDPM_CIFAR10_32, None, 512 if quick else 4096,
               4096 if quick else 65536),
    ]  # fmt: skip


def peak_tflops(device: torch.device, given: float | None) -> float | None:
    """The card's dense bf16 peak: `given`, else by device name; None when unknown (or CPU)."""
    if given:
        return given
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAKS if k in name), None)


def build(layout: Layout, device: torch.device) -> LoadedModel:
    """A LoadedModel of `layout` with random weights made on `device` (eval mode, no prepare)."""
    from diffusers import DDPMScheduler, UNet2DModel

    torch.manual_seed(0)
    with torch.device(device):
        unet = UNet2DModel.from_config(layout.config).eval()
    extra = {"precision": "bf16" if device.type == "cuda" else "fp32"}
    fields = {f.name for f in dataclasses.fields(LoadedModel)}
    return LoadedModel(
        f"random:{layout.key}",
        unet,
        DDPMScheduler(num_train_timesteps=1000),
        f"gpu-check-{layout.key}",
        "random",
        **{k: v for k, v in extra.items() if k in fields},
    )


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rate(fn, batch: int, device: torch.device, seconds: float) -> float:
    """Images/s of `fn` (one batch per call): warm-up, then enough calls to fill `seconds`."""
    fn()
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    calls = max(2, math.ceil(seconds / max(time.perf_counter() - t0, 1e-6)))
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    sync(device)
    return calls * batch / (time.perf_counter() - t0)


class Passes:
    """The three forward passes of one model on one batch `x_t (B, C, H, W)` at t=T."""

    def __init__(self, model: LoadedModel, x0: torch.Tensor, device: torch.device):
        self.net, self.device = model.denoiser, device
        self.cat = build_catalogue(model.denoiser)
        self.t = torch.full((len(x0),), T, dtype=torch.long, device=device)
        noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1)).to(device)
        self.xt = model.scheduler.add_noise(x0.to(device), noise, self.t)
        if device.type == "cuda":
            self.xt = self.xt.contiguous(memory_format=torch.channels_last)
        self.ac = torch.bfloat16 if device.type == "cuda" else None

    def _ctx(self):
        if self.ac is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.ac)

    def bare(self, block: int) -> None:
        """The net run until block `block`'s module returns (a plain hook raises there)."""
        module = self.net.get_submodule(self.cat[block - 1].hook)

        def stop(*_):
            raise _StopForward

        handle = module.register_forward_hook(stop)
        try:
            with torch.inference_mode(), self._ctx(), contextlib.suppress(_StopForward):
                self.net(self.xt, self.t)
        finally:
            handle.remove()

    def captured(self, block: int) -> None:
        """The project's capture of block `block` with early exit and no pooling work."""
        lay = self.cat[block - 1]
        with (
            torch.inference_mode(),
            capture(self.net, [lay], []),
            self._ctx(),
            contextlib.suppress(_StopForward),
        ):
            self.net(self.xt, self.t)

    def features(self) -> dict:
        """Every block pooled 2x2, as float32 on the host (for the eager/compiled comparison)."""
        with (
            torch.inference_mode(),
            capture(self.net, self.cat, ["2"]) as store,
            self._ctx(),
            contextlib.suppress(_StopForward),
        ):
            self.net(self.xt, self.t)
        return {k: v.float().cpu() for k, v in store.items()}

    def flops(self, block: int) -> float:
        """FLOPs of the bare cut forward on this batch (matmuls, convolutions, attention)."""
        from torch.utils.flop_counter import FlopCounterMode

        counter = FlopCounterMode(display=False)
        with counter:
            self.bare(block)
        return float(counter.get_total_flops())


def fit_batch(model: LoadedModel, layout: Layout, device: torch.device) -> int:
    """The largest power-of-two batch (up to `layout.max_batch`) whose full pass uses at most
    ~60% of the free device memory, from the peak of a 4-image pass."""
    if device.type != "cuda":
        return layout.max_batch
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    probe = Passes(model, synthetic_x0(model, 4), device)
    probe.bare(len(probe.cat))
    per_image = (torch.cuda.max_memory_allocated(device) - base) / 4
    free, _ = torch.cuda.mem_get_info(device)
    fit = int(0.6 * free / max(per_image, 1.0))
    return max(1, min(layout.max_batch, 2 ** int(math.log2(max(fit, 1)))))


def synthetic_x0(model: LoadedModel, n: int) -> torch.Tensor:
    c, s = model.adapter.image_channels, model.resolution
    return torch.rand(n, c, s, s, generator=torch.Generator().manual_seed(0)) * 2 - 1


def synthetic_dataset(model: LoadedModel, n: int) -> ImageDataset:
    """`n` random uint8 images at the model's size, in memory, all in "train"."""
    rng = np.random.default_rng(0)
    s, c = model.resolution, model.adapter.image_channels
    labels = (np.arange(n) % 10).astype(np.int64)
    return ImageDataset(
        name=f"synthetic-{n}",
        labels=labels,
        class_names=[str(i) for i in range(10)],
        splits={"train": np.arange(n, dtype=np.int64), "test": np.arange(0, dtype=np.int64)},
        fingerprint=f"gpu-check-synthetic-{s}-{c}-{n}",
        array=rng.integers(0, 256, (n, s, s, c), dtype=np.uint8),
        source="benchmarks/gpu_check.py",
    )


def end_to_end(model: LoadedModel, ds: ImageDataset, batch: int, root: Path) -> float:
    """Images/s of `ensure_features` for every block at t=T (pool DEFAULT_POOL) into the new
    store `root`; every entry must be computed here (none served from a cache)."""
    cat = build_catalogue(model.denoiser)
    sel = Selection.of(ds, "train")
    store = FeatureStore(root)
    sync(next(model.denoiser.parameters()).device)
    t0 = time.perf_counter()
    report = ensure_features(
        model, ds, sel, timesteps=[T], layers=cat, pools=[DEFAULT_POOL], store=store,
        batch_size=batch, progress=False,
    )  # fmt: skip
    seconds = time.perf_counter() - t0
    if report.computed != len(cat):
        raise RuntimeError(f"{report.computed} of {len(cat)} entries computed: not a cold store")
    return len(sel.indices) / seconds


def worst_cosine(a: dict, b: dict) -> float:
    return min(torch.nn.functional.cosine_similarity(a[k], b[k], dim=1).min().item() for k in a)


def measure(
    layout: Layout,
    device: torch.device,
    *,
    compiled: bool,
    peak: float | None,
    quick: bool,
    root: Path,
    backend: str = "inductor",
    reference: dict | None = None,
    seconds: float | None = None,
    log=print,
) -> tuple[list[dict], dict]:
    """Rows of one layout in one mode, and its features (the eager ones are the reference)."""
    started = time.perf_counter()
    model = build(layout, device)
    batch = fit_batch(model, layout, device)
    passes = Passes(model, synthetic_x0(model, batch), device)
    deepest = len(passes.cat)
    cut = layout.cut or deepest
    flops = passes.flops(cut) / batch  # eager and uncompiled: the counter sees every op
    accel.prepare(model.denoiser, device, compile=compiled, backend=backend)
    if device.type == "cuda":
        passes.xt = passes.xt.contiguous(memory_format=torch.channels_last)
    seconds = seconds or (0.5 if quick else 2.0)  # timed per rate
    warm = time.perf_counter()
    feats = passes.features()  # compiles every unit at this batch size
    passes.captured(cut)
    first = time.perf_counter() - warm  # with --compile: the compile, from a cold or warm cache
    log(f"  {layout.name} {'compiled' if compiled else 'eager'}: batch {batch}, "
        f"first passes {time.perf_counter() - warm:.1f}s")  # fmt: skip
    cap = rate(lambda: passes.captured(cut), batch, device, seconds)
    bare = rate(lambda: passes.bare(cut), batch, device, seconds)
    full = rate(lambda: passes.bare(deepest), batch, device, seconds)
    n = max(batch, layout.images // batch * batch)
    ds = synthetic_dataset(model, n)
    small = synthetic_dataset(model, batch)
    mode = "compiled" if compiled else "eager"
    end_to_end(model, small, batch, root / f"{layout.key}-{mode}-warm")  # the store path, noise
    e2e = end_to_end(model, ds, batch, root / f"{layout.key}-{mode}")
    tf_cap, tf_bare = cap * flops / 1e12, bare * flops / 1e12
    target = (
        f">= {FORWARD_SHARE * peak:.0f} ({FORWARD_SHARE:.0%} of {peak:.0f} peak)"
        if peak
        else "40% of peak (unknown card: pass --peak)"
    )
    share = f" ({tf_cap / peak:.0%} of peak)" if peak else ""
    fig = {"adm256": ("8a", "8b"), "cifar32": ("8c", "8d")}.get(layout.key, ("8a", "8b"))
    rows = [
        _row(
            fig[0],
            f"{layout.name} to block {cut}, capture ({mode})",
            tf_cap,
            "TFLOP/s",
            target,
            None if not peak else tf_cap >= FORWARD_SHARE * peak,
            f"{cap:,.0f} img/s{share}; bare cut {bare:,.0f} img/s ({tf_bare:.1f} TFLOP/s); "
            f"batch {batch}, {flops / 1e9:.1f} GFLOP/img by flop_counter; first passes "
            f"{first:.0f}s",
        ),
        _row(
            fig[1],
            f"{layout.name} ensure_features, {deepest} blocks at t={T} vs forward-only ({mode})",
            e2e / full,
            "x",
            f">= {E2E_RATIO}",
            e2e / full >= E2E_RATIO,
            f"{e2e:,.0f} img/s end to end ({n} images, pool {DEFAULT_POOL}) vs bare forward to "
            f"block {deepest} {full:,.0f} img/s; batch {batch}",
        ),
    ]
    if reference is not None:
        cos = worst_cosine(reference, feats)
        rows.append(
            _row(
                "8e",
                f"{layout.name} compiled vs eager features, {deepest} blocks",
                cos,
                "cosine",
                ">= 0.999",
                cos >= 0.999,
                "worst per-image cosine similarity, pool 2, one batch",
            )
        )
    log(f"  {layout.name} {mode}: done in {time.perf_counter() - started:.0f}s")
    return rows, feats


def _row(fig, name, value, unit, target, met, note) -> dict:
    return {"figure": fig, "name": name, "value": value, "unit": unit, "target": target,
            "met": met, "note": note}  # fmt: skip


def run(
    device: torch.device,
    *,
    quick: bool = False,
    modes: tuple[bool, ...] = (False, True),
    peak: float | None = None,
    backend: str = "inductor",
    seconds: float | None = None,
    log=print,
) -> list[dict]:
    """Every row of figure 8 on `device` (a tiny layout on the CPU: a smoke run)."""
    peak = peak_tflops(device, peak)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        for layout in layouts(device, quick):
            reference = None
            for compiled in modes:
                got, feats = measure(
                    layout, device, compiled=compiled, peak=peak, quick=quick,
                    root=Path(tmp), backend=backend, seconds=seconds, log=log,
                    reference=reference if compiled else None,
                )  # fmt: skip
                reference = reference or (None if compiled else feats)
                rows += got
                if device.type == "cuda":
                    torch.cuda.empty_cache()  # the model is gone: free its blocks for the next
    return rows


def figures(quick: bool = False) -> list[dict]:
    """Figure 8's rows on the first CUDA device (`python -m benchmarks` calls this)."""
    if not torch.cuda.is_available():
        return [_row("8", "GPU throughput", None, "", "point 5", None, "no CUDA device here")]
    return run(torch.device("cuda"), quick=quick)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu (smoke)")
    ap.add_argument("--quick", action="store_true", help="smaller batches and sets")
    ap.add_argument("--compile", choices=("both", "on", "off"), default="both")
    ap.add_argument("--peak", type=float, default=None, help="dense bf16 TFLOP/s of the card")
    ap.add_argument("--backend", default="inductor", help=argparse.SUPPRESS)  # tests: aot_eager
    a = ap.parse_args(argv)
    device = torch.device(a.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device here; use --device cpu --quick for a smoke run", file=sys.stderr)
        return 2
    modes = {"both": (False, True), "on": (True,), "off": (False,)}[a.compile]
    started = time.perf_counter()
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"{gpu}, torch {torch.__version__}, peak {peak_tflops(device, a.peak) or 'unknown'}")
    rows = run(device, quick=a.quick, modes=modes, peak=a.peak, backend=a.backend)
    for r in rows:
        met = {True: "MET", False: "MISSED", None: "-"}[r["met"]]
        value = "n/a" if r["value"] is None else f"{r['value']:,.3g}"
        print(f"{r['figure']:>3}  {r['name']}: {value} {r['unit']}  [{r['target']}] {met}")
        print(f"     {r['note']}")
    print(f"total {time.perf_counter() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
