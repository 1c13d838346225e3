"""One setting's features, labels and metadata in the formats other tools read.

Formats: `.npz` (numpy), safetensors, Parquet (one row per image, one column per feature)
and a TensorBoard Embedding Projector folder (`tensors.tsv`, `metadata.tsv`, `sprite.png`,
`projector_config.pbtxt`). Every writer works to bytes, so the app offers the same files as
downloads; `write` puts them on disk atomically.
"""

from __future__ import annotations

import io
import itertools
import json
import math
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from explorer.atomic import atomic_write
from explorer.errors import ExplorerError

FORMATS = ("npz", "safetensors", "parquet", "projector")
SUFFIX = {"npz": ".npz", "safetensors": ".safetensors", "parquet": ".parquet", "projector": ".zip"}
MIME = {
    "npz": "application/octet-stream",
    "safetensors": "application/octet-stream",
    "parquet": "application/vnd.apache.parquet",
    "projector": "application/zip",
}
PROJECTOR_FILES = ("tensors.tsv", "metadata.tsv", "sprite.png", "projector_config.pbtxt")
SPRITE_MAX = 8192  # the Projector's largest sprite side, in pixels


@dataclass
class ExportData:
    """Features of one setting per split, with what is needed to read them elsewhere.

    `features[split]`: `(N, D)` float array; `labels[split]`: `(N,)` int class indices;
    `indices[split]`: `(N,)` positions in the dataset; `images[split]`: N uint8 `(H, W, C)`
    thumbnails, or a function returning them as an iterable read once (only for the
    Projector's sprite, which shrinks each into its cell as it arrives).
    `metadata`: JSON-serialisable facts (model, dataset, t, layer, pool, fingerprints).
    """

    features: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    class_names: list[str]
    metadata: dict = field(default_factory=dict)
    indices: dict[str, np.ndarray] = field(default_factory=dict)
    images: dict[str, np.ndarray | Callable[[], np.ndarray]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.features:
            raise ExplorerError("nothing to export: no split has features")
        for split, x in self.features.items():
            y = self.labels.get(split)
            if x.ndim != 2 or y is None or len(y) != len(x):
                raise ExplorerError(f"features and labels of split '{split}' do not line up")
            if split not in self.indices:
                self.indices[split] = np.arange(len(x))

    @property
    def splits(self) -> list[str]:
        return list(self.features)

    def meta_json(self) -> str:
        shapes = {s: list(x.shape) for s, x in self.features.items()}
        return json.dumps(
            {**self.metadata, "class_names": self.class_names, "shapes": shapes}, default=str
        )


# --- formats ---------------------------------------------------------------------------------------


def to_npz(data: ExportData) -> bytes:
    """`features_<split>` (N, D) float32, `labels_<split>`, `index_<split>`, `class_names`
    and `metadata` (a JSON string): everything loads with `np.load(allow_pickle=False)`."""
    arrays = {
        "class_names": np.array(data.class_names, dtype=str),
        "metadata": np.array(data.meta_json()),
    }
    for s in data.splits:
        arrays |= {
            f"features_{s}": np.asarray(data.features[s], np.float32),
            f"labels_{s}": np.asarray(data.labels[s], np.int64),
            f"index_{s}": np.asarray(data.indices[s], np.int64),
        }
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def to_safetensors(data: ExportData) -> bytes:
    """The same tensors as `to_npz`; class names and metadata in the header's `explorer` entry."""
    from safetensors.numpy import save

    tensors = {}
    for s in data.splits:
        tensors |= {
            f"features_{s}": np.ascontiguousarray(data.features[s], np.float32),
            f"labels_{s}": np.ascontiguousarray(data.labels[s], np.int64),
            f"index_{s}": np.ascontiguousarray(data.indices[s], np.int64),
        }
    return save(tensors, metadata={"explorer": data.meta_json()})


def _frame(data: ExportData):
    """One row per image: split, dataset_index, label, class, then f0..f{D-1} (float32)."""
    import pandas as pd

    parts = []
    for s in data.splits:
        x, y = np.asarray(data.features[s], np.float32), np.asarray(data.labels[s], np.int64)
        head = pd.DataFrame(
            {
                "split": s,
                "dataset_index": np.asarray(data.indices[s], np.int64),
                "label": y,
                "class": [data.class_names[i] for i in y],
            }
        )
        feats = pd.DataFrame(x, columns=[f"f{j}" for j in range(x.shape[1])])
        parts.append(pd.concat([head, feats], axis=1))
    return pd.concat(parts, ignore_index=True)


def to_parquet(data: ExportData) -> bytes:
    """A Parquet table (see `_frame`); metadata JSON in the schema under key `explorer`."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as e:
        raise ExplorerError("Parquet export needs pyarrow: pip install pyarrow") from e
    table = pa.Table.from_pandas(_frame(data), preserve_index=False)
    table = table.replace_schema_metadata(
        {**(table.schema.metadata or {}), b"explorer": data.meta_json().encode()}
    )
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def _tsv_cell(text) -> str:
    return str(text).replace("\t", " ").replace("\n", " ").replace("\r", " ")


def sprite(
    images: Iterable[np.ndarray], side: int | None = None, count: int | None = None
) -> tuple[np.ndarray, int]:
    """`N` uint8 thumbnails (`(H, W)` or `(H, W, C)`, sizes may differ) tiled row-major into a
    square grid of `ceil(sqrt(N))` cells per side; returns `(S, S, C)` uint8 and the cell side
    (the first image's longer side unless given, shrunk so the sprite fits `SPRITE_MAX` for any
    N: 70,000 thumbnails get 30 px cells, 1,000,000 get 8 px).

    With `count` (= N), `images` may be a one-pass iterator: each image is shrunk into its cell
    as it arrives (`explorer.analysis.atlas.build_atlas`), so only the sprite itself is held,
    never the N full-size images.
    """
    from explorer.analysis.atlas import build_atlas  # sklearn via explorer.analysis: on use

    if count is None:
        images = list(images)
        count = len(images)
    if count < 1:
        raise ExplorerError("no images for the sprite")
    canvas, lay = build_atlas([images], count, native=side, max_side=SPRITE_MAX, square=True)
    return canvas, lay.cell


def sprite_note(count: int, native: int, cell: int) -> str:
    """One line saying the thumbnail size the sprite chose, and why."""
    grid = math.ceil(math.sqrt(count))
    why = (
        f"shrunk from {native} px so the {grid} x {grid} grid stays within {SPRITE_MAX:,} px"
        if cell < native
        else f"full size; the {grid} x {grid} grid is {grid * cell:,} px"
    )
    return f"sprite: {count:,} thumbnails of {cell} x {cell} px ({why})"


def projector_files(data: ExportData, name: str = "features") -> dict[str, bytes]:
    """The Embedding Projector's files, all splits stacked (column `split` in the metadata).

    `metadata.tsv` has a header (split, label, class, dataset_index); the sprite is written
    when every split has images, and `projector_config.pbtxt` names it with `single_image_dim`.
    """
    from PIL import Image

    rows, tensors, thumbs = ["split\tlabel\tclass\tdataset_index"], [], []
    for s in data.splits:
        x = np.asarray(data.features[s], np.float32)
        tensors.append("\n".join("\t".join(f"{v:.6g}" for v in row) for row in x))
        rows += [
            f"{s}\t{int(y)}\t{_tsv_cell(data.class_names[int(y)])}\t{int(i)}"
            for y, i in zip(data.labels[s], data.indices[s], strict=True)
        ]
        im = data.images.get(s)
        thumbs.append(im() if callable(im) else im)
    files = {
        "tensors.tsv": ("\n".join(tensors) + "\n").encode(),
        "metadata.tsv": ("\n".join(rows) + "\n").encode(),
    }
    config = [
        "embeddings {",
        f'  tensor_name: "{_tsv_cell(name)}"',
        '  tensor_path: "tensors.tsv"',
        '  metadata_path: "metadata.tsv"',
    ]
    if all(t is not None for t in thumbs):
        count = sum(len(data.labels[s]) for s in data.splits)
        ims = itertools.chain.from_iterable(thumbs)
        first = next(ims, None)
        if first is None:
            raise ExplorerError("no images for the sprite")
        canvas, side = sprite(itertools.chain([first], ims), count=count)
        config.insert(0, f"# {sprite_note(count, max(np.shape(first)[:2]), side)}")
        img = Image.fromarray(canvas[..., 0] if canvas.shape[-1] == 1 else canvas)
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        files["sprite.png"] = buf.getvalue()
        config += [
            "  sprite {",
            '    image_path: "sprite.png"',
            f"    single_image_dim: {side}",
            f"    single_image_dim: {side}",
            "  }",
        ]
    files["projector_config.pbtxt"] = ("\n".join(config + ["}"]) + "\n").encode()
    return files


def projector_zip(data: ExportData, name: str = "features") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for fname, content in projector_files(data, name).items():
            z.writestr(fname, content)
    return buf.getvalue()


def to_bytes(data: ExportData, fmt: str) -> bytes:
    """One file's bytes in `fmt` (the Projector folder as a zip)."""
    writers = {
        "npz": to_npz,
        "safetensors": to_safetensors,
        "parquet": to_parquet,
        "projector": projector_zip,
    }
    if fmt not in writers:
        raise ExplorerError(f"unknown export format '{fmt}'; choose from {', '.join(FORMATS)}")
    return writers[fmt](data)


def write(data: ExportData, fmt: str, out: str | Path) -> list[Path]:
    """Write `data` to `out` (a file; for `projector`, a folder). Returns the paths written."""
    out = Path(out)
    if fmt == "projector":
        if out.exists() and not out.is_dir():
            raise ExplorerError(f"{out} is a file; the projector format writes a folder")
        files = projector_files(data, name=str(data.metadata.get("setting", "features")))
        return [atomic_write(out / fname, content) for fname, content in files.items()]
    if out.is_dir():
        raise ExplorerError(
            f"{out} is a folder; give a file name such as features{SUFFIX.get(fmt, '')}"
        )
    return [atomic_write(out, to_bytes(data, fmt))]


# --- from a workspace ------------------------------------------------------------------------------


def from_workspace(ws, s, splits: Sequence[str] = ("test",), images: bool = True) -> ExportData:
    """ExportData of Setting `s` on `ws` (features computed first where missing); thumbnails
    are read lazily, only if a Projector sprite is asked for."""
    import explorer  # the workspace (torch): only when exporting from names, not arrays

    meta = {
        "model": ws.model.name,
        "model_fingerprint": ws.model.fingerprint,
        "dataset": ws.dataset.name,
        "dataset_fingerprint": ws.dataset.fingerprint,
        "t": s.t,
        "layer": s.layer,
        "pool": s.pool,
        "seed": s.seed,
        "setting": f"t={s.t} {s.layer} pool {s.pool}",
        "explorer_version": explorer.__version__,
    }
    if not s.is_pixels:
        meta["layer_index"] = ws.layer(s.layer).index
    feats, labels, idx, thumbs = {}, {}, {}, {}
    for split in splits:
        sel = ws.selection(split)
        feats[split] = np.asarray(ws.features(s, split), np.float32)
        labels[split], idx[split] = ws.labels(split), np.asarray(sel.indices)
        meta[f"feature_key_{split}"] = ws.key(s, split)
        if images:
            thumbs[split] = lambda i=idx[split]: _read_in_chunks(ws.dataset, i)
    return ExportData(feats, labels, [str(c) for c in ws.dataset.class_names], meta, idx, thumbs)


THUMB_CHUNK = 1024  # images read from the dataset at a time for the sprite


def _read_in_chunks(dataset, indices: np.ndarray) -> Iterator[np.ndarray]:
    """The images at `indices`, one by one, read `THUMB_CHUNK` at a time: a split of any size
    becomes a sprite without being held in memory whole."""
    for a in range(0, len(indices), THUMB_CHUNK):
        yield from dataset.images(indices[a : a + THUMB_CHUNK])
