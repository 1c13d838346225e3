"""The catalogue of probe points of a denoiser, in forward order, built from the model itself.

U-Nets (`UNet2DModel`, Stable Diffusion's `UNet2DConditionModel`) share one numbering.

Numbering (1-based) follows the paper: `conv_in`; per down block its resnets (each read
after its attention) then its downsampler; the mid block; per up block its resnets (each
after its attention), the last one read after the block's upsampler. On the paper's ADM
layout this gives blocks 1-37, with 19 the bottleneck and 24 = `up_blocks.1.resnets.1`.

A DiT (`DiTTransformer2DModel`) has one point per transformer block (`transformer_blocks.i`,
stage "block", kind "transformer"): its tokens `(B, N, D)` are read as the patch grid
`(B, D, h, w)` (row-major patches, as DiT unpatchifies), so every pooling applies. SD3, FLUX
and PixArt transformers come wrapped (`families.token_net`) and list their own points; a joint
block's (kind "joint") image tokens are the second tensor of its output.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

import torch

from explorer.errors import ExplorerError, suggest
from explorer.models.hooks import listen


@dataclass(frozen=True)
class LayerSpec:
    """One probe point: where it is, what it reads, and the shape of its feature map."""

    index: int  # 1-based, forward order (paper numbering on ADM)
    name: str  # dotted path of the point: the resnet, downsampler, `mid_block` or `conv_in`
    hook: str  # dotted path of the module whose output is read
    stage: str  # "down" (conv_in included), "mid" or "up"; "block" for a transformer
    kind: str  # conv | resnet | resnet+attn | downsample | mid | resnet+upsample | resnet+attn+upsample | transformer
    channels: int
    height: int
    width: int
    reduction: int  # input side / feature side

    @property
    def label(self) -> str:
        return f"{self.index:02d} · {self.name} · {self.channels}×{self.height}×{self.width}"

    def to_dict(self) -> dict:
        return asdict(self)


def probe_points(unet) -> list[tuple[str, str, str, str]]:
    """(name, hook, stage, kind) for every probe point, from the model's module structure."""
    own = getattr(unet, "probe_points", None)  # a source that lists its own (an encoder)
    if callable(own):
        return own()
    if is_transformer(unet):
        return [
            (f"transformer_blocks.{i}", f"transformer_blocks.{i}", "block", "transformer")
            for i in range(len(unet.transformer_blocks))
        ]
    pts = [("conv_in", "conv_in", "down", "conv")]
    for i, block in enumerate(unet.down_blocks):
        attns = getattr(block, "attentions", None)
        for j, _ in enumerate(block.resnets):
            name = f"down_blocks.{i}.resnets.{j}"
            if attns is not None and j < len(attns):
                pts.append((name, f"down_blocks.{i}.attentions.{j}", "down", "resnet+attn"))
            else:
                pts.append((name, name, "down", "resnet"))
        for k, _ in enumerate(getattr(block, "downsamplers", None) or []):
            name = f"down_blocks.{i}.downsamplers.{k}"
            pts.append((name, name, "down", "downsample"))
    if getattr(unet, "mid_block", None) is not None:
        pts.append(("mid_block", "mid_block", "mid", "mid"))
    for i, block in enumerate(unet.up_blocks):
        attns = getattr(block, "attentions", None)
        ups = getattr(block, "upsamplers", None) or []
        n = len(block.resnets)
        for j in range(n):
            name = f"up_blocks.{i}.resnets.{j}"
            has_attn = attns is not None and j < len(attns)
            hook, kind = (
                (f"up_blocks.{i}.attentions.{j}", "resnet+attn") if has_attn else (name, "resnet")
            )
            if j == n - 1 and len(ups):
                hook, kind = f"up_blocks.{i}.upsamplers.{len(ups) - 1}", kind + "+upsample"
            pts.append((name, hook, "up", kind))
    return pts


def is_transformer(net) -> bool:
    """True for a denoiser made of transformer blocks over patch tokens (DiT)."""
    return hasattr(net, "transformer_blocks") and not hasattr(net, "down_blocks")


def probe_kwargs(net, batch: int, device) -> dict:
    """Placeholder conditioning for a shape-probing call (shapes do not depend on its values)."""
    own = getattr(net, "probe_kwargs", None)  # a wrapped transformer (`families.token_net`)
    if callable(own):
        return own(batch, device)
    cfg = net.config
    if type(net).__name__ == "UNet2DConditionModel":
        dim = cfg.cross_attention_dim
        dim = dim[0] if isinstance(dim, list | tuple) else dim
        kw = {"encoder_hidden_states": torch.zeros(batch, 1, int(dim), device=device)}
        if getattr(cfg, "addition_embed_type", None) == "text_time":  # SDXL: pooled text, 6 ids
            n = net.add_embedding.linear_1.in_features - 6 * int(cfg.addition_time_embed_dim)
            kw["added_cond_kwargs"] = {
                "text_embeds": torch.zeros(batch, n, device=device),
                "time_ids": torch.zeros(batch, 6, device=device),
            }
        return kw
    if is_transformer(net) or getattr(net, "class_embedding", None) is not None:
        return {"class_labels": torch.zeros(batch, dtype=torch.long, device=device)}
    return {}


def feature_map(output, layer: LayerSpec) -> torch.Tensor:
    """The `(B, C, H, W)` map of a hooked module's output; transformer tokens `(B, N, D)` are
    laid out on the `layer.height x layer.width` patch grid (leading tokens beyond the grid, an
    encoder's CLS and register tokens, or text tokens a joint block carries first, are dropped)."""
    x = block_output(output, layer.kind)
    if x.dim() == 3:
        b, n, d = x.shape
        x = x[:, n - layer.height * layer.width :]
        x = x.transpose(1, 2).reshape(b, d, layer.height, layer.width)
    return x


