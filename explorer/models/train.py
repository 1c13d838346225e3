"""Train a small DDPM (epsilon prediction, linear betas, 1000 steps) on a dataset.

Checkpoints every N steps and resumes; keeps an EMA; saves with `save_pretrained`
(safetensors + config + scheduler config + `model_index.json`, so `DDPMPipeline` loads it) and
writes a `huggingface_hub` model card with a sample grid.
"""

from __future__ import annotations

import copy
import json
import math
import platform
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from explorer.atomic import atomic_write
from explorer.data import ImageDataset
from explorer.data.preprocess import Preprocess
from explorer.models.device import describe, resolve_device
from explorer.results import best_settings


@dataclass
class TrainConfig:
    steps: int = 2000
    batch_size: int = 128
    lr: float = 5e-4
    warmup: int = 100
    ema_decay: float = 0.995
    checkpoint_every: int = 100
    seed: int = 0
    flip: bool = True  # random horizontal flips (off for digits)
    size: int | None = None  # model resolution; default: the dataset's own (min 16)
    channels: int | None = None


def unet_config(size: int, channels: int) -> dict:
    """The built-in U-Net: 3 stages (32, 64, 128), one resnet each, attention at the lowest stage."""
    return dict(
        sample_size=size,
        in_channels=channels,
        out_channels=channels,
        block_out_channels=(32, 64, 128),
        down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        layers_per_block=1,
        norm_num_groups=16,
        attention_head_dim=32,
    )


def new_scheduler():
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        num_train_timesteps=1000, beta_schedule="linear", prediction_type="epsilon"
    )


@dataclass
class _State:
    """Everything a checkpoint holds: weights, EMA, optimiser, RNG and the loss history."""

    model: torch.nn.Module
    ema: torch.nn.Module
    opt: torch.optim.Optimizer
    gen: torch.Generator
    step: int = 0
    losses: list[float] = field(default_factory=list)
    elapsed: float = 0.0

    def save(self, path: Path) -> None:
        atomic_write(
            path,
            lambda tmp: torch.save(
                {
                    "model": self.model.state_dict(),
                    "ema": self.ema.state_dict(),
                    "opt": self.opt.state_dict(),
                    "gen": self.gen.get_state(),
                    "step": self.step,
                    "losses": self.losses,
                    "elapsed": self.elapsed,
                },
                tmp,
            ),
        )

    def resume(self, path: Path, device) -> None:
        state = torch.load(path, map_location=device, weights_only=True)
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.opt.load_state_dict(state["opt"])
        self.gen.set_state(state["gen"])
        self.step, self.losses, self.elapsed = (
            int(state["step"]),
            list(state["losses"]),
            float(state["elapsed"]),
        )


def _train_tensor(dataset: ImageDataset, prep: Preprocess) -> torch.Tensor:
    """The whole train split as model input `(N, C, H, W)` in [-1, 1] (small datasets only)."""
    idx = dataset.splits["train"]
    return torch.cat([prep(dataset.images(idx[i : i + 4096])) for i in range(0, len(idx), 4096)])


def _lr_at(cfg: TrainConfig, step: int) -> float:
    """Linear warm-up, then cosine decay to 0 at `cfg.steps`."""
    return (
        cfg.lr
        * min(1.0, (step + 1) / cfg.warmup)
        * 0.5
        * (1 + math.cos(math.pi * step / cfg.steps))
    )


def _train_step(st: _State, data: torch.Tensor, abar: torch.Tensor, cfg: TrainConfig, dev) -> float:
    """One epsilon-prediction step at uniform t in [0, T) plus the EMA update; returns the loss."""
    idx = torch.randint(0, len(data), (cfg.batch_size,), generator=st.gen)
    x0 = data[idx].to(dev)
    if cfg.flip and torch.rand((), generator=st.gen) < 0.5:  # horizontal flip augmentation
        x0 = x0.flip(-1)
    noise = torch.randn(x0.shape, generator=st.gen).to(dev)
    t = torch.randint(0, len(abar), (cfg.batch_size,), generator=st.gen).to(dev)
    a = abar[t].view(-1, 1, 1, 1)
    loss = F.mse_loss(st.model(a.sqrt() * x0 + (1 - a).sqrt() * noise, t).sample, noise)
    for g in st.opt.param_groups:
        g["lr"] = _lr_at(cfg, st.step)
    st.opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(st.model.parameters(), 1.0)
    st.opt.step()
    decay = min(cfg.ema_decay, (1 + st.step) / (10 + st.step))
    with torch.no_grad():
        for pe, pm in zip(st.ema.parameters(), st.model.parameters(), strict=True):
            pe.lerp_(pm, 1 - decay)
    st.step += 1
    st.losses.append(loss.item())
    return st.losses[-1]


