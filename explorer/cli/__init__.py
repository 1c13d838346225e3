"""The `explorer` command: layers, extract, sweep, search, embed, cka, align, train, convert, cache,
export, report, datasets and app (`explorer COMMAND --help` for each).

This module is the dispatcher only: each command lives in its own module, which declares it as
a `Command` (options, handler, example); the option groups they share are in `options`:

- `listing`: layers, datasets          - `extract`: extract (answered from the cache without torch)
- `sweep`: sweep, its --config, provenance - `analysis`: embed, cka
- `search`: search (the best setting without the grid)
- `align`: align (CKA, CKNNA, mutual k-NN between two feature sources, e.g. a reference encoder)
- `train`: train                       - `convert`: convert (guided-diffusion flags)
- `cache`: cache                       - `share`: export, report
- `app`: app (the web server)

Every command turns bad input into one line on stderr and a non-zero exit, never a traceback.
Importing this package stays light (no torch): the handlers import what they need.
"""

from __future__ import annotations

import argparse
import errno
import inspect
import os
import sys

from explorer.cli import (
    align,
    analysis,
    app,
    cache,
    convert,
    extract,
    listing,
    search,
    share,
    sweep,
    train,
)
from explorer.cli import log as _log
from explorer.cli.options import Command
from explorer.errors import ExplorerError
from explorer.features import host_memory

logger = _log.get("cli")

COMMANDS: dict[str, Command] = {
    c.name: c
    for c in (
        listing.LAYERS,
        extract.EXTRACT,
        sweep.SWEEP,
        search.SEARCH,
        analysis.EMBED,
        analysis.CKA,
        align.ALIGN,
        train.TRAIN,
        convert.CONVERT,
        cache.CACHE,
        share.EXPORT,
        share.REPORT,
        listing.DATASETS,
        app.APP,
    )
}
_NOISE = ("help", "version", "verbose", "quiet", "config", "func", "command")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows each option's default, unless its help already tells it or there is none to show."""

    def _get_help_string(self, action):
        text = action.help or ""
        if (
            "default" in text.lower()
            or action.default in (None, False)
            or action.default is argparse.SUPPRESS
        ):
            return text
        return super()._get_help_string(action)


def _verbosity(p: argparse.ArgumentParser, top: bool) -> None:
    default = (
        0 if top else argparse.SUPPRESS
    )  # a subcommand's flags must not reset the top-level ones
    p.add_argument(
        "-v", "--verbose", action="count", default=default, help="more messages on stderr"
    )
    p.add_argument(
        "-q",
        "--quiet",
        action="count",
        default=default,
        help="fewer messages on stderr (-qq: errors only); results stay on stdout",
    )


def build_parser() -> argparse.ArgumentParser:
    from explorer import __version__

    parser = argparse.ArgumentParser(
        prog="explorer",
        description="Find where a diffusion U-Net keeps its best image features.",
        epilog="example:\n  explorer layers\n  explorer sweep --help",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"explorer {__version__}")
    _verbosity(parser, top=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    parser.commands = {}
    for name, cmd in COMMANDS.items():
        doc = cmd.run.__doc__ or ""
        p = sub.add_parser(
            name,
            help=doc.strip().splitlines()[0],
            description=inspect.cleandoc(doc),
            formatter_class=HelpFormatter,
            epilog=f"example:\n  {cmd.example}",
        )
        cmd.add_args(p)
        _verbosity(p, top=False)
        p.set_defaults(func=cmd.run)
        parser.commands[name] = p
    return parser


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """Parsed arguments; for `sweep --config FILE` the file's options sit under the flags given."""
    parser = build_parser()
    args = parser.parse_args(argv)
    sub = parser.commands[args.command]
    args.option_dests = [a.dest for a in sub._actions if a.dest not in _NOISE]
    if getattr(args, "config", None):
        sub.set_defaults(**sweep.sweep_config(args.config, set(args.option_dests)))
        args = parser.parse_args(argv)
        args.option_dests = [a.dest for a in sub._actions if a.dest not in _NOISE]
    return args


def _not_under_torchrun(command: str) -> None:
    """Only extract and sweep share their work over torchrun ranks; refuse the rest there."""
    from explorer.features import torchrun
    from explorer.features.torchrun import RankFailed

    ranks = torchrun.from_env()
    if ranks.active:
        raise RankFailed(
            f"`explorer {command}` does not run under torchrun; only extract and sweep share "
            "their work over ranks",
            echo=ranks.main,
        )


def main(argv: list[str] | None = None) -> int:
    host_memory.tune()  # before any thread starts: CPU passes reuse freed heap pages
    try:
        args = parse(argv)
    except ExplorerError as e:
        _log.setup()
        logger.error(f"error: {e}")
        return 2
    _log.setup(args.verbose, args.quiet)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # the command, for records
    try:
        if args.command not in ("extract", "sweep"):
            _not_under_torchrun(args.command)
        return int(args.func(args) or 0)
    except ExplorerError as e:
        if getattr(e, "echo", True):  # a torchrun rank's failure is printed by rank 0 only
            logger.error(f"error: {e}")
        return 2
    except KeyboardInterrupt:
        logger.error("interrupted; finished work is saved and the next run resumes from it")
        return 130
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT) or os.environ.get("EXPLORER_DEBUG"):
            return _unexpected(e)
        logger.error(f"error: {disk_full(e, getattr(args, 'cache_dir', None))}")
        return 1
    except (ValueError, RuntimeError) as e:
        return _unexpected(e)


def run() -> None:
    """The `explorer` process (console script and `python -m explorer`): `main`, then exit with its
    code. A torchrun rank leaves with `os._exit` once its output is flushed: gloo's worker threads
    can still be dropping a finished collective's tensors, which takes the GIL, and doing that
    during interpreter shutdown aborts the rank (SIGABRT, "terminate called without an active
    exception") after its work is done. Every file is already written and renamed by then."""
    from explorer.features import torchrun

    code = main()
    try:
        ranked = torchrun.launched()
    except ExplorerError:  # a malformed RANK/WORLD_SIZE: main already said so
        ranked = False
    if ranked:
        import logging

        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def _unexpected(e: Exception) -> int:
    """An error no check foresaw: its type and text on one line (the traceback under EXPLORER_DEBUG)."""
    if os.environ.get("EXPLORER_DEBUG"):
        raise e
    logger.error(f"error: {type(e).__name__}: {e} (set EXPLORER_DEBUG=1 for a traceback)")
    return 1


def disk_full(e: OSError, cache: str | None) -> str:
    """The one line for a full disk (or quota): where, and what to do. The cache root unless the
    failed file (when known) lies elsewhere, e.g. a sweep's --out table."""
    from pathlib import Path

    from explorer.paths import cache_dir

    try:
        where = cache_dir(cache)
    except OSError:
        where = Path(cache or os.environ.get("EXPLORER_CACHE") or "~/.cache/diffusion-explorer")
    hint = "free space there or pass --cache-dir DIR on a disk with room"
    if e.filename and not Path(os.path.realpath(e.filename)).is_relative_to(
        os.path.realpath(where)
    ):
        where, hint = Path(e.filename).parent, "free space there or write the output elsewhere"
    return (
        f"no space left on device under {where}: {hint}; finished work is kept and the same "
        "command resumes from it"
    )