def block_output(out, kind: str) -> torch.Tensor:
    """The image part of a hooked module's output: a joint-attention block (kind "joint": SD3,
    FLUX) returns `(text tokens, image tokens)`, so its second tensor; else `first_tensor`."""
    if kind == "joint" and isinstance(out, tuple | list) and len(out) == 2:
        return out[1]
    return first_tensor(out)


def first_tensor(out) -> torch.Tensor:
    """The feature map in a module's output (some diffusers blocks return tuples)."""
    while isinstance(out, tuple | list):
        out = out[0]
    if hasattr(out, "sample"):
        out = out.sample
    return out


def build_catalogue(unet, device: torch.device | str | None = None) -> list[LayerSpec]:
    """Every probe point of the denoiser `unet` (any family) with its shape, from one
    shape-probing forward pass (batch 1, placeholder conditioning).

    Works on the meta device too, so the catalogue of a huge model costs no compute.
    """
    pts = probe_points(unet)
    shapes: dict[str, tuple[int, ...]] = {}
    cfg = unet.config
    size = cfg.sample_size if isinstance(cfg.sample_size, int) else cfg.sample_size[0]
    dev = device or next(unet.parameters()).device
    x = torch.zeros(1, cfg.in_channels, size, size, device=dev)
    t = torch.zeros(1, dtype=torch.long, device=dev)
    kwargs = probe_kwargs(unet, 1, dev)

    kinds = {hook: kind for _, hook, _, kind in pts}

    def record(hook: str, output) -> None:
        shapes[hook] = tuple(block_output(output, kinds[hook]).shape)

    # per-context hooks: safe while other threads run the same (shared) model
    with listen(unet, {hook for _, hook, _, _ in pts}, record), torch.inference_mode():
        unet(x, t, **kwargs)
    out = []
    for idx, (name, hook, stage, kind) in enumerate(pts, start=1):
        if len(shapes[hook]) == 3:  # transformer tokens (1, N, D) on the patch grid
            side = size // int(cfg.patch_size)
            c, h, w = shapes[hook][2], side, side
        else:
            _, c, h, w = shapes[hook]
        out.append(LayerSpec(idx, name, hook, stage, kind, c, h, w, max(1, size // h)))
    return out


_RANGE = re.compile(r"^(-?\d+)\s*-\s*(-?\d+)$")


def select_layers(catalogue: list[LayerSpec], spec: str | int | list | None) -> list[LayerSpec]:
    """Resolve a layer selection to catalogue entries, sorted by index.

    `None`/"all" = all; ints are 1-based indices (negatives count from the end);
    "a-b" is an inclusive range; names match `LayerSpec.name`, `hook`, or "mid".
    """
    n = len(catalogue)
    if spec is None or (isinstance(spec, str) and spec.strip().lower() in ("", "all")):
        return list(catalogue)
    items = spec if isinstance(spec, list | tuple) else [spec]
    tokens: list[str | int] = []
    for it in items:
        tokens += [s.strip() for s in it.split(",") if s.strip()] if isinstance(it, str) else [it]
    if not tokens:
        raise ExplorerError(
            "no layers given; pass e.g. --layers 19,24 or all (see `explorer layers`)"
        )
    by_name = {lay.name: lay for lay in catalogue} | {lay.hook: lay for lay in catalogue}
    if "mid_block" in by_name:
        by_name["mid"] = by_name["mid_block"]
    chosen: dict[int, LayerSpec] = {}

    def by_index(i: int) -> LayerSpec:
        j = i if i > 0 else n + 1 + i
        if not 1 <= j <= n:
            raise ExplorerError(
                f"layer {i} is out of range (1 to {n}, or -1 to -{n}); run `explorer layers` to list them"
            )
        return catalogue[j - 1]

    for tok in tokens:
        if isinstance(tok, int) or (isinstance(tok, str) and re.fullmatch(r"-?\d+", tok)):
            lay = by_index(int(tok))
            chosen[lay.index] = lay
        elif isinstance(tok, str) and (m := _RANGE.match(tok)):
            a, b = by_index(int(m.group(1))).index, by_index(int(m.group(2))).index
            for j in range(min(a, b), max(a, b) + 1):
                chosen[j] = catalogue[j - 1]
        elif tok in by_name:
            chosen[by_name[tok].index] = by_name[tok]
        else:
            raise ExplorerError(
                f"unknown layer '{tok}'."
                + suggest(str(tok), [lay.name for lay in catalogue])
                + " Run `explorer layers --model M` to list the layers."
            )
    return [chosen[k] for k in sorted(chosen)]


def layer_flops(unet) -> list[int]:
    """FLOPs of one image's forward pass up to each probe point (the cost of an early exit
    there), in catalogue order; from one pass of a weightless copy on the meta device, so even
    a huge model costs no compute."""
    from torch.utils.flop_counter import FlopCounterMode  # torch's counter: on use only

    with torch.device("meta"):
        ghost = type(unet).from_config(unet.config)
    pts = probe_points(ghost)
    cfg = ghost.config
    size = cfg.sample_size if isinstance(cfg.sample_size, int) else cfg.sample_size[0]
    x = torch.zeros(1, cfg.in_channels, size, size, device="meta")
    t = torch.zeros(1, dtype=torch.long, device="meta")
    counter = FlopCounterMode(display=False)
    at: dict[str, int] = {}

    def record(hook: str, _output) -> None:
        at.setdefault(hook, counter.get_total_flops())

    with listen(ghost, {hook for _, hook, _, _ in pts}, record), torch.no_grad(), counter:
        ghost(x, t, **probe_kwargs(ghost, 1, "meta"))
    return [at[hook] for _, hook, _, _ in pts]
