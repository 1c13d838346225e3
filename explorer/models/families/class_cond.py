"""Class-conditional denoisers (`UNet2DModel` with `num_class_embeds`, DiT): the `--class-label` choice.

`null` feeds the model's unconditional class (when it has one), an integer one fixed class
for every image, `true` each image's own dataset label: those features see the answer, so
they are marked label-leaking wherever they are shown.
"""

from __future__ import annotations

import numpy as np
import torch

from explorer.errors import ExplorerError
from explorer.models.families.base import Adapter, Condition

TRUE = "true"


def parse_class_label(value) -> int | str | None:
    """ "null"/None -> None, "true" -> "true", "7"/7 -> 7; anything else is an ExplorerError."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("null", "none")):
        return None
    if isinstance(value, bool):
        return TRUE if value else None
    text = str(value).strip().lower()
    if text == TRUE:
        return TRUE
    try:
        return int(text)
    except ValueError:
        raise ExplorerError(
            f"--class-label must be null, an integer class or true, not '{value}'"
        ) from None


class ClassLabel(Condition):
    """Class labels for the call: `null` (the null class index), a fixed int, or each image's label."""

    def __init__(
        self, choice: int | str | None, num_classes: int, null_index: int | None, arg: str
    ):
        self.choice, self.num_classes, self.null_index, self.arg = (
            choice,
            num_classes,
            null_index,
            arg,
        )
        self.leaks_label = choice == TRUE
        self.tag = "class:null" if choice is None else f"class:{choice}"

    def kwargs(self, batch: int, labels: np.ndarray | None, device) -> dict:
        if self.choice == TRUE:
            if labels is None:
                raise ExplorerError(
                    "--class-label true needs each image's label; this call has none"
                )
            y = np.asarray(labels, dtype=np.int64)
            if len(y) and (y.min() < 0 or y.max() >= self.num_classes):
                raise ExplorerError(
                    f"--class-label true: dataset label {int(y.max())} is not one of the "
                    f"model's {self.num_classes} classes; pick a fixed class or null"
                )
            y = torch.from_numpy(y)
            if torch.device(device).type == "cuda":  # pinned: the copy does not wait for the GPU
                y = y.pin_memory()
            return {self.arg: y.to(device, non_blocking=True)}
        value = self.null_index if self.choice is None else self.choice
        return {self.arg: torch.full((batch,), int(value), dtype=torch.long, device=device)}

    def describe(self) -> str:
        if self.choice == TRUE:
            return "each image's own class label (label-leaking: the features see the answer)"
        if self.choice is None:
            return f"the null (unconditional) class, index {self.null_index}"
        return f"fixed class {self.choice} for every image"


class Placeholder(ClassLabel):
    """No `--class-label` where the class cannot matter (listing layers: every class gives the
    same shapes): class 0 stands in, and the model describes itself as having no class chosen."""

    def __init__(self, num_classes: int, arg: str):
        super().__init__(0, num_classes, None, arg)
        self.tag = "class:unset"

    def describe(self) -> str:
        return (
            f"no --class-label given (class 0 stands in to trace the layers; extracting needs "
            f"--class-label N, 0 to {self.num_classes - 1}, or true)"
        )


def condition(
    value,
    num_classes: int,
    null_index: int | None,
    what: str,
    arg: str = "class_labels",
    required: bool = True,
) -> ClassLabel:
    """The `ClassLabel` for `--class-label value` (None: the default), or a one-line refusal.

    `required=False` (listing layers only): no label and no null class gives a `Placeholder`
    instead of the refusal."""
    choice = parse_class_label(value)
    if isinstance(choice, int) and not 0 <= choice < num_classes:
        raise ExplorerError(
            f"--class-label {choice} is outside this {what}'s classes 0 to {num_classes - 1}"
        )
    if choice is None and null_index is None and value is None and not required:
        return Placeholder(num_classes, arg)
    if choice is None and null_index is None:
        said = "null was asked but" if value is not None else "no --class-label given and"
        raise ExplorerError(
            f"this {what} is class-conditional ({num_classes} classes); {said} it has no unconditional "
            f"class: pick --class-label N (a fixed class, 0 to {num_classes - 1}) or --class-label true "
            "(each image's own label, label-leaking)"
        )
    return ClassLabel(choice, num_classes, null_index, arg)


def unet_classes(config: dict) -> int | None:
    """Number of class embeddings of a `UNet2DModel` config (None: unconditional); refuses the
    float-input class embeddings (`timestep`, `identity`) that take no class index."""
    kind = config.get("class_embed_type")
    if kind is not None:
        raise ExplorerError(
            f"class_embed_type '{kind}' takes a vector, not a class index; only "
            "num_class_embeds (an embedding table) is supported"
        )
    n = config.get("num_class_embeds")
    return int(n) if n else None


def adapter(
    unet,
    class_label,
    loaded_from: str = "UNet2DModel folder with class embeddings",
    required: bool = True,
) -> Adapter:
    """A class-conditional pixel U-Net; `UNet2DModel` declares no null class, so null is refused
    (and no label too, unless `required` is False: see `condition`)."""
    cfg = unet.config
    s = cfg.sample_size if isinstance(cfg.sample_size, int) else cfg.sample_size[0]
    cond = condition(class_label, int(cfg.num_class_embeds), None, "U-Net", required=required)
    return Adapter(
        "class-cond-unet",
        unet,
        int(s),
        int(cfg.in_channels),
        condition=cond,
        loaded_from=loaded_from,
    )
