"""Figure 7b: in-browser render time of a 70,000-point WebGL scatter (the full Fashion-MNIST).

The figure is the app's own `explorer.figures.embedding_scatter` (one `go.Scattergl` trace
per class, customdata and hover text as on the Explore page) of 70,000 points in 10 classes.
It is written to a page next to plotly.js and opened in Debian's headless Chromium through
Playwright (`/usr/bin/chromium`, never `playwright install`; software WebGL, as `--disable-gpu`
leaves it). The time runs from the start of the navigation (`performance.timeOrigin`) to the
first frame painted after plotly's `newPlot` has resolved (its `plotly_afterplot`), so it
includes reading plotly.js and the figure's JSON. Median of `REPEATS` fresh pages.

    python -m benchmarks.big_scatter            # prints the figure() dict
    python benchmarks/big_scatter.py --svg      # also times the same cloud as SVG, for contrast
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a file: this checkout's `explorer`
    sys.path.insert(0, str(ROOT))

from benchmarks.load_test import CHROMIUM, CHROMIUM_ARGS  # noqa: E402

POINTS = 70_000  # Fashion-MNIST: 60,000 train + 10,000 test
CLASSES = 10
REPEATS = 3
TIMEOUT_MS = 120_000

_PAGE = """<!doctype html><html><head><meta charset="utf-8">
<script src="plotly.min.js"></script></head>
<body style="margin:0"><div id="g" style="width:1200px;height:800px"></div>
<script id="fig" type="application/json">__FIG__</script>
<script>
const fig = JSON.parse(document.getElementById('fig').textContent);
const gd = document.getElementById('g');
window.__parsed = performance.now();
Plotly.newPlot(gd, fig.data, fig.layout, {responsive: false}).then(() => {
  window.__plotted = performance.now();
  requestAnimationFrame(() => requestAnimationFrame(() => {
    window.__painted = performance.now();
    window.__points = gd._fullData.reduce((n, t) => n + t.x.length, 0);
    window.__types = [...new Set(gd._fullData.map(t => t.type))];
    window.__canvas = gd.querySelectorAll('canvas').length;
  }));
}).catch(e => { window.__error = String(e); });
</script></body></html>"""


def cloud(n: int = POINTS, classes: int = CLASSES, seed: int = 0):
    """`(n, 2)` float32 points in `classes` blobs, labels `(n,)` and predictions (90% right)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    centres = rng.normal(size=(classes, 2)) * 6
    xy = (centres[labels] + rng.normal(size=(n, 2))).astype(np.float32)
    wrong = rng.random(n) < 0.1
    pred = np.where(wrong, rng.integers(0, classes, n), labels)
    return xy, labels, pred


def build_figure(n: int = POINTS, webgl: bool = True):
    """The app's embedding scatter of `n` points (SVG traces instead when `webgl` is False)."""
    from explorer.figures import embedding_scatter

    xy, labels, pred = cloud(n)
    names = [f"class {c}" for c in range(CLASSES)]
    return embedding_scatter(xy, labels, names, pred, title=f"{n:,} points", webgl=webgl)


def _write_page(folder: Path, fig) -> int:
    import plotly

    js = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    (folder / "plotly.min.js").write_bytes(js.read_bytes())
    body = fig.to_json().replace("</", "<\\/")
    (folder / "page.html").write_text(_PAGE.replace("__FIG__", body), encoding="utf-8")
    return len(body)


def render_times(fig, repeats: int = REPEATS) -> tuple[list[dict], int]:
    """Timings (ms from navigation start) of `repeats` fresh pages drawing `fig`, and the
    figure's JSON size in bytes."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        raise RuntimeError(f"needs {CHROMIUM}: apt-get install chromium")
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        size = _write_page(Path(tmp), fig)
        url = (Path(tmp) / "page.html").as_uri()
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                for _ in range(repeats):
                    page = browser.new_page(viewport={"width": 1280, "height": 900})
                    page.goto(url)
                    page.wait_for_function(
                        "() => window.__painted || window.__error", timeout=TIMEOUT_MS
                    )
                    got = page.evaluate(
                        "() => ({error: window.__error, parsed: window.__parsed, "
                        "plotted: window.__plotted, painted: window.__painted, "
                        "points: window.__points, types: window.__types, canvas: window.__canvas})"
                    )
                    page.close()
                    if got["error"]:
                        raise RuntimeError(f"plotly failed in Chromium: {got['error']}")
                    out.append(got)
            finally:
                browser.close()
    return out, size


def figure(n: int = POINTS, repeats: int = REPEATS) -> dict:
    """Figure 7b of BENCHMARKS.md: seconds to draw `n` WebGL points in headless Chromium."""
    runs, size = render_times(build_figure(n), repeats)
    bad = [r for r in runs if r["points"] != n or r["types"] != ["scattergl"] or not r["canvas"]]
    if bad:
        raise RuntimeError(f"the page did not draw {n} WebGL points: {bad[0]}")
    painted = statistics.median(r["painted"] for r in runs) / 1000
    plot = statistics.median(r["painted"] - r["parsed"] for r in runs) / 1000
    each = ", ".join(f"{r['painted'] / 1000:.2f}" for r in runs)
    return {
        "figure": "7b",
        "name": "70,000-point WebGL scatter render in Chromium",
        "value": round(painted, 3),
        "unit": "s",
        "target": None,
        "met": None,
        "note": (
            f"explorer.figures.embedding_scatter of {n:,} points in {CLASSES} classes "
            f"(go.Scattergl, {size / 2**20:.1f} MiB of figure JSON), headless Chromium with "
            f"software WebGL (--disable-gpu); navigation start to the first frame painted "
            f"after plotly_afterplot, median of {len(runs)} fresh pages "
            f"({each} s); of which "
            f"newPlot to painted {plot:.2f} s (the rest: loading plotly.js and the JSON)"
        ),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=POINTS)
    ap.add_argument("--repeats", type=int, default=REPEATS)
    ap.add_argument("--svg", action="store_true", help="also time the same cloud drawn as SVG")
    a = ap.parse_args(argv)
    print(json.dumps(figure(a.points, a.repeats), indent=2))
    if a.svg:
        runs, _ = render_times(build_figure(a.points, webgl=False), 1)
        print(f"SVG (go.Scatter), one page: {runs[0]['painted'] / 1000:.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
