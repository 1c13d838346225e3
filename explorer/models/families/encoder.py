"""Reference encoders: pretrained vision transformers as feature sources beside the diffusion models.

A folder of `transformers` weights (DINOv2, DINOv2 with registers, ViT, CLIP vision, SigLIP vision:
`config.json` with a `model_type`, `model.safetensors`, optionally `preprocessor_config.json`) or
of a `timm` model in timm's hub layout (`config.json` with `architecture`, `model_args`,
`pretrained_cfg`, and `model.safetensors`) loads as a `LoadedModel` like any denoiser, so the
workspace, extraction, the store and the probes use it unchanged:

- no noise: its "scheduler" (`NoNoise`) has a single level t=0 and `add_noise` returns x_0; the
  timestep is not applicable (`Adapter.noised` is False: the workspace reads any t as 0);
- one probe point per transformer block, named by its module path (`encoder.layer.3`,
  `blocks.3`); its patch tokens are laid on the patch grid as the DiT family's are, the leading
  CLS and register tokens dropped (`models.layers.feature_map`);
- its own preprocessing (`EncoderPreprocess`): resized to its image size (the image processor's
  crop, else the config's), then normalised with its own mean and std (the image processor
  config, timm's `pretrained_cfg`, else the defaults its family was trained with);
- its own fingerprint (config, weights sha256, preprocessing) and the key parts
  `{"family": "encoder", ...}`, so its features never share a key with a diffusion model's.

`load_model("encoder:FOLDER")` forces this family; a folder of one of these layouts is detected
without the prefix. `random:encoder:FOLDER` (or `random:FOLDER`) is the same architecture with
fixed random weights.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import torch

from explorer.data.preprocess import Preprocess
from explorer.errors import ExplorerError
from explorer.models.families.base import Adapter, Condition
from explorer.models.weights import (
    PICKLE_SUFFIXES,
    canonical_config,
    check_regular,
    check_safetensors,
    file_sha256,
    hash_text,
    load_error_text,
    read_json,
)

FAMILY = "encoder"
RANDOM_SEED = 0  # as the denoisers' `random:` control
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
HALF = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
OPENAI_CLIP = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))
# transformers model types read, and the normalisation each was trained with when the folder
# has no preprocessor_config.json (the defaults of its image processor class)
HF_TYPES = {
    "dinov2": IMAGENET,
    "dinov2_with_registers": IMAGENET,
    "vit": HALF,
    "clip_vision_model": OPENAI_CLIP,
    "clip": OPENAI_CLIP,
    "siglip_vision_model": HALF,
    "siglip": HALF,
}
BLOCK_LISTS = ("layer", "layers", "blocks")  # the name of a transformer's list of blocks


@dataclass(frozen=True)
class EncoderPreprocess(Preprocess):
    """`Preprocess` (resize to `size`, `channels`, scale to [-1, 1]), then the encoder's own
    normalisation: `(x01 - mean) / std` per channel, with `x01` the image in [0, 1]."""

    mean: tuple[float, ...] = HALF[0]
    std: tuple[float, ...] = HALF[1]

    @property
    def tag(self) -> str:
        def nums(v):
            return ",".join(f"{float(x):.6g}" for x in v)

        return f"{super().tag}-norm-mean{nums(self.mean)}-std{nums(self.std)}"

    def __call__(self, images) -> torch.Tensor:
        x = super().__call__(images)
        mean = torch.tensor(self.mean, dtype=x.dtype).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype).view(1, -1, 1, 1)
        return ((x + 1.0) / 2.0 - mean) / std


class NoNoise:
    """The forward process of a source that reads clean images: one level, t=0, and x_t = x_0."""

    explorer_class = "none"
    explorer_text = "none: a reference encoder reads clean images (no timestep)"

    def __init__(self):
        self.config = SimpleNamespace(
            num_train_timesteps=1, trained_betas=None, beta_schedule="none", prediction_type="none"
        )
        self.alphas_cumprod = torch.ones(1)

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return x0


class EncoderNet(torch.nn.Module):
    """The encoder behind the denoiser's interface: `net(x, t, **kwargs)` ignores `t` and the
    conditioning, `config` carries `sample_size`, `in_channels` and `patch_size` (what the
    catalogue reads), `probe_points()` lists one point per block."""

    def __init__(self, backbone: torch.nn.Module, config: SimpleNamespace):
        super().__init__()
        self.backbone = backbone
        self.config = config
        self.blocks = block_list(backbone)
        self._call_kw = {}  # e.g. interpolate_pos_encoding when the input is not the config's size
        if config.kind == "hf":
            params = inspect.signature(backbone.forward).parameters
            if "interpolate_pos_encoding" in params and config.sample_size != config.native_size:
                self._call_kw["interpolate_pos_encoding"] = True

    @classmethod
    def from_config(cls, config: SimpleNamespace) -> EncoderNet:
        """The same architecture with fresh weights (used on the meta device to count FLOPs)."""
        return cls(build_backbone(config), config)

    def probe_points(self) -> list[tuple[str, str, str, str]]:
        """(name, hook, stage, kind) per transformer block, in forward order."""
        return [(name, f"backbone.{name}", "block", "transformer") for name in self.blocks]

    def forward(self, x: torch.Tensor, t=None, **_conditioning):
        if self.config.kind == "timm":
            return self.backbone.forward_features(x)
        return self.backbone(pixel_values=x, **self._call_kw)


def block_list(backbone: torch.nn.Module) -> list[str]:
    """Dotted paths of the transformer blocks: the longest ModuleList (or Sequential, timm) named
    layer, layers or blocks."""
    lists = [
        (name, mod)
        for name, mod in backbone.named_modules()
        if isinstance(mod, torch.nn.ModuleList | torch.nn.Sequential)
        and name.rpartition(".")[2] in BLOCK_LISTS
    ]
    if not lists:
        raise ExplorerError(
            f"cannot find the transformer blocks of this {type(backbone).__name__} (no module "
            "list named layer, layers or blocks)"
        )
    name, mod = max(lists, key=lambda item: len(item[1]))
    return [f"{name}.{i}" for i in range(len(mod))]


def is_encoder_folder(folder: Path) -> bool:
    """True for a folder laid out as a transformers vision encoder or a timm model."""
    path = folder / "config.json"
    if not path.is_file():
        return False
    try:
        config = read_json(path)
    except ExplorerError:
        return False
    if "_class_name" in config:  # a diffusers model
        return False
    return config.get("model_type") in HF_TYPES or "architecture" in config


def weights_file(folder: Path, trust_pickle: bool) -> Path:
    """The encoder's weights: `model.safetensors` (any `*.safetensors`), or a trusted pickle."""
    safetensors = sorted(folder.glob("*.safetensors"))
    if safetensors:
        for f in safetensors:
            check_regular(f)
            check_safetensors(f)
        return safetensors[0]
    pickles = [p for p in sorted(folder.iterdir()) if p.suffix in PICKLE_SUFFIXES]
    if pickles and not trust_pickle:
        raise ExplorerError(
            f"{pickles[0]} is a pickle checkpoint, which can run code when loaded; "
            "convert it to safetensors, or pass --trust-pickle if you trust its source"
        )
    if pickles:
        return pickles[0]
    raise ExplorerError(
        f"{folder} has a config but no weights (model.safetensors); is the download complete?"
    )


