"""The images-as-points view's data, packed for the browser: pure, no Streamlit.

`payload` turns `(K, N, 2)` positions, labels, colours and an atlas into the arguments the
bundle (`frontend/dist/points.js`) reads: the arrays as raw little-endian bytes (float32
positions, int32 labels, uint8 colours, the atlas as PNG), so 100,000 points travel as about
1 MB of positions, not a JSON list. Streamlit sends bytes arguments as binary; `inline_html`
writes the same arguments as base64 into an offline HTML fragment with the bundle inlined
(the HTML report, the benchmark page).
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from explorer.analysis.atlas import AtlasLayout
from explorer.errors import ExplorerError
from explorer.ui.points.colors import Coloring

DIST = Path(__file__).resolve().parent / "frontend" / "dist"
BUNDLE = DIST / "points.js"
BINARY = ("xy", "labels", "pred", "ids", "conf", "rgba", "groups", "shown", "atlas_png")


def _le(a: np.ndarray, dtype: str) -> bytes:
    return np.ascontiguousarray(a, dtype=np.dtype(dtype).newbyteorder("<")).tobytes()


def payload(
    panels: np.ndarray,
    titles: Sequence[str],
    labels: np.ndarray,
    class_names: Sequence[str],
    coloring: Coloring,
    atlas_png: bytes,
    atlas: AtlasLayout,
    ids: np.ndarray,
    predictions: np.ndarray | None = None,
    confidence: np.ndarray | None = None,
    shown: np.ndarray | None = None,
    selected: Sequence[int] = (),
    size: float = 4.0,
    opacity: float = 0.85,
    height: int = 560,
    atlas_url: str | None = None,
) -> dict:
    """Arguments of the view: `panels` `(K, N, 2)` (or `(N, 2)`) positions drawn side by side
    under `titles`, linked (a selection in one is drawn in all); `labels`, `ids` (dataset
    indices, shown on hover), `predictions`, `confidence` `(N,)`; `coloring` from
    `colors.point_colors`; `atlas_png` of `atlas` with point i in cell i; `shown` `(N,)` bool
    filter (default all); `selected` test positions drawn as selected. With `atlas_url` (where
    the server serves `atlas_png`) the PNG travels by that URL, fetched once per new data,
    instead of inside every message."""
    xy = np.asarray(panels, np.float32)
    xy = xy[None] if xy.ndim == 2 else xy
    if xy.ndim != 3 or xy.shape[2] != 2 or xy.shape[0] != len(titles):
        raise ExplorerError(f"positions must be (K={len(titles)}, N, 2), got {xy.shape}")
    n = xy.shape[1]
    y = np.asarray(labels)
    arrays = {"labels": y, "ids": ids, "rgba": coloring.rgba, "groups": coloring.groups}
    arrays |= {"pred": predictions, "conf": confidence, "shown": shown}
    for name, a in arrays.items():
        if a is not None and len(a) != n:
            raise ExplorerError(f"{len(a)} {name} for {n} points")
    if atlas.count != n:
        raise ExplorerError(f"the atlas holds {atlas.count} images for {n} points")
    if not np.isfinite(xy).all():
        raise ExplorerError("positions must be finite numbers")
    shown = np.ones(n, bool) if shown is None else np.asarray(shown, bool)
    binary = {
        "xy": _le(xy, "float32"),
        "labels": _le(y, "int32"),
        "pred": None if predictions is None else _le(predictions, "int32"),
        "ids": _le(ids, "int32"),
        "conf": None if confidence is None else _le(confidence, "float32"),
        "rgba": np.ascontiguousarray(coloring.rgba, np.uint8).tobytes(),
        "groups": _le(coloring.groups, "int32"),
        "shown": shown.astype(np.uint8).tobytes(),
        "atlas_png": bytes(atlas_png),
    }
    digest = hashlib.blake2b(digest_size=12)
    for key in ("xy", "ids", "labels", "atlas_png"):
        digest.update(binary[key])
    colours = hashlib.blake2b(digest_size=12)
    for key in ("rgba", "groups", "shown", "pred", "conf"):
        colours.update(binary[key] or b"-")
    if atlas_url is not None:
        binary["atlas_png"] = None
    return {
        **binary,
        "atlas_url": atlas_url,
        "n": int(n),
        "titles": [str(t) for t in titles],
        "names": [str(c) for c in class_names],
        "legend": [[str(a), str(b)] for a, b in coloring.legend],
        "atlas": atlas.as_dict(),
        "selected": [int(i) for i in selected],
        "size": float(size),
        "opacity": float(opacity),
        "height": int(height),
        "data_id": digest.hexdigest(),  # same points and atlas: the browser keeps zoom and selection
        # Streamlit re-renders a component when its JSON arguments change, not its bytes:
        "colors_id": colours.hexdigest(),
    }


def bundle_js() -> str:
    """The built bundle (`frontend/dist/points.js`), for pages that inline it."""
    if not BUNDLE.is_file():
        raise ExplorerError(
            f"the points view's bundle is missing ({BUNDLE}); build it with "
            "`npm ci && npm run build` in explorer/ui/points/frontend"
        )
    return BUNDLE.read_text(encoding="utf-8")


def json_args(args: dict) -> str:
    """`args` as JSON with every bytes value as base64 (what the bundle also reads), safe to
    place inside a `<script>` element."""
    out = {k: base64.b64encode(v).decode() if isinstance(v, bytes) else v for k, v in args.items()}
    return json.dumps(out).replace("</", "<\\/")


def inline_html(args: dict, element_id: str = "points", with_bundle: bool = True) -> str:
    """An HTML fragment that draws the view offline: a `<div>`, the bundle (once per page:
    leave `with_bundle` off for later views) and the arguments as base64 JSON."""
    if not element_id.replace("-", "").replace("_", "").isalnum():
        raise ExplorerError(f"element id {element_id!r} must be letters, digits, - or _")
    bundle = f"<script>{bundle_js()}</script>\n" if with_bundle else ""
    return (
        f'<div id="{element_id}"></div>\n{bundle}'
        f"<script>PointsView.mount(document.getElementById({json.dumps(element_id)}), "
        f"{json_args(args)});</script>"
    )


def page_html(args: dict, title: str = "Images as points") -> str:
    """A whole offline HTML page holding one view (the benchmark opens it)."""
    import html

    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>body{{margin:8px}}</style></head><body>\n"
        + inline_html(args)
        + "\n</body></html>\n"
    )
