"""Images as points at 100,000: first frame, a scripted zoom and pan, the longest main-thread
task and the atlas texture's memory, in headless Chromium with software WebGL.

The page is the app's own view (`explorer.ui.points`: the esbuild bundle of deck.gl, the
Python-built sprite atlas, `payload.page_html`) written to a file and opened in Debian's
Chromium through Playwright (`/usr/bin/chromium`, never `playwright install`; `--disable-gpu`
leaves WebGL to SwiftShader on the CPU). Two sets: a synthetic 100,000 points in 10 blobs with
a generated 28 x 28 image each, and the Fashion-MNIST test set (10,000 images; positions: PCA
of the pixels, as only drawing is timed here).

Timed, from the start of the navigation: the first frame with every point drawn (dots) and
the first frame after the atlas texture is on the GPU. Then a scripted interaction driven by
requestAnimationFrame: `ZOOM_FRAMES` frames zooming in towards one image until thumbnails are
`THUMB_PX` px on screen (crossing from dots to thumbnails), then `PAN_FRAMES` frames panning
600 x 300 px at that zoom. While the view moves, the view draws a random subset sized to its
frame budget, and every point once it is still (the drawn counts are reported).
Frame times are the rAF deltas (p50, p95, max); the longest task is PerformanceObserver's
`longtask` entries over the interaction (and over the whole load, separately).

    python benchmarks/points_view.py                # both sets, prints a Markdown table
    python benchmarks/points_view.py --points 20000 --no-fashion
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a file: this checkout's `explorer`
    sys.path.insert(0, str(ROOT))

from benchmarks.load_test import CHROMIUM, CHROMIUM_ARGS  # noqa: E402

VIEWPORT = {"width": 1280, "height": 900}
HEIGHT = 760  # px of the view
ZOOM_FRAMES, THUMB_PX, PAN_FRAMES = 120, 64, 120  # zoom until thumbnails are THUMB_PX on screen
TIMEOUT_MS = 300_000

# Installed before the page's scripts run: long tasks from the start, in window.__long.
_OBSERVE = """
window.__long = [];
new PerformanceObserver((list) => { for (const e of list.getEntries())
  window.__long.push([e.startTime, e.duration]); }).observe({type: 'longtask', buffered: true});
