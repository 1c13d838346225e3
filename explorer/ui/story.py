"""The app's one story, in words: the setting best on validation in a sweep table, its test top-1
against raw pixels, and the image limits it was computed with. Pure (no Streamlit).

Explore and Compare open with `Story.line()`; when the page's limits are not the sweep's,
`limits_differ` says so, and the page offers the sweep's limits in one click.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from explorer.defaults import PIXELS
from explorer.results import accuracy_view, best_on_validation, sweep_slice


@dataclass(frozen=True)
class Story:
    """The best setting on validation of one (model, head, pool) in a sweep table.

    `top1`, `pixels` and the paired difference `vs_pixels (diff, low, high)` are test-set
    fractions; `train_limit`/`test_limit` are the sweep's image limits (None = the whole split).
    """

    t: int
    layer: str
    layer_index: int
    pool: str
    head: str
    top1: float
    pixels: float | None
    vs_pixels: tuple[float, float, float] | None
    train_limit: int | None
    test_limit: int | None
    test_images: int | None = None

    def line(self) -> str:
        """E.g. "Best on validation: block 7, t=10 — 86.9% vs pixels 82.5% (+4.4 [3.8, 5.1]),
        full test set"."""
        words = f"Best on validation: block {self.layer_index}, t={self.t} — {100 * self.top1:.1f}%"
        if self.pixels is not None:
            words += f" vs pixels {100 * self.pixels:.1f}%"
        if self.vs_pixels is not None:
            d, lo, hi = (100 * v for v in self.vs_pixels)
            words += f" ({d:+.1f} [{lo:.1f}, {hi:.1f}])"
        return f"{words}, {self.test_text()}"

    def test_text(self) -> str:
        if self.test_limit is None:
            n = f" ({self.test_images:,} images)" if self.test_images else ""
            return f"full test set{n}"
        return f"{self.test_limit:,} test images"

    def limits_text(self) -> str:
        """The sweep's limits: "6,000 train / all test images"."""
        return limits_words(self.train_limit, self.test_limit)

    def limits_differ(self, train_limit: int | None, test_limit: int | None) -> bool:
        return (train_limit, test_limit) != (self.train_limit, self.test_limit)

    def is_setting(self, t: int, layer: str, pool: str) -> bool:
        return (int(t), str(layer), str(pool)) == (self.t, self.layer, self.pool)


def limits_words(train: int | None, test: int | None) -> str:
    """Image limits as the sidebar spells them: "2,000 train / all test images"."""
    tr = "all" if train is None else f"{train:,}"
    te = "all" if test is None else f"{test:,}"
    return f"{tr} train / {te} test images"


def story(
    table: pd.DataFrame,
    model: str,
    *,
    head: str,
    pool: str,
    train_limit: int | None,
    test_limit: int | None,
    test_images: int | None = None,
) -> Story | None:
    """The `Story` of `model` in the tidy `table` for `head` and `pool` (falling back to the
    table's linear head and its first pooling when it has no rows of them); None without any
    row with a validation accuracy."""
    wide = accuracy_view(table)
    mine = sweep_slice(wide, model)
    if mine.empty:
        return None
    if head not in set(mine["head"]):
        head = "linear" if "linear" in set(mine["head"]) else str(mine["head"].iloc[0])
    pools = sorted(sweep_slice(mine, model, head)["pool"].unique())
    pool = pool if pool in pools else pools[0]
    best = best_on_validation(sweep_slice(mine, model, head, pool))
    if best is None:
        return None
    px = wide[(wide["model"] == PIXELS) & (wide["head"] == head)]
    diff = tuple(float(best.get(f"vs_pixels{s}", np.nan)) for s in ("", "_low", "_high"))
    return Story(
        t=int(best["t"]),
        layer=str(best["layer"]),
        layer_index=int(best["layer_index"]),
        pool=str(pool),
        head=head,
        top1=float(best["top1"]),
        pixels=float(px["top1"].iloc[0]) if len(px) else None,
        vs_pixels=diff if all(np.isfinite(diff)) else None,
        train_limit=train_limit,
        test_limit=test_limit,
        test_images=test_images,
    )
