"""Convert a SiT or REPA checkpoint into a diffusers DiT folder: `transformer/` + `scheduler/` (+ `vae/`).

SiT's network is DiT's, and diffusers' `DiTTransformer2DModel` holds it module for module:
`x_embedder.proj` -> `pos_embed.proj`; `blocks[i]` -> `transformer_blocks[i]` (`adaLN_modulation.1`
-> `norm1.linear`, the fused `attn.qkv` rows `[q | k | v]` -> `attn1.to_q/to_k/to_v`, `attn.proj`
-> `attn1.to_out.0`, `mlp.fc1/fc2` -> `ff.net.0.proj`/`ff.net.2`); `final_layer` ->
`proj_out_1`/`proj_out_2`. diffusers gives every block its own timestep and label embedder
(`norm1.emb`), so SiT's one `t_embedder`/`y_embedder` is copied into each block. The fixed
sin-cos `pos_embed` is not stored by diffusers: the checkpoint's is checked against the table
diffusers computes. REPA's projector heads (`projectors.*`, read at one block during training
only) are kept out of the net.

One detail no diffusers config can say: DiT's label-timestep embedder spaces its frequencies as
`exp(-ln(1e4) i / (half - 1))` (`downscale_freq_shift=1`), SiT as `exp(-ln(1e4) i / half)`.
`sit.json` records SiT's shift and `patch_converted_sit` sets it on the loaded net.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from explorer.errors import ExplorerError
from explorer.models.convert.checkpoint import load_weights_only
from explorer.models.convert.leftovers import check_complete
from explorer.models.convert.sit_presets import (
    FLAVORS,
    MLP_RATIO,
    SiTConfig,
    flow_path,
    heads_for,
)

COPY, QKV = "copy", "qkv"
SIT_JSON = "sit.json"  # what the converter read and decided; the loader's patch reads it
FREQ_SHIFT = 0  # SiT's timestep embedding: frequencies exp(-ln(10000) * i / half)
POS_EMBED_TOL = 1e-5  # the checkpoint's float32 sin-cos table vs diffusers' (EMA rounding)
LATENT_SCALE = 0.18215  # SiT and REPA scale sd-vae latents by this
NUM_TRAIN_TIMESTEPS = 1000
CONTAINERS = ("ema", "model")  # train.py saves {"model", "ema", "opt", "args"(, "steps")}


@dataclass(frozen=True)
class Pair:
    """One SiT module (key prefix) and the diffusers module(s) it becomes."""

    src: str
    dsts: tuple[str, ...]
    kind: str = COPY


@dataclass
class Checkpoint:
    """The state dict to convert, the training args found beside it, and what was left out."""

    state: dict[str, torch.Tensor]
    args: dict = field(default_factory=dict)
    weights: str = "state dict"  # ema | model | state dict (a bare one, as SiT's release)
    ignored: list[str] = field(default_factory=list)  # container entries not converted


def module_pairs(cfg: SiTConfig) -> list[Pair]:
    """Every SiT module with parameters and its diffusers counterpart(s), in forward order."""
    embs = [f"transformer_blocks.{i}.norm1.emb" for i in range(cfg.depth)]
    pairs = [
        Pair("x_embedder.proj", ("pos_embed.proj",)),
        Pair("t_embedder.mlp.0", tuple(f"{e}.timestep_embedder.linear_1" for e in embs)),
        Pair("t_embedder.mlp.2", tuple(f"{e}.timestep_embedder.linear_2" for e in embs)),
        Pair(
            "y_embedder.embedding_table", tuple(f"{e}.class_embedder.embedding_table" for e in embs)
        ),
    ]
    for i in range(cfg.depth):
        src, dst = f"blocks.{i}", f"transformer_blocks.{i}"
        pairs += [
            Pair(f"{src}.adaLN_modulation.1", (f"{dst}.norm1.linear",)),
            Pair(f"{src}.attn.qkv", (f"{dst}.attn1",), QKV),
            Pair(f"{src}.attn.proj", (f"{dst}.attn1.to_out.0",)),
            Pair(f"{src}.mlp.fc1", (f"{dst}.ff.net.0.proj",)),
            Pair(f"{src}.mlp.fc2", (f"{dst}.ff.net.2",)),
        ]
    pairs += [
        Pair("final_layer.adaLN_modulation.1", ("proj_out_1",)),
        Pair("final_layer.linear", ("proj_out_2",)),
    ]
    return pairs


def diffusers_config(cfg: SiTConfig) -> dict:
    """The `DiTTransformer2DModel` config that reproduces `cfg`'s SiT network."""
    return dict(
        num_attention_heads=cfg.heads,
        attention_head_dim=cfg.hidden // cfg.heads,
        in_channels=cfg.in_channels,
        out_channels=cfg.out_channels,
        num_layers=cfg.depth,
        dropout=0.0,
        attention_bias=True,
        sample_size=cfg.input_size,
        patch_size=cfg.patch,
        activation_fn="gelu-approximate",  # SiT's MLP: GELU(approximate="tanh")
        num_embeds_ada_norm=cfg.num_classes,  # + the null row diffusers adds (class dropout 0.1)
        norm_type="ada_norm_zero",
        norm_elementwise_affine=False,
        norm_eps=1e-6,  # SiT's LayerNorms; diffusers' default 1e-5 would shift every block
    )


