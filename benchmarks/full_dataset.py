"""The whole Fashion-MNIST (60,000 train + 10,000 test, `train=all&test=all`) through every page
of the app in headless Chromium (issue 11, point 7): does each page show its content, and does
the browser stay responsive while it does?

1. The features the pages read are computed first, headless, by the CLI into the cache the app
   then serves (as a researcher fills it for a big set): `explorer extract --limit all` at
   Explore's and Compare's settings. Its wall time is reported.
2. `explorer app` is started on that cache; each page is opened with `?train=all&test=all`.
   Each page is opened at the default sizes first, then with all images. Per visit: seconds to
   its main element, seconds until Streamlit is idle (the page's server-side work, e.g. a
   first UMAP, included), the longest main-thread task the browser ran before and after the
   main element appeared (`PerformanceObserver` long tasks: a frozen tab shows as one long
   task), the frame latency once idle, the points in its scatter traces, and errors shown.
   Each page is visited three times: at the default sizes, then with all images (the server
   computes probes and a first UMAP on the same 2 cores as the browser), then again with all
   images (cached: only the browser's own work). The full set froze a page if, on that
   re-open, its longest task is >= 1 s and over 1.25x the same page's longest at the default
   sizes (Streamlit's and Plotly's scripts starting take up to ~1.4 s here, whatever the data).

    python benchmarks/full_dataset.py [--cache DIR] [--out benchmarks/results/full_dataset_cpu.txt]

`--cache DIR` reuses (and fills) a cache; by default a temporary one is used. Needs Debian's
`dataset-fashion-mnist` and /usr/bin/chromium with the `playwright` package.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from first_view import PAGES, explorer_app, machine  # noqa: E402
from load_test import APP_STATE, CHROMIUM, CHROMIUM_ARGS, ROOT  # noqa: E402

FREEZE_MS = 1000  # a main-thread task at least this long is felt as the tab freezing...
GROWTH = 1.25  # ...and is the full set's doing when it is this much longer than at default sizes
WATCH = """
window.__tasks = [];
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) window.__tasks.push([e.startTime, e.duration]);
}).observe({type: "longtask", buffered: true});
"""
# points in each scatter trace drawn (Plotly's decoded data: typed arrays have no .length)
POINTS = """() => [...document.querySelectorAll('.js-plotly-plot')].flatMap(
  gd => (gd._fullData || []).filter(t => String(t.type).startsWith('scatter')).map(t => t._length || 0))"""
FRAME = """async () => { const t0 = performance.now();
  for (let i = 0; i < 2; i++) await new Promise(r => requestAnimationFrame(() => r()));
  return performance.now() - t0; }"""
# visit -> (query string, images shown in the table)
VISITS = {
    "default": ("", "default"),
    "all": ("?train=all&test=all", "70,000"),
    "all again": ("?train=all&test=all", "70,000, re-open"),
}


def prefill(cache: Path) -> float:
    """Explore's and Compare's default settings on every image, by the CLI; seconds taken."""
    from explorer import defaults as D
    from explorer.data import load_dataset
    from explorer.models.layers import build_catalogue
    from explorer.models.loader import load_model

    cat = build_catalogue(load_model("ddpm-fashion-mnist").denoiser)
    load_dataset("fashion-mnist")  # fails early, in one line, where the dataset is missing
    a, b = D.default_block([lay.stage for lay in cat]), D.compare_block(len(cat))
    layers = sorted({cat[a].index, cat[b].index})
    exe = shutil.which("explorer") or str(Path(sys.executable).with_name("explorer"))
    cmd = [exe, "extract", "--dataset", "fashion-mnist", "--limit", "all", "--pool", D.DEFAULT_POOL]
    cmd += ["--timesteps", f"{D.DEFAULT_T},{D.COMPARE_T2}", "--layers", ",".join(map(str, layers))]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env={**os.environ, "EXPLORER_CACHE": str(cache)})
    return time.perf_counter() - t0


def settle(page, timeout_s: float) -> float:
    """Wait until Streamlit's script (and its fragments, e.g. a background UMAP's poll) has not
    run for 3 s in a row; seconds waited, up to the last run's end."""
    t0 = quiet = time.perf_counter()
    while time.perf_counter() - t0 < timeout_s:
        if page.evaluate(f"() => {APP_STATE}") != "notRunning":
            quiet = time.perf_counter()
        elif time.perf_counter() - quiet > 3:
            return quiet - t0
        page.wait_for_timeout(200)
    raise TimeoutError(f"the page was still running after {timeout_s:.0f} s")


