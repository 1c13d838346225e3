"""Load a diffusers `UNet2DModel` and its noise scheduler by name, path, hub id or `random:<model>`."""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from explorer.data.preprocess import Preprocess
from explorer.errors import ExplorerError, suggest
from explorer.paths import BUILTIN_MODEL_DIRS, RANDOM_PREFIX, cache_dir, default_model  # noqa: F401

BUILTIN = BUILTIN_MODEL_DIRS
RANDOM_SEED = 0
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_IGNORED_CONFIG_KEYS = ("_diffusers_version", "_name_or_path", "_use_default_values")


@dataclass
class LoadedModel:
    """A U-Net with its scheduler, the name it was asked by, and a content fingerprint."""

    name: str
    unet: torch.nn.Module  # diffusers UNet2DModel, eval mode
    scheduler: object  # diffusers DDPMScheduler (add_noise, alphas_cumprod)
    fingerprint: str
    source: str  # "builtin" | "local" | "hub" | "random"
    path: Path | None = None

    @property
    def num_timesteps(self) -> int:
        return int(self.scheduler.config.num_train_timesteps)

    @property
    def resolution(self) -> int:
        s = self.unet.config.sample_size
        return int(s if isinstance(s, int) else s[0])

    @property
    def preprocess(self) -> Preprocess:
        return Preprocess(self.resolution, int(self.unet.config.in_channels))

    @property
    def parameters(self) -> int:
        return sum(p.numel() for p in self.unet.parameters())


def load_model(spec: str, *, trust_pickle: bool = False, device: str | torch.device = "cpu") -> LoadedModel:
    """Load `spec`: a built-in name, a local folder, a hub id, or `random:` before any of those."""
    spec = spec.strip()
    if spec.startswith(RANDOM_PREFIX):
        base = spec[len(RANDOM_PREFIX) :]
        folder, source = _resolve(base, trust_pickle)
        config = read_unet_config(folder)
        from diffusers import UNet2DModel

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_SEED)
            try:
                unet = UNet2DModel.from_config(config)
            except (ValueError, TypeError, RuntimeError, KeyError) as e:
                raise ExplorerError(f"cannot build a U-Net from {folder}'s config: {_load_error_text(e)}") from e
        sched = load_scheduler(folder)
        fp = _hash_text("random", str(RANDOM_SEED), _canonical_config(config), _canonical_config(dict(sched.config)))
        return LoadedModel(spec, unet.eval().to(device), sched, fp, "random", folder)
    folder, source = _resolve(spec, trust_pickle)
    unet, weights = _load_unet(folder, trust_pickle)
    sched = load_scheduler(folder)  # the noise schedule changes x_t, so it is part of the fingerprint
    fp = _hash_text(_canonical_config(dict(unet.config)), file_sha256(weights), _canonical_config(dict(sched.config)))
    return LoadedModel(spec, unet.eval().to(device), sched, fp, source, folder)


def _resolve(spec: str, trust_pickle: bool) -> tuple[Path, str]:
    """A model spec -> (local folder, source kind); downloads hub ids when online."""
    if spec in BUILTIN:
        if not (BUILTIN[spec] / "config.json").exists():
            raise ExplorerError(f"built-in model '{spec}' is missing from {BUILTIN[spec]}; reinstall from a full clone")
        return BUILTIN[spec], "builtin"
    path = Path(spec).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ExplorerError(f"{path} is a file; pass the folder that holds config.json and the weights")
        return path, "local"
    if _HUB_ID.match(spec):
        return _download(spec, trust_pickle), "hub"
    raise ExplorerError(
        f"unknown model '{spec}': not a built-in ({', '.join(BUILTIN)}), a folder, or a hub id (org/name)."
        + suggest(spec, list(BUILTIN))
    )


def _unet_folder(folder: Path) -> Path:
    """The folder holding the U-Net's config: the folder itself or its `unet/` (pipeline layout)."""
    if (folder / "unet" / "config.json").exists():
        return folder / "unet"
    if (folder / "config.json").exists():
        return folder
    raise ExplorerError(
        f"{folder} is not a diffusers model folder (no config.json or unet/config.json); "
        "save one with UNet2DModel.save_pretrained or pass a built-in name"
    )


