"""Layout at narrow and wide windows: every page of the real app, and the HTML report, in Chromium.

One `streamlit run app.py` and one headless Chromium (Debian's, through `executable_path`;
never `playwright install`) for the whole module; each page is opened once per width, with
the sidebar open, at 800 px (a laptop with the sidebar open, a projector's narrow window)
and at 1280 px. A page fails on:

- a metric whose label, value or delta overflows its box (`scrollWidth > clientWidth`: the
  text is cut with an ellipsis);
- a selector (selectbox or multiselect) that shows no value, or too little of it to read;
- a figure's axis tick label, axis title, colour-bar label or title cut by the figure's edge
  (its text box outside the figure's SVG box), or numbers in heatmap cells shrunk below 10 px;
- a word of a widget label, radio option or metric label broken across lines ("UMA / P").

The pages open on the app's default pair (the built-in Fashion-MNIST model and data, whose
default views are warm from the shipped seed, and whose Sweep page shows the shipped sweep),
or on digits with small limits where Fashion-MNIST is not installed. Screenshots of every
page at both widths go to assets/screenshots/ with UPDATE_SCREENSHOTS=1 (the README's tour),
else to a temporary folder. `?present=1` (presentation mode) is checked on Explore at 1280 px.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.e2e.test_browser import APP_STATE, ARGS, CHROMIUM, LOAD, ROOT, open_select

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(), reason=f"needs {CHROMIUM}: apt-get install chromium"
    ),
]

# E2E_WIDTHS=1024,1920 checks other widths (the layout is meant to read at 800 to 1920 px)
WIDTHS = tuple(int(w) for w in os.environ.get("E2E_WIDTHS", "800,1280").split(","))
HEIGHT = 1000
# name of the screenshot -> (URL path, the page's title)
PAGES = {
    "explore": ("", "Explore one setting"),
    "sweep": ("sweep", "Sweep timesteps × blocks"),
    "compare": ("compare", "Compare two settings"),
    "similarity": ("similarity", "Representation similarity"),
    "data-model": ("data_model", "Data & model"),
}
MIN_VISIBLE_PX = 56  # a selector shows at least this much of its value (all of a shorter one)
MIN_CELL_FONT_PX = 10  # numbers written in heatmap cells are at least this large


def _query() -> str:
    """The default pair when Fashion-MNIST is installed (warm, shipped sweep), else digits."""
    from explorer.data import default_dataset

    if default_dataset() == "fashion-mnist":
        return ""
    return "?model=ddpm-digits&dataset=digits&train=300&test=100&proj=pca"


# --- what the browser measures ------------------------------------------------------------------

_CHECKS = """([minVisible, minCellFont]) => {
  const out = [];
  const text = e => (e.innerText ?? e.textContent ?? '').trim().replace(/\\s+/g, ' ');
  const shown = e => {
    const r = e.getBoundingClientRect();
    return r.width > 0 && r.height > 0 && r.right > 0 && r.left < innerWidth  // not off-screen
      && getComputedStyle(e).visibility !== 'hidden';
  };
  const labelOf = e => {
    const w = e.closest('[data-testid=stMetric], [data-testid=stSelectbox], '
      + '[data-testid=stMultiSelect], [data-testid=stRadio], [data-testid=stElementContainer]');
    const l = w && w.querySelector('[data-testid=stMetricLabel], [data-testid=stWidgetLabel]');
    return l ? text(l).slice(0, 50) : '';
  };

  // 1. metrics: label, value and delta are never cut
  for (const m of document.querySelectorAll('[data-testid=stMetric]')) {
    if (!shown(m)) continue;
    const parts = [m, ...m.querySelectorAll(
      '[data-testid=stMetricLabel] [data-testid=stMarkdownContainer], '
      + '[data-testid=stMetricLabel] [data-testid=stMarkdownContainer] *, '
      + '[data-testid=stMetricValue], [data-testid=stMetricValue] *, '
      + '[data-testid=stMetricDelta], [data-testid=stMetricDelta] *')];
    for (const p of parts) {
      if (p instanceof SVGElement || getComputedStyle(p).display === 'inline') continue;
      if (p.scrollWidth > p.clientWidth + 1) {
        out.push(`metric '${labelOf(p)}': '${text(p)}' overflows its box `
          + `(scrollWidth ${p.scrollWidth} > clientWidth ${p.clientWidth})`);
        break;
      }
    }
  }

  // 2. selectors show their value
  const canvas = document.createElement('canvas').getContext('2d');
  const width = (s, el) => { canvas.font = getComputedStyle(el).font; return canvas.measureText(s).width; };
  for (const s of document.querySelectorAll('[data-testid=stSelectbox]')) {
    if (!shown(s)) continue;
    const input = s.querySelector('input');
    const value = input ? input.value : '';
    if (!value) { out.push(`selector '${labelOf(s)}' is empty`); continue; }
    const cs = getComputedStyle(input);
    const room = input.clientWidth - parseFloat(cs.paddingLeft) - parseFloat(cs.paddingRight);
    const need = Math.min(width(value, input), minVisible);
    if (room + 1 < need)
      out.push(`selector '${labelOf(s)}' shows ${Math.max(0, Math.round(room))} px of '${value}' `
        + `(needs ${Math.round(need)})`);
  }
  for (const s of document.querySelectorAll('[data-testid=stMultiSelect]')) {
    if (!shown(s)) continue;
    const tag = s.querySelector('[data-tag] span[title]');
    if (!tag) continue;  // nothing chosen: the placeholder says so
    const box = s.querySelector('[data-testid=stMultiSelectTagsContainer]').getBoundingClientRect();
    const r = tag.getBoundingClientRect();
    const seen = Math.min(r.right, box.right) - Math.max(r.left, box.left);
    const need = Math.min(width(tag.title, tag), minVisible);
    if (tag.clientWidth + 1 < need || seen + 1 < need)
      out.push(`selector '${labelOf(s)}' shows ${Math.max(0, Math.round(Math.min(seen, tag.clientWidth)))} px `
        + `of its first value '${tag.title}' (needs ${Math.round(need)})`);
  }

  // 3. figures: axis labels, axis titles, colour-bar labels and titles inside the figure
  document.querySelectorAll('.js-plotly-plot').forEach((plot, i) => {
    if (!shown(plot)) return;
    const svg = plot.querySelector('svg.main-svg');
    if (!svg) return;
    const R = svg.getBoundingClientRect();
    const title = text(plot.querySelector('.gtitle') || svg).slice(0, 40) || `figure ${i + 1}`;
    const sel = '.xtick text, .ytick text, .g-xtitle text, .g-ytitle text, .cbaxis text, '
      + '.cbtitle text, .gtitle';
    const cut = [];
    for (const t of plot.querySelectorAll(sel)) {
      const s = text(t);
      const r = t.getBoundingClientRect();
      if (!s || r.width === 0 || getComputedStyle(t).display === 'none') continue;
      if (r.left < R.left - 1 || r.right > R.right + 1 || r.top < R.top - 1 || r.bottom > R.bottom + 1) {
        const side = [r.left < R.left - 1 && 'left', r.right > R.right + 1 && 'right',
          r.top < R.top - 1 && 'top', r.bottom > R.bottom + 1 && 'bottom'].filter(Boolean);
        cut.push(`'${s.slice(0, 30)}' (${side.join('+')})`);
      }
    }
    if (cut.length)
      out.push(`figure '${title}': ${cut.length} label(s) cut by its edge: ${cut.slice(0, 4).join(', ')}`);
    // numbers written in heatmap cells stay readable (plotly shrinks them to fit small cells)
    const sizes = [...plot.querySelectorAll('.heatmap-label text')].filter(t => text(t))
      .map(t => parseFloat(getComputedStyle(t).fontSize));
    if (sizes.length && Math.min(...sizes) < minCellFont)
      out.push(`figure '${title}': cell numbers shrink to ${Math.min(...sizes).toFixed(1)} px`);
  });

  // 4. no word of a label or option broken across lines
  const labels = document.querySelectorAll('[data-testid=stWidgetLabel], [data-testid=stMetricLabel], '
    + '[data-testid=stRadio] label, [data-testid=stCheckbox] label');
  for (const l of labels) {
    if (!shown(l)) continue;
    const walk = document.createTreeWalker(l, NodeFilter.SHOW_TEXT);
    let node, broken = null;
    while (!broken && (node = walk.nextNode())) {
      for (const m of node.data.matchAll(/\\S{2,}/g)) {
        const range = document.createRange();
        range.setStart(node, m.index);
        range.setEnd(node, m.index + m[0].length);
        const tops = new Set([...range.getClientRects()].filter(r => r.width > 0)
          .map(r => Math.round(r.top / 4)));
        if (tops.size > 1) { broken = m[0]; break; }
      }
    }
    if (broken) out.push(`label '${text(l).slice(0, 50)}': the word '${broken}' is broken across lines`);
  }
  return out;
}"""

_SETTLED = f"""() => ({{
  state: {APP_STATE},
  busy: document.querySelectorAll('[data-testid=stSpinner], [data-testid=stSkeleton]').length
    + [...document.querySelectorAll('[data-testid=stCaptionContainer]')]
      .filter(c => c.innerText.includes('being computed in the background')).length,
  plots: document.querySelectorAll('.js-plotly-plot .main-svg').length,
  height: document.querySelector('[data-testid=stMain]')?.scrollHeight || 0,
}})"""


def settle(page, timeout_s: float = 600) -> None:
    """Until the script run is over, nothing computes and the page stops changing for 1.5 s."""
    deadline, last, since = time.time() + timeout_s, None, time.time()
    while time.time() < deadline:
        now = page.evaluate(_SETTLED)
        if now != last:
            last, since = now, time.time()
        elif now["state"] == "notRunning" and not now["busy"] and time.time() - since > 1.5:
            return
        page.wait_for_timeout(250)
    raise AssertionError(f"the page did not settle in {timeout_s:.0f}s: {last}")


def problems(page) -> list[str]:
    return page.evaluate(_CHECKS, [MIN_VISIBLE_PX, MIN_CELL_FONT_PX])


# --- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("layout")
    log = tmp / "server.log"
    with LOAD.serve(tmp / "cache", log) as url:
        yield url, log


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install -e '.[test]'")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        out = ROOT / "assets" / "screenshots"
    else:
        out = tmp_path_factory.mktemp("shots")
    out.mkdir(parents=True, exist_ok=True)
    return out


def _open(browser, width: int, url: str):
    page = browser.new_page(viewport={"width": width, "height": HEIGHT})
    t0 = time.time()
    page.goto(url)
    return page, t0


def _report(found: list[str], where: str) -> None:
    if found:
        print(f"\n{where}: {len(found)} layout problem(s)\n  " + "\n  ".join(found))
    assert not found, f"{where}: " + "; ".join(found)


# --- the tests ------------------------------------------------------------------------------------

CASES = [(w, name) for w in WIDTHS for name in PAGES]


@pytest.mark.parametrize(("width", "name"), CASES, ids=[f"{n}-{w}" for w, n in CASES])
def test_page_reads_at_width(server, browser, shots, width, name):
    url, log = server
    path, title = PAGES[name]
    page, t0 = _open(browser, width, f"{url}/{path}{_query()}")
    try:
        page.get_by_role("heading", name=title).first.wait_for(timeout=600_000)
        settle(page)
        print(f"\n{name} at {width} px ready in {time.time() - t0:.1f}s")
        assert page.locator('[data-testid="stException"]').count() == 0, "a traceback is shown"
        page.screenshot(path=str(shots / f"{name}-{width}.png"))
        _report(problems(page), f"{name} at {width} px")
    except Exception:
        page.screenshot(path=str(log.with_name(f"failure-{name}-{width}.png")), full_page=True)
        raise
    finally:
        page.close()


def test_find_best_and_the_timestep_profile_render(server, browser, shots):
    """Sweep page at 800 px: *Find best* runs with its progress and shows the pick and its
    rounds; the timestep profile of the best block renders; neither cuts a label."""
    url, log = server
    query = _query() or "?train=300&test=200"  # small limits: the search runs in seconds
    page, t0 = _open(browser, 800, f"{url}/sweep{query}")
    try:
        page.get_by_role("heading", name=PAGES["sweep"][1]).first.wait_for(timeout=600_000)
        settle(page)
        page.get_by_role("button", name="Find best").click()
        page.get_by_text("Best on validation:").first.wait_for(timeout=600_000)
        settle(page)
        page.get_by_text("Show the profile").first.click()
        page.get_by_text("Timestep profile of").first.wait_for(timeout=600_000)
        settle(page)
        print(f"\nsearch and profile at 800 px in {time.time() - t0:.1f}s")
        assert page.locator('[data-testid="stException"]').count() == 0, "a traceback is shown"
        page.screenshot(path=str(shots / "search-800.png"), full_page=True)
        _report(problems(page), "sweep with the search and the profile at 800 px")
    except Exception:
        page.screenshot(path=str(log.with_name("failure-search-800.png")), full_page=True)
        raise
    finally:
        page.close()


def test_similarity_compares_with_random_weights(server, browser, shots):
    """Similarity page at 800 px: "Compare with" → random weights draws the cross-model block
    map (this model's blocks × its random-weights twin's) without cutting a label."""
    url, log = server
    page, t0 = _open(browser, 800, f"{url}/similarity{_query()}")
    try:
        page.get_by_role("heading", name=PAGES["similarity"][1]).first.wait_for(timeout=600_000)
        settle(page)
        open_select(page, "Compare with", "random weights").click()
        page.get_by_text("Rows: this model's blocks").first.wait_for(timeout=600_000)
        settle(page)
        charts = page.locator('[data-testid="stPlotlyChart"]')
        assert charts.count() >= 3, "the cross-model map is drawn below the CKA maps"
        print(f"\nsimilarity vs random weights at 800 px in {time.time() - t0:.1f}s")
        assert page.locator('[data-testid="stException"]').count() == 0, "a traceback is shown"
        charts.last.scroll_into_view_if_needed()
        page.screenshot(path=str(shots / "similarity-random-800.png"))
        _report(problems(page), "similarity compared with random weights at 800 px")
    except Exception:
        page.screenshot(
            path=str(log.with_name("failure-similarity-random-800.png")), full_page=True
        )
        raise
    finally:
        page.close()


def test_presentation_mode(server, browser, shots):
    """`?present=1`: the sidebar starts collapsed, the headline is one line a room can read
    (top-1, its interval and the pixel baseline), figures use larger fonts; layout still holds."""
    url, _ = server
    q = _query()
    page, _ = _open(browser, 1280, f"{url}/{q}{'&' if q else '?'}present=1")
    try:
        page.get_by_role("heading", name=PAGES["explore"][1]).first.wait_for(timeout=600_000)
        settle(page)
        line = page.locator(".dfe-headline").first
        line.wait_for()
        words = line.inner_text()
        assert "Top-1" in words and "%" in words and "pixels" in words, words
        box = line.bounding_box()
        size = float(line.evaluate("e => parseFloat(getComputedStyle(e).fontSize)"))
        assert size >= 28 and box["height"] < 2.2 * size, f"one large line: {size}px, {box}"
        sidebar = page.locator('[data-testid="stSidebar"]').bounding_box()
        assert sidebar["x"] + sidebar["width"] <= 1, f"the sidebar starts collapsed: {sidebar}"
        fonts = page.evaluate(
            "() => [...document.querySelectorAll('.js-plotly-plot .xtick text')]"
            ".map(t => parseFloat(t.style.fontSize))"
        )
        assert fonts and min(fonts) >= 15, f"figure labels are large: {sorted(set(fonts))}"
        assert "present=1" in page.url, f"the link keeps presentation mode: {page.url}"
        page.screenshot(path=str(shots / "present-1280.png"))
        _report(problems(page), "explore, presentation mode, 1280 px")
    finally:
        page.close()


@pytest.fixture(scope="module")
def report_file(tmp_path_factory) -> Path:
    """The HTML report of the shipped sweep; with the warm seed's workspace where Fashion-MNIST
    is installed (per-class bars, confusion matrix and UMAP, all from the seed's caches)."""
    from explorer import warm
    from explorer.data import default_dataset
    from explorer.report import write_html_report
    from explorer.results import load_table

    sweep = ROOT / "assets" / "results" / "fashion-mnist-sweep.csv"
    tmp = tmp_path_factory.mktemp("report")
    ws = None
    if default_dataset() == "fashion-mnist":
        warm.import_seed(tmp / "cache")
        ws, _ = warm.workspaces(tmp / "cache")
    return write_html_report(
        load_table(sweep), tmp / "report.html", source=sweep, workspace=ws, compute=False
    )


@pytest.mark.parametrize("width", WIDTHS)
def test_report_reads_at_width(browser, report_file, shots, width):
    page = browser.new_page(viewport={"width": width, "height": HEIGHT})
    try:
        page.goto(report_file.resolve().as_uri(), wait_until="load")
        page.wait_for_function("document.querySelectorAll('.js-plotly-plot .main-svg').length >= 3")
        page.wait_for_timeout(1000)
        wide = page.evaluate("() => document.documentElement.scrollWidth")
        found = problems(page)
        if wide > width + 1:
            found.append(f"the page scrolls sideways: {wide} px wide in a {width} px window")
        _report(found, f"report at {width} px")
    finally:
        page.close()
