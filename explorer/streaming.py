"""Preprocessed image batches for extraction, read batch by batch (never the whole dataset).

`batches` yields the model-ready pixels of each requested row span of a selection, in span
order; memory is bounded by a few batches whatever the dataset's size.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

Span = tuple[int, int]  # rows [start, stop) of a selection


def batches(
    dataset, indices: np.ndarray, spans: Sequence[Span], prep, *, workers: int = 0
) -> Iterator[tuple[Span, torch.Tensor]]:
    """`((start, stop), x (stop - start, C, H, W) float32 in [-1, 1])` for each span, in order."""
    for start, stop in spans:
        yield (start, stop), prep(dataset.images(indices[start:stop]))
