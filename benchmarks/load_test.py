"""Load test: N browser sessions ask one `streamlit run app.py` for different settings at once.

One server (headless, a free port, an empty temporary cache) and one headless Chromium with
N contexts. Every context opens the Explore page with its own (timestep, block, pooling) in
the shareable link, all at the same moment (asyncio.gather of the navigations). Reported:

- exceptions seen: the app's "Something went wrong (...)" box or Streamlit's exception box;
- p50 / p95 seconds from the navigation to a rendered Top-1 (test) metric;
- whether every feature entry the app wrote is byte-identical to `explorer extract` run
  alone afterwards on a fresh cache with the same settings (pixel baselines, which
  `explorer extract` does not write, are recomputed alone with `ensure_pixels`).

Exit status 1 when any session failed or any entry differs or is missing from the serial run.

Usage: python benchmarks/load_test.py [--sessions 5] [--train 200] [--test 200]
                                      [--out benchmarks/results/load_test_cpu.txt]
The e2e test (tests/e2e/test_browser.py) runs the same driver with 2 sessions.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
]
APP_STATE = "document.querySelector('[data-testid=stApp]')?.getAttribute('data-test-script-state')"


def child_env(**extra: str) -> dict[str, str]:
    """The environment of the server and of the serial run alike: one thread per process (as
    many cores as sessions would otherwise be oversubscribed), this checkout's `explorer`."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "PYTHONPATH": path,
        **extra,
    }


@dataclass(frozen=True)
class Ask:
    """One session's setting on the Explore page (block: 1-based index in the catalogue)."""

    t: int
    block: int
    pool: str

    def query(self) -> str:
        return f"t={self.t}&block={self.block}&pool={self.pool}&head=linear&proj=pca"


# Different timesteps, shallow and deep blocks (shallow ones stop the forward pass early),
# and every pooling: the mix that made concurrent sessions interfere (issue 8).
ASKS = [
    Ask(10, 2, "2"),
    Ask(500, 7, "1"),
    Ask(100, 11, "4"),
    Ask(300, 4, "max"),
    Ask(50, 13, "8"),
]


# --- the server -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve(cache: Path, log: Path, timeout_s: float = 90) -> Iterator[str]:
    """A `streamlit run app.py` on a free port with `EXPLORER_CACHE=cache`; yields its URL and
    always stops it (the whole process group) afterwards. Output goes to `log`."""
    port = free_port()
    env = child_env(EXPLORER_CACHE=str(cache))
    cmd = [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"),
           "--server.headless", "true", "--server.port", str(port),
           "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
           "--server.fileWatcherType", "none"]  # fmt: skip
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.time() + timeout_s
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"streamlit exited: {log.read_text()[-2000:]}")
                with contextlib.suppress(OSError):
                    if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                        break
                if time.time() > deadline:
                    raise RuntimeError(f"streamlit did not serve within {timeout_s:.0f}s")
                time.sleep(0.5)
            yield url
        finally:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=15)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=15)


# --- the sessions -----------------------------------------------------------------------------

# Returns {top1} once the Top-1 metric shows a value, {errors} as soon as an error box shows.
_PROBE = """() => {
  const errors = [];
  for (const e of document.querySelectorAll('[data-testid=stException]'))
    errors.push('traceback: ' + e.innerText.trim().split('\\n')[0]);
  for (const a of document.querySelectorAll('[data-testid=stAlert]')) {
    const text = a.innerText, at = text.indexOf('Something went wrong (');
    if (at >= 0) errors.push(text.slice(at).split('. Check')[0].split('\\n')[0].slice(0, 240));
  }
  if (errors.length) return {errors};
  for (const m of document.querySelectorAll('[data-testid=stMetric]')) {
    if (!m.innerText.includes('Top-1 (test)')) continue;
    const v = m.querySelector('[data-testid=stMetricValue]');
    if (v && v.innerText.trim()) return {top1: v.innerText.trim()};
  }
  return null;
}"""


@dataclass
class Outcome:
    """What one session saw: seconds to the rendered accuracy (None if it never showed)."""

    ask: Ask
    seconds: float | None = None
    top1: str | None = None
    errors: list[str] = field(default_factory=list)
    url: str = ""

    @property
    def ok(self) -> bool:
        return self.top1 is not None and not self.errors


