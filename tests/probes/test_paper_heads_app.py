"""The app offers the new heads from the registry, reads map16, and says the disk size first."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

pytestmark = pytest.mark.slow

APP = str(Path(__file__).resolve().parents[2] / "app.py")
LINK = {"model": "ddpm-digits", "dataset": "digits", "train": "120", "test": "60", "proj": "pca"}


def test_explore_runs_cnn_on_map16_and_shows_disk_size(tmp_path, monkeypatch):
    monkeypatch.setenv("EXPLORER_CACHE", str(tmp_path))
    at = AppTest.from_file(APP, default_timeout=600)
    at.query_params.update({**LINK, "head": "cnn", "pool": "map16", "block": "mid_block"})
    at.run()
    assert not at.exception and not at.error, [e.value for e in [*at.exception, *at.error]]
    heads = at.selectbox(key="explore_head")
    assert {"attention-small", "attention-paper", "cnn"} <= set(heads.options), heads.options
    assert heads.value == "cnn" and at.selectbox(key="explore_pool").value == "map16"
    size = [c.value for c in at.caption if "on disk for 180 images" in c.value]
    assert size, [c.value for c in at.caption]
    assert any(m.label == "Top-1 (test)" and m.value.endswith("%") for m in at.metric), "a result"

    at2 = AppTest.from_file(APP, default_timeout=600)
    at2.query_params.update({**LINK, "head": "attention", "pool": "2", "block": "mid_block"})
    at2.run()
    assert at2.selectbox(key="explore_head").value == "attention-small", "the old name still opens"
    assert not at2.toast or "head" not in at2.toast[0].value, "and is not reported as ignored"