def train(
    dataset: ImageDataset,
    out: str | Path,
    cfg: TrainConfig,
    *,
    device: str = "auto",
    command: str | None = None,
) -> Path:
    """Train on `dataset`'s train split into `out`, resuming from `out/checkpoint.pt` if present."""
    from diffusers import UNet2DModel

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dev = resolve_device(device)
    first = dataset.images(dataset.splits["train"][:1])[0]
    size = cfg.size or max(16, first.shape[0])
    channels = cfg.channels or first.shape[-1]
    data = _train_tensor(dataset, Preprocess(size, channels))

    torch.manual_seed(cfg.seed)
    model = UNet2DModel(**unet_config(size, channels)).to(dev)
    st = _State(
        model,
        copy.deepcopy(model).eval().requires_grad_(False),
        torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0),
        torch.Generator().manual_seed(cfg.seed),
    )
    sched = new_scheduler()
    abar = sched.alphas_cumprod.to(dev)  # (T,): t is drawn from the scheduler's own range
    ckpt = out / "checkpoint.pt"
    if ckpt.exists():
        st.resume(ckpt, dev)
        print(f"resuming from step {st.step} ({ckpt})", file=sys.stderr)

    model.train()
    bar = tqdm(total=cfg.steps, initial=st.step, desc="train", unit="step", dynamic_ncols=True)
    t0 = time.time() - st.elapsed
    while st.step < cfg.steps:
        _train_step(st, data, abar, cfg, dev)
        bar.update(1)
        bar.set_postfix(loss=f"{np.mean(st.losses[-50:]):.4f}")
        st.elapsed = time.time() - t0
        if st.step % cfg.checkpoint_every == 0 or st.step == cfg.steps:
            st.save(ckpt)
    bar.close()
    _finish(out, st, sched, dataset, cfg, dev, command, size, channels)
    ckpt.unlink(missing_ok=True)
    return out


def _finish(
    out: Path, st: _State, sched, dataset, cfg: TrainConfig, dev, command, size: int, channels: int
) -> None:
    """Save the EMA weights and scheduler (`save_pretrained`, with `model_index.json`), a sample
    grid and the model card."""
    st.ema.save_pretrained(out, safe_serialization=True)
    sched.save_pretrained(out)
    write_model_index(out)
    sample_grid(st.ema, sched, n=64, seed=cfg.seed, device=dev).save(out / "samples.png")
    final_loss = float(np.mean(st.losses[-100:])) if st.losses else float("nan")
    write_card(
        out,
        dataset,
        cfg,
        final_loss,
        st.elapsed,
        dev,
        command,
        size,
        channels,
        sum(p.numel() for p in st.ema.parameters()),
    )


@torch.inference_mode()
def sample_grid(unet, scheduler, n: int = 64, seed: int = 0, steps: int = 50, device=None):
    """Draw `n` samples with DDIM (`steps` steps, same betas) and tile them into a PIL image."""
    from diffusers import DDIMScheduler
    from PIL import Image

    device = device or next(unet.parameters()).device
    ddim = DDIMScheduler.from_config(scheduler.config)
    ddim.set_timesteps(steps)
    c, s = unet.config.in_channels, unet.config.sample_size
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((n, c, s, s), generator=g).to(device)
    for t in ddim.timesteps:
        eps = unet(x, t.to(device)).sample
        x = ddim.step(eps, t, x).prev_sample
    imgs = ((x.clamp(-1, 1) + 1) * 127.5).round().byte().cpu().permute(0, 2, 3, 1).numpy()
    cols = int(math.ceil(math.sqrt(n)))
    rows = int(math.ceil(n / cols))
    canvas = np.zeros((rows * s, cols * s, c), dtype=np.uint8)
    for i, im in enumerate(imgs):
        r, q = divmod(i, cols)
        canvas[r * s : (r + 1) * s, q * s : (q + 1) * s] = im
    mode = "L" if c == 1 else "RGB"
    img = Image.fromarray(canvas[..., 0] if c == 1 else canvas, mode=mode)
    return img.resize((cols * s * 3, rows * s * 3), Image.NEAREST)


HUB_DATASETS = {
    "fashion-mnist": "zalando-datasets/fashion_mnist"
}  # hub ids for the card's `datasets`
PIPELINE_INDEX = {
    "_class_name": "DDPMPipeline",
    "scheduler": ["diffusers", "DDPMScheduler"],
    "unet": ["diffusers", "UNet2DModel"],
}


def write_model_index(out: Path) -> Path:
    """`model_index.json` for the flat layout (config.json and scheduler_config.json at the top),
    so `DDPMPipeline.from_pretrained(out)` loads the U-Net and the scheduler from `out` itself."""
    import diffusers

    return atomic_write(
        out / "model_index.json",
        json.dumps({**PIPELINE_INDEX, "_diffusers_version": diffusers.__version__}, indent=2)
        + "\n",
    )


