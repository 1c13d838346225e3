"""Load a diffusion model (any family of `explorer.families`) and its noise scheduler by name,
path, hub id or `random:<model>`."""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from explorer.atomic import atomic_write
from explorer.data.preprocess import Preprocess
from explorer.errors import ExplorerError, suggest
from explorer.families.base import Adapter
from explorer.paths import BUILTIN_MODEL_DIRS, RANDOM_PREFIX, cache_dir, default_model  # noqa: F401

BUILTIN = BUILTIN_MODEL_DIRS
RANDOM_SEED = 0
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
SPEC_OPTIONS = ("class-label", "prompt")
_IGNORED_CONFIG_KEYS = ("_diffusers_version", "_name_or_path", "_use_default_values")


@dataclass
class LoadedModel:
    """A denoiser with its scheduler and family adapter, the name it was asked by, and a content fingerprint."""

    name: str
    unet: (
        torch.nn.Module
    )  # the denoiser: UNet2DModel, UNet2DConditionModel or DiTTransformer2DModel, eval mode
    scheduler: (
        object  # diffusers DDPMScheduler (add_noise, alphas_cumprod) of the model's own VP schedule
    )
    fingerprint: str
    source: str  # "builtin" | "local" | "hub" | "random"
    path: Path | None = None
    adapter: Adapter | None = None  # None: an unconditional pixel U-Net
    precision: str = "fp32"  # fp32 | bf16 | fp16 (autocast): part of every feature's cache key

    @property
    def family(self) -> Adapter:
        """The family adapter (encode, condition, key parts); built for a bare pixel U-Net."""
        if self.adapter is None:
            from explorer.families import pixel_unet

            self.adapter = pixel_unet.adapter(self.unet)
        return self.adapter

    @property
    def num_timesteps(self) -> int:
        return int(self.scheduler.config.num_train_timesteps)

    @property
    def resolution(self) -> int:
        """Side of the square images the model takes (before any autoencoder)."""
        return self.family.image_size

    @property
    def preprocess(self) -> Preprocess:
        return Preprocess(self.resolution, self.family.image_channels)

    @property
    def scheduler_text(self) -> str:
        from explorer.families.schedulers import describe

        return describe(self.scheduler)

    @property
    def parameters(self) -> int:
        return sum(p.numel() for p in self.unet.parameters())


def split_spec(spec: str) -> tuple[str, dict[str, str]]:
    """ "folder#class-label=3" -> ("folder", {"class-label": "3"}); options are `class-label` and `prompt`."""
    base, sep, rest = spec.partition("#")
    if not sep:
        return spec, {}
    key, eq, value = rest.partition("=")
    key = key.strip().lower()
    if not eq or key not in SPEC_OPTIONS:
        raise ExplorerError(
            f"cannot read model option '#{rest}'; use #class-label=VALUE or #prompt=TEXT"
        )
    return base.strip(), {key: value}


def load_model(
    spec: str,
    *,
    trust_pickle: bool = False,
    device: str | torch.device = "cpu",
    prompt: str | None = None,
    class_label: str | int | None = None,
    dtype: str | None = None,
    compile: bool = False,
) -> LoadedModel:
    """Load `spec`: a built-in name, a local folder, a hub id, or `random:` before any of those
    (random weights for the denoiser; an autoencoder or text encoder keeps its own).

    `prompt` (Stable Diffusion) and `class_label` (null | int | true; class-conditional models)
    set the conditioning; the spec may carry one as `#prompt=TEXT` or `#class-label=VALUE`.
    `dtype` (fp32 | bf16 | fp16 | auto) is the compute precision, see `device.resolve_precision`.
    `explorer.accel.prepare` then makes the denoiser fast on `device` (channels_last on CUDA;
    `compile`: torch.compile per block); neither changes the fingerprint or any cache key.
    """
    from explorer.device import resolve_precision
    from explorer.families import PIXEL_UNET, build, detect

    precision = resolve_precision(dtype, torch.device(device))

    base, opts = split_spec(spec.strip())
    prompt = opts.get("prompt") if prompt is None else prompt
    class_label = opts.get("class-label") if class_label is None else class_label
    randomize = base.startswith(RANDOM_PREFIX)
    folder, source = _resolve(base[len(RANDOM_PREFIX) :] if randomize else base, trust_pickle)
    family, config = detect(folder)
    sched = load_scheduler(
        folder
    )  # the noise schedule changes x_t, so it is part of the fingerprint
    if randomize:
        net = _random_net(folder, config)
        fp = _hash_text(
            "random",
            str(RANDOM_SEED),
            _canonical_config(config),
            _canonical_config(dict(sched.config)),
        )
        source = "random"
    else:
        net, weights = _load_net(folder, trust_pickle)
        fp = _hash_text(
            _canonical_config(dict(net.config)),
            file_sha256(weights),
            _canonical_config(dict(sched.config)),
        )
    adapter, parts = build(
        family,
        folder,
        net.eval(),
        trust_pickle=trust_pickle,
        prompt=prompt,
        class_label=class_label,
    )
    quirk = getattr(sched, "explorer_source", None)
    if family != PIXEL_UNET or parts or quirk:  # pixel U-Nets keep their fingerprints (and caches)
        fp = _hash_text(fp, family, *parts, quirk or "")
    name = base
    if prompt is not None:
        name += f"#prompt={prompt}"
    elif class_label is not None:
        name += f"#class-label={str(class_label).strip().lower()}"
    from explorer.accel import prepare

    adapter = adapter.to(device)
    prepare(net, device, compile=compile)
    return LoadedModel(name, net, sched, fp, source, folder, adapter, precision)