def infer_config(state: dict[str, torch.Tensor], num_heads: int | None = None) -> SiTConfig:
    """The network's size from its tensor shapes; one-line errors for what cannot be converted."""
    need = (
        "x_embedder.proj.weight",
        "pos_embed",
        "y_embedder.embedding_table.weight",
        "final_layer.linear.weight",
        "blocks.0.mlp.fc1.weight",
    )
    missing = [k for k in need if k not in state]
    if missing:
        raise ExplorerError(
            f"not a SiT state dict: no {', '.join(missing)} (a SiT has x_embedder, t_embedder, "
            "y_embedder, pos_embed, blocks.N and final_layer)"
        )
    qk = sorted(k for k in state if re.search(r"\.attn\.[qk]_norm\.", k))
    if qk:
        raise ExplorerError(
            f"this SiT normalises queries and keys ({qk[0]}, REPA's --qk-norm), which diffusers' "
            "DiTTransformer2DModel cannot express; it cannot be converted"
        )
    hidden, in_ch, patch, patch_w = state["x_embedder.proj.weight"].shape
    blocks = {int(m.group(1)) for k in state if (m := re.match(r"blocks\.(\d+)\.", k))}
    depth = max(blocks) + 1
    tokens = state["pos_embed"].shape[-2]
    grid = round(tokens**0.5)
    rows, width = state["y_embedder.embedding_table.weight"].shape
    out = state["final_layer.linear.weight"].shape[0] / (patch * patch)
    ratio = state["blocks.0.mlp.fc1.weight"].shape[0] / hidden
    if patch != patch_w or grid * grid != tokens or width != hidden:
        raise ExplorerError(
            f"not a SiT state dict: patches {patch}x{patch_w}, {tokens} position tokens, label "
            f"width {width} vs {hidden}; SiT has square patches on a square grid"
        )
    if ratio != MLP_RATIO:
        raise ExplorerError(
            f"this SiT's MLP is {ratio:g}x its width; diffusers' DiTTransformer2DModel fixes "
            f"{MLP_RATIO}x, so it cannot be converted"
        )
    if out not in (in_ch, 2 * in_ch):
        raise ExplorerError(
            f"final_layer.linear gives {out:g} channels per pixel for {in_ch} input channels; "
            "a SiT gives the input's (REPA) or twice that (SiT's learn_sigma)"
        )
    if rows < 2:
        raise ExplorerError("y_embedder.embedding_table has no class rows; it is not a SiT")
    return SiTConfig(
        depth=depth,
        hidden=hidden,
        heads=heads_for(depth, hidden, num_heads),
        patch=patch,
        in_channels=in_ch,
        input_size=grid * patch,
        out_channels=int(out),
        num_classes=rows - 1,  # SiT's LabelEmbedder adds the null class row (class dropout 0.1)
    )


def convert_state_dict(
    state: dict[str, torch.Tensor],
    cfg: SiTConfig,
    target: dict[str, torch.Size],
    progress: Callable[[int], None] | None = None,
    dtype: torch.dtype | None = torch.float32,
) -> dict[str, torch.Tensor]:
    """SiT state dict (projectors removed) -> diffusers state dict with exactly `target`'s keys.

    Raises one ExplorerError listing unused checkpoint keys, unset parameters and shape
    mismatches. `pos_embed` counts as used: it is checked by `check_pos_embed`. Works on meta
    tensors too (no data is read).
    """
    out: dict[str, torch.Tensor] = {}
    used: set[str] = {"pos_embed"} if "pos_embed" in state else set()
    bad: list[str] = []

    def put(dst: str, t: torch.Tensor) -> None:
        if dst in target and tuple(t.shape) != tuple(target[dst]):
            bad.append(f"{dst} {tuple(t.shape)} vs {tuple(target[dst])}")
            return
        t = t if dtype is None or not t.is_floating_point() else t.to(dtype)
        out[dst] = t.clone() if any(o is t for o in out.values()) else t  # safetensors: no sharing

    for pair in module_pairs(cfg):
        if progress:
            progress(1)
        for name in ("weight", "bias"):
            key = f"{pair.src}.{name}"
            if key not in state:
                continue
            t = state[key]
            used.add(key)
            for dst in pair.dsts:
                if pair.kind == QKV:
                    q, k, v = t.chunk(3, dim=0)  # timm's Attention: rows [q | k | v], head-major
                    for proj, part in (("to_q", q), ("to_k", k), ("to_v", v)):
                        put(f"{dst}.{proj}.{name}", part)
                else:
                    put(f"{dst}.{name}", t)
    check_complete(
        state, used, target, out, bad, f"the checkpoint does not match a {cfg.name} network"
    )
    return {k: v.contiguous() for k, v in out.items()}


