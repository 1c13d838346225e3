"""End to end: the real `streamlit run app.py` driven in Debian's headless Chromium by Playwright.

Picks a timestep and a block on Explore, waits for the accuracy, measures how long a
setting already computed takes to render again, runs a small sweep, and visits every page.
A second test opens two sessions at once on different settings (benchmarks/load_test.py
with 2 sessions): no errors, and every entry the app wrote equals a serial `explorer extract`.
A third turns on Explore's "Across timesteps" and presses Play: the aligned UMAP moves frame by frame.
Screenshots go to assets/screenshots/ with UPDATE_SCREENSHOTS=1, else to a temporary folder.
E2E_DATASET=fashion-mnist takes them on the Fashion-MNIST model instead of digits.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load_benchmark(name: str):
    """benchmarks/<name>.py as a module: the load test's server and session driver."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


LOAD = _load_benchmark("load_test")
CHROMIUM = LOAD.CHROMIUM
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(), reason=f"needs {CHROMIUM}: apt-get install chromium"
    ),
]
ARGS = LOAD.CHROMIUM_ARGS
DATASET = os.environ.get("E2E_DATASET", "digits")
LIMITS = {"digits": (300, 100), "fashion-mnist": (2000, 1000)}.get(DATASET, (300, 100))
APP_STATE = LOAD.APP_STATE


@dataclass
class Server:
    url: str
    log: Path


@pytest.fixture
def server(tmp_path):
    """A `streamlit run app.py` on a free port with its own cache; always stopped afterwards."""
    with LOAD.serve(tmp_path / "cache", tmp_path / "server.log") as url:
        yield Server(url, tmp_path / "server.log")


@pytest.fixture
def shots(tmp_path) -> Path:
    out = (
        ROOT / "assets" / "screenshots"
        if os.environ.get("UPDATE_SCREENSHOTS") == "1"
        else tmp_path / "shots"
    )
    out.mkdir(parents=True, exist_ok=True)
    return out


def arm(page) -> None:
    """Count finished script runs in the page (stApp's data-test-script-state turning notRunning)."""
    page.locator('[data-testid="stApp"]').wait_for()
    page.evaluate(f"""() => {{
        if (window.__runs !== undefined) return;
        window.__runs = 0; window.__state = {APP_STATE};
        const app = document.querySelector('[data-testid=stApp]');
        new MutationObserver(() => {{
            const s = {APP_STATE};
            if (s === 'notRunning' && window.__state !== 'notRunning') window.__runs++;
            window.__state = s;
        }}).observe(app, {{attributes: true, attributeFilter: ['data-test-script-state']}});
    }}""")


def runs(page) -> int:
    return page.evaluate("() => window.__runs")


def wait_run(page, before: int, timeout_s: float = 300) -> None:
    """Until a script run started after `runs() == before` has finished."""
    page.wait_for_function(
        f"(n) => window.__runs > n && {APP_STATE} === 'notRunning'",
        arg=before,
        timeout=timeout_s * 1000,
    )


def umap_landed(page) -> None:
    """Let a first UMAP computing in the background land: when done it reruns the page, and
    that rerun must not be taken for the one an interaction of the test starts."""
    busy = page.get_by_text("UMAP is being computed in the background")
    busy.first.wait_for(state="detached", timeout=300_000)
    page.wait_for_function(f"() => {APP_STATE} === 'notRunning'", timeout=300_000)


def metric(page, label: str) -> str:
    box = page.locator('[data-testid="stMetric"]').filter(has_text=label).first
    return box.locator('[data-testid="stMetricValue"]').inner_text(timeout=180_000).strip()


def assert_no_traceback(page, where: str) -> None:
    assert page.locator('[data-testid="stException"]').count() == 0, (
        f"{where}: a traceback is shown"
    )


def open_select(page, label: str, option: str):
    """Open the selectbox whose label contains `label` and type `option` to filter the list
    (long lists are virtualised); returns the matching option, ready to click."""
    box = page.locator('[data-testid="stSelectbox"]').filter(has_text=label).first
    box.scroll_into_view_if_needed()
    box.click()
    page.keyboard.type(option)
    opt = page.get_by_role("option", name=re.compile(re.escape(option))).first
    opt.wait_for()
    return opt


