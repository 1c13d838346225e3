"""The sprite atlas: every image at its cell, the texture within GPU limits, built in chunks."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from explorer.analysis import atlas
from explorer.errors import ExplorerError


def _image(i: int, size: int = 12, channels: int = 1) -> np.ndarray:
    """A recognisable image: its index in the top-left pixels, a ramp elsewhere."""
    im = np.tile(np.arange(size, dtype=np.uint8)[None, :] * 7, (size, 1))
    im[0, 0], im[0, 1] = i % 256, i // 256
    return im if channels == 1 else np.repeat(im[..., None], channels, axis=2)


def test_every_image_lands_in_its_cell_row_major():
    ims = [_image(i) for i in range(23)]
    pixels, lay = atlas.build_atlas([ims[:10], ims[10:]], count=23)
    assert (lay.cols, lay.rows, lay.cell) == (5, 5, 12), "ceil(sqrt(23)) columns, full-size cells"
    assert pixels.shape == (lay.height, lay.width, 1) == (60, 60, 1)
    for i, (x, y) in enumerate(lay.origins()):
        assert (x, y) == ((i % 5) * 12, (i // 5) * 12)
        np.testing.assert_array_equal(pixels[y : y + 12, x : x + 12, 0], ims[i])
    assert pixels[48:, 36:].max() == 0, "cells past the last image stay empty"


@pytest.mark.parametrize(
    ("count", "native", "limit"),
    [(100_000, 28, 8192), (70_000, 64, 8192), (10_000, 28, 4096), (1_000_000, 32, 8192)],
)
def test_the_texture_stays_within_the_limit(count, native, limit):
    lay = atlas.layout(count, native, max_side=limit)
    assert lay.width <= limit and lay.height <= limit
    assert lay.cols * lay.rows >= count and lay.cell <= native
    assert lay.cell == min(native, limit // lay.cols), "the largest cell that fits"


def test_texture_memory_and_the_sizes_chosen_for_big_sets():
    lay = atlas.layout(100_000, 28)
    assert (lay.cols, lay.rows, lay.cell) == (317, 316, 25)
    assert lay.texture_bytes(mipmaps=False) == 317 * 25 * 316 * 25 * 4
    assert lay.texture_bytes() == lay.texture_bytes(mipmaps=False) * 4 // 3
    assert atlas.layout(10_000, 28).cell == 28, "Fashion-MNIST's test set keeps full size"


def test_a_smaller_gpu_limit_shrinks_the_cells_and_images_follow():
    ims = [_image(i, size=40, channels=3) for i in range(9)]
    pixels, lay = atlas.build_atlas([ims], count=9, max_side=64)
    assert lay.cell == 21 and pixels.shape == (63, 63, 3), "3 cells of 64 // 3 px"
    assert pixels[:21, :21].any() and pixels[42:, 42:].any(), "every cell filled"


def test_non_square_images_keep_their_aspect_centred():
    wide = np.full((10, 20), 200, np.uint8)
    cell = atlas.fit_cell(wide, 10, 1)
    assert cell.shape == (10, 10, 1)
    assert cell[:2].max() == 0 and cell[-2:].max() == 0, "letterboxed top and bottom"
    assert (cell[3:7] == 200).all()


def test_chunked_building_never_holds_all_full_size_images():
    """2,000 images of 128 x 128 x 3 (98 MB together) are read 50 at a time into a small
    atlas: the reader is asked in chunks, and the peak memory is a small part of them all."""
    n, side, chunk = 2000, 128, 50
    asked: list[int] = []

    def read(indices):
        asked.append(len(indices))
        return [np.full((side, side, 3), int(i) % 251, np.uint8) for i in indices]

    tracemalloc.start()
    pixels, lay = atlas.atlas_from_reader(read, np.arange(n), max_side=1024, chunk=chunk)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    whole = n * side * side * 3
    assert max(asked) == chunk and sum(asked) == n, asked[:5]
    assert peak < whole / 8, f"peak {peak / 1e6:.1f} MB against {whole / 1e6:.0f} MB of images"
    x, y = lay.origins()[1234]
    assert (pixels[y : y + lay.cell, x : x + lay.cell] == 1234 % 251).all()


def test_bad_inputs_are_one_line_errors():
    with pytest.raises(ExplorerError, match="no images"):
        atlas.layout(0, 28)
    with pytest.raises(ExplorerError, match="do not fit"):
        atlas.layout(10_000, 28, max_side=50)
    with pytest.raises(ExplorerError, match="announced 3 images but got 2"):
        atlas.build_atlas([[_image(0), _image(1)]], count=3)
    with pytest.raises(ExplorerError, match="more than the 1 images"):
        atlas.build_atlas([[_image(0), _image(1)]], count=1)
    with pytest.raises(ExplorerError, match="uint8"):
        atlas.build_atlas([[np.zeros((4, 4), np.float32)]], count=1)


def test_png_round_trip():
    from io import BytesIO

    from PIL import Image

    pixels, _ = atlas.build_atlas([[_image(i) for i in range(4)]], count=4)
    back = np.asarray(Image.open(BytesIO(atlas.to_png(pixels))))
    np.testing.assert_array_equal(back, pixels[..., 0])


def test_projector_sprite_of_70000_images_stays_within_8192_px():
    """The Embedding Projector export of 70,000 thumbnails of 32 px (Fashion-MNIST's size
    and count, a little larger): cells shrink to 30 px, the sprite is 7,950 px square, and
    the config says the size it chose."""
    from io import BytesIO

    from PIL import Image

    from explorer import export

    n, side = 70_000, 32
    ramp = np.tile(np.arange(side, dtype=np.uint8) * 8, (side, 1))

    def thumbs():
        for i in range(n):
            im = ramp.copy()
            im[0, 0] = i % 256
            yield im

    data = export.ExportData(
        {"test": np.zeros((n, 2), np.float32)},
        {"test": np.arange(n) % 10},
        [f"c{k}" for k in range(10)],
        images={"test": thumbs},
    )
    files = export.projector_files(data)
    sprite = Image.open(BytesIO(files["sprite.png"]))
    config = files["projector_config.pbtxt"].decode()
    assert sprite.size == (265 * 30, 265 * 30) and max(sprite.size) <= export.SPRITE_MAX
    assert config.count("single_image_dim: 30") == 2
    assert "70,000 thumbnails of 30 x 30 px (shrunk from 32 px" in config.splitlines()[0]
    assert config.splitlines()[0].startswith("#"), "a comment the Projector's parser skips"