def diffusers_pos_embed(cfg: SiTConfig) -> torch.Tensor:
    """The `(1, N, D)` sin-cos table diffusers' `PatchEmbed` builds for this net (not saved)."""
    from diffusers.models.embeddings import get_2d_sincos_pos_embed

    grid = cfg.input_size // cfg.patch
    table = get_2d_sincos_pos_embed(cfg.hidden, grid, base_size=grid, output_type="pt")
    return table.float().unsqueeze(0)


def check_pos_embed(state: dict[str, torch.Tensor], cfg: SiTConfig) -> float:
    """Max |checkpoint pos_embed - diffusers' table|; refuses a table diffusers would not rebuild."""
    mine = state["pos_embed"]
    if mine.is_meta:
        return 0.0
    diff = float((mine.float().reshape(1, -1, cfg.hidden) - diffusers_pos_embed(cfg)).abs().max())
    if diff > POS_EMBED_TOL:
        raise ExplorerError(
            f"the checkpoint's pos_embed is not SiT's fixed 2-D sin-cos table (max difference "
            f"{diff:.2g}); diffusers' DiT rebuilds that table, so this net cannot be converted exactly"
        )
    return diff


def empty_transformer(config: dict):
    """A `DiTTransformer2DModel` on the meta device: its parameter names and shapes."""
    from diffusers import DiTTransformer2DModel

    with torch.device("meta"):
        return DiTTransformer2DModel.from_config(config)


def read_checkpoint(path: Path, weights: str | None = None) -> Checkpoint:
    """A SiT/REPA checkpoint's state dict, loaded without unpickling arbitrary objects.

    A bare state dict (SiT's `SiT-XL-2-256x256.pt`) is used as is; a training checkpoint
    (`{"model", "ema", "opt", "args", ...}`, REPA's `last.pt`) gives its `weights` entry (default
    "ema", else "model"). `args` (an `argparse.Namespace`, the one class allowed besides
    tensors) is read for the path and the model name.
    """
    obj = load_weights_only(path, "pass the .pt file SiT or REPA saved", [argparse.Namespace])
    if not isinstance(obj, dict) or not obj:
        raise ExplorerError(f"{path} is not a state dict of tensors or a SiT training checkpoint")
    ckpt = Checkpoint(obj)
    if any(k in obj for k in CONTAINERS) and not _all_tensors(obj):
        choice = weights or next(k for k in CONTAINERS if k in obj)
        if choice not in obj:
            raise ExplorerError(
                f"{path} has no '{choice}' weights (it holds {', '.join(sorted(map(str, obj)))})"
            )
        args = obj.get("args")
        ckpt = Checkpoint(
            obj[choice],
            vars(args) if isinstance(args, argparse.Namespace) else _as_dict(args),
            choice,
            sorted(str(k) for k in obj if k != choice),
        )
    elif weights not in (None, "state dict"):
        raise ExplorerError(f"{path} is a bare state dict; it has no '{weights}' weights to pick")
    if not isinstance(ckpt.state, dict) or not ckpt.state or not _all_tensors(ckpt.state):
        raise ExplorerError(
            f"{path} is not a state dict of tensors (SiT saves model.state_dict() or "
            '{"model", "ema", "opt", "args"})'
        )
    if all(k.startswith("module.") for k in ckpt.state):  # saved from a DDP wrapper
        ckpt.state = {k.removeprefix("module."): v for k, v in ckpt.state.items()}
    return ckpt


def _as_dict(args) -> dict:
    return dict(args) if isinstance(args, dict) else {}


def _all_tensors(d: dict) -> bool:
    return all(isinstance(v, torch.Tensor) for v in d.values())


