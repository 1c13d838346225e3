"""A dependency-free SVG scatter that shows each point's image when the mouse is over it.

Plotly's hover labels cannot show images, so this small page (rendered with `st.iframe`)
draws the same embedding and pops up the thumbnail, class and
prediction under the cursor. Pure: arrays in, an HTML string out.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence

import numpy as np

_TEMPLATE = """<!doctype html><html><head><meta charset="utf-8"><style>
body{margin:0;font:12px sans-serif;color:#262730}
#wrap{position:relative}
svg circle{stroke:none;opacity:.8}
svg circle:hover{stroke:#000;stroke-width:1.5;opacity:1}
#tip{position:absolute;pointer-events:none;display:none;background:#fff;border:1px solid #bbb;
     border-radius:6px;padding:6px;box-shadow:0 2px 8px rgba(0,0,0,.25);text-align:center}
#tip img{width:__THUMB__px;height:__THUMB__px;object-fit:contain;image-rendering:pixelated;display:block;margin:0 auto 4px}
#legend span{display:inline-block;margin:0 10px 2px 0;white-space:nowrap}
#legend i{display:inline-block;width:10px;height:10px;border-radius:50%;margin-right:4px}
</style></head><body><div id="legend"></div><div id="wrap"><svg id="plot"></svg><div id="tip"></div></div>
<script>
const D = __DATA__;
const H = __HEIGHT__ - 40, P = 12, NS = 'http://www.w3.org/2000/svg';
const svg = document.getElementById('plot'), tip = document.getElementById('tip');
const xs = D.xy.map(p => p[0]), ys = D.xy.map(p => p[1]);
const x0 = Math.min(...xs), x1 = Math.max(...xs), y0 = Math.min(...ys), y1 = Math.max(...ys);
let lastW = -1;
function draw() {
  const W = document.body.clientWidth;
  if (!W || W === lastW) return;  // hidden tab (width 0) or unchanged: wait for a resize
  lastW = W;
  svg.setAttribute('width', W); svg.setAttribute('height', H);
  while (svg.firstChild) svg.removeChild(svg.firstChild);
  const sx = v => P + (v - x0) / ((x1 - x0) || 1) * (W - 2 * P);
  const sy = v => H - P - (v - y0) / ((y1 - y0) || 1) * (H - 2 * P);
  D.xy.forEach((p, i) => {
    const c = document.createElementNS(NS, 'circle');
    c.setAttribute('cx', sx(p[0])); c.setAttribute('cy', sy(p[1])); c.setAttribute('r', __RADIUS__);
    c.setAttribute('fill', D.colors[D.labels[i]]);
    c.addEventListener('mouseenter', () => {
      const wrong = D.pred && D.pred[i] !== D.labels[i];
      tip.innerHTML = '<img src="' + D.thumbs[i] + '">#' + D.ids[i] + '<br><b>' + D.names[D.labels[i]] + '</b>' +
        (D.pred ? '<br>predicted <b style="color:' + (wrong ? '#d62728' : '#2ca02c') + '">' +
        D.names[D.pred[i]] + '</b>' : '');
      tip.style.display = 'block';
      tip.style.left = Math.min(sx(p[0]) + 14, W - __THUMB__ - 30) + 'px';
      tip.style.top = Math.min(sy(p[1]) + 14, H - __THUMB__ - 60) + 'px';
    });
    c.addEventListener('mouseleave', () => { tip.style.display = 'none'; });
    svg.appendChild(c);
  });
}
draw();
window.addEventListener('resize', draw);
new ResizeObserver(draw).observe(document.body);
document.getElementById('legend').innerHTML = D.names.map((n, k) =>
  '<span><i style="background:' + D.colors[k] + '"></i>' + n + '</span>').join('');
</script></body></html>"""


def hover_scatter_html(
    xy: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    colors: Sequence[str],
    thumbs: Sequence[str],
    predictions: np.ndarray | None = None,
    ids: Sequence[int] | None = None,
    height: int = 480,
    thumb_px: int = 72,
) -> str:
    """HTML of an `(N, 2)` scatter whose points show `thumbs[i]` (data URIs) on hover."""
    xy = np.asarray(xy, dtype=float)
    data = {
        "xy": np.round(xy, 4).tolist(),
        "labels": np.asarray(labels, dtype=int).tolist(),
        "pred": None if predictions is None else np.asarray(predictions, dtype=int).tolist(),
        "ids": list(range(len(xy))) if ids is None else [int(i) for i in ids],
        "names": [html.escape(str(c)) for c in class_names],
        "colors": list(colors),
        "thumbs": list(thumbs),
    }
    radius = 4 if len(xy) <= 1500 else 3
    return (
        _TEMPLATE.replace("__DATA__", json.dumps(data).replace("</", "<\\/"))
        .replace("__HEIGHT__", str(int(height)))
        .replace("__THUMB__", str(int(thumb_px)))
        .replace("__RADIUS__", str(radius))
    )
