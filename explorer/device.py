"""Pick the compute device and the autocast dtype for it."""

from __future__ import annotations

import torch

from explorer.errors import ExplorerError


def resolve_device(name: str | None = "auto") -> torch.device:
    """`auto` -> CUDA when available, else CPU; anything else is checked and returned."""
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as e:
        raise ExplorerError(f"unknown device '{name}'; use auto, cpu, cuda or cuda:N") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ExplorerError(
            f"device '{name}' asked for but CUDA is not available here; use --device cpu"
        )
    return dev


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """bf16 on GPUs that support it, else fp16 on CUDA; None (full precision) on the CPU."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    n = torch.get_num_threads()
    return f"cpu ({n} thread{'s' if n != 1 else ''})"
