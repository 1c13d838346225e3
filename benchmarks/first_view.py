"""First view: seconds from opening each page of a fresh server, on an empty cache, to its main
number or figure, in headless Chromium (issue 14; target under 5 s each on a 2-core CPU).

Each page gets its own fresh server, started as a user starts it (`explorer app --headless
--port N`), and its own empty `EXPLORER_CACHE`, so every page is measured as the first page a
new user opens on a fresh clone: nothing is cached but what the server itself prepares
before it answers (`explorer.serve`: imports, the default model, dataset and workspaces, the
shipped warm seed). Two clocks: from the command to the server's first health answer
("server ready"), and from sending the browser to the page to its main element being
visible ("first view"). A second, new session on the same server is timed after it:

    Explore      the "Top-1 (test)" number        Sweep       the heatmap (shipped sweep)
    Compare      the "Top-1 B" number             Similarity  the blocks x blocks CKA map
    Data & model the "Parameters" number

    python benchmarks/first_view.py [--repeat 1] [--out benchmarks/results/first_view_cpu.txt]

Needs Debian's /usr/bin/chromium and the `playwright` package (never `playwright install`).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load_test import CHROMIUM, CHROMIUM_ARGS, ROOT, free_port  # noqa: E402

TARGET_S = 5.0
# page -> (URL path, what "shown" means: a Playwright locator builder, its description)
PAGES = {
    "Explore": ("", lambda p: _metric(p, "Top-1 (test)"), "Top-1 (test) number"),
    "Sweep": ("sweep", lambda p: p.get_by_text("Top-1 (%) by block and timestep").first, "heatmap"),
    "Compare": ("compare", lambda p: _metric(p, "Top-1 B"), "Top-1 B number"),
    "Similarity": (
        "similarity",
        lambda p: p.locator('[data-testid="stPlotlyChart"]').first,
        "CKA map",
    ),
    "Data & model": ("data_model", lambda p: _metric(p, "Parameters"), "Parameters number"),
}


def _metric(page, label: str):
    box = page.locator('[data-testid="stMetric"]').filter(has_text=label).first
    return box.locator('[data-testid="stMetricValue"]')


@contextlib.contextmanager
def explorer_app(cache: Path, log: Path, timeout_s: float = 300) -> Iterator[tuple[str, float]]:
    """`explorer app --headless --port N` with `EXPLORER_CACHE=cache`, as a user starts it;
    yields (URL, seconds from the command to the first health answer), then stops it."""
    port = free_port()
    exe = shutil.which("explorer") or str(Path(sys.executable).with_name("explorer"))
    env = {**os.environ, "EXPLORER_CACHE": str(cache)}
    with open(log, "wb") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [exe, "app", "--headless", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"explorer app exited: {log.read_text()[-2000:]}")
                with contextlib.suppress(OSError):
                    if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                        break
                if time.perf_counter() - t0 > timeout_s:
                    raise RuntimeError(f"explorer app did not serve within {timeout_s:.0f}s")
                time.sleep(0.1)
            yield url, time.perf_counter() - t0
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=15)


def first_view(name: str, timeout_s: float = 300) -> dict:
    """Open page `name` on a fresh server with an empty cache; seconds to its main element."""
    from playwright.sync_api import sync_playwright

    path, find, what = PAGES[name]
    with tempfile.TemporaryDirectory(prefix="first-view-") as tmp:
        tmp = Path(tmp)
        load = os.getloadavg()[0]
        with (
            explorer_app(tmp / "cache", tmp / "server.log") as (url, ready),
            sync_playwright() as p,
        ):
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                out = {"page": name, "shown": what, "load": load, "errors": 0, "ready": ready}
                for run in ("seconds", "again"):  # a fresh server, then a new session on it
                    page = browser.new_page(viewport={"width": 1400, "height": 900})
                    t0 = time.perf_counter()
                    page.goto(f"{url}/{path}")
                    find(page).wait_for(state="visible", timeout=timeout_s * 1000)
                    out[run] = time.perf_counter() - t0
                    out["errors"] += page.locator(
                        '[data-testid="stException"], [data-testid="stAlertContentError"]'
                    ).count()
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
            print(
                f"{name:13} server ready {r['ready']:6.2f} s, first view {r['seconds']:5.2f} s, "
                f"new session {r['again']:5.2f} s  "
                f"({r['shown']}; load average {r['load']:.1f}"
                f"{'; ERRORS ON PAGE' if r['errors'] else ''})",
                flush=True,
            )
    worst = max(r["seconds"] for r in rows)
    lines = [
        f"date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"machine: {machine()}",
        f"command: python benchmarks/first_view.py {' '.join(argv or sys.argv[1:])}".rstrip(),
        "load average (1 min) at start of each page: "
        + ", ".join(f"{r['load']:.1f}" for r in rows),
        "",
        "| page | `explorer app` to server ready (s) | first view, empty cache (s) "
        "| then a new session (s) | main content |",
        "|---|---|---|---|---|",
        *(
            f"| {r['page']} | {r['ready']:.2f} | {r['seconds']:.2f} | {r['again']:.2f} | {r['shown']} |"
            for r in rows
        ),
        "",
        f"worst first view: {worst:.2f} s; target < {TARGET_S:.0f} s: {'met' if worst < TARGET_S else 'NOT met'}",
    ]
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    if a.out:
        Path(a.out).write_text(text)
    return 0 if not any(r["errors"] for r in rows) else 1


if __name__ == "__main__":
    os.chdir(ROOT)
    raise SystemExit(main())
