"""A converted guided-diffusion checkpoint opens in the app like any model folder."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

from explorer.models.convert.adm import convert_adm

from .test_adm_exact import VARIANTS, reference_for

pytestmark = pytest.mark.slow
APP = str(Path(__file__).resolve().parents[2] / "app.py")


def test_converted_checkpoint_probes_in_the_explore_page(tmp_path):
    cfg = VARIANTS["plain"]  # 16x16, unconditional: small enough for the app on a CPU
    ckpt = tmp_path / "adm.pt"
    torch.save(reference_for(cfg, seed=5).state_dict(), ckpt)
    folder = convert_adm(ckpt, tmp_path / "converted", cfg, show_progress=False)
    at = AppTest.from_file(APP, default_timeout=600)
    at.query_params.update(
        {"model": str(folder), "dataset": "digits", "train": "40", "test": "20", "proj": "pca"}
    )
    at.run()
    assert not at.exception and not at.error, [e.value for e in (*at.exception, *at.error)]
    top1 = [m.value for m in at.metric if m.label == "Top-1 (test)"]
    assert top1 and top1[0].endswith("%"), f"no probe accuracy: {[m.label for m in at.metric]}"