"""

# The scripted interaction: one view state a frame, as the controller would set it.
_INTERACT = """async ([zoomFrames, thumbPx, panFrames]) => {
  const v = window.__points;
  const start = {...v.viewStates.p0};
  const zoomSteps = Math.log2(thumbPx / v.thumbPx(0));
  // zoom towards a point of the cloud (the first point), then pan across the cloud
  const [tx, ty] = [v.panels[0].pos[0], v.panels[0].pos[1]];
  const t0 = performance.now(), deltas = [], drawn = [];
  let last = t0, lod = '';
  const frame = () => new Promise((r) => requestAnimationFrame((t) => r(t)));
  for (let i = 1; i <= zoomFrames + panFrames; i++) {
    const f = Math.min(1, i / zoomFrames), zoom = start.zoom + zoomSteps * f;
    const pan = Math.max(0, i - zoomFrames) / panFrames;
    const cx = start.cx + (tx - start.cx) * f + 600 / 2 ** zoom * pan;  // then 600 px of panning
    const cy = start.cy + (ty - start.cy) * f + 300 / 2 ** zoom * pan;
    v.setView(0, {...start, zoom, cx, cy}, true);
    const t = await frame();
    deltas.push(t - last); last = t; drawn.push(v.lastDrawn);
    if (i === zoomFrames) lod = v.status.textContent;
  }
  return {deltas, drawn, ms: performance.now() - t0, start: t0, lod, thumbPx: v.thumbPx(0)};
}"""


def synthetic(n: int, classes: int = 10, size: int = 28, seed: int = 0):
    """`(n, 2)` float32 positions in `classes` blobs, labels `(n,)`, predictions (90% right)
    and a reader of `size` x `size` grey images: a class-dependent bar with the index's
    pattern, so every cell differs."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    xy = (rng.normal(size=(classes, 2))[labels] * 6 + rng.normal(size=(n, 2))).astype(np.float32)
    pred = np.where(rng.random(n) < 0.1, rng.integers(0, classes, n), labels)
    yy, xx = np.mgrid[:size, :size]

    def read(indices):
        out = []
        for i in indices:
            c = int(labels[i])
            im = ((xx + yy * (c + 1) + int(i)) % 64 * 3).astype(np.uint8)
            im[size // 3 : size // 3 + 5, 2 + 2 * c : 8 + 2 * c] = 255
            out.append(im)
        return out

    return xy, labels, pred, read


def fashion_test():
    """Fashion-MNIST's 10,000 test images: PCA-of-pixels positions, labels, a reader."""
    from explorer.analysis.embed import pca_embed
    from explorer.data.builtin import load_fashion_mnist

    ds = load_fashion_mnist()
    idx = ds.splits["test"]
    px = np.asarray(ds.images(idx), np.float32).reshape(len(idx), -1) / 255
    xy = np.asarray(pca_embed(px), np.float32)
    labels = ds.labels[idx]
    return xy, labels, None, (lambda i: ds.images(idx[np.asarray(i)])), ds.class_names


def page_args(xy, labels, pred, read, names):
    """The view's arguments for these points, with the atlas built in chunks; and its facts."""
    from explorer.analysis.atlas import atlas_from_reader, to_png
    from explorer.figures import class_colors
    from explorer.ui.points import colors
    from explorer.ui.points.payload import payload

    n = len(labels)
    t0 = time.perf_counter()
    pixels, lay = atlas_from_reader(read, np.arange(n))
    png = to_png(pixels)
    atlas_s = time.perf_counter() - t0
    col = colors.point_colors("true class", labels, class_colors(len(names)), names)
    args = payload(xy, [f"{n:,} images"], labels, names, col, png, lay, np.arange(n),
                   predictions=pred, height=HEIGHT)  # fmt: skip
    served = payload(xy, [f"{n:,} images"], labels, names, col, png, lay, np.arange(n),
                     predictions=pred, height=HEIGHT, atlas_url="/media/atlas.png")  # fmt: skip
    facts = {"atlas": lay.as_dict(), "atlas_png_mb": len(png) / 2**20, "atlas_build_s": atlas_s,
             "texture_mib": lay.texture_bytes() / 2**20,
             "rerun_mib_inline": message_bytes(args) / 2**20,
             "rerun_mib_served": message_bytes(served) / 2**20}  # fmt: skip
    return args, facts


def message_bytes(args: dict) -> int:
    """What one script rerun sends for the view: its byte arguments plus the JSON of the rest."""
    blobs = sum(len(v) for v in args.values() if isinstance(v, bytes))
    rest = {k: v for k, v in args.items() if not isinstance(v, bytes)}
    return blobs + len(json.dumps(rest))


def measure(args: dict) -> dict:
    """Open the page in Chromium and time it (see the module's docstring)."""
    from playwright.sync_api import sync_playwright

    from explorer.ui.points.payload import page_html

    if not Path(CHROMIUM).exists():
        raise RuntimeError(f"needs {CHROMIUM}: apt-get install chromium")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "points.html"
        path.write_text(page_html(args), encoding="utf-8")
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport=VIEWPORT)
                outside = []
                page.on(
                    "request", lambda r: outside.append(r.url) if r.url.startswith("http") else None
                )
                page.add_init_script(_OBSERVE)
                page.goto(path.as_uri())
                page.wait_for_function(
                    "() => window.__points && window.__points.atlasFrameAt", timeout=TIMEOUT_MS
                )
                page.wait_for_timeout(1000)  # let the load settle
                load = page.evaluate(
                    "() => ({first: __points.firstFrameAt, atlas: __points.atlasFrameAt, "
                    "texture: __points.textureBytes, long: window.__long})"
                )
                run = page.evaluate(_INTERACT, [ZOOM_FRAMES, THUMB_PX, PAN_FRAMES])
                page.wait_for_timeout(500)
                longs = page.evaluate("() => window.__long")
                shot = Path(tmp) / "zoomed.png"
                page.screenshot(path=str(shot))
                shot_bytes = shot.read_bytes()
            finally:
                browser.close()
    during = [d for s, d in longs if s >= run["start"]]
    deltas = np.asarray(run["deltas"])
    return {
        "first_frame_s": load["first"] / 1000,
        "atlas_frame_s": load["atlas"] / 1000,
        "texture_mib_browser": load["texture"] / 2**20,
        "longest_task_load_ms": max([d for _, d in load["long"]], default=0.0),
        "frame_p50_ms": float(np.percentile(deltas, 50)),
        "frame_p95_ms": float(np.percentile(deltas, 95)),
        "frame_max_ms": float(deltas.max()),
        "fps": len(deltas) / (run["ms"] / 1000),
        "longest_task_interaction_ms": max(during, default=0.0),
        "lod_after_zoom": run["lod"],
        "drawn_median": float(np.median(run["drawn"])),
        "drawn_min": int(min(run["drawn"])),
        "thumb_px_after_zoom": run["thumbPx"],
        "network_requests": outside,
        "screenshot": shot_bytes,
    }


