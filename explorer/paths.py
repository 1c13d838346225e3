"""Where things live on disk: the package's assets and the user's cache."""

from __future__ import annotations

import os
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
BUNDLE = (
    _PACKAGE / "_bundle"
)  # in an installed wheel: app.py, .streamlit/ and assets/models/ (see _build.py)


def _app_root() -> Path:
    """The folder holding `app.py`, `.streamlit/config.toml` and `assets/`: a wheel's bundle, else the clone."""
    return BUNDLE if (BUNDLE / "app.py").is_file() else _PACKAGE.parent


APP_ROOT = _app_root()
REPO_ROOT = APP_ROOT  # older name, kept for callers
APP = APP_ROOT / "app.py"
ASSETS = APP_ROOT / "assets"
BUILTIN_MODELS = ASSETS / "models"
CACHE_ENV = "EXPLORER_CACHE"


def cache_dir(override: str | os.PathLike | None = None) -> Path:
    """The cache root: `override`, else `$EXPLORER_CACHE`, else `~/.cache/diffusion-explorer`."""
    if override:
        root = Path(override)
    elif os.environ.get(CACHE_ENV):
        root = Path(os.environ[CACHE_ENV])
    else:
        base = os.environ.get("XDG_CACHE_HOME") or (Path.home() / ".cache")
        root = Path(base) / "diffusion-explorer"
    root = root.expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root


# Built-in models shipped in assets/ (kept here, free of torch, for the CLI's cache fast path).
BUILTIN_MODEL_DIRS = {
    "ddpm-fashion-mnist": BUILTIN_MODELS / "ddpm-fashion-mnist",
    "ddpm-digits": BUILTIN_MODELS / "ddpm-digits",
}
DEFAULT_MODEL_FOR_DATASET = {"fashion-mnist": "ddpm-fashion-mnist", "digits": "ddpm-digits"}


def default_model(dataset: str) -> str:
    """The built-in model for a dataset name (the Fashion-MNIST model for anything else)."""
    return DEFAULT_MODEL_FOR_DATASET.get(dataset, "ddpm-fashion-mnist")
