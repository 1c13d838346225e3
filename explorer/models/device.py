"""Pick the compute device and the autocast dtype for it."""

from __future__ import annotations

import torch

from explorer.defaults import precision_name
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


PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}  # name -> autocast


def resolve_precision(name: str | None, device: torch.device) -> str:
    """`--dtype`: fp32 | bf16 | fp16; None or "auto" -> bf16 on CUDA (fp16 where bf16 is not
    supported), fp32 on the CPU. Part of every feature's cache key."""
    if name in (None, "", "auto"):
        if device.type != "cuda":
            return "fp32"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return precision_name(name)


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype of a precision name; None for fp32 (no autocast)."""
    return PRECISIONS[precision]


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    n = torch.get_num_threads()
    return f"cpu ({n} thread{'s' if n != 1 else ''})"