def write_card(
    out: Path,
    dataset: ImageDataset,
    cfg: TrainConfig,
    final_loss: float,
    seconds: float,
    device,
    command: str | None,
    size: int,
    channels: int,
    params: int,
) -> None:
    """Write training.json and README.md (model card) beside the weights."""
    info = {
        "dataset": dataset.name,
        "dataset_fingerprint": dataset.fingerprint,
        "train_images": int(len(dataset.splits["train"])),
        "resolution": size,
        "channels": channels,
        "parameters": params,
        "final_loss": round(final_loss, 5),
        "train_seconds": round(seconds, 1),
        "hardware": f"{describe(device)}; {platform.processor() or platform.machine()}",
        "torch": torch.__version__,
        "command": command or "",
        "config": asdict(cfg),
    }
    atomic_write(out / "training.json", json.dumps(info, indent=2))
    atomic_write(out / "README.md", str(model_card(info)))


def sweep_results(table, model: str, head: str = "linear") -> list:
    """`EvalResult`s for a card: `model`'s test top-1 with `head` at the setting best on
    validation (`explorer.results.best_settings`) in a sweep's results table; [] if absent."""
    from huggingface_hub import EvalResult

    best = best_settings(table[(table["model"] == model) & (table["head"] == head)])
    best = best[best["selected_by"] == "validation"]
    if best.empty:
        return []
    r = best.iloc[0]
    ds = str(r["dataset"])
    where = f"t={int(r['t'])}, block {int(r['layer_index'])} ({r['layer']}), pool {r['pool']}"
    return [
        EvalResult(
            task_type="image-classification",
            task_name=f"{head} probe on U-Net features",
            dataset_type=HUB_DATASETS.get(ds, ds),
            dataset_name=ds,
            dataset_split="test",
            metric_type="accuracy",
            metric_value=round(float(r["top1"]), 4),
            metric_name=f"{head} probe top-1 at {where} (chosen on validation)",
        )
    ]


def model_card(info: dict, table=None, model: str | None = None):
    """A `huggingface_hub.ModelCard` from training.json's `info`: YAML metadata (license,
    library, dataset, tags, and a model-index from a sweep `table` for `model`) and the body."""
    from huggingface_hub import ModelCard, ModelCardData

    name, c = info["dataset"], info["config"]
    results = sweep_results(table, model) if table is not None and model else []
    data = ModelCardData(
        license="mit",
        library_name="diffusers",
        datasets=[HUB_DATASETS.get(name, name)],
        tags=[
            "diffusers",
            "ddpm",
            "unconditional-image-generation",
            "representation-learning",
            "diffusion-feature-explorer",
        ],
        pipeline_tag="unconditional-image-generation",
        model_name=model or f"ddpm-{name}",
        eval_results=results or None,
    )
    size, ch = info["resolution"], info["channels"]
    flips = ", random horizontal flips" if c.get("flip") else ""
    probe = ""
    if results:
        r = results[0]
        probe = f"\n| {r.task_name} | {100 * r.metric_value:.2f}%: {r.metric_name}, from the explorer's sweep |"
    body = f"""
# DDPM on {name}

A small unconditional DDPM (diffusers `UNet2DModel`, epsilon prediction, linear betas,
1000 steps) trained by Diffusion Feature Explorer for its offline demo. Load it with
`DDPMPipeline.from_pretrained(folder)` or `explorer --model folder`.

| | |
|---|---|
| data | {name} train split, {info["train_images"]} images at {size}x{size}x{ch}{flips} |
| parameters | {info["parameters"] / 1e6:.2f}M |
| steps | {c["steps"]} x batch {c["batch_size"]}, AdamW lr {c["lr"]} (warm-up {c["warmup"]}, cosine), EMA {c["ema_decay"]} |
| final loss | {info["final_loss"]:.4f} (mean of the last 100 steps) |
| time | {info["train_seconds"] / 60:.1f} min |
| hardware | {info["hardware"]} |
| torch | {info["torch"]} |{probe}

Reproduce with:

```
{info["command"] or "(command not recorded)"}
```

Samples (DDIM, 50 steps, seed {c["seed"]}, EMA weights):

![samples](samples.png)
"""
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{body}")


def refresh_card(folder: str | Path, table=None) -> Path:
    """Rewrite `folder`'s README.md from its training.json (and `table`'s sweep results for the
    folder's name) and add `model_index.json`; the weights are not touched."""
    folder = Path(folder)
    info = json.loads((folder / "training.json").read_text())
    write_model_index(folder)
    return atomic_write(folder / "README.md", str(model_card(info, table, folder.name)))


def command_line() -> str:
    return "explorer " + " ".join(shlex.quote(a) for a in sys.argv[1:])