async def _session(page, link: str, ask: Ask, timeout_s: float) -> Outcome:
    out = Outcome(ask)
    t0 = time.perf_counter()
    try:
        await page.goto(link)
        seen = await (await page.wait_for_function(_PROBE, timeout=timeout_s * 1000)).json_value()
        if "top1" in seen:
            out.seconds, out.top1 = time.perf_counter() - t0, seen["top1"]
        # The page goes on (pixel baseline, embedding): errors may still come; wait for the end.
        await page.wait_for_function(
            f"() => {APP_STATE} === 'notRunning'", timeout=timeout_s * 1000
        )
        final = await page.evaluate(_PROBE)
        if final and "errors" in final:
            out.errors = final["errors"]
    except Exception as e:  # a timeout or a crashed page is a failed session, not a crash here
        out.errors.append(f"driver: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    out.url = page.url
    if out.top1 is not None and f"t={ask.t}" not in out.url.split("?")[-1].split("&"):
        out.errors.append(f"the page did not keep t={ask.t} from the link: {out.url}")
    return out


async def drive(
    url: str,
    asks: Sequence[Ask],
    *,
    model: str,
    dataset: str,
    train: int,
    test: int,
    timeout_s: float = 600,
) -> list[Outcome]:
    """Open one Chromium context per ask and load all their links at the same moment."""
    from playwright.async_api import async_playwright

    base = f"{url}/?model={model}&dataset={dataset}&train={train}&test={test}"
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            pages = []
            for _ in asks:
                ctx = await browser.new_context(viewport={"width": 1400, "height": 900})
                pages.append(await ctx.new_page())
            return list(await asyncio.gather(*(
                _session(pg, f"{base}&{a.query()}", a, timeout_s) for pg, a in zip(pages, asks, strict=True)
            )))  # fmt: skip
        finally:
            await browser.close()


# --- the serial check -------------------------------------------------------------------------


def manifests(cache: Path) -> dict[str, dict]:
    """Complete feature entries of a cache, by key: `<cache>/features/??/*.json`."""
    out = {}
    for m in sorted((cache / "features").glob("??/*.json")):
        meta = json.loads(m.read_text())
        out[meta.get("key", m.stem)] = meta
    return out


def _load(cache: Path, key: str) -> np.ndarray:
    return np.load(cache / "features" / key[:2] / f"{key}.npy")


@dataclass
class Check:
    """The app's entries against a serial run: identical, differing and missing keys."""

    identical: list[str] = field(default_factory=list)
    differing: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    serial_seconds: float = 0.0

    @property
    def bad(self) -> int:
        return len(self.differing) + len(self.missing)


def serial_run(
    app_cache: Path, fresh: Path, *, model: str, dataset: str, batch_size: int = 256
) -> float:
    """Recompute every entry of `app_cache` alone into `fresh`: `explorer extract` for the
    U-Net features, one call per (split size, t, seed); `ensure_pixels` for pixel baselines.
    Returns the seconds it took."""
    t0 = time.perf_counter()
    groups: dict[tuple, dict[str, set]] = {}
    pixels: set[tuple[str, int, str]] = set()
    for meta in manifests(app_cache).values():
        if meta.get("t") is None:
            pixels.add((meta["split"], int(meta["images"]), meta["pool"]))
            continue
        g = groups.setdefault((int(meta["images"]), int(meta["t"]), int(meta["seed"])),
                              {"splits": set(), "layers": set(), "pools": set()})  # fmt: skip
        g["splits"].add(meta["split"])
        g["layers"].add(meta["layer"])
        g["pools"].add(str(meta["pool"]))
    env = child_env()
    for (images, t, seed), g in sorted(groups.items()):
        cmd = [sys.executable, "-m", "explorer.cli", "extract", "--model", model, "--dataset", dataset,
               "--splits", ",".join(sorted(g["splits"])), "--limit", str(images),
               "--timesteps", str(t), "--seeds", str(seed), "--layers", ",".join(sorted(g["layers"])),
               "--pool", ",".join(sorted(g["pools"])), "--batch-size", str(batch_size),
               "--cache-dir", str(fresh)]  # fmt: skip
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"{' '.join(cmd)} failed: {(done.stderr or done.stdout)[-1000:]}")
    if pixels:
        from explorer.data import load_dataset
        from explorer.features.keys import Selection
        from explorer.features.pixels import ensure_pixels
        from explorer.features.store import FeatureStore
        from explorer.models.loader import load_model

        m, ds, store = load_model(model, device="cpu"), load_dataset(dataset), FeatureStore(fresh)
        for split, images, pool in sorted(pixels):
            ensure_pixels(m, ds, Selection.of(ds, split, images), pool, store=store)
    return time.perf_counter() - t0


def compare(app_cache: Path, fresh: Path) -> Check:
    """Every app entry must exist in `fresh` with the same dtype, shape and bytes."""
    check, serial = Check(), manifests(fresh)
    for key in manifests(app_cache):
        if key not in serial:
            check.missing.append(key)
            continue
        a, b = _load(app_cache, key), _load(fresh, key)
        same = a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
        (check.identical if same else check.differing).append(key)
    return check


def describe(meta: dict) -> str:
    where = "pixels" if meta.get("t") is None else f"t={meta['t']} {meta['layer']}"
    return f"{meta['split']} {where} pool={meta['pool']}"


