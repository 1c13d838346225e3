"""Diffusion Feature Explorer: find where a diffusion U-Net keeps its best image features.

The core is plain Python and torch; the Streamlit app (`app.py`) and the CLI
(`explorer.cli`) are thin layers over it. From Python (a notebook):

    import explorer
    ws = explorer.open("ddpm-digits", "digits", train_limit=500, test_limit=200)
    r = ws.probe(t=10, layer="mid", pool=2, head="linear")       # r.top1, r.ci_low, r.per_class
    X, y = ws.features(t=10, layer="mid", pool=2, split="test")  # (N, D) float32, (N,) int64
    df = ws.sweep(timesteps=[10, 90], layers="all")              # the tidy results table

The stable surface is `open`, `Workspace`, `Setting`, `ExplorerError` and `__version__`;
torch and the models load on first use, so `import explorer` stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from explorer.errors import ExplorerError

if TYPE_CHECKING:
    from explorer.settings import Setting
    from explorer.workspace import Workspace  # torch and the models: on first use only

__all__ = ["ExplorerError", "Setting", "Workspace", "__version__", "open"]
__version__ = "0.1.0"


def open(
    model: str,
    dataset: str,
    *,
    train_limit: int | None = None,
    test_limit: int | None = None,
    device: str = "auto",
    cache_dir=None,
    **kw,
) -> Workspace:
    """A `Workspace` for a model (built-in name, folder, hub id or random:<model>) on a dataset
    (fashion-mnist, digits or a folder), over the on-disk caches the CLI and the app share."""
    from explorer.workspace import Workspace

    return Workspace.open(
        model,
        dataset,
        train_limit=train_limit,
        test_limit=test_limit,
        device=device,
        cache_dir=cache_dir,
        **kw,
    )


def __getattr__(name: str):
    if name in ("Workspace", "Setting"):
        from explorer import workspace  # torch and the models: on first use only

        return getattr(workspace, name)
    raise AttributeError(f"module 'explorer' has no attribute {name!r}")
