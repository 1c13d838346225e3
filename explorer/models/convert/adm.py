"""Convert a guided-diffusion (ADM) checkpoint into a diffusers folder: `unet/` + `scheduler/`.

ADM's `UNetModel` maps one-to-one onto diffusers' `UNet2DModel`:
`input_blocks[0]` -> `conv_in`; per level `input_blocks` ResBlock(+AttentionBlock) -> `down_blocks[l]`
`resnets[r]`(+`attentions[r]`) and the level's down ResBlock/conv -> `downsamplers[0]`;
`middle_block` (Res, Attn, Res) -> `mid_block`; `output_blocks` -> `up_blocks` likewise, the last of
each level carrying the upsampler; `out` -> `conv_norm_out`/`conv_out`. The fused 1x1 `qkv`
convolution ([3C, C, 1]) is split into `to_q`/`to_k`/`to_v` ([C, C] each) for either head order.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from explorer.errors import ExplorerError
from explorer.models.convert.adm_presets import NUM_CLASSES, ADMConfig
from explorer.models.convert.checkpoint import load_weights_only
from explorer.models.convert.leftovers import check_complete

# Module kinds: how a source module's tensors become target tensors.
COPY, QKV, CONV1D = "copy", "qkv", "conv1d"


@dataclass(frozen=True)
class Pair:
    """One ADM module (key prefix) and the diffusers module it becomes."""

    src: str
    dst: str
    kind: str = COPY
    optional: bool = False  # a skip 1x1 conv exists only when a ResBlock changes width


def diffusers_config(cfg: ADMConfig) -> dict:
    """The `UNet2DModel` config that reproduces `cfg`'s ADM network exactly."""
    cfg.validate()
    if cfg.widths[0] != cfg.num_channels:
        raise ExplorerError(
            f"--channel-mult starting at {cfg.mult[0]} makes conv_in {cfg.widths[0]} channels wide while ADM's "
            f"time embedding uses {cfg.num_channels}; diffusers' UNet2DModel ties both to block_out_channels[0], "
            "so this model cannot be converted exactly"
        )
    attn_ds, ds = cfg.attention_ds, 1
    levels = len(cfg.widths)
    down, up = [], []
    for level in range(levels):
        attn = ds in attn_ds
        down.append(
            "AttnDownBlock2D"
            if attn
            else ("ResnetDownsampleBlock2D" if cfg.resblock_updown else "DownBlock2D")
        )
        up.insert(
            0,
            "AttnUpBlock2D"
            if attn
            else ("ResnetUpsampleBlock2D" if cfg.resblock_updown else "UpBlock2D"),
        )
        if level < levels - 1:
            ds *= 2
    return dict(
        sample_size=cfg.image_size,
        in_channels=3,
        out_channels=cfg.out_channels,
        time_embedding_type="positional",
        flip_sin_to_cos=True,  # ADM's embedding is [cos, sin]
        freq_shift=0,  # frequencies exp(-ln(10000) * i / half)
        down_block_types=down,
        up_block_types=up,
        block_out_channels=cfg.widths,
        layers_per_block=cfg.num_res_blocks,
        mid_block_scale_factor=1,
        downsample_padding=1,
        downsample_type="resnet" if cfg.resblock_updown else "conv",
        upsample_type="resnet" if cfg.resblock_updown else "conv",
        dropout=0.0,
        act_fn="silu",
        attention_head_dim=_head_dim(cfg),
        norm_num_groups=32,
        attn_norm_num_groups=32,  # else diffusers drops the mid attention's GroupNorm under scale_shift
        norm_eps=1e-5,
        resnet_time_scale_shift="scale_shift" if cfg.use_scale_shift_norm else "default",
        add_attention=True,
        num_class_embeds=NUM_CLASSES if cfg.class_cond else None,
    )


