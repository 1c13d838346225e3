"""`explorer layers` and `explorer datasets`: what there is to probe, before any extraction."""

from __future__ import annotations

import argparse

from explorer.cli.options import Command, model_args, open_inputs


def layers_args(p: argparse.ArgumentParser) -> None:
    model_args(p)
    p.add_argument("--dataset", default=None, help=argparse.SUPPRESS)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def cmd_layers(a: argparse.Namespace) -> int:
    """List the model's probe points (paper numbering) with their shapes."""
    import json

    # torch loads here, not at import: a cached `explorer extract` answers without it
    from explorer.models.layers import build_catalogue

    # the catalogue is the same for every class: a class-conditional model needs no --class-label
    model, _ = open_inputs(a, need_dataset=False, condition_required=False)
    cat = build_catalogue(model.denoiser)
    if a.json:
        print(json.dumps([lay.to_dict() for lay in cat], indent=1))
        return 0
    print(
        f"{model.name}: {model.parameters / 1e6:.2f}M parameters, {model.resolution}x{model.resolution}, "
        f"T={model.num_timesteps}, fingerprint {model.fingerprint}"
    )
    print(
        "; ".join(f"{k}: {v}" for k, v in model.adapter.describe().items())
        + f"; scheduler: {model.scheduler_text}"
    )
    if model.adapter.leaks_label:
        print(
            "warning: --class-label true feeds each image's own label: these features are label-leaking"
        )
    print(f"{'idx':>3}  {'stage':5}  {'name':28}  {'kind':22}  {'C x H x W':>14}")
    for lay in cat:
        print(
            f"{lay.index:>3}  {lay.stage:5}  {lay.name:28}  {lay.kind:22}  "
            f"{f'{lay.channels}x{lay.height}x{lay.width}':>14}"
        )
    return 0


def datasets_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "paths",
        nargs="*",
        help="dataset folders, or folders of them (also searched: $EXPLORER_DATA_ROOTS)",
    )


def cmd_datasets(a: argparse.Namespace) -> int:
    """List the datasets available (built-ins, folders given or under the data roots) and their splits."""
    from explorer.data.catalog import list_datasets

    for e in list_datasets(a.paths):
        state = "" if e.available else " (not installed)"
        print(f"{e.name}\t{e.kind}{state}\t{e.split}")
    return 0


LAYERS = Command("layers", layers_args, cmd_layers, "explorer layers --model ddpm-digits")
DATASETS = Command(
    "datasets",
    datasets_args,
    cmd_datasets,
    "explorer datasets ~/data   (a folder of ImageFolder trees; train.txt/test.txt pick splits)",
)