MODELS_ENV = "EXPLORER_MODELS"


def local_models(root: str | os.PathLike | None = None) -> list[str]:
    """Model folders directly under `root` (default `$EXPLORER_MODELS`): any with `config.json`,
    `unet/config.json` or `transformer/config.json`, sorted; [] when unset or missing."""
    root = root or os.environ.get(MODELS_ENV)
    if not root or not Path(root).expanduser().is_dir():
        return []
    marks = ("config.json", "unet/config.json", "transformer/config.json")
    return sorted(
        str(d)
        for d in Path(root).expanduser().iterdir()
        if d.is_dir() and any((d / m).is_file() for m in marks)
    )


def _random_net(folder: Path, config: dict):
    """The denoiser of `folder`'s config with fixed random weights (seed `RANDOM_SEED`)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_SEED)
        try:
            return _net_class(config).from_config(config)
        except (ValueError, TypeError, RuntimeError, KeyError) as e:
            raise ExplorerError(
                f"cannot build a model from {folder}'s config: {_load_error_text(e)}"
            ) from e


def _resolve(spec: str, trust_pickle: bool) -> tuple[Path, str]:
    """A model spec -> (local folder, source kind); downloads hub ids when online."""
    if spec in BUILTIN:
        if not (BUILTIN[spec] / "config.json").exists():
            raise ExplorerError(
                f"built-in model '{spec}' is missing from {BUILTIN[spec]}; reinstall from a full clone"
            )
        return BUILTIN[spec], "builtin"
    path = Path(spec).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ExplorerError(
                f"{path} is a file; pass the folder that holds config.json and the weights"
            )
        return path, "local"
    if _HUB_ID.match(spec):
        return _download(spec, trust_pickle), "hub"
    raise ExplorerError(
        f"unknown model '{spec}': not a built-in ({', '.join(BUILTIN)}), a folder, or a hub id (org/name)."
        + suggest(spec, list(BUILTIN))
    )


def _net_class(config: dict):
    import diffusers

    return getattr(diffusers, config.get("_class_name", "UNet2DModel"))


def read_unet_config(folder: Path) -> dict:
    """The denoiser's config.json (`transformer/`, `unet/` or root), checked to be a supported class."""
    from explorer.families import detect

    return detect(folder)[1]


def _load_net(folder: Path, trust_pickle: bool):
    """(denoiser, weights file) from a local folder; pickle weights only when trusted."""
    from explorer.families import detect, net_folder

    _, config = detect(folder)
    net, weights = _load_weights(net_folder(folder), _net_class(config), trust_pickle, "model")
    return net, weights


def load_component(
    folder: Path, cls, trust_pickle: bool, what: str
) -> tuple[torch.nn.Module, list[str]]:
    """A pipeline component (autoencoder, text encoder) in eval mode, and its fingerprint parts."""
    module, weights = _load_weights(folder, cls, trust_pickle, what)
    return module.eval(), [_canonical_config(_config_dict(module)), file_sha256(weights)]


def _config_dict(module) -> dict:
    cfg = module.config
    return cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)


def _load_weights(folder: Path, cls, trust_pickle: bool, what: str):
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
    try:
        kw = {"low_cpu_mem_usage": False} if cls.__module__.startswith("diffusers") else {}
        module = cls.from_pretrained(folder, use_safetensors=use_safe, local_files_only=True, **kw)
    except (OSError, ValueError, RuntimeError, TypeError) as e:
        label = "U-Net" if what == "model" and cls.__name__.startswith("UNet") else what
        raise ExplorerError(f"cannot load the {label} in {folder}: {_load_error_text(e)}") from e
    return module, weights


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
    """The forward process of the scheduler saved beside the model (`scheduler/` or root), else
    DDPM with 1000 linear steps; a scheduler the folder declares (`scheduler/`, model_index.json)
    must be readable. See `explorer.families.schedulers` for the supported classes."""
    from diffusers import DDPMScheduler

    from explorer.families.schedulers import vp_scheduler

    for cand in (folder / "scheduler" / "scheduler_config.json", folder / "scheduler_config.json"):
        if cand.exists():
            try:
                config = json.loads(cand.read_text())
            except (OSError, ValueError) as e:
                raise ExplorerError(
                    f"cannot read {cand}: {e}; re-save the model's scheduler"
                ) from e
            if not isinstance(config, dict):
                raise ExplorerError(f"{cand} is not a scheduler config (not a JSON object)")
            steps = config.get("num_train_timesteps", 1000)
            if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
                raise ExplorerError(
                    f"{cand}: num_train_timesteps must be a positive integer, got {steps!r}"
                )
            return vp_scheduler(config, str(cand))
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
    atomic_write(memo_path, json.dumps(memo))
    return memo[ident]