# --- the report -------------------------------------------------------------------------------


def summary(
    outcomes: Sequence[Outcome], check: Check, app_entries: dict[str, dict], header: str
) -> str:
    lines = [header]
    for o in outcomes:
        a = o.ask
        shown = f"top-1 {o.top1} in {o.seconds:6.1f}s" if o.top1 else "no accuracy shown"
        lines.append(f"  t={a.t:<4} block={a.block:<3} pool={a.pool:<4} {shown}"
                     + (f"  ERRORS: {' | '.join(o.errors)}" if o.errors else ""))  # fmt: skip
    times = [o.seconds for o in outcomes if o.seconds is not None]
    exceptions = sum(len(o.errors) for o in outcomes)
    failed = sum(not o.ok for o in outcomes)
    if times:
        p50, p95 = np.percentile(times, [50, 95])
        lines.append(f"time to a rendered accuracy: p50 {p50:.1f}s, p95 {p95:.1f}s "
                     f"(n={len(times)}, max {max(times):.1f}s)")  # fmt: skip
    else:
        lines.append("time to a rendered accuracy: no session showed one")
    lines.append(f"exceptions seen: {exceptions} ({failed} of {len(outcomes)} sessions failed)")
    lines.append(
        f"entries the app wrote: {len(app_entries)}; identical to the serial run: "
        f"{len(check.identical)}, differing: {len(check.differing)}, missing from the serial run: "
        f"{len(check.missing)} (serial run {check.serial_seconds:.0f}s)"
    )
    for key in check.differing + check.missing:
        lines.append(f"  {'DIFFERS' if key in check.differing else 'MISSING'} {key} "
                     f"{describe(app_entries[key])}")  # fmt: skip
    verdict = "PASS" if exceptions == 0 and failed == 0 and check.bad == 0 else "FAIL"
    lines.append(f"verdict: {verdict}")
    return "\n".join(lines)


def run(
    asks: Sequence[Ask],
    workdir: Path,
    *,
    model: str,
    dataset: str,
    train: int,
    test: int,
    timeout_s: float = 600,
) -> tuple[list[Outcome], Check, dict[str, dict]]:
    """The whole load test in `workdir`: server, sessions, serial run, comparison."""
    cache, fresh = workdir / "cache", workdir / "serial"
    with serve(cache, workdir / "server.log") as url:
        outcomes = asyncio.run(drive(url, asks, model=model, dataset=dataset, train=train,
                                     test=test, timeout_s=timeout_s))  # fmt: skip
    app_entries = manifests(cache)
    seconds = serial_run(cache, fresh, model=model, dataset=dataset)
    check = compare(cache, fresh)
    check.serial_seconds = seconds
    return outcomes, check, app_entries


def _commit() -> str:
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        return subprocess.run(["git", "log", "-1", "--format=%h %s"], cwd=ROOT, check=True,
                              capture_output=True, text=True).stdout.strip()  # fmt: skip
    return "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=len(ASKS), help=f"1 to {len(ASKS)}")
    ap.add_argument("--model", default="ddpm-digits")
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--train", type=int, default=200, help="train images (sidebar limit)")
    ap.add_argument("--test", type=int, default=200, help="test images (sidebar limit)")
    ap.add_argument("--timeout", type=float, default=600, help="seconds per session")
    ap.add_argument("--out", type=Path, default=None, help="append the summary to this file")
    ap.add_argument("--label", default="", help="a note for the summary's header")
    a = ap.parse_args(argv)
    if not 1 <= a.sessions <= len(ASKS):
        ap.error(f"--sessions must be 1 to {len(ASKS)}")
    if not Path(CHROMIUM).exists():
        ap.error(f"needs {CHROMIUM}: apt-get install chromium")
    with tempfile.TemporaryDirectory(prefix="load-test-") as tmp:
        outcomes, check, entries = run(ASKS[: a.sessions], Path(tmp), model=a.model,
                                       dataset=a.dataset, train=a.train, test=a.test,
                                       timeout_s=a.timeout)  # fmt: skip
        if check.bad or any(not o.ok for o in outcomes):
            print(f"server log tail:\n{(Path(tmp) / 'server.log').read_text()[-3000:]}",
                  file=sys.stderr)  # fmt: skip
    header = (
        f"== load test {time.strftime('%Y-%m-%d %H:%M')} · {a.sessions} sessions at once · "
        f"{a.model} on {a.dataset}, {a.train} train / {a.test} test images · {os.cpu_count()} CPUs"
        f" · commit {_commit()}" + (f" · {a.label}" if a.label else "")
    )
    text = summary(outcomes, check, entries, header)
    print(text)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        with a.out.open("a") as f:
            f.write(text + "\n\n")
    return 0 if text.endswith("PASS") else 1


if __name__ == "__main__":
    sys.exit(main())
