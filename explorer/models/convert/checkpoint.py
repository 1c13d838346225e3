"""The converters' one guarded `torch.load`: weights only (no arbitrary unpickling), memory-mapped
when the file's format allows, every failure one ExplorerError line."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from explorer.errors import ExplorerError


def load_weights_only(path: Path, missing_hint: str, allowed: Sequence[type] = ()) -> object:
    """The object saved in `path`, unpickling only tensors, containers and the `allowed` classes.

    `missing_hint` ends the message for a missing file (e.g. "pass the .pt file SiT saved").
    """
    if not path.is_file():
        raise ExplorerError(f"checkpoint {path} not found ({missing_hint})")
    try:
        with torch.serialization.safe_globals(list(allowed)):
            try:
                return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as e:
                if "mmap" not in str(e):
                    raise
                return torch.load(path, map_location="cpu", weights_only=True)  # pre-zip format
    except Exception as e:  # unpickling refused, truncated or not a torch file: all one message
        first = str(e).splitlines()[0] if str(e) else ""
        raise ExplorerError(
            f"cannot read {path} as a weights-only torch checkpoint ({type(e).__name__}: {first})"
        ) from e
