"""`explorer convert adm|sit`: a guided-diffusion (ADM) or SiT/REPA checkpoint -> a diffusers folder.

ADM: guided-diffusion's own flags (over a preset of a released checkpoint) map to an `ADMConfig`.
SiT: the size is read off the checkpoint; the options say what it cannot (its VAE, and the path
or code base when the checkpoint carries no training args)."""

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
    (
        "--num-heads",
        int,
        "heads per attention block when --num-head-channels is -1 (sit: the heads of a net "
        "that is not a released size S/B/L/XL)",
    ),
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
        "source",
        choices=["adm", "sit"],
        help="checkpoint format: adm (OpenAI guided-diffusion) or sit (SiT, REPA)",
    )
    p.add_argument(
        "checkpoint",
        help="the .pt file, e.g. 256x256_diffusion_uncond.pt, SiT-XL-2-256x256.pt, REPA's last.pt",
    )
    p.add_argument("--out", required=True, help="diffusers folder to write (then: --model OUT)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument(
        "--preset",
        default=None,
        choices=list(PRESETS),
        help="adm: flags of a released checkpoint (default: imagenet256-uncond); flags below "
        "override",
    )
    s = p.add_argument_group("SiT / REPA options (convert sit)")
    s.add_argument(
        "--vae",
        default=None,
        metavar="FOLDER",
        help="a local diffusers AutoencoderKL folder (sd-vae-ft-ema/mse), copied into OUT/vae",
    )
    s.add_argument(
        "--flavor",
        default=None,
        choices=["auto", "sit", "repa"],
        help="code base, which fixes the time input: sit (t=1 is data) or repa (t=0 is data); "
        "auto: repa when the checkpoint has projector heads or REPA's args (default)",
    )
    s.add_argument(
        "--path",
        default=None,
        choices=["linear", "gvp", "cosine"],
        help="the flow path it was trained on (default: the checkpoint's args, else linear)",
    )
    s.add_argument(
        "--weights",
        default=None,
        choices=["ema", "model"],
        help="which weights of a training checkpoint (default: ema)",
    )
    g = p.add_argument_group("guided-diffusion flags (convert adm; default: the preset's)")
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

    cfg = preset(a.preset or "imagenet256-uncond")
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


SIT_OPTIONS = ("--vae", "--flavor", "--path", "--weights")


def _given(a: argparse.Namespace, flags) -> list[str]:
    return [f for f in flags if getattr(a, _dest(f), None) is not None]


def cmd_convert(a: argparse.Namespace) -> int:
    """Convert a guided-diffusion (ADM) or SiT/REPA checkpoint into a diffusers folder usable as
    --model."""
    if a.source == "sit":
        return convert_sit_cli(a)
    if wrong := _given(a, SIT_OPTIONS):
        raise ExplorerError(f"{', '.join(wrong)} apply to `convert sit`, not `convert adm`")
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


def convert_sit_cli(a: argparse.Namespace) -> int:
    """`explorer convert sit`: convert, then say what was read, kept out and what is missing."""
    import time

    adm_flags = [f for f, _, _ in VALUE_FLAGS if f != "--num-heads"] + list(SWITCHES) + ["--preset"]
    if wrong := _given(a, adm_flags):
        raise ExplorerError(
            f"{', '.join(wrong)} apply to `convert adm`; a SiT's size is read off the checkpoint"
        )
    from explorer.models.convert.sit import convert_sit
    from explorer.models.convert.sit_presets import FLAVORS

    start = time.perf_counter()
    done = convert_sit(
        a.checkpoint,
        a.out,
        vae=a.vae,
        flavor=a.flavor or "auto",
        path=a.path,
        weights=a.weights,
        num_heads=a.num_heads,
        overwrite=a.overwrite,
    )
    dec, cfg = done.decisions, done.cfg
    print(
        f"converted {a.checkpoint} ({cfg.name}, {done.weights} weights, {dec.flavor} time "
        f"convention, {dec.flow_path} path) in {time.perf_counter() - start:.1f} s to "
        f"{done.out}; use it as --model {done.out}"
    )
    if done.dropped:
        logger.warning(
            f"note: REPA's projector heads ({len(done.dropped)} tensors, projectors.*) are kept "
            "out of the net: they map one block's tokens to the teacher's features in training only"
        )
    if done.ignored:
        logger.warning(f"note: not converted from the checkpoint: {', '.join(done.ignored)}")
    for note in dec.notes:
        logger.warning(f"note: {note}")
    if not done.has_vae:
        vae = FLAVORS[dec.flavor]["vae"]
        logger.warning(
            f"note: no --vae given, so {done.out} has no vae/ yet and cannot be opened; get "
            f"{vae} (huggingface-cli download {vae} --local-dir vae) and convert again with "
            "--vae vae --overwrite"
        )
    return 0


CONVERT = Command(
    "convert",
    convert_args,
    cmd_convert,
    "explorer convert adm 256x256_diffusion_uncond.pt --out models/adm256\n"
    "  explorer convert sit SiT-XL-2-256x256.pt --out models/sit-xl --vae sd-vae-ft-ema",
)