def select_points(page) -> str:
    """Drag a box over most of Explore's images-as-points view; returns the 'N selected' text."""
    from tests.e2e.test_points_view import box_select  # it imports this module's fixtures

    return box_select(page)


def shoot(page, folder: Path, name: str, scroll: int = 0) -> None:
    page.evaluate("(y) => document.querySelector('[data-testid=stMain]').scrollTo(0, y)", scroll)
    page.wait_for_timeout(800)
    page.screenshot(path=str(folder / f"{name}.png"))


def test_explore_sweep_and_every_page_in_chromium(server, shots):
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install -e '.[test]'")
    sync_playwright = sync_api.sync_playwright

    model = {"digits": "ddpm-digits", "fashion-mnist": "ddpm-fashion-mnist"}.get(
        DATASET, "ddpm-digits"
    )
    link = f"{server.url}/?model={model}&dataset={DATASET}&train={LIMITS[0]}&test={LIMITS[1]}"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            t0 = time.time()
            page.goto(link)
            arm(page)
            first = metric(page, "Top-1 (test)")
            page.wait_for_function(f"() => {APP_STATE} === 'notRunning'", timeout=300_000)
            print(f"\nfirst setting computed and shown in {time.time() - t0:.1f}s: top-1 {first}")
            assert re.fullmatch(r"\d+\.\d\d%", first), f"top-1 looks like a percentage: {first}"
            assert_no_traceback(page, "explore")
            umap_landed(page)
            shoot(page, shots, "explore")  # the README's first picture: the default setting
            block0 = re.search(r"block=([^&]+)", page.url).group(1).replace("%2E", ".")

            # Pick a timestep far from the default: click the slider's track at 30% of its width.
            slider = page.locator('[data-testid="stSlider"]').first
            for attempt in range(3):  # a late layout shift can move the track under the click
                slider.scroll_into_view_if_needed()
                box = slider.bounding_box()
                n = runs(page)
                if attempt < 2:
                    page.mouse.click(box["x"] + 0.3 * box["width"], box["y"] + box["height"] - 12)
                else:  # the keyboard cannot miss: the thumb to the end of the track
                    slider.get_by_role("slider").first.focus()
                    page.keyboard.press("End")
                with contextlib.suppress(sync_api.TimeoutError):  # no rerun: the click missed
                    wait_run(page, n, timeout_s=60)
                t_new = re.search(r"[?&]t=(\d+)", page.url).group(1)
                if t_new != "10":
                    break
            assert t_new != "10", f"the timestep moved and the URL follows: {page.url}"
            assert slider.get_by_text(t_new, exact=True).count() >= 1, f"the slider shows t={t_new}"
            at_t = metric(page, "Top-1 (test)")
            print(f"t={t_new}, {block0}: top-1 {at_t}")

            # Pick another block: the second up block (the default is the bottleneck).
            other = "up_blocks.0.resnets.1"
            umap_landed(page)
            t1, n = time.time(), runs(page)
            open_select(page, "Block", other).click()
            wait_run(page, n)
            assert f"block={other}" in page.url.replace("%2E", "."), f"the URL follows: {page.url}"
            print(
                f"t={t_new}, {other} computed in {time.time() - t1:.1f}s: top-1 {metric(page, 'Top-1 (test)')}"
            )
            assert_no_traceback(page, f"explore, {other}")

            # Select points with a drag over the embedding: their images appear in a grid.
            picked = select_points(page)
            assert page.locator(".dfe-tile").count() > 0, f"{picked}: their images are shown"
            print(f"selection: {picked}")

            # Back to the setting computed before: it must come from the caches at once.
            umap_landed(page)
            opt, n = open_select(page, "Block", block0), runs(page)
            t2 = time.time()
            opt.click()
            wait_run(page, n)
            cached_s = time.time() - t2
            assert metric(page, "Top-1 (test)") == at_t, "the cached setting shows the same number"
            print(
                f"CACHED RE-RENDER: {cached_s:.2f}s in the browser, from clicking the block to the end of the run"
            )
            assert cached_s < 10, f"a cached setting took {cached_s:.1f}s to render"

            # The Sweep page: the default grid with baselines, computed with progress; then the figures.
            n = runs(page)
            page.get_by_role("link", name="Sweep").click()
            wait_run(page, n)
            page.get_by_text("Sweep timesteps × blocks").wait_for()
            assert_no_traceback(page, "sweep")
            t3, n = time.time(), runs(page)
            page.get_by_role("button", name="Compute").click()
            wait_run(page, n, timeout_s=600)
            page.get_by_text("Sweep finished").wait_for()
            print(f"sweep (default grid + baselines) done in {time.time() - t3:.1f}s")
            assert page.get_by_text("Top-1 (%) by block and timestep").count() >= 1, (
                "the heatmap is drawn"
            )
            assert_no_traceback(page, "sweep after compute")
            shoot(page, shots, "sweep", scroll=330)

            for name, nav in [
                ("compare", "Compare"),
                ("similarity", "Similarity"),
                ("data-model", "Data & model"),
            ]:
                t4, n = time.time(), runs(page)
                page.get_by_role("link", name=nav).click()
                wait_run(page, n)
                assert_no_traceback(page, name)
                print(f"{name} page ready in {time.time() - t4:.1f}s")
                shoot(page, shots, name)

            # The built-in Fashion-MNIST pair: Sweep opens on the shipped sweep, no Compute pressed
            # (on Fashion-MNIST itself, E2E_DATASET=fashion-mnist, the sweep computed above
            # replaces it, as its note says: then it must not be labelled as shipped).
            t5 = time.time()
            page.goto(f"{server.url}/sweep?model=ddpm-fashion-mnist&dataset=fashion-mnist")
            page.get_by_text("Top-1 (%) by block and timestep").first.wait_for(timeout=300_000)
            shipped_label = page.get_by_text("Shipped results").count()
            if DATASET == "fashion-mnist":
                assert shipped_label == 0, "your own sweep is never labelled as the shipped one"
            else:
                assert shipped_label >= 1, "labelled as the shipped sweep"
            assert page.get_by_text("Sweep finished").count() == 0, "nothing was computed"
            assert_no_traceback(page, "shipped sweep")
            print(f"shipped sweep heatmap visible in {time.time() - t5:.1f}s, without Compute")
        except Exception:
            page.screenshot(path=str(server.log.with_name("failure.png")))
            print(
                f"server log:\n{server.log.read_text()[-3000:]}\nscreenshot: {server.log.with_name('failure.png')}"
            )
            raise
        finally:
            browser.close()


