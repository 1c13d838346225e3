"""Figures 2b and 8b: the flow-matching and text-conditioned transformers (issue 20).

2b (CPU, any machine): on small SD3, FLUX and SiT-like models with random weights (built here,
64x64 images, 32x32 latents, 256 image tokens, 8-12 blocks of width 128; the text encoders are
bypassed: fixed random text tokens of the pipelines' lengths, 333 for SD3 and 512 for FLUX),

- our capture pass (hooks + 2x2 pooling of every block) against a bare forward of the same
  wrapped transformer cut at the deepest block (target ≤ 1.10×);
- early exit after the middle block against the full pass: |time share − FLOPs share|
  (target ≤ 0.10), FLOPs from `models.layers.layer_flops`;

each the median over paired rounds of the ratio of CPU times on one thread (`rounds_of`).

8b (CUDA only): the full-size SiT-XL/2 (28 blocks, width 1152, 256 px; 750M parameters as a
diffusers DiT, whose blocks each hold a copy of the timestep and class embedder) and FLUX.1
(19 + 38 blocks, 1024 px, 512 text tokens) layouts, random weights in bf16, our capture pass to
the middle block: images/s and achieved TFLOP/s.

    python -m benchmarks --only 2b,8b
"""

from __future__ import annotations

import contextlib
import statistics
import time

import torch

from benchmarks.common import best_of, figure, not_run
from explorer.features.capture import capture_pass
from explorer.models.families.noise_process import noise_process
from explorer.models.families.token_net import FluxNet, SD3Net, TokenNet
from explorer.models.layers import build_catalogue, layer_flops

