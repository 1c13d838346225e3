"""`explorer extract`: fill the feature cache for a grid of timesteps x layers x poolings x seeds.

A request identical to one already completed is answered from its memo without importing torch,
so this module (and everything it imports at the top) stays free of torch: a fully cached
request costs milliseconds. Anything else opens a `Workspace` and computes the missing entries.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from explorer import defaults as D
from explorer.cli.options import Command, default_names, grid_args, logger
from explorer.errors import ExplorerError
from explorer.features import torchrun
from explorer.features.reports import ExtractOutcome
from explorer.features.store import FeatureStore

if TYPE_CHECKING:
    from explorer.workspace import Workspace


def extract_args(p: argparse.ArgumentParser) -> None:
    grid_args(
        p,
        D.EXTRACT_TIMESTEPS,
        "e.g. 10,90,150 or 0:1000:100 (default: {ts})",
        ("--pool", "k for k×k average (1,2,4,8) and/or max; comma-separated (default: {pool})"),
    )


def cmd_extract(a: argparse.Namespace) -> int:
    """Compute pooled features for timesteps x layers into the on-disk cache.

    Under torchrun (`torchrun --nproc_per_node=K -m explorer extract ...`) the K ranks share each
    (t, seed) job by whole batches and write the same entries a single process would (byte for
    byte on the CPU); the cache must be one folder all ranks see. Only rank 0 prints.
    """
    default_names(a)
    a.device = torchrun.init(a.device)  # torchrun: join the ranks (a plain run: unchanged)
    main_rank = torchrun.current().main

    def opened(ws) -> None:
        from explorer.models.device import describe

        logger.info(
            f"model {ws.model.name} on {describe(next(ws.model.denoiser.parameters()).device)}; "
            f"dataset {ws.dataset.name}"
        )

    out = extract(
        a.model,
        a.dataset,
        timesteps=a.timesteps,
        layers=a.layers,
        pools=a.pool,
        seeds=a.seeds,
        splits=a.splits,
        limit=a.limit,
        cache_dir=a.cache_dir,
        device=a.device,
        trust_pickle=a.trust_pickle,
        batch_size=a.batch_size,
        on_open=opened,
        compile=a.compile,
        dtype=a.dtype,
        workers=a.workers,
    )
    torchrun.finish()
    if not main_rank:
        return 0
    for line in out.lines():
        print(line)
    if out.skipped_log:
        print(f"{out.skipped} unreadable images were skipped; their names are in {out.skipped_log}")
    return 0


EXTRACT = Command(
    "extract",
    extract_args,
    cmd_extract,
    "explorer extract --dataset digits --timesteps 10,90 --layers mid --pool 2,max --limit 500",
)


def extract(
    model_spec: str,
    dataset_spec: str,
    *,
    timesteps: str | Sequence[int] = "10,90,150",
    layers: str | int | Sequence = "all",
    pools: str | Sequence = "2",
    seeds: str | Sequence[int] = "0",
    splits: str | Sequence[str] = "train,test",
    limit: int | None = None,
    cache_dir=None,
    device: str = "auto",
    trust_pickle: bool = False,
    batch_size: int = 256,
    progress: bool | Callable[[int, int], None] = True,
    on_open: Callable[[Workspace], None] | None = None,
    compile: bool = False,
    dtype: str | None = "auto",
    workers: int | None = None,
) -> ExtractOutcome:
    """Fill the feature cache for a grid, the job `explorer extract` runs.

    A request identical to one already completed (same model and dataset files by path, size
    and mtime, same arguments) whose entries all still verify is answered from its memo,
    without importing torch or opening the model and data. Anything else opens a `Workspace`
    and computes only the missing entries. `on_open(ws)` is called once the inputs are loaded.
    `compile` (torch.compile, `explorer.models.accel`) is a speed option only: not in the memo id;
    the precision (`dtype`, see `explorer.models.device.resolve_precision`) is. `workers`: image-decoding
    processes for file datasets (None: `explorer.features.streaming.default_workers`), also speed only.
    """
    from explorer.features import request_memo

    if batch_size < 1 or (limit is not None and limit < 1):
        raise ExplorerError("--batch-size and --limit must be positive integers")
    if workers is not None and workers < 0:
        raise ExplorerError(
            f"--workers must be 0 or more (0: decode images in this process), not {workers}"
        )
    store = FeatureStore(cache_dir)
    request = {
        "splits": splits,
        "limit": limit,
        "seeds": seeds,
        "timesteps": timesteps,
        "layers": layers,
        "pool": pools,
        "trust_pickle": trust_pickle,
    }

    def request_id(precision: str) -> str | None:
        return request_memo.request_id(
            model_spec,
            dataset_spec,
            {k: _as_text(v) for k, v in request.items()} | {"p": precision},
        )

    precision = _known_precision(dtype, device)  # None: only torch can tell (a GPU may be here)
    rid = request_id(precision) if precision else None
    ranks = torchrun.current()  # torchrun: every rank computes (rank 0 decides what is missing)
    if rid and not ranks.active and (memo := request_memo.lookup(store, rid)):
        return ExtractOutcome(
            {sp: None for sp in memo["splits"]},
            memo["splits"],
            memo["images"],
            str(store.dir),
            from_memo=True,
        )

    # torch loads here, not at import: the cached request above answered without it
    from explorer.models.layers import select_layers
    from explorer.settings import check_timesteps, parse_pools, parse_seeds, parse_timesteps
    from explorer.workspace import Workspace

    ws = Workspace.open(
        model_spec,
        dataset_spec,
        device=device,
        cache_dir=store.root,
        trust_pickle=trust_pickle,
        compile=compile,
        dtype=dtype,
        train_limit=limit,
        test_limit=limit,
        batch_size=batch_size,
        progress=progress,
        workers=workers,
    )
    split_list = (
        [sp.strip() for sp in splits.split(",") if sp.strip()]
        if isinstance(splits, str)
        else list(splits)
    )
    for sp in split_list:
        ws.selection(sp)  # unknown split: a clear error before any work
    seed_list = parse_seeds(seeds)
    ts = check_timesteps(parse_timesteps(timesteps), ws.model.num_timesteps)
    n_layers, n_pools = (
        len(select_layers(ws.catalogue, layers)),
        len(parse_pools(pools)),
    )  # bad names fail here
    if on_open is not None:
        on_open(ws)
    logger.info(
        f"{len(ts)} timesteps x {n_layers} layers x {n_pools} poolings x {len(seed_list)} seeds "
        f"on {', '.join(split_list)}"
    )
    out = ws.extract_grid(ts, layers, pools, seed_list, split_list)
    if ws.dataset.skipped:
        from explorer.atomic import atomic_write

        log = store.root / "logs" / f"skipped-{ws.dataset.fingerprint}.txt"
        atomic_write(log, "\n".join(ws.dataset.skipped) + "\n")
        out.skipped, out.skipped_log = len(ws.dataset.skipped), str(log)
    elif ranks.main:
        request_memo.record(store, request_id(ws.model.precision), out.keys, {"images": out.images})
    return out


def _known_precision(dtype: str | None, device: str) -> str | None:
    """The precision a request will run at, when it is knowable without importing torch: an
    explicit `--dtype`, or "auto" where no GPU driver exists (fp32); None otherwise."""
    from pathlib import Path

    from explorer.defaults import precision_name

    if dtype not in (None, "", "auto"):
        return precision_name(dtype)
    gpu_driver = Path("/proc/driver/nvidia").exists() or Path("/dev/kfd").exists()
    return "fp32" if device == "cpu" or not gpu_driver else None


def _as_text(value) -> str | None:
    """A request argument as the CLI spells it ("10,90,150"), so the memo id does not depend on type."""
    if value is None or isinstance(value, str | bool):
        return value
    if isinstance(value, int):
        return str(value)
    return ",".join(str(v) for v in value)
