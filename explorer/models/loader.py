"""Load a diffusion model (any family of `explorer.models.families`) and its noise scheduler by name,
path, hub id or `random:<model>`."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from explorer.data.preprocess import Preprocess
from explorer.defaults import ENCODER_PREFIX, RANDOM_PREFIX
from explorer.errors import ExplorerError, suggest
from explorer.models.accel import prepare
from explorer.models.device import resolve_precision
from explorer.models.families import build, detect, encoder, net_folder, pixel_unet
from explorer.models.families.base import PIXEL_UNET, Adapter
from explorer.models.families.noise_process import as_process, default_process, noise_process
from explorer.models.weights import (
    canonical_config,
    check_regular,
    file_sha256,
    hash_text,
    load_error_text,
    load_weights,
    net_class,
)
from explorer.paths import BUILTIN_MODEL_DIRS

RANDOM_SEED = 0
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
SPEC_OPTIONS = ("class-label", "prompt")


@dataclass(eq=False)  # identity: a loaded model is one object (memos key on it)
class LoadedModel:
    """A denoiser with its scheduler and family adapter, the name it was asked by, and a content fingerprint."""

    name: str
    denoiser: torch.nn.Module  # UNet2DModel, UNet2DConditionModel, DiT, or a family's wrapper, eval
    # the forward process: a diffusers VP scheduler (alphas_cumprod) or a families.noise_process
    # NoiseProcess (flow matching, EDM, VE); `process` reads either through one interface
    scheduler: object
    fingerprint: str
    source: str  # "builtin" | "local" | "hub" | "random"
    path: Path | None = None
    adapter: Adapter | None = None  # the family adapter; None: built for a bare pixel U-Net
    precision: str = "fp32"  # fp32 | bf16 | fp16 (autocast): part of every feature's cache key

    def __post_init__(self) -> None:
        if self.adapter is None:
            self.adapter = pixel_unet.adapter(self.denoiser)

    @property
    def family(self) -> str:
        """The family's name ("pixel-unet", "latent-unet", "dit", ...); `adapter` does the work."""
        return self.adapter.family

    @property
    def process(self):
        """The forward process behind one interface (`families.noise_process.NoiseProcess`)."""
        return as_process(self.scheduler)

    @property
    def num_timesteps(self) -> int:
        """Number of levels: t runs over `[0, num_timesteps)` (T for VP, T + 1 for flow matching)."""
        return int(self.process.num_levels)

    def log_snr(self, t: int) -> float:
        """log(signal² / noise²) of level `t`: one axis across families (±inf at the ends)."""
        return float(self.process.log_snr(int(t)))

    @property
    def resolution(self) -> int:
        """Side of the square images the model takes (before any autoencoder)."""
        return self.adapter.image_size

    @property
    def preprocess(self) -> Preprocess:
        if self.adapter.preprocess is not None:  # a reference encoder normalises as it was trained
            return self.adapter.preprocess
        return Preprocess(self.resolution, self.adapter.image_channels)

    @property
    def scheduler_text(self) -> str:
        return self.process.describe()

    @property
    def parameters(self) -> int:
        return sum(p.numel() for p in self.denoiser.parameters())


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
    condition_required: bool = True,
) -> LoadedModel:
    """Load `spec`: a built-in name, a local folder, a hub id, or `random:` before any of those
    (random weights for the denoiser; an autoencoder or text encoder keeps its own).

    `prompt` (Stable Diffusion) and `class_label` (null | int | true; class-conditional models)
    set the conditioning; the spec may carry one as `#prompt=TEXT` or `#class-label=VALUE`.
    `dtype` (fp32 | bf16 | fp16 | auto) is the compute precision, see `device.resolve_precision`.
    `explorer.models.accel.prepare` then makes the denoiser fast on `device` (channels_last on CUDA;
    `compile`: torch.compile per block); neither changes the fingerprint or any cache key.
    `condition_required=False` is for listing layers only: a class-conditional U-Net then loads
    without a class label (a placeholder class traces the layers; see `families.build`).
    """
    precision = resolve_precision(dtype, torch.device(device))

    base, opts = split_spec(spec.strip())
    prompt = opts.get("prompt") if prompt is None else prompt
    class_label = opts.get("class-label") if class_label is None else class_label
    randomize = base.startswith(RANDOM_PREFIX)
    rest = base[len(RANDOM_PREFIX) :] if randomize else base
    forced = rest.startswith(ENCODER_PREFIX)  # "encoder:FOLDER": a reference encoder
    folder, source = _resolve(rest[len(ENCODER_PREFIX) :] if forced else rest, trust_pickle)
    if forced or encoder.is_encoder_folder(folder):
        if prompt is not None or class_label is not None:
            raise ExplorerError("--prompt and --class-label do not apply to a reference encoder")
        net, sched, fp, adapter = encoder.load(
            folder, randomize=randomize, trust_pickle=trust_pickle
        )
        adapter = adapter.to(device)
        prepare(net, device, compile=compile)
        return LoadedModel(
            base, net, sched, fp, "random" if randomize else source, folder, adapter, precision
        )
    family, config = detect(folder)
    # the noise process changes x_t, so it is part of the fingerprint
    sched = load_scheduler(folder, family, config.get("_class_name", "UNet2DModel"))
    if randomize:
        net = _random_net(folder, config)
        fp = hash_text(
            "random",
            str(RANDOM_SEED),
            canonical_config(config),
            canonical_config(dict(sched.config)),
        )
        source = "random"
    else:
        net, weights = _load_net(folder, trust_pickle)
        fp = hash_text(
            canonical_config(dict(net.config)),
            file_sha256(weights),
            canonical_config(dict(sched.config)),
        )
    adapter, parts = build(
        family,
        folder,
        net.eval(),
        trust_pickle=trust_pickle,
        prompt=prompt,
        class_label=class_label,
        condition_required=condition_required,
        process=as_process(sched),
    )
    net = adapter.net  # a family may wrap the denoiser (SD3, FLUX, PixArt: `families.token_net`)
    quirk = getattr(sched, "explorer_source", None)
    if family != PIXEL_UNET or parts or quirk:  # pixel U-Nets keep their fingerprints (and caches)
        fp = hash_text(fp, family, *parts, quirk or "")
    name = base
    if prompt is not None:
        name += f"#prompt={prompt}"
    elif class_label is not None:
        name += f"#class-label={str(class_label).strip().lower()}"
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
            return net_class(config).from_config(config)
        except (ValueError, TypeError, RuntimeError, KeyError) as e:
            raise ExplorerError(
                f"cannot build a model from {folder}'s config: {load_error_text(e)}"
            ) from e


