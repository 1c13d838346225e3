"""Explore's "Across timesteps": the animated figure, the workspace's cached aligned UMAP, the view."""

from __future__ import annotations

import json

import numpy as np
import pytest
import umap

from explorer.errors import ExplorerError
from explorer.features.store import FeatureStore
from explorer.models.loader import load_model
from explorer.settings import Setting
from explorer.ui.timelapse import default_timesteps, timelapse_figure
from explorer.workspace import Workspace
from tests.ui.apptest import APP, LINK, assert_clean


def _figure(k=3, n=30, classes=3):
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(k, n, 2)) + np.arange(k)[:, None, None] * 5  # drifts frame to frame
    labels = np.arange(n) % classes
    acc = [(0.5 + 0.1 * i, 0.4 + 0.1 * i, 0.6 + 0.1 * i) for i in range(k)]
    ts = [10, 50, 150][:k]
    return emb, ts, labels, timelapse_figure(emb, ts, labels, ["a", "b", "c"][:classes], acc)


def test_one_frame_per_timestep_with_the_same_points_and_a_slider_labelled_by_t():
    emb, ts, labels, fig = _figure()
    assert [f.name for f in fig.frames] == ["10", "50", "150"], "one frame per t, named by t"
    steps = fig.layout.sliders[0].steps
    assert [s.label for s in steps] == ["10", "50", "150"], "slider steps labelled by t"
    assert [list(s.args[0]) for s in steps] == [["10"], ["50"], ["150"]], (
        "each step opens its frame"
    )
    first = [list(tr.ids) for tr in fig.data[:3]]
    assert sorted(int(i) for ids in first for i in ids) == list(range(30)), "every point, once"
    for k, frame in enumerate(fig.frames):
        ids = [list(tr.ids) for tr in frame.data[:3]]
        assert ids == first, f"frame t={ts[k]} keeps the same point ids per class"
        for tr, c in zip(frame.data[:3], range(3), strict=True):
            idx = np.flatnonzero(labels == c)
            assert np.allclose(tr.x, emb[k, idx, 0]) and np.allclose(tr.y, emb[k, idx, 1]), (
                f"frame t={ts[k]} draws that t's layout"
            )
        marker = frame.data[3]
        assert (marker.x[0], round(marker.y[0], 6)) == (ts[k], round(100 * (0.5 + 0.1 * k), 6)), (
            "the accuracy marker sits on the frame's t"
        )
        assert f"t={ts[k]}" in frame.layout.title.text
    assert fig.frames[0].traces == (0, 1, 2, 4), "frames move the points and the marker only"
    assert fig.layout.updatemenus[0].buttons[0].args[0] is None, "play runs through all frames"
    xr = fig.layout.xaxis.range
    assert xr[0] <= emb[..., 0].min() and xr[1] >= emb[..., 0].max(), "fixed range fits all t"


def test_figure_without_accuracy_and_bad_shapes():
    emb = np.zeros((2, 5, 2))
    fig = timelapse_figure(emb, [1, 2], np.zeros(5, int), ["only"])
    assert len(fig.frames) == 2 and len(fig.data) == 1 and fig.frames[0].traces == (0,)
    with pytest.raises(ValueError, match="K=3"):
        timelapse_figure(emb, [1, 2, 3], np.zeros(5, int), ["only"])
    with pytest.raises(ValueError, match="labels"):
        timelapse_figure(emb, [1, 2], np.zeros(4, int), ["only"])


def test_default_timesteps_follow_the_schedule_length():
    assert default_timesteps(1000) == [10, 50, 90, 150, 300], "the shipped sweep's grid"
    assert default_timesteps(100) == [1, 5, 9, 15, 30]
    assert all(0 <= t < 8 for t in default_timesteps(8))


class _FakeAligned:
    """AlignedUMAP stand-in (the real one spends ~30 s in numba JIT): first 2 PCA dims + k."""

    fits = 0

    def __init__(self, **kwargs):
        pass

    def fit(self, xs, relations):
        type(self).fits += 1
        self.embeddings_ = [x[:, :2] + k for k, x in enumerate(xs)]
        return self