def run(name: str, xy, labels, pred, read, names, shots: Path | None) -> dict:
    args, facts = page_args(xy, labels, pred, read, names)
    got = measure(args)
    shot = got.pop("screenshot")
    if shots is not None:
        shots.mkdir(parents=True, exist_ok=True)
        (shots / f"points-{name}.png").write_bytes(shot)
    return {"set": name, "points": len(labels), **facts, **got}


def table(rows: list[dict]) -> str:
    head = (
        "| set | points | atlas (cells × px) | atlas texture | first frame | atlas drawn "
        "| frame p50 / p95 / max | longest task: load / zoom+pan |\n|---|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for r in rows:
        a = r["atlas"]
        lines.append(
            f"| {r['set']} | {r['points']:,} | {a['cols']}×{a['rows']} of {a['cell']} px "
            f"({a['width']}×{a['height']}) | {r['texture_mib']:.0f} MiB (RGBA8 + mipmaps; "
            f"PNG {r['atlas_png_mb']:.1f} MiB, built in {r['atlas_build_s']:.1f} s) "
            f"| {r['first_frame_s']:.2f} s | {r['atlas_frame_s']:.2f} s "
            f"| {r['frame_p50_ms']:.1f} / {r['frame_p95_ms']:.1f} / {r['frame_max_ms']:.0f} ms "
            f"({r['fps']:.0f} fps) | {r['longest_task_load_ms']:.0f} / "
            f"{r['longest_task_interaction_ms']:.0f} ms |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--points", type=int, default=100_000, help="synthetic points (default 100,000)"
    )
    ap.add_argument("--no-fashion", action="store_true", help="skip the Fashion-MNIST test set")
    ap.add_argument("--shots", type=Path, default=None, help="folder for the zoomed screenshots")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    a = ap.parse_args(argv)
    rows = []
    xy, labels, pred, read = synthetic(a.points)
    names = [f"class {c}" for c in range(10)]
    rows.append(run("synthetic", xy, labels, pred, read, names, a.shots))
    if not a.no_fashion:
        from explorer.data.builtin import fashion_mnist_available

        if fashion_mnist_available():
            xy, labels, pred, read, names = fashion_test()
            rows.append(run("fashion-mnist-test", xy, labels, pred, read, names, a.shots))
        else:
            print(
                "Fashion-MNIST not found: skipped (apt-get install fashion-mnist or set FASHION_MNIST_DIR)"
            )
    for r in rows:
        print(json.dumps({k: v for k, v in r.items()}, default=str))
    print(table(rows))
    for r in rows:
        print(
            f"{r['set']}: each rerun sends {r['rerun_mib_served']:.2f} MiB with the atlas served "
            f"by URL (the app) vs {r['rerun_mib_inline']:.2f} MiB with it inline: "
            f"{r['rerun_mib_inline'] / r['rerun_mib_served']:.0f}x less"
        )
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