def _resolve(spec: str, trust_pickle: bool) -> tuple[Path, str]:
    """A model spec -> (local folder, source kind); downloads hub ids when online."""
    if spec in BUILTIN_MODEL_DIRS:
        if not (BUILTIN_MODEL_DIRS[spec] / "config.json").exists():
            raise ExplorerError(
                f"built-in model '{spec}' is missing from {BUILTIN_MODEL_DIRS[spec]}; reinstall from a full clone"
            )
        return BUILTIN_MODEL_DIRS[spec], "builtin"
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
        f"unknown model '{spec}': not a built-in ({', '.join(BUILTIN_MODEL_DIRS)}), a folder, or a hub id (org/name)."
        + suggest(spec, list(BUILTIN_MODEL_DIRS))
    )


def _load_net(folder: Path, trust_pickle: bool):
    """(denoiser, weights file) from a local folder; pickle weights only when trusted."""
    _, config = detect(folder)
    net, weights = load_weights(net_folder(folder), net_class(config), trust_pickle, "model")
    return net, weights


def load_scheduler(folder: Path, family: str | None = None, net: str = ""):
    """The forward process of the scheduler saved beside the model (`scheduler/` or root), else
    DDPM with 1000 linear steps (flow matching for SD3 and FLUX); a scheduler the folder declares
    (`scheduler/`, model_index.json) must be readable and must fit the denoiser of `family`
    (class `net`). See `explorer.models.families.noise_process` for the supported classes."""
    for cand in (folder / "scheduler" / "scheduler_config.json", folder / "scheduler_config.json"):
        if cand.exists():
            check_regular(cand)  # a FIFO would block the read forever
            try:
                config = json.loads(cand.read_text())
            except (OSError, ValueError) as e:
                raise ExplorerError(
                    f"cannot read {cand}: {e}; re-save the model's scheduler"
                ) from e
            if not isinstance(config, dict):
                raise ExplorerError(f"{cand} is not a scheduler config (not a JSON object)")
            return noise_process(config, str(cand), family, net)  # checks steps and schedule
    if (folder / "scheduler").is_dir() or "scheduler" in _model_index(folder):
        raise ExplorerError(
            f"{folder} declares a scheduler but {folder / 'scheduler' / 'scheduler_config.json'} is "
            "missing; the copy or download is incomplete, fetch the scheduler/ folder too"
        )
    return default_process(family)


def _model_index(folder: Path) -> dict:
    check_regular(folder / "model_index.json")  # a FIFO would block the read forever
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
