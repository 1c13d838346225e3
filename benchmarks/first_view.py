"""First view: seconds from opening each page of a fresh server, on an empty cache, to its main
number or figure, in headless Chromium (issue 14; target under 5 s each on a 2-core CPU).

Each page gets its own fresh `streamlit run app.py` and its own empty `EXPLORER_CACHE`, so
every page is measured as the first page a new user opens on a fresh clone: the model and
dataset load, the shipped warm seed is imported, and nothing else is cached. The clock
starts when the browser is sent to the page (the server already answers its health check)
and stops when the page's main element is visible. A second, new session on the same server
is timed after it (the process has imported its modules and loaded the model by then):

    Explore      the "Top-1 (test)" number        Sweep       the heatmap (shipped sweep)
    Compare      the "Top-1 B" number             Similarity  the blocks x blocks CKA map
    Data & model the "Parameters" number

    python benchmarks/first_view.py [--repeat 1] [--out benchmarks/results/first_view_cpu.txt]

Needs Debian's /usr/bin/chromium and the `playwright` package (never `playwright install`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load_test import CHROMIUM, CHROMIUM_ARGS, ROOT, serve  # noqa: E402

TARGET_S = 5.0
# page -> (URL path, what "shown" means: a Playwright locator builder, its description)
PAGES = {
    "Explore": ("", lambda p: _metric(p, "Top-1 (test)"), "Top-1 (test) number"),
    "Sweep": ("sweep", lambda p: p.get_by_text("Top-1 (%) by block and timestep").first,
              "heatmap"),
    "Compare": ("compare", lambda p: _metric(p, "Top-1 B"), "Top-1 B number"),
    "Similarity": ("similarity", lambda p: p.locator('[data-testid="stPlotlyChart"]').first,
                   "CKA map"),
    "Data & model": ("data_model", lambda p: _metric(p, "Parameters"), "Parameters number"),
}


def _metric(page, label: str):
    box = page.locator('[data-testid="stMetric"]').filter(has_text=label).first
    return box.locator('[data-testid="stMetricValue"]')


def first_view(name: str, timeout_s: float = 300) -> dict:
    """Open page `name` on a fresh server with an empty cache; seconds to its main element."""
    from playwright.sync_api import sync_playwright

    path, find, what = PAGES[name]
    with tempfile.TemporaryDirectory(prefix="first-view-") as tmp:
        tmp = Path(tmp)
        with serve(tmp / "cache", tmp / "server.log") as url, sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                out = {"page": name, "shown": what, "load": os.getloadavg()[0], "errors": 0}
                for run in ("seconds", "again"):  # a fresh server, then a new session on it
                    page = browser.new_page(viewport={"width": 1400, "height": 900})
                    t0 = time.perf_counter()
                    page.goto(f"{url}/{path}")
                    find(page).wait_for(state="visible", timeout=timeout_s * 1000)
                    out[run] = time.perf_counter() - t0
                    out["errors"] += page.locator(
                        '[data-testid="stException"], [data-testid="stAlertContentError"]').count()
                    page.close()
                return out
            finally:
                browser.close()


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=1, help="fresh servers per page (default: 1)")
    ap.add_argument("--pages", default=",".join(PAGES), help="comma-separated page names")
    ap.add_argument("--out", default=None, help="also write the result here")
    a = ap.parse_args(argv)
    if not Path(CHROMIUM).exists():
        ap.error(f"needs {CHROMIUM}: apt-get install chromium")
    rows = []
    for name in [n.strip() for n in a.pages.split(",")]:
        for _ in range(a.repeat):
            r = first_view(name)
            rows.append(r)
            print(f"{name:13} {r['seconds']:6.2f} s, new session {r['again']:5.2f} s  "
                  f"({r['shown']}; load average {r['load']:.1f}"
                  f"{'; ERRORS ON PAGE' if r['errors'] else ''})", flush=True)
    worst = max(r["seconds"] for r in rows)
    lines = [
        f"date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"machine: {machine()}",
        f"command: python benchmarks/first_view.py {' '.join(argv or sys.argv[1:])}".rstrip(),
        "load average (1 min) at start of each page: "
        + ", ".join(f"{r['load']:.1f}" for r in rows),
        "",
        "| page | fresh server, empty cache (s) | then a new session on it (s) | main content |",
        "|---|---|---|---|",
        *(f"| {r['page']} | {r['seconds']:.2f} | {r['again']:.2f} | {r['shown']} |" for r in rows),
        "",
        f"worst: {worst:.2f} s; target < {TARGET_S:.0f} s: {'met' if worst < TARGET_S else 'NOT met'}",
    ]
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    if a.out:
        Path(a.out).write_text(text)
    return 0 if not any(r["errors"] for r in rows) else 1


if __name__ == "__main__":
    os.chdir(ROOT)
    raise SystemExit(main())