def read_config(folder: Path) -> SimpleNamespace:
    """What building and preprocessing need, from the folder's files alone (nothing is built)."""
    raw = read_json(folder / "config.json", "encoder config")
    if "architecture" in raw:
        return timm_config(folder, raw)
    model_type = raw.get("model_type")
    if model_type not in HF_TYPES:
        raise ExplorerError(
            f"{folder / 'config.json'} describes a '{model_type}' model; reference encoders are "
            f"transformers vision models ({', '.join(sorted(HF_TYPES))}) or timm models"
        )
    vision = raw.get("vision_config", raw) if model_type in ("clip", "siglip") else raw
    native = int(vision.get("image_size", 224))
    patch = int(vision.get("patch_size", 16))
    mean, std = HF_TYPES[model_type]
    size, norm_from = native, f"{model_type} defaults"
    proc_path = folder / "preprocessor_config.json"
    if proc_path.exists():
        proc = read_json(proc_path, "image processor config")
        mean, std = proc.get("image_mean", mean), proc.get("image_std", std)
        size = processor_size(proc) or native
        norm_from = "preprocessor_config.json"
    return SimpleNamespace(
        kind="hf",
        model_type=model_type,
        raw=raw,
        sample_size=int(size),
        native_size=native,
        patch_size=patch,
        in_channels=int(vision.get("num_channels", 3)),
        mean=tuple(float(m) for m in mean),
        std=tuple(float(s) for s in std),
        norm_from=norm_from,
    )


def processor_size(proc: dict) -> int | None:
    """The side an image processor feeds the model: its crop, else its resize target."""
    for key in (("crop_size",) if proc.get("do_center_crop", True) else ()) + ("size",):
        v = proc.get(key)
        if isinstance(v, int):
            return v
        if isinstance(v, dict):
            side = v.get("height") or v.get("shortest_edge")
            if side:
                return int(side)
    return None