def split_projectors(state: dict[str, torch.Tensor]) -> tuple[dict, list[str]]:
    """(the net's keys, REPA's `projectors.*` keys): the projector heads map one block's tokens
    to the teacher encoder's features during training only; the net's output never uses them."""
    dropped = sorted(k for k in state if k.startswith("projectors."))
    return {k: v for k, v in state.items() if not k.startswith("projectors.")}, dropped


@dataclass(frozen=True)
class Decisions:
    """How the converted model is read: its code base, path and time input."""

    flavor: str  # sit | repa
    flow_path: str  # linear | gvp
    time_input: str  # 1-u (SiT: t=1 is data) | u (REPA: t=0 is data)
    prediction: str
    notes: tuple[str, ...] = ()


def decide(ckpt: Checkpoint, dropped: list[str], flavor: str, path: str | None) -> Decisions:
    """The flavor (given, else REPA when projectors or REPA's args are present) and the path
    (given, else the training args', else linear); a given path that contradicts the args is refused."""
    args, notes = ckpt.args, []
    looks_repa = bool(dropped) or "enc_type" in args or "proj_coeff" in args
    if flavor == "auto":
        flavor = "repa" if looks_repa else "sit"
    elif flavor not in FLAVORS:
        raise ExplorerError(f"--flavor must be auto, sit or repa, not '{flavor}'")
    elif (flavor == "repa") != looks_repa:
        notes.append(
            f"--flavor {flavor} given although the checkpoint looks like "
            f"{'REPA' if looks_repa else 'SiT'}'s; its time input follows --flavor"
        )
    trained = args.get("path_type")
    trained_path = flow_path(trained) if trained is not None else None
    if path is not None and trained_path is not None and flow_path(path) != trained_path:
        raise ExplorerError(
            f"--path {path} contradicts the checkpoint's training args (path_type {trained}); "
            "drop --path"
        )
    chosen = flow_path(path) if path is not None else (trained_path or "linear")
    if path is None and trained_path is None:
        notes.append("no training args in the checkpoint: assuming the linear path (--path gvp)")
    prediction = str(args.get("prediction", "velocity"))
    return Decisions(flavor, chosen, FLAVORS[flavor]["time_input"], prediction, tuple(notes))


def scheduler_config(dec: Decisions) -> dict:
    """The contract's flow scheduler config: diffusers' FlowMatchEulerDiscreteScheduler keys
    plus `flow_path` and `time_input` (diffusers ignores keys it does not know)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    sched = FlowMatchEulerDiscreteScheduler(num_train_timesteps=NUM_TRAIN_TIMESTEPS, shift=1.0)
    config = {k: v for k, v in sched.config.items() if not k.startswith("_")}
    return (
        {"_class_name": "FlowMatchEulerDiscreteScheduler"}
        | config
        | {"flow_path": dec.flow_path, "time_input": dec.time_input}
    )


def check_vae(vae: Path, cfg: SiTConfig) -> None:
    """A local diffusers AutoencoderKL folder whose latents the net reads; one-line errors else."""
    from explorer.models.weights import read_json

    if not (vae / "config.json").is_file():
        raise ExplorerError(
            f"--vae {vae} is not a diffusers AutoencoderKL folder (no config.json); download one "
            "first, e.g. huggingface-cli download stabilityai/sd-vae-ft-ema --local-dir VAE"
        )
    config = read_json(vae / "config.json", "autoencoder config")
    cls = config.get("_class_name", "AutoencoderKL")
    if cls != "AutoencoderKL":
        raise ExplorerError(f"--vae {vae} holds a {cls}; SiT reads an AutoencoderKL's latents")
    if not any((vae / f"diffusion_pytorch_model.{s}").is_file() for s in ("safetensors", "bin")):
        raise ExplorerError(f"--vae {vae} has no diffusion_pytorch_model weights file")
    channels = config.get("latent_channels", 4)
    if channels != cfg.in_channels:
        raise ExplorerError(
            f"--vae {vae} gives {channels} latent channels; this SiT reads {cfg.in_channels}"
        )
    scale = config.get("scaling_factor", LATENT_SCALE)
    if abs(float(scale) - LATENT_SCALE) > 1e-9:
        raise ExplorerError(
            f"--vae {vae} scales latents by {scale}; SiT and REPA were trained on sd-vae latents "
            f"scaled by {LATENT_SCALE}"
        )


@dataclass(frozen=True)
class Converted:
    """What `convert_sit` wrote and decided, for the CLI's summary."""

    out: Path
    cfg: SiTConfig
    decisions: Decisions
    weights: str
    dropped: list[str]
    ignored: list[str]
    parameters: int
    has_vae: bool