def visit(browser, url: str, name: str, limits: str, timeout_s: float) -> dict:
    """Open page `name` with `limits` ("default" or "all"); what it showed and how the tab fared."""
    path, find, what = PAGES[name]
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.add_init_script(WATCH)
    try:
        t0 = time.perf_counter()
        page.goto(f"{url}/{path}{VISITS[limits][0]}")
        find(page).wait_for(state="visible", timeout=timeout_s * 1000)
        shown, shown_at = time.perf_counter() - t0, page.evaluate("performance.now()")
        idle = shown + settle(page, timeout_s)
        tasks = page.evaluate("window.__tasks")
        after = [d for start, d in tasks if start + d > shown_at]
        return {
            "page": name,
            "limits": limits,
            "what": what,
            "shown": shown,
            "idle": idle,
            "load_ms": max([d for start, d in tasks if start + d <= shown_at], default=0.0),
            "after_ms": max(after, default=0.0),
            "blocking_ms": sum(max(0.0, d - 50) for d in after),
            "frame_ms": page.evaluate(FRAME),
            "points": page.evaluate(POINTS),
            "url": page.evaluate("() => location.search"),
            "errors": page.locator(
                '[data-testid="stException"], [data-testid="stAlertContentError"]'
            ).count(),
        }
    finally:
        page.close()


def longest_tasks(rows: list[dict]) -> dict[tuple[str, str], float]:
    """(page, limits) -> the longest main-thread task of that visit, in ms."""
    return {(r["page"], r["limits"]): max(r["load_ms"], r["after_ms"]) for r in rows}


def frozen_pages(rows: list[dict]) -> list[str]:
    """Pages the full set froze: on the re-open with all images (the browser's own work, no
    computing server beside it on the same cores), a task >= FREEZE_MS and over GROWTH times
    the page's longest task at the default sizes (or with no default visit to compare)."""
    longest = longest_tasks(rows)
    return [
        page
        for page, limits in longest
        if limits == "all again"
        and longest[page, limits] >= FREEZE_MS
        and longest[page, limits] > GROWTH * longest.get((page, "default"), 0.0)
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", default=None, help="feature cache to fill and serve (default: temp)")
    ap.add_argument("--pages", default=",".join(PAGES), help="comma-separated page names")
    ap.add_argument("--timeout", type=float, default=900, help="seconds allowed per page")
    ap.add_argument("--out", default=None, help="also write the result here")
    a = ap.parse_args(argv)
    if not Path(CHROMIUM).exists():
        ap.error(f"needs {CHROMIUM}: apt-get install chromium")
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="full-dataset-") as tmp:
        cache = Path(a.cache) if a.cache else Path(tmp) / "cache"
        filled = prefill(cache)
        print(f"features of 70,000 images filled by the CLI in {filled:.0f} s", flush=True)
        rows = []
        with explorer_app(cache, Path(tmp) / "server.log") as (url, _), sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                for name in [n.strip() for n in a.pages.split(",")]:
                    for limits in VISITS:
                        print(f"{name}, {limits}: opening…", flush=True)
                        r = visit(browser, url, name, limits, a.timeout)
                        rows.append(r)
                        print(
                            f"{name:13} {limits:8} shown {r['shown']:6.1f} s, idle "
                            f"{r['idle']:6.1f} s, longest task at load {r['load_ms']:5.0f} ms, "
                            f"after {r['after_ms']:5.0f} ms, frame {r['frame_ms']:4.0f} ms, "
                            f"points {r['points']}, errors {r['errors']}  ({r['url']})",
                            flush=True,
                        )
            finally:
                browser.close()
    longest = longest_tasks(rows)
    froze = frozen_pages(rows)
    ok = not froze and not any(r["errors"] for r in rows)
    lines = [
        f"date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"machine: {machine()}",
        f"command: python benchmarks/full_dataset.py {' '.join(argv or sys.argv[1:])}".rstrip(),
        f"features (CLI, before the app): {filled:.0f} s",
        "",
        "| page | images | main content | shown (s) | idle (s) | longest task before it (ms) "
        "| longest task after it (ms) | blocking after (ms) | frame after (ms) "
        "| scatter points | errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        *(
            f"| {r['page']} | {VISITS[r['limits']][1]} | {r['what']} "
            f"| {r['shown']:.1f} | {r['idle']:.1f} | {r['load_ms']:.0f} | {r['after_ms']:.0f} "
            f"| {r['blocking_ms']:.0f} | {r['frame_ms']:.0f} "
            f"| {', '.join(f'{n:,}' for n in r['points']) or '-'} | {r['errors']} |"
            for r in rows
        ),
        "",
        "longest main-thread task per page, default sizes -> all 70,000 images (re-open): "
        + "; ".join(
            f"{page} {longest[page, 'default']:.0f} -> {longest[page, limits]:.0f} ms"
            for page, limits in longest
            if limits == "all again" and (page, "default") in longest
        ),
        f"a freeze caused by the full set: a task >= {FREEZE_MS} ms and over {GROWTH}x the "
        f"page's longest at default sizes: "
        + ("none, no page froze the browser" if not froze else "on " + ", ".join(froze)),
    ]
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    if a.out:
        Path(a.out).write_text(text)
    return 0 if ok else 1


if __name__ == "__main__":
    os.chdir(ROOT)
    raise SystemExit(main())