def _head_dim(cfg: ADMConfig) -> int:
    """diffusers' one `attention_head_dim` for every attention block; refuses what it cannot express."""
    if cfg.num_head_channels != -1:
        return cfg.num_head_channels
    dims = sorted({w // cfg.num_heads for w in cfg.attention_widths()})
    if len(dims) > 1:
        raise ExplorerError(
            f"--num-heads {cfg.num_heads} gives heads of {dims} channels at different levels, but diffusers' "
            "UNet2DModel uses one head width (attention_head_dim) everywhere; this model cannot be converted exactly"
        )
    return dims[0]


def module_pairs(cfg: ADMConfig) -> list[Pair]:
    """Every ADM module with parameters and its diffusers counterpart, in forward order."""
    qkv_kind = QKV
    pairs = [
        Pair("time_embed.0", "time_embedding.linear_1"),
        Pair("time_embed.2", "time_embedding.linear_2"),
    ]
    if cfg.class_cond:
        pairs.append(Pair("label_emb", "class_embedding"))
    pairs.append(Pair("input_blocks.0.0", "conv_in"))
    widths, n, attn_ds = cfg.widths, cfg.num_res_blocks, cfg.attention_ds
    k, ds = 1, 1
    for level in range(len(widths)):
        for r in range(n):
            pairs += _resblock(f"input_blocks.{k}.0", f"down_blocks.{level}.resnets.{r}")
            if ds in attn_ds:
                pairs += _attention(
                    f"input_blocks.{k}.1", f"down_blocks.{level}.attentions.{r}", qkv_kind
                )
            k += 1
        if level < len(widths) - 1:
            dst = f"down_blocks.{level}.downsamplers.0"
            pairs += (
                _resblock(f"input_blocks.{k}.0", dst)
                if cfg.resblock_updown
                else [Pair(f"input_blocks.{k}.0.op", f"{dst}.conv")]
            )
            k += 1
            ds *= 2
    pairs += _resblock("middle_block.0", "mid_block.resnets.0")
    pairs += _attention("middle_block.1", "mid_block.attentions.0", qkv_kind)
    pairs += _resblock("middle_block.2", "mid_block.resnets.1")
    k = 0
    for u, level in enumerate(reversed(range(len(widths)))):
        for i in range(n + 1):
            pairs += _resblock(f"output_blocks.{k}.0", f"up_blocks.{u}.resnets.{i}")
            j = 1
            if ds in attn_ds:
                pairs += _attention(
                    f"output_blocks.{k}.1", f"up_blocks.{u}.attentions.{i}", qkv_kind
                )
                j = 2
            if level and i == n:
                dst = f"up_blocks.{u}.upsamplers.0"
                pairs += (
                    _resblock(f"output_blocks.{k}.{j}", dst)
                    if cfg.resblock_updown
                    else [Pair(f"output_blocks.{k}.{j}.conv", f"{dst}.conv")]
                )
                ds //= 2
            k += 1
    pairs += [Pair("out.0", "conv_norm_out"), Pair("out.2", "conv_out")]
    return pairs


def _resblock(src: str, dst: str) -> list[Pair]:
    return [
        Pair(f"{src}.in_layers.0", f"{dst}.norm1"),
        Pair(f"{src}.in_layers.2", f"{dst}.conv1"),
        Pair(f"{src}.emb_layers.1", f"{dst}.time_emb_proj"),
        Pair(f"{src}.out_layers.0", f"{dst}.norm2"),
        Pair(f"{src}.out_layers.3", f"{dst}.conv2"),
        Pair(f"{src}.skip_connection", f"{dst}.conv_shortcut", optional=True),
    ]


def _attention(src: str, dst: str, qkv_kind: str) -> list[Pair]:
    return [
        Pair(f"{src}.norm", f"{dst}.group_norm"),
        Pair(f"{src}.qkv", dst, qkv_kind),
        Pair(f"{src}.proj_out", f"{dst}.to_out.0", CONV1D),
    ]


def split_qkv(
    t: torch.Tensor, heads: int, new_order: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ADM's fused qkv rows [3C, ...] -> (q, k, v) rows [C, ...] in diffusers' head-major order.

    Legacy order: rows are per head [q_h | k_h | v_h]; new order: [q | k | v], each head-major.
    diffusers reads head h from rows h*d:(h+1)*d of each of to_q/to_k/to_v.
    """
    c3 = t.shape[0]
    c = c3 // 3
    if new_order:
        return t[:c], t[c : 2 * c], t[2 * c :]
    d = c // heads
    grouped = t.reshape(heads, 3, d, *t.shape[1:])  # [heads, (q,k,v), d, ...]
    return tuple(grouped[:, i].reshape(c, *t.shape[1:]) for i in range(3))  # type: ignore[return-value]


def convert_state_dict(
    state: dict[str, torch.Tensor],
    cfg: ADMConfig,
    target: dict[str, torch.Size],
    progress: Callable[[int], None] | None = None,
    dtype: torch.dtype | None = torch.float32,
) -> dict[str, torch.Tensor]:
    """ADM state dict -> diffusers state dict with exactly the keys and shapes of `target`.

    Raises one ExplorerError listing unused checkpoint keys, unset parameters and shape mismatches.
    Works on meta tensors too (no data is read).
    """
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    bad: list[str] = []

    def put(dst: str, t: torch.Tensor) -> None:
        if dst in target and tuple(t.shape) != tuple(target[dst]):
            if t.numel() == target[dst].numel() and t.dim() - len(target[dst]) == 1:
                t = t.reshape(target[dst])  # conv1d [C, C, 1] -> linear [C, C]
            else:
                bad.append(f"{dst} {tuple(t.shape)} vs {tuple(target[dst])}")
                return
        out[dst] = t if dtype is None or not t.is_floating_point() else t.to(dtype)

    for pair in module_pairs(cfg):
        if progress:
            progress(1)
        names = [n for n in ("weight", "bias") if f"{pair.src}.{n}" in state]
        if pair.optional and not names and not any(k.startswith(pair.dst + ".") for k in target):
            continue
        for name in names:
            key = f"{pair.src}.{name}"
            t = state[key]
            used.add(key)
            if pair.kind == QKV:
                width = t.shape[0] // 3
                q, k, v = split_qkv(t, cfg.heads(width), cfg.use_new_attention_order)
                for proj, part in (("to_q", q), ("to_k", k), ("to_v", v)):
                    put(f"{pair.dst}.{proj}.{name}", part)
            else:
                put(f"{pair.dst}.{name}", t)
    check_complete(
        state,
        used,
        target,
        out,
        bad,
        "the checkpoint does not match these ADM flags (check --preset and the flags)",
    )
    return {k: v.contiguous() for k, v in out.items()}


def empty_unet(config: dict):
    """A `UNet2DModel` on the meta device: its parameter names and shapes without memory."""
    from diffusers import UNet2DModel

    with torch.device("meta"):
        return UNet2DModel.from_config(config)


def scheduler_config(cfg: ADMConfig) -> dict:
    """DDPMScheduler arguments for ADM's noise schedule (guided-diffusion's `get_named_beta_schedule`)."""
    base = dict(
        num_train_timesteps=cfg.diffusion_steps,
        prediction_type="epsilon",
        variance_type="learned_range" if cfg.learn_sigma else "fixed_large",
        clip_sample=True,
    )
    if cfg.noise_schedule == "linear":
        scale = 1000 / cfg.diffusion_steps  # ADM scales the linear schedule to the number of steps
        return base | dict(beta_schedule="linear", beta_start=scale * 1e-4, beta_end=scale * 0.02)
    return base | dict(
        beta_schedule="squaredcos_cap_v2"
    )  # cos((t/T + 0.008) / 1.008 * pi/2)^2, beta <= 0.999


def load_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """A guided-diffusion state dict, loaded without unpickling arbitrary objects."""
    obj = load_weights_only(path, "pass the .pt file saved by guided-diffusion")
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if (
        not isinstance(obj, dict)
        or not obj
        or not all(isinstance(v, torch.Tensor) for v in obj.values())
    ):
        raise ExplorerError(
            f"{path} is not a state dict of tensors (guided-diffusion saves model.state_dict())"
        )
    return obj


def convert_adm(
    checkpoint: str | Path,
    out: str | Path,
    cfg: ADMConfig,
    *,
    overwrite: bool = False,
    show_progress: bool = True,
) -> Path:
    """Convert `checkpoint` into a diffusers folder `out` (`unet/`, `scheduler/`, `adm_flags.json`).

    The folder is written beside `out` and renamed into place, so a failure leaves nothing behind.
    """
    from diffusers import DDPMScheduler
    from safetensors.torch import save_file
    from tqdm.auto import tqdm

    checkpoint, out = Path(checkpoint).expanduser(), Path(out).expanduser()
    config = diffusers_config(cfg)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise ExplorerError(
            f"{out} already exists and is not empty; pass --overwrite to replace it"
        )
    state = load_checkpoint(checkpoint)
    meta = empty_unet(config)
    target = {k: v.shape for k, v in meta.state_dict().items()}
    pairs = module_pairs(cfg)
    with tqdm(
        total=len(pairs),
        desc="convert",
        unit="module",
        disable=not show_progress,
        dynamic_ncols=True,
    ) as bar:
        weights = convert_state_dict(state, cfg, target, progress=bar.update)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        (tmp / "unet").mkdir(parents=True)
        meta.save_config(tmp / "unet")
        if show_progress:
            tqdm.write(
                f"writing {sum(t.numel() for t in weights.values()) / 1e6:.1f}M parameters to {out}"
            )
        save_file(
            weights,
            str(tmp / "unet" / "diffusion_pytorch_model.safetensors"),
            metadata={"format": "pt"},
        )
        DDPMScheduler(**scheduler_config(cfg)).save_pretrained(tmp / "scheduler")
        if not cfg.class_cond:  # DDPMPipeline.from_pretrained(out) works for unconditional models
            (tmp / "model_index.json").write_text(
                json.dumps(
                    {
                        "_class_name": "DDPMPipeline",
                        "scheduler": ["diffusers", "DDPMScheduler"],
                        "unet": ["diffusers", "UNet2DModel"],
                    },
                    indent=2,
                )
            )
        (tmp / "adm_flags.json").write_text(
            json.dumps({"source": str(checkpoint.resolve()), "flags": cfg.to_dict()}, indent=2)
        )
        if out.exists():
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
