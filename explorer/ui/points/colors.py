"""What the images-as-points view colours, shows and exports: pure functions, arrays in and out.

`point_colors` colours `(N,)` points by true class, predicted class, correct/wrong or
confidence and returns the legend entry of every point (the view's legend toggles entries);
`search_classes` finds classes by name; `shown_mask` keeps the points of some classes;
`selection_table` and `selection_csv` describe a selection (the per-class table and the
"these images" export); `neighbour_confidence` is the confidence used when the probe gives
none. No Streamlit, no plotting library.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from explorer.errors import ExplorerError

COLOR_BY = ("true class", "predicted class", "correct or wrong", "confidence")
CORRECT, WRONG = "#2ca02c", "#d62728"
CONFIDENCE_BINS = 5  # legend entries of the confidence colouring (equal-width bins of [0, 1])
# light yellow -> dark blue (viridis stops, reversed so low confidence is pale)
_CONFIDENCE_RAMP = ((253, 231, 37), (94, 201, 98), (33, 145, 140), (59, 82, 139), (68, 1, 84))


@dataclass
class Coloring:
    """`rgba` `(N, 4)` uint8 point colours (alpha 255), `groups` `(N,)` int32 legend entry of
    each point, `legend` the entries as `(name, "#rrggbb")`, in order."""

    rgba: np.ndarray
    groups: np.ndarray
    legend: list[tuple[str, str]]


def to_rgb(color: str) -> tuple[int, int, int]:
    """`'#rrggbb'`, `'#rgb'` or `'rgb(r, g, b)'` as three ints."""
    c = color.strip()
    if c.startswith("#") and len(c) in (4, 7):
        h = c[1:] if len(c) == 7 else "".join(ch * 2 for ch in c[1:])
        return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)
    m = re.fullmatch(r"rgba?\(\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*(?:,[^)]*)?\)", c)
    if m:
        return int(m.group(1)), int(m.group(2)), int(m.group(3))
    raise ExplorerError(f"unreadable colour {color!r}: give '#rrggbb' or 'rgb(r, g, b)'")


def to_hex(rgb: Sequence[int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*(int(v) for v in rgb[:3]))


def _rgba(palette: np.ndarray, groups: np.ndarray) -> np.ndarray:
    out = np.full((len(groups), 4), 255, np.uint8)
    out[:, :3] = palette[groups]
    return out


def point_colors(
    color_by: str,
    labels: np.ndarray,
    class_colors: Sequence[str],
    class_names: Sequence[str],
    predictions: np.ndarray | None = None,
    confidence: np.ndarray | None = None,
) -> Coloring:
    """Colours of `(N,)` points with true `labels`: by `"true class"` (the class colours),
    `"predicted class"` (the same colours, by prediction), `"correct or wrong"` (green / red)
    or `"confidence"` (`(N,)` in [0, 1], `CONFIDENCE_BINS` bins from pale to dark)."""
    y = np.asarray(labels, dtype=np.int64)
    if color_by not in COLOR_BY:
        raise ExplorerError(f"unknown colouring {color_by!r}; choose from {', '.join(COLOR_BY)}")
    if len(class_colors) < len(class_names):
        raise ExplorerError(f"{len(class_colors)} colours for {len(class_names)} classes")
    needs = {"predicted class": predictions, "correct or wrong": predictions}
    needs["confidence"] = confidence
    if color_by in needs and needs[color_by] is None:
        what = "confidences" if color_by == "confidence" else "predictions"
        raise ExplorerError(f"colouring by {color_by} needs the probe's {what}")
    if color_by in ("true class", "predicted class"):
        groups = y if color_by == "true class" else np.asarray(predictions, np.int64)
        palette = np.array([to_rgb(c) for c in class_colors[: len(class_names)]], np.uint8)
        legend = [(str(n), to_hex(p)) for n, p in zip(class_names, palette, strict=True)]
    elif color_by == "correct or wrong":
        groups = (np.asarray(predictions, np.int64) != y).astype(np.int64)  # 0 right, 1 wrong
        palette = np.array([to_rgb(CORRECT), to_rgb(WRONG)], np.uint8)
        legend = [("correct", CORRECT), ("wrong", WRONG)]
    else:
        conf = np.clip(np.asarray(confidence, np.float64), 0.0, 1.0)
        groups = np.minimum((conf * CONFIDENCE_BINS).astype(np.int64), CONFIDENCE_BINS - 1)
        palette = np.array(_CONFIDENCE_RAMP[:CONFIDENCE_BINS], np.uint8)
        edges = np.linspace(0, 100, CONFIDENCE_BINS + 1).astype(int)
        legend = [
            (f"confidence {a}–{b}%", to_hex(p))
            for a, b, p in zip(edges[:-1], edges[1:], palette, strict=True)
        ]
    if groups.shape != y.shape:
        raise ExplorerError(f"{groups.shape[0]} values to colour by for {y.shape[0]} points")
    return Coloring(_rgba(palette, groups), groups.astype(np.int32), legend)


def search_classes(query: str, class_names: Sequence[str]) -> list[int]:
    """Classes whose name contains any of the comma-separated terms of `query`, case and
    surrounding spaces ignored (`"shirt, boot"` finds T-shirt/top, Shirt and Ankle boot); an
    empty query finds every class."""
    terms = [t.strip().lower() for t in str(query).split(",") if t.strip()]
    if not terms:
        return list(range(len(class_names)))
    return [i for i, n in enumerate(class_names) if any(t in str(n).lower() for t in terms)]


def shown_mask(labels: np.ndarray, classes: Sequence[int]) -> np.ndarray:
    """`(N,)` bool: the points whose true class is one of `classes`."""
    return np.isin(np.asarray(labels, np.int64), np.asarray(list(classes), np.int64))


def selection_table(
    positions: Sequence[int],
    labels: np.ndarray,
    class_names: Sequence[str],
    predictions: np.ndarray | None = None,
) -> pd.DataFrame:
    """Per true class of the selected test `positions`: how many were selected, their share of
    the class, and (with predictions) how many of them the probe got right, with the accuracy
    on them; most selected first, classes not selected left out."""
    y = np.asarray(labels, np.int64)
    pos = np.asarray(list(positions), np.int64)
    k = len(class_names)
    chosen = np.bincount(y[pos], minlength=k)
    total = np.bincount(y, minlength=k)
    table = pd.DataFrame(
        {
            "class": [str(n) for n in class_names],
            "selected": chosen,
            "of the class (%)": np.round(100 * chosen / np.maximum(total, 1), 1),
        }
    )
    if predictions is not None:
        right = np.bincount(y[pos], weights=np.asarray(predictions)[pos] == y[pos], minlength=k)
        table["correct"] = right.astype(np.int64)
        table["top-1 on them (%)"] = np.round(100 * right / np.maximum(chosen, 1), 1)
    table = table[table["selected"] > 0]
    return table.sort_values("selected", ascending=False, kind="stable").reset_index(drop=True)


def selection_csv(
    positions: Sequence[int],
    dataset_indices: np.ndarray,
    files: Sequence[str],
    labels: np.ndarray,
    class_names: Sequence[str],
    predictions: np.ndarray | None = None,
) -> bytes:
    """The "these images" export: one CSV row per selected test position with its
    `dataset_index`, `file` (`files[i]` belongs to position i), true class and prediction."""
    pos = np.asarray(list(positions), np.int64)
    y = np.asarray(labels, np.int64)
    if len(files) != len(y) or len(dataset_indices) != len(y):
        raise ExplorerError(
            f"{len(files)} file names and {len(dataset_indices)} indices for {len(y)} points"
        )
    frame = pd.DataFrame(
        {
            "test_position": pos,
            "dataset_index": np.asarray(dataset_indices, np.int64)[pos],
            "file": [files[i] for i in pos],
            "label": [str(class_names[c]) for c in y[pos]],
        }
    )
    if predictions is not None:
        frame["predicted"] = [str(class_names[c]) for c in np.asarray(predictions)[pos]]
    buf = io.StringIO()
    frame.to_csv(buf, index=False)
    return buf.getvalue().encode()


def neighbour_confidence(
    features: np.ndarray, labels: np.ndarray, predictions: np.ndarray, k: int = 10
) -> np.ndarray:
    """`(N,)` in [0, 1]: the share of each point's `k` nearest other test points (cosine on
    the `(N, D)` features) whose true class is the point's predicted class; a label-free
    stand-in where the probe keeps no class probabilities. Chunked: `(1024, N)` at a time."""
    x = np.asarray(features, np.float32).reshape(len(features), -1)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    y, p = np.asarray(labels, np.int64), np.asarray(predictions, np.int64)
    n = len(x)
    k = max(1, min(int(k), n - 1))
    if n < 2:
        return np.ones(n)
    out = np.empty(n)
    for a in range(0, n, 1024):
        sim = x[a : a + 1024] @ x.T
        sim[np.arange(len(sim)), np.arange(a, a + len(sim))] = -np.inf  # not itself
        near = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        out[a : a + len(sim)] = (y[near] == p[a : a + len(sim), None]).mean(axis=1)
    return out
