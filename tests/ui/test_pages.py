"""Every page of the app through Streamlit's AppTest: widgets by key, no exception, the core's numbers.

The pages run on the built-in digits model and data with small limits (300 train / 100
test images); the cache is shared by the tests of this module, so later tests read what
earlier ones computed, as a user's session would.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from explorer.analysis.embed import wait_for_umaps
from explorer.defaults import DEFAULT_POOL, DEFAULT_T
from explorer.results import accuracy_view
from explorer.settings import Setting
from explorer.ui import services
from explorer.ui.sidebar import UPLOAD_DATASET
from tests.ui.apptest import assert_clean, link_workspace, open_page, plotly_array

pytestmark = pytest.mark.slow

BLOCK = "mid_block"  # the Explore page's default block on ddpm-digits
OTHER = "up_blocks.0.resnets.1"  # a block to move to


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ui-cache")


@pytest.fixture(autouse=True)
def _cache(shared_cache, monkeypatch):
    monkeypatch.setenv("EXPLORER_CACHE", str(shared_cache))


def metric(at: AppTest, label: str) -> str:
    found = [m.value for m in at.metric if m.label == label]
    assert found, f"metric '{label}' missing; have {[m.label for m in at.metric]}"
    return found[0]


def reference(
    t: int, block: str, pool: str = DEFAULT_POOL, head: str = "linear", model: str = "ddpm-digits"
):
    """The same setting straight from the core (reads the shared result cache)."""
    ws = link_workspace(model)
    s = Setting(t, block, pool)
    return ws.evaluate([s], head)[s]


def cache_files(root: Path) -> set[str]:
    return {
        str(p.relative_to(root))
        for sub in ("features", "results")
        for p in (root / sub).rglob("*.npy")
    } | {str(p.relative_to(root)) for p in (root / "results").rglob("*.npz")}


def test_explore_shows_the_core_numbers_and_switching_back_recomputes_nothing(shared_cache):
    at = open_page()
    assert_clean(at, "explore")
    r = reference(DEFAULT_T, BLOCK)
    assert metric(at, "Top-1 (test)") == f"{100 * r.top1:.2f}%", "top-1 is the core's"
    assert metric(at, "95% interval") == f"{100 * r.ci_low:.1f}–{100 * r.ci_high:.1f}%", (
        "interval is the core's"
    )
    assert at.query_params["t"] == str(DEFAULT_T) and at.query_params["block"] == BLOCK, (
        "the URL holds the setting"
    )

    at.select_slider(key="explore_t").set_value(50)
    at.selectbox(key="explore_block").set_value(OTHER)
    at.selectbox(key="explore_pool").set_value("2").run()
    assert_clean(at, "explore after changes")
    r2 = reference(50, OTHER, "2")
    assert metric(at, "Top-1 (test)") == f"{100 * r2.top1:.2f}%", "the metric follows the widgets"
    assert (at.query_params["t"], at.query_params["block"], at.query_params["pool"]) == (
        "50",
        OTHER,
        "2",
    )

    before = cache_files(shared_cache)
    at.select_slider(key="explore_t").set_value(DEFAULT_T)
    at.selectbox(key="explore_block").set_value(BLOCK)
    at.selectbox(key="explore_pool").set_value(DEFAULT_POOL).run()
    assert metric(at, "Top-1 (test)") == f"{100 * r.top1:.2f}%", "back on the first setting"
    assert cache_files(shared_cache) == before, (
        "a computed setting renders from the caches, computing nothing"
    )


def test_umap_is_cached_on_disk(shared_cache):
    at = open_page(proj="umap")
    assert_clean(at, "explore with UMAP")
    assert at.radio(key="explore_proj").value == "umap", "UMAP from the link"
    wait_for_umaps()  # a first UMAP runs in the background (PCA meanwhile); the page reruns
    at.run()
    made = set((shared_cache / "embeddings").glob("umap-*.npy"))
    assert made, "the UMAP is written to the embeddings cache"
    at.selectbox(key="explore_block").set_value(OTHER).run()
    wait_for_umaps()
    at.selectbox(key="explore_block").set_value(BLOCK).run()
    now = set((shared_cache / "embeddings").glob("umap-*.npy"))
    assert len(now - made) == 1, "one new setting, one new UMAP; going back reads the cached one"


def test_a_copied_link_restores_the_view():
    at = open_page(t="50", block=OTHER, pool="2", head="linear", proj="pca")
    assert_clean(at, "link")
    assert at.select_slider(key="explore_t").value == 50, "timestep from the link"
    assert at.selectbox(key="explore_block").value == OTHER, "block from the link"
    assert metric(at, "Top-1 (test)") == f"{100 * reference(50, OTHER, '2').top1:.2f}%"
    at = open_page(block="9")  # blocks can be given by index too
    assert at.selectbox(key="explore_block").value == OTHER, "block 9 on ddpm-digits"


def test_errors_are_messages_not_tracebacks(tmp_path):
    at = open_page(model=str(tmp_path / "no-such-model"))
    assert not at.exception, "a bad model path never raises"
    assert at.error and "unknown model" in at.error[0].value, (
        f"says what is wrong: {[e.value for e in at.error]}"
    )
    at = open_page(t="5000", block="nope")
    assert_clean(at, "bad link values")
    assert at.toast and "Ignored" in at.toast[0].value, (
        "the user hears that part of the link was ignored"
    )
    at = open_page(head="attention", pool="1")
    assert not at.exception, "a head that cannot read this setting never raises"
    assert at.error, "it shows an error saying what to do"


def test_sweep_computes_saves_reloads_and_opens_a_cell_in_explore(shared_cache):
    at = open_page("sweep")
    assert_clean(at, "sweep")
    at.multiselect(key="sweep_ts").set_value([10, 50])
    at.multiselect(key="sweep_blocks").set_value([OTHER, BLOCK])
    at.button(key="sweep_run").click().run()
    assert_clean(at, "sweep after compute")
    assert any("Sweep finished" in s.value for s in at.success), "the run reports its end"
    path = services.sweep_path(services.Context("ddpm-digits", "digits", 300, 100))
    table = services.read_table(path)
    wide = accuracy_view(table)
    assert {"ddpm-digits", "random:ddpm-digits", "pixels"} <= set(wide["model"]), (
        "baselines are in the table"
    )
    assert len(wide[wide["model"] == "ddpm-digits"]) == 4, "2 timesteps x 2 blocks"
    best_text = at.code[0].value
    assert "ddpm-digits" in best_text and "pixels" in best_text, "best settings are named"

    again = open_page("sweep")  # a reload: everything comes back from the saved table
    assert_clean(again, "sweep reload")
    assert again.code[0].value == best_text, "a reload loses nothing"
    assert len(again.get("plotly_chart")) == 3, "heatmap and both curve plots"

    words = " ".join(m.value for m in again.markdown)
    assert "Best on validation" in words and "raw pixels" in words and "noise" in words, (
        "the page says in words which setting is best and whether differences are noise"
    )
    mine = (
        wide[wide["model"] == "ddpm-digits"]
        .sort_values(["val_top1", "t", "layer_index"], ascending=[False, True, True])
        .iloc[0]
    )
    again.button(key="sweep_open").click().run()
    assert_clean(again, "explore opened from the sweep")
    assert again.select_slider(key="explore_t").value == int(mine["t"]), (
        "Explore opens on the chosen cell"
    )
    assert again.selectbox(key="explore_block").value == mine["layer"]
    assert metric(again, "Top-1 (test)") == f"{100 * mine['top1']:.2f}%", (
        "and shows the sweep's number"
    )


def test_sweep_finds_the_best_setting_shows_why_and_opens_it(shared_cache):
    at = open_page("sweep")  # the table saved by the test above: t 10 and 50
    assert_clean(at, "sweep")
    charts = len(at.get("plotly_chart"))
    at.button(key="sweep_find_best").click().run()
    assert_clean(at, "sweep after Find best")
    told = [s.value for s in at.success if s.value.startswith("Best on validation")]
    assert told, "the pick is announced"
    words = " ".join(m.value for m in at.markdown)
    assert "weighted forward passes" in words and "round 1:" in words, "rounds and cost shown"
    assert len(at.get("plotly_chart")) == charts + 1, "the rounds figure"
    at.toggle(key="sweep_profile_on").set_value(True).run()
    assert_clean(at, "sweep with the timestep profile")
    assert len(at.get("plotly_chart")) == charts + 2, "the timestep profile figure"
    at.button(key="sweep_search_open").click().run()
    assert_clean(at, "explore opened on the pick")
    block = at.selectbox(key="explore_block").value
    assert block in told[0] and f"t={at.select_slider(key='explore_t').value}," in told[0], (
        "Explore opens on the search's pick"
    )


def test_compare_trained_against_random_weights():
    at = open_page("compare", mode="random", t="100", block=BLOCK)
    assert_clean(at, "compare")
    a, b = reference(100, BLOCK, model="random:ddpm-digits"), reference(100, BLOCK)
    assert metric(at, "Top-1 A") == f"{100 * a.top1:.2f}%", "side A is the random-weights control"
    assert metric(at, "Top-1 B") == f"{100 * b.top1:.2f}%", "side B is the trained model"
    from explorer.probes.metrics import compare_results

    y = link_workspace().labels("test")
    words = compare_results(b, a, y).words("B", "A")
    assert any(words in c.value for c in at.caption), (
        f"the page says in words whether B - A is within noise (paired bootstrap): {words}"
    )
    at.radio(key="compare_mode").set_value("timesteps").run()
    assert_clean(at, "compare two timesteps")
    assert at.select_slider(key="compare_t2").value == 500, "a second timestep control appears"


def test_similarity_draws_cka_maps():
    at = open_page("similarity", n="200", ts=["10", "100"], **{"with": "self"})  # CKA only
    assert not at.exception, f"no exception: {at.exception}"
    assert_clean(at, "similarity")
    charts = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    z = plotly_array(charts[0]["data"][0]["z"])
    assert z.shape == (13, 13) and np.allclose(np.diag(z), 1, atol=1e-3), (
        "block x block CKA, ones on the diagonal"
    )
    assert plotly_array(charts[1]["data"][0]["z"]).shape == (2, 2), (
        "t x t CKA over the two timesteps"
    )
    at.toggle(key="sim_debiased").set_value(True).run()
    assert_clean(at, "debiased CKA")
    assert at.query_params["debiased"] == "1", "the toggle is in the link"


def test_data_and_model_page_and_clearing_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EXPLORER_CACHE", str(tmp_path))  # its own cache: this test empties it
    monkeypatch.setenv("EXPLORER_ALLOW_ADMIN", "1")  # clearing is an admin action
    ws = link_workspace()
    ws.ensure([Setting(None, "pixels", "full")])
    at = open_page("data")
    assert_clean(at, "data & model")
    assert metric(at, "Images") == "1797" and metric(at, "Classes") == "10", "dataset facts"
    assert metric(at, "Feature entries") == "2", "the two pixel entries"
    layers = at.dataframe[0].value
    assert isinstance(layers, pd.DataFrame) and len(layers) == len(ws.catalogue), (
        "the whole layer catalogue"
    )
    at.checkbox(key="data_confirm").check().run()
    at.button(key="data_clear").click().run()
    assert_clean(at, "after clearing")
    assert metric(at, "Feature entries") == "0", "the cache is empty"
    assert any("cleared" in s.value for s in at.success), "the user is told"


def _zip_of_class_folders() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(buf, "w") as z:
        for cls in ("circle", "square"):
            for i in range(6):
                png = io.BytesIO()
                Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8)).save(
                    png, format="PNG"
                )
                z.writestr(f"shapes/{cls}/{i}.png", png.getvalue())
        z.writestr("shapes/README.txt", "not an image")
    return buf.getvalue()


def test_upload_a_zip_of_class_folders():
    at = open_page("data")
    at.sidebar.selectbox(key="side_dataset").set_value(UPLOAD_DATASET).run()
    at.sidebar.file_uploader(key="side_upload").set_value(
        ("shapes.zip", _zip_of_class_folders(), "application/zip")
    )
    at.run()
    assert not at.exception, f"no exception: {at.exception}"
    assert any(
        "12 images extracted" in s.value and "1 non-image" in s.value for s in at.sidebar.success
    ), f"the upload reports images and skipped files: {[s.value for s in at.sidebar.success]}"
    assert metric(at, "Classes") == "2", "the page now shows the uploaded dataset"
    assert "uploads" in at.query_params["dataset"], "the link points at the extracted folder"


def test_presentation_mode_puts_the_headline_in_one_line():
    at = open_page(present="1")
    assert_clean(at, "explore, presentation mode")
    r = reference(DEFAULT_T, BLOCK)
    pixels = reference(None, "pixels", "full")
    line = [m.value for m in at.markdown if "dfe-headline" in m.value]
    assert line, "the headline replaces the metrics"
    assert f"{100 * r.top1:.2f}%" in line[0] and f"{100 * pixels.top1:.2f}%" in line[0], line
    assert f"{100 * r.ci_low:.1f}–{100 * r.ci_high:.1f}%" in line[0], "with its interval"
    assert not [m for m in at.metric if m.label == "Top-1 (test)"], "no metric row besides"
    assert at.toggle(key="app_present").value is True, "the sidebar's toggle follows the link"
    assert at.query_params["present"] == "1", "and the link keeps it"
    charts = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    assert charts and all(c["layout"]["font"]["size"] > 12 for c in charts), "larger type"
    at.toggle(key="app_present").set_value(False).run()
    assert "present" not in at.query_params, "off: the link drops it"
    assert [m for m in at.metric if m.label == "Top-1 (test)"], "the metrics are back"
