"""The selection grid: the images of selected test points, a page of 48 at a time, each marked
correct or wrong, with captions that never break inside a word; the selection is `sel` in the
link (compact ranges of test positions), so a shared link shows the same images.

Explore's embedding view feeds it: `grid(ws, positions, class_names, y, predictions, key)`.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

import numpy as np
import streamlit as st

from explorer.ui import services, state

PAGE = 48  # images a page
LINK_NAME = "sel"  # the URL parameter holding the selection
MAX_LINK_CHARS = 1800  # a longer selection is not put in the link (browsers cut long URLs)
_CSS = """
.dfe-grid { display: flex; flex-wrap: wrap; gap: 6px; }
.dfe-tile { width: 92px; margin: 0; padding: 3px; border-radius: 6px; box-sizing: border-box;
  border: 3px solid #2e9e4f; background: #f2faf4; }
.dfe-tile.dfe-wrong { border-color: #d0342c; background: #fdf1f0; }
.dfe-tile img { width: 80px; height: 80px; display: block; margin: 0 auto;
  image-rendering: pixelated; }
.dfe-tile figcaption { font-size: 11px; line-height: 1.25; text-align: center;
  white-space: nowrap; overflow: hidden; text-overflow: ellipsis; word-break: keep-all; }
.dfe-tile .dfe-mark { font-weight: 700; }
.dfe-tile.dfe-wrong .dfe-mark { color: #d0342c; }
.dfe-tile:not(.dfe-wrong) .dfe-mark { color: #2e9e4f; }
"""


def encode(positions: Sequence[int]) -> str:
    """Sorted positions as ranges: `[1, 2, 3, 7, 9, 10]` -> `"1-3.7.9-10"`."""
    xs = sorted({int(p) for p in positions})
    parts, i = [], 0
    while i < len(xs):
        j = i
        while j + 1 < len(xs) and xs[j + 1] == xs[j] + 1:
            j += 1
        parts.append(str(xs[i]) if i == j else f"{xs[i]}-{xs[j]}")
        i = j + 1
    return ".".join(parts)


def decode(text: str, n: int) -> list[int]:
    """`encode`'s text back to positions, each in `[0, n)`; ValueError saying what is wrong."""
    out: list[int] = []
    for part in filter(None, str(text).strip().split(".")):
        lo, _, hi = part.partition("-")
        if not lo.isdigit() or (hi and not hi.isdigit()):
            raise ValueError(f"'{part}' is not a position or a range like 3-7")
        a, b = int(lo), int(hi or lo)
        if not 0 <= a <= b < n:
            raise ValueError(f"'{part}' is outside the {n} test images")
        out.extend(range(a, b + 1))
    return out


def from_link(n: int) -> list[int]:
    """The positions of `sel` in the link (of `n` test images); [] when absent or unreadable."""
    raw = st.query_params.get(LINK_NAME)
    if not raw:
        return []
    try:
        return decode(raw, n)
    except ValueError:
        return []


def to_link(positions: Sequence[int]) -> None:
    """Put the selection in the link (`sel`), or take it out when empty or too long."""
    text = encode(positions)
    if text and len(text) <= MAX_LINK_CHARS:
        state.link(LINK_NAME, text)
    elif LINK_NAME in st.query_params:
        del st.query_params[LINK_NAME]


def tiles_html(thumbs: Sequence[str], truth: Sequence[str], predicted: Sequence[str]) -> str:
    """The grid's HTML: one tile per image (a `data:` URI), green and ✓ when predicted right,
    red and ✗ when wrong, captions on two lines (true, predicted) cut with "…", never mid-word."""
    tiles = []
    for src, t, p in zip(thumbs, truth, predicted, strict=True):
        ok = t == p
        tip = html.escape(f"true {t} → predicted {p}" + ("" if ok else " (wrong)"))
        mark = "✓" if ok else "✗"
        tiles.append(
            f"<figure class='dfe-tile{'' if ok else ' dfe-wrong'}' title='{tip}'>"
            f"<img src='{src}' alt='{tip}'>"
            f"<figcaption>{html.escape(t)}</figcaption>"
            f"<figcaption><span class='dfe-mark'>{mark}</span> {html.escape(p)}</figcaption>"
            "</figure>"
        )
    return f"<style>{_CSS}</style><div class='dfe-grid'>{''.join(tiles)}</div>"


def grid(
    ws,
    positions: Sequence[int],
    class_names: Sequence[str],
    y: np.ndarray,
    predictions: np.ndarray | None,
    key: str,
) -> None:
    """The images of test `positions` (into `ws.test.indices`), `PAGE` a page with a page
    picker beyond it, each tile marked right or wrong by `predictions` `(N_test,)` against
    `y` `(N_test,)`; the selection goes into the link."""
    pos = np.asarray(sorted({int(p) for p in positions}), dtype=np.int64)
    to_link(pos.tolist())
    if not len(pos):
        return
    pages = -(-len(pos) // PAGE)
    page = 1
    if pages > 1:
        page = int(
            st.number_input(
                f"Page (of {pages}, {PAGE} images each)",
                min_value=1,
                max_value=pages,
                step=1,
                key=f"{key}_page",
            )
        )
    shown = pos[(page - 1) * PAGE : page * PAGE]
    pred = y if predictions is None else np.asarray(predictions)
    wrong = int(np.sum(pred[pos] != y[pos]))
    st.markdown(
        f"**{len(pos):,} selected** · {wrong:,} wrong (red ✗), {len(pos) - wrong:,} right "
        f"(green ✓) · showing {(page - 1) * PAGE + 1}–{(page - 1) * PAGE + len(shown)}; "
        "captions: true class, then predicted"
    )
    ds = ws.dataset
    thumbs = services.thumbnails(ds, ds.fingerprint, tuple(int(i) for i in ws.test.indices[shown]))
    names = [str(c) for c in class_names]
    st.html(tiles_html(thumbs, [names[y[p]] for p in shown], [names[pred[p]] for p in shown]))
