"""`explorer cache`: verify, clear or list the on-disk cache."""

from __future__ import annotations

import argparse

from explorer.cli.options import Command, cache_dir_arg


def cache_args(p: argparse.ArgumentParser) -> None:
    from explorer.features.cache_admin import PARTS

    p.add_argument(
        "action",
        choices=["verify", "clear", "info"],
        help="verify: check every feature entry; clear: delete parts; info: sizes",
    )
    cache_dir_arg(p, "cache root")
    for name in PARTS:
        p.add_argument(
            f"--{name}",
            action="store_true",
            help=f"clear: only {name} (combine; default: all but uploads)",
        )


def cmd_cache(a: argparse.Namespace) -> int:
    """Verify, clear or list the on-disk cache (features, probe results, UMAPs, sweeps, ...)."""
    from explorer.features import cache_admin

    if a.action == "verify":
        rep = cache_admin.verify(a.cache_dir)
        for key, reason in rep.damaged:
            print(f"damaged: {key}: {reason}")
        print(rep.summary())
        return 0
    if a.action == "clear":
        parts = [n for n in cache_admin.PARTS if getattr(a, n)] or None
        freed = cache_admin.clear(a.cache_dir, parts)
        print("cleared " + ", ".join(f"{n} ({b / 1e6:.1f} MB)" for n, b in freed.items()))
        return 0
    for part in cache_admin.inventory(a.cache_dir):
        print(f"{part.name:9} {part.files:7d} files {part.bytes / 1e6:10.1f} MB  {part.path}")
    return 0


CACHE = Command("cache", cache_args, cmd_cache, "explorer cache info")