def read_unet_config(folder: Path) -> dict:
    """The U-Net's config.json, checked to be an unconditional `UNet2DModel`."""
    path = _unet_folder(folder) / "config.json"
    try:
        config = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ExplorerError(f"cannot read {path}: {e}; is this a diffusers model folder?") from e
    if not isinstance(config, dict):
        raise ExplorerError(f"{path} is not a model config (not a JSON object)")
    cls = config.get("_class_name", "UNet2DModel")
    if cls != "UNet2DModel":
        raise ExplorerError(
            f"{path} describes a {cls}, not a UNet2DModel; the explorer reads unconditional diffusers U-Nets"
        )
    return config


def _load_unet(folder: Path, trust_pickle: bool):
    """(UNet2DModel, weights file) from a local folder; pickle weights only when trusted."""
    from diffusers import UNet2DModel

    read_unet_config(folder)
    unet_dir = _unet_folder(folder)
    safetensors = sorted(unet_dir.glob("*.safetensors"))
    pickles = [p for p in sorted(unet_dir.iterdir()) if p.suffix in PICKLE_SUFFIXES]
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
        raise ExplorerError(f"{unet_dir} has a config but no weights (*.safetensors); is the download complete?")
    try:
        unet = UNet2DModel.from_pretrained(unet_dir, use_safetensors=use_safe, local_files_only=True,
                                           low_cpu_mem_usage=False)
    except (OSError, ValueError, RuntimeError, TypeError) as e:
        raise ExplorerError(f"cannot load the U-Net in {unet_dir}: {_load_error_text(e)}") from e
    return unet, weights


_MISMATCH = re.compile(
    r"size mismatch for ([\w.]+): copying a param with shape torch\.Size\((\[[\d, ]*\])\) from "
    r"checkpoint, the shape in current model is torch\.Size\((\[[\d, ]*\])\)"
)


def _load_error_text(e: BaseException) -> str:
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


def load_scheduler(folder: Path):
    """The scheduler saved beside the model (`scheduler/` or root), else DDPM with 1000 linear
    steps; a scheduler the folder declares (`scheduler/`, model_index.json) must be readable."""
    from diffusers import DDPMScheduler

    for cand in (folder / "scheduler" / "scheduler_config.json", folder / "scheduler_config.json"):
        if cand.exists():
            try:
                config = json.loads(cand.read_text())
            except (OSError, ValueError) as e:
                raise ExplorerError(f"cannot read {cand}: {e}; re-save the model's scheduler") from e
            if not isinstance(config, dict):
                raise ExplorerError(f"{cand} is not a scheduler config (not a JSON object)")
            steps = config.get("num_train_timesteps", 1000)
            if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
                raise ExplorerError(
                    f"{cand}: num_train_timesteps must be a positive integer, got {steps!r}"
                )
            # Every diffusers scheduler of this family shares the forward process: rebuild as DDPM.
            keys = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas",
                    "prediction_type", "clip_sample")
            try:
                return DDPMScheduler(**{k: config[k] for k in keys if k in config})
            except (ValueError, TypeError, RuntimeError, NotImplementedError) as e:
                raise ExplorerError(
                    f"{cand} is not a usable noise schedule ({_load_error_text(e)})"
                ) from e
    if (folder / "scheduler").is_dir() or "scheduler" in _model_index(folder):
        raise ExplorerError(
            f"{folder} declares a scheduler but {folder / 'scheduler' / 'scheduler_config.json'} is "
            "missing; the copy or download is incomplete, fetch the scheduler/ folder too"
        )
    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")


def _model_index(folder: Path) -> dict:
    try:
        index = json.loads((folder / "model_index.json").read_text())
    except (OSError, ValueError):
        return {}
    return index if isinstance(index, dict) else {}


def _download(repo_id: str, trust_pickle: bool) -> Path:
    """Fetch a hub model's configs and weights into the HF cache; one-line error when offline."""
    try:
        from huggingface_hub import snapshot_download

        patterns = ["*.json", "*.safetensors"] + (["*.bin"] if trust_pickle else [])
        return Path(snapshot_download(repo_id, allow_patterns=patterns))
    except Exception as e:  # network, auth and "not found" all end the same way for the user
        raise ExplorerError(
            f"could not fetch '{repo_id}' from the Hugging Face hub ({type(e).__name__}); if you are offline, "
            f"download it elsewhere (huggingface-cli download {repo_id} --local-dir DIR) and pass --model DIR"
        ) from e


def _canonical_config(config: dict) -> str:
    clean = {k: v for k, v in config.items() if k not in _IGNORED_CONFIG_KEYS}
    return json.dumps(clean, sort_keys=True, default=list)


def _hash_text(*parts: str) -> str:
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
    tmp = memo_path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(memo))
    os.replace(tmp, memo_path)
    return memo[ident]
