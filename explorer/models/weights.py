"""Weights from local folders: the denoiser or a pipeline component through diffusers'
`from_pretrained` (safetensors; pickle only when trusted), with one-line errors and content
fingerprints. Below the families (an autoencoder or text encoder loads through here too) and
the loader."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import torch

from explorer.atomic import atomic_write
from explorer.data.base import not_regular
from explorer.errors import ExplorerError
from explorer.paths import cache_dir

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
_IGNORED_CONFIG_KEYS = ("_diffusers_version", "_name_or_path", "_use_default_values")
_MAX_HEADER = 100 * 2**20  # the safetensors format's own limit on its JSON header


def check_regular(path: Path) -> None:
    """A one-line ExplorerError when `path` exists but is not a regular file (a FIFO, a socket,
    a device): it is never opened, as reading a FIFO blocks forever and a device never ends."""
    if kind := not_regular(path):
        raise ExplorerError(
            f"{path} is {kind}, not a regular file; the model folder must hold the files themselves"
        )


def read_json(path: Path, what: str = "config") -> dict:
    """A JSON object from a regular file `path`, or a one-line ExplorerError naming the file."""
    check_regular(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ExplorerError(f"cannot read {path}: {e}; is this a diffusers model folder?") from e
    if not isinstance(data, dict):
        raise ExplorerError(f"{path} is not a {what} (not a JSON object)")
    return data


def check_safetensors(path: Path) -> None:
    """Refuse a safetensors file cut short (an interrupted download) or not one at all, by its
    header alone: 8 bytes of header length, a JSON header, then every tensor's bytes."""
    fetch = "the download or copy stopped early or is damaged, fetch it again"
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            n = int.from_bytes(head, "little") if len(head) == 8 else -1
            text = f.read(n) if 0 <= n <= min(_MAX_HEADER, size - 8) else b""
    except OSError as e:  # a broken symlink or a symlink loop
        raise ExplorerError(f"cannot read {path}: {e.strerror or e}; {fetch}") from e
    if n < 0 or n > _MAX_HEADER:
        raise ExplorerError(f"{path} is not a safetensors file (no valid header); {fetch}")
    if 8 + n > size:
        raise ExplorerError(
            f"{path} is cut short: its header alone needs {8 + n} bytes, the file has {size}; "
            f"{fetch}"
        )
    try:
        header = json.loads(text)
        ends = [t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"]
        need = 8 + n + max((int(e) for e in ends), default=0)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as e:
        raise ExplorerError(
            f"{path} is not a safetensors file (its header does not parse: {e}); {fetch}"
        ) from e
    if need > size:
        raise ExplorerError(f"{path} is cut short ({size} of {need} bytes); {fetch}")


def net_class(config: dict):
    import diffusers

    return getattr(diffusers, config.get("_class_name", "UNet2DModel"))


def load_component(
    folder: Path, cls, trust_pickle: bool, what: str
) -> tuple[torch.nn.Module, list[str]]:
    """A pipeline component (autoencoder, text encoder) in eval mode, and its fingerprint parts."""
    module, weights = load_weights(folder, cls, trust_pickle, what)
    return module.eval(), [canonical_config(_config_dict(module)), file_sha256(weights)]


def _config_dict(module) -> dict:
    cfg = module.config
    return cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)


def load_weights(folder: Path, cls, trust_pickle: bool, what: str):
    """`cls.from_pretrained(folder)` from local safetensors (or trusted pickle), one-line errors."""
    safetensors = sorted(folder.glob("*.safetensors"))
    pickles = [p for p in sorted(folder.iterdir()) if p.suffix in PICKLE_SUFFIXES]
    if safetensors:
        weights, use_safe = safetensors[0], True
    elif pickles:
        if not trust_pickle:
            raise ExplorerError(
                f"{pickles[0]} is a pickle checkpoint, which can run code when loaded; "
                "convert it to safetensors, or pass --trust-pickle if you trust its source"
            )
        weights, use_safe = pickles[0], False
    else:
        raise ExplorerError(
            f"{folder} has a config but no weights (*.safetensors); is the download complete?"
        )
    check_regular(folder / "config.json")  # from_pretrained reads it: never a FIFO
    for f in safetensors if use_safe else pickles:  # every shard or variant it may read
        check_regular(f)
        if use_safe:
            check_safetensors(f)
    try:
        kw = {"low_cpu_mem_usage": False} if cls.__module__.startswith("diffusers") else {}
        module = cls.from_pretrained(folder, use_safetensors=use_safe, local_files_only=True, **kw)
    except (OSError, ValueError, RuntimeError, TypeError) as e:
        label = "U-Net" if what == "model" and cls.__name__.startswith("UNet") else what
        raise ExplorerError(f"cannot load the {label} in {folder}: {load_error_text(e)}") from e
    return module, weights


_MISMATCH = re.compile(
    r"size mismatch for ([\w.]+): copying a param with shape torch\.Size\((\[[\d, ]*\])\) from "
    r"checkpoint, the shape in current model is torch\.Size\((\[[\d, ]*\])\)"
)


def load_error_text(e: BaseException) -> str:
    """One line for a failed `from_pretrained`: a config that lies about the weights' shapes
    is named as such (torch's message starts with a bare "Error(s) in loading state_dict")."""
    text = str(e)
    if m := _MISMATCH.search(text):
        return (
            f"config.json does not match the weights: {m.group(1)} is {m.group(2)} in the weights "
            f"but {m.group(3)} by the config; the config was edited or belongs to other weights"
        )
    if "Missing key(s)" in text or "Unexpected key(s)" in text or "loading state_dict" in text:
        return (
            "config.json does not match the weights (their layers differ); the config was "
            "edited or belongs to other weights"
        )
    return text.splitlines()[0] if text else type(e).__name__


def canonical_config(config: dict) -> str:
    clean = {k: v for k, v in config.items() if k not in _IGNORED_CONFIG_KEYS}
    return json.dumps(clean, sort_keys=True, default=list)


def hash_text(*parts: str) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def file_sha256(path: Path) -> str:
    """sha256 of a file, memoised on disk by (path, size, mtime) so big weights hash once."""
    st = path.stat()
    memo_path = cache_dir() / "file-hashes.json"
    ident = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    try:
        memo = json.loads(memo_path.read_text())
    except (OSError, json.JSONDecodeError):
        memo = {}
    if ident in memo:
        return memo[ident]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    memo[ident] = h.hexdigest()
    atomic_write(memo_path, json.dumps(memo))
    return memo[ident]
