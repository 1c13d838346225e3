"""`explorer convert adm`: an OpenAI guided-diffusion (ADM) checkpoint -> a diffusers folder, with
guided-diffusion's own flags (over a preset of a released checkpoint) mapped to an `ADMConfig`."""

from __future__ import annotations

import argparse

from explorer.cli.options import Command, logger
from explorer.errors import ExplorerError

# guided-diffusion flags given as a value, a list or a switch; None (not given): the preset's
VALUE_FLAGS = (
    ("--image-size", int, "input side"),
    ("--num-channels", int, "base width"),
    ("--num-res-blocks", int, "res blocks per level"),
    (
        "--channel-mult",
        str,
        "e.g. 1,1,2,2,4,4 (empty: guided-diffusion's default for the image size)",
    ),
    ("--attention-resolutions", str, "feature-map sides with attention, e.g. 32,16,8"),
    ("--num-head-channels", int, "channels per head (-1: use --num-heads)"),
    ("--num-heads", int, "heads per attention block when --num-head-channels is -1"),
    ("--noise-schedule", str, "linear or cosine"),
    ("--diffusion-steps", int, "training timesteps"),
)
LIST_FLAGS = ("--channel-mult", "--attention-resolutions")  # comma-separated, read below
SWITCHES = (
    "--use-new-attention-order",
    "--learn-sigma",
    "--resblock-updown",
    "--use-scale-shift-norm",
    "--class-cond",
)


def convert_args(p: argparse.ArgumentParser) -> None:
    from explorer.models.convert.adm_presets import PRESETS

    p.add_argument(
        "source", choices=["adm"], help="checkpoint format: adm (OpenAI guided-diffusion)"
    )
    p.add_argument("checkpoint", help="the .pt state dict, e.g. 256x256_diffusion_uncond.pt")
    p.add_argument("--out", required=True, help="diffusers folder to write (then: --model OUT)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument(
        "--preset",
        default="imagenet256-uncond",
        choices=list(PRESETS),
        help="flags of a released checkpoint (default: imagenet256-uncond); flags below override",
    )
    g = p.add_argument_group("guided-diffusion flags (default: the preset's)")
    for flag, kind, text in VALUE_FLAGS:
        g.add_argument(flag, type=kind, default=None, help=text)
    for flag in SWITCHES:
        g.add_argument(
            flag,
            action=argparse.BooleanOptionalAction,
            default=None,
            help=f"guided-diffusion's {flag[2:].replace('-', '_')}",
        )


def _dest(flag: str) -> str:
    return flag[2:].replace("-", "_")


def _numbers(text: str, flag: str, kind: type, example: str) -> tuple:
    """ "1,1,2" -> (1, 1, 2) of `kind`; a one-line error naming `flag` otherwise."""
    try:
        return tuple(kind(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise ExplorerError(f"cannot read {flag} '{text}'; give {example}") from None


def adm_config_from_args(a: argparse.Namespace):
    """The preset's ADMConfig with every flag given on the command line applied."""
    from dataclasses import replace

    from explorer.models.convert.adm_presets import preset

    cfg = preset(a.preset)
    given = [f for f, _, _ in VALUE_FLAGS if f not in LIST_FLAGS] + list(SWITCHES)
    changes = {_dest(f): getattr(a, _dest(f)) for f in given if getattr(a, _dest(f)) is not None}
    if a.channel_mult is not None:
        mult = _numbers(a.channel_mult, "--channel-mult", float, "e.g. 1,1,2,2,4,4")
        changes["channel_mult"] = mult or None
    elif a.image_size is not None and a.image_size != cfg.image_size:
        changes["channel_mult"] = None  # the new size's default, as guided-diffusion does
    if a.attention_resolutions is not None:
        changes["attention_resolutions"] = _numbers(
            a.attention_resolutions,
            "--attention-resolutions",
            int,
            "integers separated by commas",
        )
    return replace(cfg, **changes).validate()


def cmd_convert(a: argparse.Namespace) -> int:
    """Convert a guided-diffusion (ADM) checkpoint into a diffusers folder usable as --model."""
    import time

    # torch loads here, not at import
    from explorer.models.convert.adm import convert_adm

    cfg = adm_config_from_args(a)
    start = time.perf_counter()
    out = convert_adm(a.checkpoint, a.out, cfg, overwrite=a.overwrite)
    print(
        f"converted {a.checkpoint} in {time.perf_counter() - start:.1f} s to {out}; "
        f"use it as --model {out}"
    )
    if cfg.class_cond:
        logger.warning(
            "note: this model is class-conditional (label embedding kept); extract from it with "
            "--class-label N (one fixed class) or --class-label true (each image's own label: "
            "label-leaking)"
        )
    return 0


CONVERT = Command(
    "convert",
    convert_args,
    cmd_convert,
    "explorer convert adm 256x256_diffusion_uncond.pt --out models/adm256",
)
