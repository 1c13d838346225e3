"""Speed options for a denoiser on its device: channels_last memory format and `torch.compile`.

Neither changes what is computed (compile: within float rounding), so neither enters a
feature key: a cache filled with them is the cache filled without.

Compile works per submodule, not on the whole U-Net. Capture (`explorer.models.hooks`) adds and
removes Python forward hooks per pass, dispatches on a `ContextVar` and ends the pass early
by raising from a hook. Dynamo does not guard on hooks (`skip_nnmodule_hook_guards`), so a
whole-model compile traced before a capture began would silently skip that capture's hooks:
wrong results. Here the `forward` of every module the catalogue may hook (conv_in, resnets,
attentions, up/downsamplers, the mid block; DiT's transformer blocks) and of every other
child with weights (time embedding, output head) is compiled, while the containers around
them (down/up blocks, the U-Net itself) stay eager. A hook then fires from eager
`Module.__call__` after the compiled `forward` returned, and `_StopForward` unwinds only
eager frames. The graph breaks between units cost a few microseconds each per pass.

The Inductor cache lives under the explorer cache dir (`<cache>/inductor`) unless
`TORCHINDUCTOR_CACHE_DIR` is already set, so a second process reuses the compiled kernels.
"""

from __future__ import annotations

import os

import torch

from explorer.models.layers import probe_points
from explorer.paths import cache_dir

# Inductor's fusions; max-autotune costs minutes of tuning and rarely beats cuDNN's convolutions
COMPILE_MODE = "default"
RECOMPILE_LIMIT = 512  # one compiled variant per (unit code, shapes, batch size); ADM-256 has ~100
_MARK = "_explorer_compiled"


def prepare(
    unet: torch.nn.Module,
    device: torch.device | str,
    *,
    compile: bool = False,
    channels_last: bool | None = None,
    backend: str = "inductor",
) -> torch.nn.Module:
    """Make `unet` (already on `device`) fast there, in place; returns it.

    `channels_last` (default: on CUDA only) stores 4-D conv weights NHWC, so cuDNN runs
    its NHWC kernels (inputs follow the weights' format). `compile` wraps the units named in
    the module docstring in `torch.compile(dynamic=False)`; `backend` is for tests
    ("aot_eager" checks tracing without a C++ toolchain). Calling it again is harmless.
    """
    device = torch.device(device)
    if channels_last is None:
        channels_last = device.type == "cuda"
    if channels_last:
        unet.to(memory_format=torch.channels_last)
    if compile:
        use_compile_cache()
        _raise_recompile_limit()
        for _, module in compile_units(unet):
            if not getattr(module, _MARK, False):
                module.forward = torch.compile(
                    module.forward, dynamic=False, backend=backend, **_mode(backend)
                )
                setattr(module, _MARK, True)
    return unet


def is_compiled(unet: torch.nn.Module) -> bool:
    """True when `prepare(..., compile=True)` has compiled `unet`'s units."""
    return any(getattr(m, _MARK, False) for m in unet.modules())


def compile_units(unet: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """(dotted path, module) of every unit to compile: each child with weights that holds no
    hooked module below itself (it may be hooked itself: its hook runs outside `forward`)."""
    hooked = {hook for _, hook, _, _ in probe_points(unet)}
    eager = {".".join(h.split(".")[:i]) for h in hooked for i in range(h.count(".") + 1)}
    out: list[tuple[str, torch.nn.Module]] = []

    def walk(prefix: str, module: torch.nn.Module) -> None:
        for name, child in module.named_children():
            path = f"{prefix}.{name}" if prefix else name
            if path in eager or isinstance(child, torch.nn.ModuleList | torch.nn.ModuleDict):
                walk(path, child)
            elif any(True for _ in child.parameters()):
                out.append((path, child))

    walk("", unet)
    return out


def use_compile_cache() -> str:
    """Point Inductor's on-disk cache (FX graphs, kernels, Triton) at `<explorer cache>/inductor`
    unless the user chose one (`TORCHINDUCTOR_CACHE_DIR`); returns the directory in use.

    Importing torch's compiler stack already fills the variable with torch's default
    (`/tmp/torchinductor_<user>`), so that value counts as not chosen.
    """
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    current = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if not current or os.path.abspath(current) == os.path.abspath(default_cache_dir()):
        path = cache_dir() / "inductor"
        path.mkdir(parents=True, exist_ok=True)
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(path)
    return os.environ["TORCHINDUCTOR_CACHE_DIR"]


def _mode(backend: str) -> dict:
    return {"mode": COMPILE_MODE} if backend == "inductor" else {}


def _raise_recompile_limit() -> None:
    """Units share code objects (every resnet runs `ResnetBlock2D.forward`), and each shape and
    batch size is one more compiled variant of it: lift Dynamo's per-code limit (default 8),
    past which it would silently fall back to eager."""
    import torch._dynamo

    cfg = torch._dynamo.config
    name = "recompile_limit" if hasattr(cfg, "recompile_limit") else "cache_size_limit"
    setattr(cfg, name, max(getattr(cfg, name), RECOMPILE_LIMIT))
    acc = (
        "accumulated_recompile_limit"
        if hasattr(cfg, "accumulated_recompile_limit")
        else "accumulated_cache_size_limit"
    )
    setattr(cfg, acc, max(getattr(cfg, acc), 8 * RECOMPILE_LIMIT))
