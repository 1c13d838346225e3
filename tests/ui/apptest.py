"""What the AppTest-driven page tests share: the app, the small digits link they open it on,
opening a page, the no-error check and reading plotly's typed arrays."""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
from streamlit.testing.v1 import AppTest

from explorer.ui.common import PAGES

APP = str(Path(__file__).resolve().parents[2] / "app.py")
LINK = {"model": "ddpm-digits", "dataset": "digits", "train": "300", "test": "100", "proj": "pca"}


def link_workspace(model: str = "ddpm-digits"):
    """The core's workspace for `LINK`'s model, data and limits, on the current cache: what the
    pages compute, straight from the core."""
    from explorer.data import load_dataset
    from explorer.features.store import FeatureStore
    from explorer.models.loader import load_model
    from explorer.workspace import Workspace

    train, test = int(LINK["train"]), int(LINK["test"])
    return Workspace(
        load_model(model), load_dataset(LINK["dataset"]), store=FeatureStore(),
        train_limit=train, test_limit=test,
    )  # fmt: skip


def open_page(page: str = "explore", link: dict | None = None, **params) -> AppTest:
    """`page` run once on `link` (default `LINK`) updated with `params`."""
    at = AppTest.from_file(APP, default_timeout=600)
    at.query_params.update({**(LINK if link is None else link), **params})
    if page != "explore":
        at.switch_page(PAGES[page])
    return at.run()


def assert_clean(at: AppTest, where: str) -> None:
    assert not at.exception, f"{where}: exception {[e.value for e in at.exception]}"
    assert not at.error, f"{where}: error {[e.value for e in at.error]}"


def explore_shows_a_probe(model: str) -> None:
    """Explore on `model` (a folder or spec) with 40/20 digits: no error, a Top-1 accuracy."""
    link = {"model": model, "dataset": "digits", "train": "40", "test": "20", "proj": "pca"}
    at = open_page("explore", link=link)
    assert_clean(at, f"explore on {model}")
    top1 = [m.value for m in at.metric if m.label == "Top-1 (test)"]
    assert top1 and top1[0].endswith("%"), f"no probe accuracy: {[m.label for m in at.metric]}"


def plotly_array(value) -> np.ndarray:
    """A plotly JSON array: a list, or a typed array {dtype, bdata (base64), shape}."""
    if isinstance(value, dict) and "bdata" in value:
        shape = [int(x) for x in str(value.get("shape", "-1")).split(",")]
        return np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"]).reshape(shape)
    return np.asarray(value, dtype=float)