def convert_sit(
    checkpoint: str | Path,
    out: str | Path,
    *,
    vae: str | Path | None = None,
    flavor: str = "auto",
    path: str | None = None,
    weights: str | None = None,
    num_heads: int | None = None,
    overwrite: bool = False,
    show_progress: bool = True,
) -> Converted:
    """Convert `checkpoint` into the folder `out` (`transformer/`, `scheduler/`, `sit.json`,
    `model_index.json`, and `vae/` copied from `vae`).

    Everything is checked before anything is written; the folder is written beside `out` and
    renamed into place, so a failure leaves nothing behind.
    """
    from safetensors.torch import save_file
    from tqdm.auto import tqdm

    checkpoint, out = Path(checkpoint).expanduser(), Path(out).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise ExplorerError(
            f"{out} already exists and is not empty; pass --overwrite to replace it"
        )
    vae = Path(vae).expanduser() if vae is not None else None
    ckpt = read_checkpoint(checkpoint, weights)
    state, dropped = split_projectors(ckpt.state)
    cfg = infer_config(state, num_heads)
    trained_classes = ckpt.args.get("num_classes")
    if trained_classes is not None and trained_classes != cfg.num_classes:
        raise ExplorerError(
            f"the label table has {cfg.num_classes + 1} rows for num_classes={trained_classes} in "
            "the training args; without class dropout's null row it cannot be read as DiT's table"
        )
    if vae is not None:
        check_vae(vae, cfg)
    dec = decide(ckpt, dropped, flavor, path)
    check_pos_embed(state, cfg)
    meta = empty_transformer(diffusers_config(cfg))
    target = {k: v.shape for k, v in meta.state_dict().items()}
    with tqdm(
        total=len(module_pairs(cfg)),
        desc="convert",
        unit="module",
        disable=not show_progress,
        dynamic_ncols=True,
    ) as bar:
        converted = convert_state_dict(state, cfg, target, progress=bar.update)
    record = {
        "source": str(checkpoint.resolve()),
        "flavor": dec.flavor,
        "weights": ckpt.weights,
        "network": cfg.to_dict(),
        "flow_path": dec.flow_path,
        "time_input": dec.time_input,
        "prediction": dec.prediction,
        "timestep_freq_shift": FREQ_SHIFT,
        "kept_out": {"projectors": dropped, "checkpoint_entries": ckpt.ignored},
    }
    index = {
        "_class_name": "DiTPipeline",
        "transformer": ["diffusers", "DiTTransformer2DModel"],
        "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
        "converted_from": "sit",  # sit.json says what the transformer's config cannot
    } | ({"vae": ["diffusers", "AutoencoderKL"]} if vae is not None else {})
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        (tmp / "transformer").mkdir(parents=True)
        meta.save_config(tmp / "transformer")
        if show_progress:
            n = sum(t.numel() for t in converted.values())
            tqdm.write(f"writing {n / 1e6:.1f}M parameters to {out}")
        save_file(
            converted,
            str(tmp / "transformer" / "diffusion_pytorch_model.safetensors"),
            metadata={"format": "pt"},
        )
        (tmp / "scheduler").mkdir()
        (tmp / "scheduler" / "scheduler_config.json").write_text(
            json.dumps(scheduler_config(dec), indent=2)
        )
        if vae is not None:
            shutil.copytree(vae, tmp / "vae")
        (tmp / "model_index.json").write_text(json.dumps(index, indent=2))
        (tmp / SIT_JSON).write_text(json.dumps(record, indent=2))
        if out.exists():
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return Converted(
        out,
        cfg,
        dec,
        ckpt.weights,
        dropped,
        ckpt.ignored,
        sum(t.numel() for t in converted.values()),
        vae is not None,
    )


def patch_converted_sit(folder: Path, net) -> list[str]:
    """Give a loaded `DiTTransformer2DModel` of a converted SiT folder SiT's timestep frequencies.

    A no-op (returns []) for a folder without `sit.json`; else sets every block's
    `norm1.emb.time_proj.downscale_freq_shift` to the recorded shift and returns the fingerprint
    part that keys features of the patched net apart from the unpatched one.
    """
    from explorer.models.weights import read_json

    record_path = Path(folder) / SIT_JSON
    if not record_path.exists():
        return []
    shift = read_json(record_path, "SiT conversion record").get("timestep_freq_shift", FREQ_SHIFT)
    if not isinstance(shift, int | float) or isinstance(shift, bool):
        raise ExplorerError(f"{record_path}: timestep_freq_shift must be a number, not {shift!r}")
    for block in net.transformer_blocks:
        block.norm1.emb.time_proj.downscale_freq_shift = shift
    return [f"sit-timestep-freq-shift={shift:g}"]
