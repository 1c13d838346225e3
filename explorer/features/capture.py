"""One forward pass per (timestep, noise draw) captures every requested layer, pooled on the device.

Hooks pool each map as soon as it is produced, so full maps are never kept; the pass
stops right after the deepest requested layer.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from explorer.errors import ExplorerError
from explorer.features import host_memory
from explorer.features.noise import device_noise
from explorer.features.sizes import MAP_SIDE
from explorer.models.families.noise_process import as_process
from explorer.models.hooks import listen
from explorer.models.layers import LayerSpec, feature_map
from explorer.settings import check_timesteps


class _StopForward(Exception):
    """Raised by the deepest hook to end the forward pass early."""


def pool(x: torch.Tensor, how: str) -> torch.Tensor:
    """`(B, C, H, W)` -> `(B, C*k*k)` adaptive k×k average (row-major per channel), or `(B, C)` global max."""
    if how == "max":
        return x.amax(dim=(2, 3))
    if how == "map16":  # (B, C*h*w), h = min(H, 16), w = min(W, 16)
        size = (min(x.shape[2], MAP_SIDE), min(x.shape[3], MAP_SIDE))
        return F.adaptive_avg_pool2d(x.float(), size).flatten(1)
    k = int(how)
    return F.adaptive_avg_pool2d(x.float(), k).flatten(1)


@contextlib.contextmanager
def capture(
    unet, layers: Sequence[LayerSpec], pools: Sequence[str], *, stop_early: bool = True
) -> Iterator[dict]:
    """Hook `layers` of `unet`; the yielded dict fills with `{(layer.name, pool): (B, D) float32}`.

    Only forward passes run in the calling thread (or task) are recorded or stopped early, so
    any number of threads may capture from one shared model at once (see `explorer.models.hooks`).
    The model runs in eval mode meanwhile; hooks and mode are restored on exit, errors included.
    """
    store: dict[tuple[str, str], torch.Tensor] = {}
    by_hook: dict[str, list[LayerSpec]] = {}
    for lay in layers:
        by_hook.setdefault(lay.hook, []).append(lay)
    deepest = max(layers, key=lambda lay: lay.index).index if (stop_early and layers) else None

    def on_output(hook_name: str, output) -> None:
        for lay in by_hook[hook_name]:
            fmap = feature_map(output, lay)
            for how in pools:
                store[(lay.name, how)] = pool(fmap, how).float()
            if lay.index == deepest:
                raise _StopForward

    with listen(unet, by_hook, on_output):
        yield store


def image_noise(
    indices: np.ndarray, seed: int, shape: tuple[int, ...], device: torch.device | str = "cpu"
) -> torch.Tensor:
    """`(B, *shape)` float32 standard normal noise on `device`, a pure function of
    (seed, image index, element): batch, order, rank and device independent (`explorer.features.noise`)."""
    return device_noise(indices, seed, shape, device)


@torch.inference_mode()
def capture_pass(
    unet,
    scheduler,
    x0: torch.Tensor,
    noise: torch.Tensor,
    *,
    timestep: int,
    layers: Sequence[LayerSpec],
    pools: Sequence[str],
    stop_early: bool = True,
    autocast: torch.dtype | None = None,
    net_kwargs: dict | None = None,
) -> dict[tuple[str, str], torch.Tensor]:
    """Noise `x0 (B, C, H, W)` to level `timestep` and read every layer in one pass of
    `unet(x_in, time, **net_kwargs)`: `{(layer name, pool): (B, D) float32}` left on the model's
    device. Nothing here waits for the device, so the caller can queue the next batch first.

    `scheduler` is the model's forward process (`families.noise_process`; a diffusers VP
    scheduler is wrapped): it gives `x_t`, then the denoiser's input and time for the level
    (VP: `x_t` and t; flow matching: `x_t` and its time input; EDM: `c_in x_t` and `c_noise`).
    """
    device = next(unet.parameters()).device
    if device.type == "cpu":
        host_memory.tune()  # activations reuse freed heap pages instead of fresh mappings
    process = as_process(scheduler)
    t = torch.full((x0.shape[0],), int(timestep), dtype=torch.long, device=device)
    x0, noise = x0.to(device, non_blocking=True), noise.to(device, non_blocking=True)
    x_in, time = process.model_input(process.add_noise(x0, noise, t), t)
    ctx = (
        torch.autocast(device.type, dtype=autocast)
        if autocast is not None
        else contextlib.nullcontext()
    )
    with (
        capture(unet, layers, pools, stop_early=stop_early) as store,
        ctx,
        contextlib.suppress(_StopForward),
    ):
        unet(x_in, time, **(net_kwargs or {}))
    missing = [(lay.name, p) for lay in layers for p in pools if (lay.name, p) not in store]
    if missing:
        raise RuntimeError(f"layers never ran in the forward pass: {missing[:3]}")
    return store


def forward_features(unet, scheduler, x0: torch.Tensor, noise: torch.Tensor, **kw) -> dict:
    """`capture_pass` (the same arguments), brought to the CPU: clean `x0 (B, C, H, W)` (pixels in
    [-1, 1], or latents: the model's input space) -> `{(layer name, pool): (B, D) float16}` on the
    CPU; float32 for a setting whose values overflow float16 (the store then keeps it in float32).
    """
    store = capture_pass(unet, scheduler, x0, noise, **kw)
    layers, t, autocast = kw["layers"], kw["timestep"], kw.get("autocast")
    return {k: to_half(v.cpu(), k[0], layers, t, autocast) for k, v in store.items()}


def to_half(
    v: torch.Tensor, name: str, layers: Sequence[LayerSpec], timestep: int, autocast
) -> torch.Tensor:
    """`(B, D) float32` on the CPU -> float16, or float32 where float16 would overflow.

    Non-finite values coming out of the model itself are an `ExplorerError` naming the layer and t.
    """
    if not torch.isfinite(v).all():
        lay = next(lay for lay in layers if lay.name == name)
        hint = (
            f" under {str(autocast).replace('torch.', '')} autocast" if autocast is not None else ""
        )
        raise ExplorerError(
            f"the model produced NaN/inf{hint} at layer {lay.index} ({name}) at t={timestep}; "
            "its weights or inputs are broken, so these features cannot be used"
        )
    h = v.to(torch.float16)
    return h if torch.isfinite(h).all() else v


def extract_features(
    model,
    images: torch.Tensor,
    *,
    timesteps: Sequence[int],
    layers: Sequence[LayerSpec],
    pools: Sequence[str] = ("2",),
    seed: int = 0,
    indices: np.ndarray | None = None,
    stop_early: bool = True,
    batch_size: int = 256,
    autocast: torch.dtype | None = None,
    labels: np.ndarray | None = None,
) -> dict[tuple[int, str, str], np.ndarray]:
    """In-memory extraction: preprocessed `images (N, C, H, W)` -> `{(t, layer, pool): (N, D) float16}`
    (float32 where float16 would overflow).

    `model` is a `LoadedModel`: its family adapter encodes the images to the model's input
    space and conditions the call (`labels (N,)`: the images' labels, read only by a
    label-leaking `--class-label true`). Noise, of the input space's shape, is fixed per
    (seed, image index); `indices` defaults to `arange(N)`. The feature store wraps the same pass.
    """
    ts = check_timesteps(timesteps, model.num_timesteps)
    idx = np.arange(len(images)) if indices is None else np.asarray(indices)
    out: dict[tuple[int, str, str], list[torch.Tensor]] = {}
    for start in range(0, len(images), batch_size):
        x0 = model.adapter.encode(images[start : start + batch_size])
        noise = image_noise(idx[start : start + batch_size], seed, tuple(x0.shape[1:]), x0.device)
        kw = model.adapter.net_kwargs(
            len(x0), None if labels is None else labels[start : start + batch_size]
        )
        for t in ts:
            feats = forward_features(
                model.denoiser,
                model.scheduler,
                x0,
                noise,
                timestep=t,
                layers=layers,
                pools=pools,
                stop_early=stop_early,
                autocast=autocast,
                net_kwargs=kw,
            )
            for (name, p), v in feats.items():
                out.setdefault((t, name, p), []).append(v)
    return {k: torch.cat(v).numpy() for k, v in out.items()}
