"""What every figure module shares: the figure record, a timer, the machine, the run context."""

from __future__ import annotations

import math
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def figure(
    fig: str,
    name: str,
    value: float | None,
    unit: str,
    target: str,
    met: bool | None,
    note: str = "",
) -> dict:
    """One row of the table. `met` is None where there is no target (report only) or no result."""
    return {
        "figure": fig,
        "name": name,
        "value": value,
        "unit": unit,
        "target": target,
        "met": met,
        "note": note,
    }


def not_run(fig: str, name: str, target: str, why: str) -> dict:
    """A figure that could not be measured here, with the reason."""
    return figure(fig, name, None, "", target, None, why)


def best_of(fn: Callable[[], object], repeat: int = 3, warmup: bool = True) -> float:
    """Smallest wall time in seconds of `repeat` calls of `fn` (after one untimed call)."""
    if warmup:
        fn()
    best = math.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        _sync()
        best = min(best, time.perf_counter() - t0)
    return best


def paired(fns: dict[str, Callable[[], object]], rounds: int = 3) -> dict[str, float]:
    """Smallest wall time of each of `fns`, run in turn round after round (after one untimed
    round), so that a shared machine's load falls on all of them alike."""
    for fn in fns.values():
        fn()
    best = dict.fromkeys(fns, math.inf)
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            _sync()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine() -> str:
    """CPU model, cores, OS, torch version and GPU (or none), in one line."""
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{cpu_model()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), {gpu}"
    )


def load_average() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


@dataclass
class Context:
    """What the figures run on, shared across them (models and workspaces are loaded once).

    `model` / `dataset`: specs for `load_model` / `load_dataset`, or objects already loaded
    (tests pass a tiny model folder and a tiny dataset). `quick` shrinks every size.
    """

    model: object = "ddpm-fashion-mnist"
    dataset: object = "fashion-mnist"
    quick: bool = False
    workdir: Path | None = None
    device: str = "cpu"
    rss_images: int | None = None  # figure 3b's image count (None: the module's 50,000)
    _cache: dict = field(default_factory=dict)

    def size(self, full: int, quick: int) -> int:
        return quick if self.quick else full

    def loaded_model(self):
        if "model" not in self._cache:
            from explorer.models.loader import load_model

            m = self.model
            self._cache["model"] = load_model(m, device=self.device) if isinstance(m, str) else m
        return self._cache["model"]

    def loaded_dataset(self):
        if "dataset" not in self._cache:
            from explorer.data import load_dataset

            d = self.dataset
            self._cache["dataset"] = load_dataset(d) if isinstance(d, str) else d
        return self._cache["dataset"]

    def catalogue(self):
        if "catalogue" not in self._cache:
            from explorer.models.layers import build_catalogue

            self._cache["catalogue"] = build_catalogue(self.loaded_model().denoiser)
        return self._cache["catalogue"]

    def cache_root(self, name: str) -> Path:
        """A fresh folder under the run's work dir for one figure's caches."""
        assert self.workdir is not None, "Context.workdir is set by the runner"
        path = self.workdir / name
        path.mkdir(parents=True, exist_ok=True)
        return path
