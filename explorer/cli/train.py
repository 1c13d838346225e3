"""`explorer train`: train a small pixel DDPM on a dataset (how the built-in models were made)."""

from __future__ import annotations

import argparse

from explorer.cli.options import Command, device_arg
from explorer.errors import ExplorerError


def train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dataset", default="fashion-mnist", help="built-in name or path (default: fashion-mnist)"
    )
    p.add_argument(
        "--out", required=True, help="folder for the model (resumes if a checkpoint is there)"
    )
    p.add_argument("--steps", type=int, default=2000, help="optimiser steps")
    p.add_argument("--batch-size", type=int, default=128, help="images per step")
    p.add_argument("--lr", type=float, default=5e-4, help="AdamW learning rate")
    p.add_argument(
        "--ema-decay", type=float, default=0.995, help="decay of the weights' moving average"
    )
    p.add_argument(
        "--checkpoint-every", type=int, default=100, help="steps between resumable checkpoints"
    )
    p.add_argument(
        "--size",
        type=int,
        default=None,
        help="model resolution (default: the images', at least 16)",
    )
    p.add_argument("--no-flip", action="store_true", help="no horizontal-flip augmentation")
    p.add_argument("--seed", type=int, default=0, help="random seed (weights, batches, noise)")
    device_arg(p)


def cmd_train(a: argparse.Namespace) -> int:
    """Train a small DDPM for the built-in models."""
    # torch loads here, not at import
    from explorer.data import load_dataset
    from explorer.models.train import TrainConfig, command_line, train

    if a.steps < 1 or a.batch_size < 1:
        raise ExplorerError("--steps and --batch-size must be positive integers")
    ds = load_dataset(a.dataset)
    cfg = TrainConfig(
        steps=a.steps,
        batch_size=a.batch_size,
        lr=a.lr,
        ema_decay=a.ema_decay,
        checkpoint_every=a.checkpoint_every,
        seed=a.seed,
        size=a.size,
        flip=not a.no_flip,
    )
    out = train(ds, a.out, cfg, device=a.device, command=command_line())
    print(f"saved model to {out} (model card: {out / 'README.md'})")
    return 0


TRAIN = Command(
    "train",
    train_args,
    cmd_train,
    "explorer train --dataset digits --out runs/ddpm-digits --steps 500",
)
