"""The Similarity page's alignment maps through Streamlit's AppTest: random weights by default,
the blocks × blocks map beside the blocks × timesteps map (against the input pixels or one
reference block), the metric choice, the interval in the hover; and, on the seed's pair, the
whole page served from the shipped seed without one feature computed."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from explorer.defaults import DEFAULT_T
from explorer.ui.common import PAGES
from tests.ui.apptest import APP, link_workspace, plotly_array

pytestmark = pytest.mark.slow

LINK = {"model": "ddpm-digits", "dataset": "digits", "train": "300", "test": "100"}


def open_similarity(**params) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=600)
    at.query_params.update(params)
    at.switch_page(PAGES["similarity"])
    return at.run()


def clean(at: AppTest, where: str) -> None:
    assert not at.exception, f"{where}: {[e.value for e in at.exception]}"
    assert not at.error, f"{where}: {[e.value for e in at.error]}"


def charts(at: AppTest) -> list[dict]:
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def test_random_weights_by_default_two_maps_every_metric(tmp_path, monkeypatch):
    monkeypatch.setenv("EXPLORER_CACHE", str(tmp_path))
    at = open_similarity(**LINK, n="200", ts=["10", "100"])
    clean(at, "similarity")
    assert at.selectbox(key="sim_with").value == "random", "compared with random weights at once"
    assert at.selectbox(key="sim_ref_block").value == "pixels", "the level map starts on pixels"
    figs = charts(at)
    assert len(figs) == 4, "CKA blocks, CKA timesteps, then the two alignment maps"
    blocks, levels = figs[2]["data"][0], figs[3]["data"][0]
    z = plotly_array(blocks["z"])
    assert z.shape == (13, 13), "this model's blocks x its random twin's blocks"
    assert plotly_array(levels["z"]).shape == (13, 2), "13 blocks x the 2 timesteps"
    assert list(levels["x"]) == ["t=10", "t=100"]
    for trace in (blocks, levels):
        assert "[%{customdata[0]:.3f}, %{customdata[1]:.3f}]" in trace["hovertemplate"]
        low, high = (np.asarray(trace["customdata"], dtype=object)[..., i] for i in (0, 1))
        value = plotly_array(trace["z"])
        assert (low.astype(float) <= value + 1e-6).all() and (
            value <= high.astype(float) + 1e-6
        ).all()
    assert "input pixels" in json.dumps(figs[3]["layout"]["title"])

    ws = link_workspace()
    table = ws.align("random:ddpm-digits", timesteps=[DEFAULT_T], metrics=("cka",), n_boot=0)
    same = table[table["layer"] == table["ref_layer"]].sort_values("layer_index")
    assert np.allclose(np.diag(z), same["value"], atol=1e-5), "align_table's CKA on the diagonal"
    px = ws.align(ws, timesteps=[10, 100], ref_layers="pixels", metrics=("cka",), n_boot=0)
    mid = px[(px["layer"] == "mid_block")].sort_values("t")["value"].to_numpy()
    assert np.allclose(plotly_array(levels["z"])[6], mid, atol=1e-5), "mid block vs pixels"

    at.selectbox(key="sim_metric").set_value("cknna").run()
    clean(at, "cknna")
    assert all("CKNNA" in json.dumps(f["layout"]["title"]) for f in charts(at)[2:])
    at.selectbox(key="sim_ref_block").set_value("mid_block").run()
    clean(at, "against the twin's mid block")
    assert at.query_params["ref_block"] == "mid_block", "the reference block is in the link"
    title = json.dumps(charts(at)[3]["layout"]["title"])
    assert "random:ddpm-digits's mid_block" in title, title
    at.selectbox(key="sim_with").set_value("self").run()
    clean(at, "this model only")
    assert len(charts(at)) == 2, "no alignment maps without another source"


def test_the_seed_pair_opens_full_from_the_seed_computing_nothing(tmp_path, monkeypatch):
    """A fresh cache, the seed imported: the Similarity page's four maps, no extraction, no
    CKA, no alignment computed (timed)."""
    from explorer import warm, workspace
    from explorer.analysis import align_maps
    from explorer.data import default_dataset

    if default_dataset() != "fashion-mnist":
        pytest.skip("needs Fashion-MNIST installed (the seed's dataset)")

    def no(*a, **k):
        raise AssertionError("computed on a fresh start: the warm seed is missing something")

    monkeypatch.setenv("EXPLORER_CACHE", str(tmp_path))
    monkeypatch.setattr(workspace, "ensure_features", no)
    monkeypatch.setattr(workspace, "ensure_pixels", no)
    monkeypatch.setattr(workspace, "cka_matrix", no)
    monkeypatch.setattr(align_maps, "alignment_map", no)
    start = time.perf_counter()
    at = open_similarity()
    took = time.perf_counter() - start
    clean(at, "similarity on the seed")
    print(f"\nSimilarity from the seed on a fresh cache in {took:.1f}s")
    figs = charts(at)
    assert len(figs) == 4, "CKA blocks, CKA timesteps, blocks x blocks, blocks x timesteps"
    view = warm.manifest()["view"]
    times = next(ts for against, ts, _ in view["sim_align"] if against == "pixels")
    assert plotly_array(figs[2]["data"][0]["z"]).shape == (13, 13)
    assert plotly_array(figs[3]["data"][0]["z"]).shape == (13, len(times))
    for metric in ("cknna", "mutual_knn"):  # every metric is in the seed: switching is instant
        at.selectbox(key="sim_metric").set_value(metric).run()
        clean(at, metric)
