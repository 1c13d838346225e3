"""Sprite atlases: many small images tiled into one texture, one square cell per image.

The images-as-points view (`explorer.ui.points`) draws every test image from one WebGL texture,
and the Embedding Projector export (`explorer.export`) ships one sprite; both have a largest
side (8,192 px by default, and never more than the GPU's `MAX_TEXTURE_SIZE`). `layout` picks the
grid and shrinks the cell until the texture fits; `build_atlas` fills it from chunks of images,
shrinking each into its cell as it arrives, so only the atlas and one chunk of full-size
images are ever held. Pure: numpy and Pillow, no Streamlit.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from explorer.errors import ExplorerError

MAX_SIDE = 8192  # px: the Embedding Projector's sprite limit and a common WebGL MAX_TEXTURE_SIZE
CHUNK = 1024  # images read at a time by `atlas_from_reader`


@dataclass(frozen=True)
class AtlasLayout:
    """`count` square cells of `cell` px, row-major on a grid of `cols` x `rows` cells."""

    count: int
    cols: int
    rows: int
    cell: int

    @property
    def width(self) -> int:
        return self.cols * self.cell

    @property
    def height(self) -> int:
        return self.rows * self.cell

    def origins(self) -> np.ndarray:
        """`(count, 2)` int64 top-left corners `(x, y)` in px of every cell, image order."""
        i = np.arange(self.count, dtype=np.int64)
        return np.stack([(i % self.cols) * self.cell, (i // self.cols) * self.cell], axis=1)

    def texture_bytes(self, mipmaps: bool = True) -> int:
        """GPU memory of the atlas as an RGBA8 texture (a full mipmap chain adds a third)."""
        base = self.width * self.height * 4
        return base * 4 // 3 if mipmaps else base

    def as_dict(self) -> dict:
        return {
            "count": self.count,
            "cols": self.cols,
            "rows": self.rows,
            "cell": self.cell,
            "width": self.width,
            "height": self.height,
        }


def layout(count: int, native: int, max_side: int = MAX_SIDE, square: bool = False) -> AtlasLayout:
    """The grid for `count` images of `native` px (their longer side): `ceil(sqrt(count))`
    columns, as many rows as needed (as many as columns if `square`, the Projector's sprite),
    and cells of `native` px shrunk until both sides of the texture are at most `max_side`
    (e.g. 100,000 images of 28 px: 317 columns of 25 px)."""
    if count < 1:
        raise ExplorerError("no images for the atlas: give at least one")
    if native < 1 or max_side < 1:
        raise ExplorerError(f"atlas cell ({native} px) and side ({max_side} px) must be positive")
    cols = math.ceil(math.sqrt(count))
    rows = cols if square else math.ceil(count / cols)
    cell = min(int(native), int(max_side) // cols)
    if cell < 1:
        raise ExplorerError(
            f"{count:,} images do not fit a {max_side} px atlas even at 1 px each; "
            "show a subsample or raise the texture limit"
        )
    return AtlasLayout(count, cols, rows, cell)


def _hwc(im) -> np.ndarray:
    """An image as `(H, W, C)` uint8 with C 1 or 3 (alpha dropped)."""
    im = np.asarray(im)
    if im.dtype != np.uint8:
        raise ExplorerError(f"atlas images must be uint8, got {im.dtype}")
    im = im[..., None] if im.ndim == 2 else im
    return im[..., :3] if im.shape[-1] >= 3 else im[..., :1]


def fit_cell(im: np.ndarray, cell: int, channels: int) -> np.ndarray:
    """One image shrunk (or enlarged) to fit a `cell` x `cell` square, aspect kept, centred
    on black: `(cell, cell, channels)` uint8."""
    from PIL import Image

    im = _hwc(im)
    pil = Image.fromarray(im[..., 0] if im.shape[-1] == 1 else im)
    pil = pil.convert("RGB" if channels == 3 else "L")
    h, w = im.shape[:2]
    scale = cell / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    if size != (w, h):
        pil = pil.resize(size, Image.BILINEAR if scale < 1 else Image.NEAREST)
    out = np.zeros((cell, cell, channels), np.uint8)
    x0, y0 = (cell - size[0]) // 2, (cell - size[1]) // 2
    out[y0 : y0 + size[1], x0 : x0 + size[0]] = np.asarray(pil).reshape(size[1], size[0], channels)
    return out


def build_atlas(
    chunks: Iterable[Sequence[np.ndarray]],
    count: int,
    native: int | None = None,
    max_side: int = MAX_SIDE,
    square: bool = False,
) -> tuple[np.ndarray, AtlasLayout]:
    """Tile `count` images, given as an iterable of chunks (each a sequence of `(H, W)` or
    `(H, W, C)` uint8 images, read once), into an atlas: `(height, width, C)` uint8 with C 1
    (all grey) or 3, image `i` at `layout.origins()[i]`. The cell is `native` px (default: the
    first image's longer side), shrunk to fit `max_side`; colour is decided by the first image
    (later colour images in a grey atlas are converted); `square` as in `layout`. Only one
    chunk is held at a time."""
    it = iter(chunks)
    atlas = lay = None
    placed = 0
    for chunk in it:
        for im in chunk:
            if atlas is None:
                first = _hwc(im)
                channels = 3 if first.shape[-1] == 3 else 1
                lay = layout(count, native or max(first.shape[:2]), max_side, square)
                atlas = np.zeros((lay.height, lay.width, channels), np.uint8)
            if placed >= count:
                raise ExplorerError(f"more than the {count} images announced for the atlas")
            c = lay.cell
            x, y = (placed % lay.cols) * c, (placed // lay.cols) * c
            atlas[y : y + c, x : x + c] = fit_cell(im, c, atlas.shape[-1])
            placed += 1
    if atlas is None:
        raise ExplorerError("no images for the atlas: give at least one")
    if placed != count:
        raise ExplorerError(f"the atlas announced {count} images but got {placed}")
    return atlas, lay


def atlas_from_reader(
    read: Callable[[np.ndarray], Sequence[np.ndarray]],
    indices: np.ndarray,
    native: int | None = None,
    max_side: int = MAX_SIDE,
    chunk: int = CHUNK,
) -> tuple[np.ndarray, AtlasLayout]:
    """`build_atlas` over `read(indices[a:a+chunk])` for consecutive chunks: the atlas of a
    dataset's images at `indices` `(N,)`, never holding more than `chunk` full-size images."""
    idx = np.asarray(indices, dtype=np.int64)
    chunks = (read(idx[a : a + chunk]) for a in range(0, len(idx), max(1, chunk)))
    return build_atlas(chunks, len(idx), native, max_side)


def to_png(atlas: np.ndarray, compress_level: int = 3) -> bytes:
    """The atlas `(H, W, C)` uint8 as PNG bytes (grey or RGB)."""
    from PIL import Image

    a = np.asarray(atlas, np.uint8)
    img = Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a)
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()