FLOW = {"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000}
T = 500  # the cost of a pass does not depend on the level


class DiTNet(TokenNet):
    """A DiT/SiT transformer behind the same interface (the dit family calls it bare)."""

    def probe_kwargs(self, batch, device):
        return {"class_labels": torch.zeros(batch, dtype=torch.long, device=device)}

    def forward(self, sample, timestep, *, class_labels):
        return self.transformer(sample, timestep=timestep, class_labels=class_labels)


def small_nets(scale: int = 1) -> dict[str, tuple[torch.nn.Module, str, dict]]:
    """name -> (wrapped net, family, conditioning `(1, ...)`) at width 128 (`scale`=1)."""
    from diffusers import DiTTransformer2DModel, FluxTransformer2DModel, SD3Transformer2DModel

    torch.manual_seed(0)
    heads, width = 4, 32 * scale
    sd3 = SD3Transformer2DModel(
        sample_size=32,
        patch_size=2,
        in_channels=4,
        num_layers=8,
        attention_head_dim=width,
        num_attention_heads=heads,
        caption_projection_dim=heads * width,
        joint_attention_dim=64,
        pooled_projection_dim=64,
        out_channels=4,
        pos_embed_max_size=32,
    )
    flux = FluxTransformer2DModel(
        in_channels=4,
        num_layers=4,
        num_single_layers=8,
        attention_head_dim=width,
        num_attention_heads=heads,
        joint_attention_dim=64,
        pooled_projection_dim=64,
        axes_dims_rope=[width // 4, 3 * width // 8, 3 * width // 8],
        guidance_embeds=True,
    )
    sit = DiTTransformer2DModel(
        sample_size=32,
        num_layers=8,
        patch_size=2,
        attention_head_dim=width,
        num_attention_heads=heads,
        in_channels=4,
        out_channels=8,
        num_embeds_ada_norm=10,
    )
    text = {
        "sd3": {
            "encoder_hidden_states": torch.randn(1, 333, 64),
            "pooled_projections": torch.randn(1, 64),
        },
        "flux": {
            "encoder_hidden_states": torch.randn(1, 512, 64),
            "pooled_projections": torch.randn(1, 64),
        },
        "sit": {"class_labels": torch.full((1,), 10)},
    }
    return {
        "sd3": (SD3Net.wrap(sd3, text_tokens=333), "sd3", text["sd3"]),
        "flux": (
            FluxNet.wrap(flux, sample_size=32, guidance=3.5, text_tokens=512),
            "flux",
            text["flux"],
        ),
        "sit": (DiTNet.wrap(sit), "dit", text["sit"]),
    }


class _Cut(Exception):
    pass


def _bare(net, process, x0, eps, kw, cut_hook: str) -> None:
    """The wrapped net's own forward on the same inputs, no capture, cut by one plain hook."""
    t = torch.full((len(x0),), T, dtype=torch.long, device=x0.device)
    x_in, time_in = process.model_input(process.add_noise(x0, eps, t), t)

    def stop(*_):
        raise _Cut

    handle = net.get_submodule(cut_hook).register_forward_hook(stop)
    try:
        with torch.inference_mode(), contextlib.suppress(_Cut):
            net(x_in, time_in, **kw)
    finally:
        handle.remove()


def _ours(net, process, x0, eps, kw, layers, stop_early=True):
    return capture_pass(
        net,
        process,
        x0,
        eps,
        timestep=T,
        layers=layers,
        pools=["2"],
        stop_early=stop_early,
        net_kwargs=kw,
    )


def rounds_of(fns: dict, rounds: int) -> dict[str, list[float]]:
    """CPU seconds of this process for each of `fns` per round, run in turn round after round
    (after one untimed round). CPU time, on one thread: on a shared machine the wall clock
    also counts the waits for a core, which fall on the calls unevenly."""
    for fn in fns.values():
        fn()
    out: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = time.process_time()
            fn()
            out[name].append(time.process_time() - t0)
    return out


def median_ratio(a: list[float], b: list[float]) -> float:
    """The median over rounds of `a / b` (same round): robust to a load spike in one call."""
    return float(statistics.median(x / y for x, y in zip(a, b, strict=True)))


def family_rows(name: str, net, family: str, cond: dict, batch: int, rounds: int) -> list[dict]:
    net = net.eval()
    process = noise_process(dict(FLOW), "bench", family)
    cat = build_catalogue(net)
    c, s = net.config.in_channels, net.config.sample_size
    gen = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(batch, c, s, s, generator=gen), torch.randn(batch, c, s, s, generator=gen)
    kw = {k: v.expand(batch, *v.shape[1:]) for k, v in cond.items()}
    deepest, mid = cat[-1], cat[len(cat) // 2 - 1]
    times = rounds_of(
        {
            "ours": lambda: _ours(net, process, x0, eps, kw, cat),
            "bare": lambda: _bare(net, process, x0, eps, kw, deepest.hook),
            "full": lambda: _ours(net, process, x0, eps, kw, cat, stop_early=False),
            "mid": lambda: _ours(net, process, x0, eps, kw, [mid]),
        },
        rounds,
    )
    got = {k: min(v) for k, v in times.items()}
    ratio = median_ratio(times["ours"], times["bare"])
    flops = layer_flops(net)
    time_share = median_ratio(times["mid"], times["full"])
    flop_share = flops[mid.index - 1] / flops[-1]
    gap = abs(time_share - flop_share)
    blocks = f"{len(cat)} blocks, {batch} images of {net.config.sample_size * 2} px"
    return [
        figure(
            "2b",
            f"{name}: our pass vs a bare forward cut at the deepest block",
            ratio,
            "×",
            "≤ 1.10×",
            ratio <= 1.10,
            f"median of {rounds} paired rounds, CPU time, 1 thread; best ours "
            f"{got['ours']:.3f} s, bare {got['bare']:.3f} s; {blocks}",
        ),
        figure(
            "2b",
            f"{name}: early exit after block {mid.index} vs the full pass, |time − FLOPs share|",
            gap,
            "",
            "≤ 0.10",
            gap <= 0.10,
            f"time {time_share:.2f} vs FLOPs {flop_share:.2f}; full pass {got['full']:.3f} s, "
            f"{flops[-1] / 1e9:.1f} GFLOP per image",
        ),
    ]


def fig2b_flow_families(ctx) -> list[dict]:
    batch, rounds = (4, 1) if ctx.quick else (16, 9)
    rows, threads = [], torch.get_num_threads()
    torch.set_num_threads(1)  # see `rounds_of`
    try:
        with torch.inference_mode():
            for name, (net, family, cond) in small_nets().items():
                rows += family_rows(name, net, family, cond, batch, rounds)
    finally:
        torch.set_num_threads(threads)
    return rows


SIT_XL_2 = dict(  # SiT-XL/2 = DiT-XL/2's layout: 28 blocks, width 1152, 16 heads, 256 px
    sample_size=32,
    num_layers=28,
    patch_size=2,
    attention_head_dim=72,
    num_attention_heads=16,
    in_channels=4,
    out_channels=8,
    num_embeds_ada_norm=1000,
)


def gpu_layouts(device: str = "cuda", quick: bool = False) -> list[dict]:
    """Figure 8b rows: images/s and TFLOP/s to the middle block of SiT-XL/2 and FLUX.1 (bf16).
    `quick` with device "cpu": the same code on scaled-down layouts (numbers mean nothing)."""
    from diffusers import DiTTransformer2DModel, FluxTransformer2DModel

    sit_cfg = dict(SIT_XL_2, num_layers=4, attention_head_dim=8) if quick else SIT_XL_2
    flux_cfg = dict(guidance_embeds=True)  # FLUX.1-dev: 19 + 38 blocks, width 3072
    if quick:
        flux_cfg |= dict(num_layers=2, num_single_layers=2, attention_head_dim=16)
        flux_cfg |= dict(num_attention_heads=2, axes_dims_rope=[4, 4, 8])
        flux_cfg |= dict(joint_attention_dim=32, pooled_projection_dim=32)
    null_class = {"class_labels": torch.full((1,), 1000)}  # SiT's null class

    def sit():
        return DiTNet.wrap(DiTTransformer2DModel(**sit_cfg))

    def flux():
        side = 16 if quick else 128  # latents of 1024 px images
        return FluxNet.wrap(
            FluxTransformer2DModel(**flux_cfg), sample_size=side, guidance=3.5, text_tokens=512
        )

    layouts = [("SiT-XL/2 (256 px)", sit, 64, null_class), ("FLUX.1 (1024 px)", flux, 4, None)]
    return [layout_row(*lay, device, quick) for lay in layouts]


def layout_row(name: str, build, batch: int, cond, device: str, quick: bool) -> dict:
    """One figure 8b row: `build()` on `device` in bf16, our pass to its middle block."""
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)  # FLUX.1 in fp32 would take 48 GB before the cast
    try:
        with torch.device(device):
            net = build().to(torch.bfloat16).eval()
    finally:
        torch.set_default_dtype(default)
    cfg = net.config.net_config
    b = 2 if quick else batch
    if cond is None:  # FLUX: 512 random T5 tokens and a pooled CLIP vector
        cond = {
            "encoder_hidden_states": torch.randn(1, 512, cfg["joint_attention_dim"]),
            "pooled_projections": torch.randn(1, cfg["pooled_projection_dim"]),
        }
    kw = {k: v.to(device).expand(b, *v.shape[1:]) for k, v in cond.items()}
    kw = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in kw.items()}
    with torch.device("meta"):  # the catalogue of a weightless fp32 twin: no compute
        cat = build_catalogue(type(net).from_config(net.config))
    mid = cat[len(cat) // 2 - 1]
    c, s = net.config.in_channels, net.config.sample_size
    x0 = torch.randn(b, c, s, s, device=device, dtype=torch.bfloat16)
    eps = torch.randn(b, c, s, s, device=device, dtype=torch.bfloat16)
    process = noise_process(dict(FLOW), "bench", "flux" if "FLUX" in name else "dit")

    def run():
        with torch.autocast(device, dtype=torch.bfloat16):
            capture_pass(
                net, process, x0, eps, timestep=T, layers=[mid], pools=["1"], net_kwargs=kw
            )

    secs = best_of(run, 1 if quick else 5)
    flops = layer_flops(net)[mid.index - 1] * b
    params = sum(p.numel() for p in net.parameters())
    return figure(
        "8b",
        f"{name}: our pass to the middle block {mid.index} of {len(cat)} ({mid.name}), bf16",
        b / secs,
        "img/s",
        "report",
        None,
        f"{flops / secs / 1e12:.1f} TFLOP/s achieved; batch {b}, {params / 1e6:.0f}M parameters",
    )


def fig8b_gpu_layouts(ctx) -> list[dict]:
    name, target = "GPU: SiT-XL/2 and FLUX.1 layouts to the middle block (bf16)", "report"
    if not torch.cuda.is_available():
        return [
            not_run(
                "8b",
                name,
                target,
                "no GPU on this machine; run `python -m benchmarks --only 8b` on one",
            )
        ]
    return gpu_layouts("cuda", quick=ctx.quick)
