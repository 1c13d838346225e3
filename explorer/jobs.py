"""`explorer extract` as one job: answered from the request memo without torch, or computed
through the `Workspace` facade.

Kept free of torch at import time, so that a fully cached request costs milliseconds.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from explorer import distributed
from explorer.errors import ExplorerError
from explorer.store import FeatureStore

if TYPE_CHECKING:
    from explorer.features import ExtractReport
    from explorer.workspace import Workspace


@dataclass
class ExtractOutcome:
    """What `extract` did: per split, the report (None when answered from the request memo)."""

    reports: dict[str, ExtractReport | None]
    keys: dict[str, list[str]]
    images: dict[str, int]
    location: str
    from_memo: bool = False
    skipped: int = 0  # unreadable images left out
    skipped_log: str | None = None  # their names

    def lines(self) -> list[str]:
        """One summary line per split, as `explorer extract` prints them."""
        out = []
        for split, rep in self.reports.items():
            if rep is None:
                n = len(self.keys[split])
                out.append(
                    f"{split}: {n} feature sets for {self.images[split]} images: 0 computed, {n} from cache; "
                    f"stored in {self.location}"
                )
            else:
                out.append(f"{split}: {rep.summary()}")
        return out


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
    `compile` (torch.compile, `explorer.accel`) is a speed option only: not in the memo id;
    the precision (`dtype`, see `explorer.device.resolve_precision`) is. `workers`: image-decoding
    processes for file datasets (None: `explorer.streaming.default_workers`), also speed only.
    """
    from explorer import request_memo

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
    ranks = distributed.current()  # torchrun: every rank computes (rank 0 decides what is missing)
    if rid and not ranks.active and (memo := request_memo.lookup(store, rid)):
        return ExtractOutcome(
            {sp: None for sp in memo["splits"]},
            memo["splits"],
            memo["images"],
            str(store.dir),
            from_memo=True,
        )

    from explorer.extract import check_timesteps, parse_pools, parse_timesteps
    from explorer.layers import select_layers
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
        ws._sel(sp)  # unknown split: a clear error before any work
    seed_list = _seed_list(seeds)
    ts = check_timesteps(parse_timesteps(timesteps), ws.model.num_timesteps)
    n_layers, n_pools = (
        len(select_layers(ws.catalogue, layers)),
        len(parse_pools(pools)),
    )  # bad names fail here
    if on_open is not None:
        on_open(ws)
    logging.getLogger("explorer.jobs").info(
        f"{len(ts)} timesteps x {n_layers} layers x {n_pools} poolings x {len(seed_list)} seeds "
        f"on {', '.join(split_list)}"
    )
    out = ws.extract_grid(ts, layers, pools, seed_list, split_list)
    if ws.dataset.skipped:
        from explorer.atomic import atomic_write

        log = store.root / "logs" / f"skipped-{ws.dataset.fingerprint}.txt"
        atomic_write(log, "\n".join(ws.dataset.skipped) + "\n")
        out.skipped, out.skipped_log = len(ws.dataset.skipped), str(log)
    else:
        if ranks.main:
            request_memo.record(
                store, request_id(ws.model.precision), out.keys, {"images": out.images}
            )
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


def _seed_list(seeds: str | Sequence[int]) -> list[int]:
    """ "0,1,2" or [0, 1, 2] -> [0, 1, 2]; a clear error for anything else."""
    if not isinstance(seeds, str):
        return list(seeds)
    try:
        return [int(sd) for sd in seeds.split(",") if sd.strip()]
    except ValueError:
        raise ExplorerError(
            f"cannot read seeds '{seeds}'; give integers separated by commas"
        ) from None