def test_workspace_aligned_embedding_is_cached_by_feature_keys(
    monkeypatch, tmp_path, tiny_model_dir, tiny_dataset
):
    monkeypatch.setattr(umap, "AlignedUMAP", _FakeAligned)
    _FakeAligned.fits = 0
    ws = Workspace(
        load_model(str(tiny_model_dir)), tiny_dataset, store=FeatureStore(tmp_path / "c")
    )
    ss = [ws.setting(t, "mid", 1) for t in (10, 50, 150)]
    emb = ws.aligned_embedding(ss)
    n = len(ws.test.indices)
    assert emb.shape == (3, n, 2) and emb.dtype == np.float32
    assert _FakeAligned.fits == 1
    files = sorted((tmp_path / "c" / "embeddings").glob("aligned-*.npy"))
    assert len(files) == 1, "the layout is written to the embeddings cache"

    again = Workspace(ws.model, tiny_dataset, store=FeatureStore(tmp_path / "c"))
    same = again.aligned_embedding(
        [
            Setting(10, "mid_block", "1"),
            Setting(50, "mid", 1),
            again.setting("150", "mid_block", "1"),
        ]
    )
    assert _FakeAligned.fits == 1, "another workspace, other spellings: read from disk"
    assert np.array_equal(same, emb)

    ws.aligned_embedding(ss[::-1])
    ws.aligned_embedding(ss[:2])
    assert _FakeAligned.fits == 3, "another order or another set of t is another layout"
    assert len(list((tmp_path / "c" / "embeddings").glob("aligned-*.npy"))) == 3
    with pytest.raises(ExplorerError, match="at least 2"):
        ws.aligned_embedding(ss[:1])


def test_aligned_umap_wants_one_key_per_set(tmp_path):
    from explorer.analysis.embed import aligned_umap

    xs = [np.random.default_rng(i).normal(size=(10, 4)) for i in range(2)]
    with pytest.raises(ExplorerError, match="one cache key per set"):
        aligned_umap(xs, cache_key=["a"], cache_root=tmp_path)


@pytest.mark.slow
def test_view_on_the_explore_page(tmp_path, monkeypatch):
    """The real page on the built-in digits model: the toggle and the timesteps come from the
    link, the animated figure has a frame per t, and reopening it computes nothing."""
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("EXPLORER_CACHE", str(tmp_path / "cache"))

    def open_view(**extra):
        at = AppTest.from_file(APP, default_timeout=600)
        at.query_params.update({**LINK, "tl": "1", **extra})
        at.query_params["ts"] = ["10", "150", "50"]
        return at.run()

    at = open_view()
    assert_clean(at, "explore with the timelapse")
    assert at.toggle(key="explore_tl").value is True, "the toggle from the link"
    assert at.multiselect(key="explore_tl_ts").value == [10, 150, 50]
    charts = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    anim = [c for c in charts if c.get("frames")]
    assert len(anim) == 1, "one animated figure"
    assert [f["name"] for f in anim[0]["frames"]] == ["10", "50", "150"], "frames sorted by t"
    assert [s["label"] for s in anim[0]["layout"]["sliders"][0]["steps"]] == ["10", "50", "150"]
    made = sorted((tmp_path / "cache" / "embeddings").glob("aligned-*.npy"))
    assert len(made) == 1, "the aligned layout is cached on disk"
    stamp = made[0].stat().st_mtime_ns

    monkeypatch.setattr(umap, "AlignedUMAP", None)  # any fit now would fail
    again = open_view()
    assert_clean(again, "reopened")
    assert sorted((tmp_path / "cache" / "embeddings").glob("aligned-*.npy")) == made
    assert made[0].stat().st_mtime_ns == stamp, "reopened from disk, not recomputed"

    off = AppTest.from_file(APP, default_timeout=600)
    off.query_params.update(LINK)
    off.run()
    assert_clean(off, "explore, timelapse off")
    assert off.toggle(key="explore_tl").value is False, "off by default"
    assert not any(json.loads(c.proto.spec).get("frames") for c in off.get("plotly_chart"))