def timm_config(folder: Path, raw: dict) -> SimpleNamespace:
    cfg = raw.get("pretrained_cfg") or {}
    args = dict(raw.get("model_args") or {})
    size = args.get("img_size") or (cfg.get("input_size") or [3, 224, 224])[-1]
    size = size[-1] if isinstance(size, list | tuple) else size
    mean, std = cfg.get("mean", IMAGENET[0]), cfg.get("std", IMAGENET[1])
    return SimpleNamespace(
        kind="timm",
        model_type=str(raw["architecture"]),
        raw=raw,
        sample_size=int(size),
        native_size=int(size),
        patch_size=int(args.get("patch_size") or 16),  # corrected from the built model
        in_channels=int(args.get("in_chans", 3)),
        mean=tuple(float(m) for m in mean),
        std=tuple(float(s) for s in std),
        norm_from="pretrained_cfg" if "mean" in cfg else "ImageNet defaults",
    )


def _timm():
    try:
        import timm  # optional: only timm folders need it
    except ImportError as e:
        raise ExplorerError(
            'this folder holds a timm model; install timm (pip install -e ".[encoders]")'
        ) from e
    return timm


def build_backbone(config: SimpleNamespace, weights: Path | None = None) -> torch.nn.Module:
    """The backbone of `config`: loaded from `weights` (its folder), or with fresh weights."""
    if config.kind == "timm":
        timm = _timm()
        args = dict(config.raw.get("model_args") or {})
        args.setdefault("num_classes", config.raw.get("num_classes", 0))
        if weights is None:
            return timm.create_model(config.model_type, pretrained=False, **args)
        overlay = {"file": str(weights), "num_classes": args["num_classes"]}
        return timm.create_model(
            config.model_type, pretrained=True, pretrained_cfg_overlay=overlay, **args
        )
    import transformers  # optional: encoders only (pip install -e ".[encoders]")

    cls = {"clip": "CLIPVisionModel", "siglip": "SiglipVisionModel"}.get(config.model_type)
    if weights is None:
        hf_config = transformers.AutoConfig.for_model(**config.raw)
        if cls is not None:
            hf_config = hf_config.vision_config
        kw = {"add_pooling_layer": False} if config.model_type == "vit" else {}
        return getattr(transformers, cls or "AutoModel").from_config(hf_config, **kw)
    kw = {"use_safetensors": weights.suffix == ".safetensors", "local_files_only": True}
    if config.model_type == "vit":
        kw["add_pooling_layer"] = False  # after the blocks; the saved encoder may lack it
    verbosity = transformers.logging.get_verbosity()
    bars = transformers.utils.logging.is_progress_bar_enabled()
    transformers.logging.set_verbosity_error()  # no load report or progress bar per load
    transformers.utils.logging.disable_progress_bar()
    try:
        return getattr(transformers, cls or "AutoModel").from_pretrained(weights.parent, **kw)
    finally:
        transformers.logging.set_verbosity(verbosity)
        if bars:
            transformers.utils.logging.enable_progress_bar()


def load(
    folder: Path, *, randomize: bool, trust_pickle: bool
) -> tuple[EncoderNet, NoNoise, str, Adapter]:
    """(net, its one-level scheduler, fingerprint, adapter) of the encoder in `folder`."""
    config = read_config(folder)
    try:
        if randomize:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(RANDOM_SEED)
                backbone = build_backbone(config)
            weights_part = f"random{RANDOM_SEED}"
        else:
            weights = weights_file(folder, trust_pickle)
            backbone = build_backbone(config, weights)
            weights_part = file_sha256(weights)
    except ExplorerError:
        raise
    except (OSError, ValueError, RuntimeError, TypeError, KeyError) as e:
        raise ExplorerError(f"cannot load the encoder in {folder}: {load_error_text(e)}") from e
    if config.kind == "timm":  # the built model knows its patch and input size best
        pe = getattr(backbone, "patch_embed", None)
        if pe is not None:
            config.patch_size = int(_first(pe.patch_size))
            if getattr(pe, "img_size", None) is not None:
                config.sample_size = config.native_size = int(_first(pe.img_size))
    if config.sample_size % config.patch_size:
        raise ExplorerError(
            f"{folder}: image size {config.sample_size} is not divisible by patch size "
            f"{config.patch_size}"
        )
    net = EncoderNet(backbone.eval(), config).eval()
    prep = EncoderPreprocess(config.sample_size, config.in_channels, config.mean, config.std)
    fp = hash_text(FAMILY, config.kind, canonical_config(config.raw), weights_part, prep.tag)
    what = "timm model" if config.kind == "timm" else f"transformers {config.model_type}"
    adapter = Adapter(
        FAMILY,
        net,
        config.sample_size,
        config.in_channels,
        condition=EncoderCondition(),
        transformer=True,
        loaded_from=f"reference encoder: {what} folder; normalised by {config.norm_from}",
        preprocess=prep,
        noised=False,
    )
    return net, NoNoise(), fp, adapter


def _first(v) -> int:
    return v[0] if isinstance(v, list | tuple) else v


class EncoderCondition(Condition):
    """An encoder takes no conditioning and no timestep."""

    def describe(self) -> str:
        return "none (a reference encoder: clean images, no timestep)"