_ANIMATED = """() => [...document.querySelectorAll('.js-plotly-plot')]
    .find(g => g._transitionData && g._transitionData._frames.length)"""


def animated_state(page) -> dict | None:
    """The animated figure's slider position, title, first point's data and its place on
    screen (None while not drawn)."""
    return page.evaluate(f"""() => {{
        const g = ({_ANIMATED})();
        if (!g) return null;
        return {{active: g.layout.sliders[0].active, title: g.layout.title.text,
                 x: Number(g._fullData[0].x[0]), y: Number(g._fullData[0].y[0]),
                 drawn: g.querySelector('.scatterlayer .trace .point').getAttribute('transform'),
                 frames: g._transitionData._frames.length}};
    }}""")


def test_timesteps_animation_in_chromium(server, shots):
    """Explore's "Across timesteps": the toggle draws the aligned UMAP, Play moves it through
    the frames (the slider, the title and the points change), the slider goes back to t=50."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install -e '.[test]'")
    model = {"digits": "ddpm-digits", "fashion-mnist": "ddpm-fashion-mnist"}.get(
        DATASET, "ddpm-digits"
    )
    link = (
        f"{server.url}/?model={model}&dataset={DATASET}&train={LIMITS[0]}&test={LIMITS[1]}"
        "&proj=pca&ts=10&ts=50&ts=150&ts=300&ts=500"
    )
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(link)
            arm(page)
            metric(page, "Top-1 (test)")
            page.wait_for_function(f"() => {APP_STATE} === 'notRunning'", timeout=300_000)
            assert animated_state(page) is None, "off until the toggle is on"

            t0, n = time.time(), runs(page)
            toggle = page.get_by_text("Show this block's aligned UMAP across timesteps")
            toggle.scroll_into_view_if_needed()
            toggle.click()
            wait_run(page, n, timeout_s=600)
            assert "tl=1" in page.url, f"the URL holds the toggle: {page.url}"
            page.wait_for_function(f"() => !!({_ANIMATED})()", timeout=60_000)
            assert_no_traceback(page, "across timesteps")
            before = animated_state(page)
            print(f"\naligned UMAP over 5 timesteps drawn in {time.time() - t0:.1f}s: {before}")
            assert before["frames"] == 5 and before["active"] == 0 and "t=10" in before["title"]

            chart = page.locator('[data-testid="stPlotlyChart"]').filter(
                has=page.locator(".slider-container")
            )
            chart.scroll_into_view_if_needed()
            chart.locator(".updatemenu-button").first.click()  # Play
            page.wait_for_function(
                f"() => ({_ANIMATED})().layout.sliders[0].active === 4", timeout=30_000
            )
            page.wait_for_timeout(1500)  # the last transition
            after = animated_state(page)
            print(f"after Play: {after}")
            assert "t=500" in after["title"], "the title follows the frame"
            assert (after["x"], after["y"]) != (before["x"], before["y"]), "the data changed"
            assert after["drawn"] != before["drawn"], "the points moved on screen"

            # Move the slider: click the rail above the "50" step; the frame t=50 is drawn.
            rail = chart.locator(".slider-rail-rect").bounding_box()
            label = chart.locator(".slider-label-group text").filter(has_text=re.compile("^50$"))
            lb = label.bounding_box()
            page.mouse.click(lb["x"] + lb["width"] / 2, rail["y"] + rail["height"] / 2)
            page.wait_for_function(
                f"() => ({_ANIMATED})().layout.sliders[0].active === 1", timeout=30_000
            )
            page.wait_for_timeout(1000)
            moved = animated_state(page)
            assert "t=50 " in moved["title"] and moved["drawn"] != after["drawn"], moved

            page.get_by_text("Across timesteps", exact=True).evaluate(
                "e => e.scrollIntoView({block: 'start'})"
            )
            page.wait_for_timeout(800)
            page.screenshot(path=str(shots / "timesteps.png"))
        except Exception:
            page.screenshot(path=str(server.log.with_name("failure.png")))
            print(f"server log:\n{server.log.read_text()[-3000:]}")
            raise
        finally:
            browser.close()


def test_two_sessions_at_once_match_a_serial_extract(tmp_path):
    """Two browser contexts load different (t, block, pool) links at the same moment on a cold
    cache: both show an accuracy with no error, and the app's entries are byte-identical to
    `explorer extract` (and `ensure_pixels`) run alone afterwards on a fresh cache."""
    pytest.importorskip("playwright.async_api", reason="pip install -e '.[test]'")
    asks = LOAD.ASKS[:2]  # a shallow block at t=10 (early exit) and the bottleneck at t=500
    outcomes, check, entries = LOAD.run(
        asks, tmp_path, model="ddpm-digits", dataset="digits", train=100, test=100, timeout_s=300
    )
    print("\n" + LOAD.summary(outcomes, check, entries, "two sessions at once"))
    for o in outcomes:
        assert not o.errors, f"t={o.ask.t}, block {o.ask.block}: {o.errors}"
        assert o.top1 is not None and re.fullmatch(r"\d+\.\d\d%", o.top1), o
    written = {(m["t"], m["split"], m["pool"]) for m in entries.values() if m.get("t") is not None}
    wanted = {(a.t, split, a.pool) for a in asks for split in ("train", "test")}
    assert written == wanted, f"the app wrote {sorted(written)}"
    assert not check.differing, f"entries differ from a serial run: {check.differing}"
    assert not check.missing, f"entries a serial run does not write: {check.missing}"
    assert len(check.identical) == len(entries) >= len(wanted)
