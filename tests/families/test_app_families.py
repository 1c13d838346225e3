"""The app on a family folder: the Data & model page names family, input space, conditioning, scheduler."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from explorer.ui.common import PAGES
from tests.families.tiny import save_family
from tests.ui.apptest import explore_shows_a_probe

pytestmark = pytest.mark.slow
APP = str(Path(__file__).resolve().parents[2] / "app.py")


@pytest.mark.parametrize(
    "kind, words",
    [
        ("dit", ["dit", "latents 4×8×8", "null (unconditional) class", "DDIMScheduler"]),
        ("sd", ["stable-diffusion", "empty prompt", "PNDMScheduler"]),
    ],
)
def test_data_model_page_describes_the_family(tmp_path, kind, words):
    folder = save_family(kind, tmp_path / kind)
    at = AppTest.from_file(APP, default_timeout=600)
    at.query_params.update({"model": str(folder), "dataset": "digits", "train": "40", "test": "20"})
    at.switch_page(PAGES["data"])
    at.run()
    assert not at.exception and not at.error, [e.value for e in (*at.exception, *at.error)]
    text = " ".join(m.value for m in at.markdown)
    for w in words:
        assert w in text, f"'{w}' missing from the Data & model page: {text[:600]}"


@pytest.mark.parametrize(
    "kind, suffix",
    [("dit", ""), ("ldm", ""), ("sd", ""), ("class-cond", "#class-label=3")],
)
def test_explore_page_probes_a_family_block(tmp_path, kind, suffix):
    explore_shows_a_probe(str(save_family(kind, tmp_path / kind)) + suffix)
