"""A fresh start opens full: the shipped sweep with its provenance, and the default views of
Explore, Compare and Similarity served from the shipped seed, computing nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from explorer import defaults as D
from explorer import shipped
from explorer.features.keys import EXTRACTION_VERSION
from explorer.ui.common import PAGES

pytestmark = pytest.mark.slow

APP = str(Path(__file__).resolve().parents[2] / "app.py")
CSV = shipped.RESULTS / "fashion-mnist-sweep.csv"


# --- the shipped sweep's provenance -------------------------------------------------------------


def test_committed_sidecar_matches_the_committed_table():
    prov = json.loads(shipped.sidecar_path(CSV).read_text())
    assert prov["sha256"] == shipped.sha256(CSV), (
        "the CSV changed: refresh its sidecar with `python -m explorer.shipped --write`"
    )
    assert prov["extraction_version"] == EXTRACTION_VERSION
    assert prov["test_images"] == 10_000 and prov["command"].startswith("explorer sweep ")
    from explorer.models.loader import load_model

    fp = load_model("ddpm-fashion-mnist", device="cpu").fingerprint
    found = shipped.check(CSV, extraction_version=EXTRACTION_VERSION, model_fingerprint=fp)
    assert found.state == "ok" and found.fresh, found.problems


def _copy(tmp_path: Path) -> Path:
    csv = tmp_path / CSV.name
    shutil.copyfile(CSV, csv)
    shutil.copyfile(shipped.sidecar_path(CSV), shipped.sidecar_path(csv))
    return csv


def test_an_altered_or_stale_table_is_never_called_fresh(tmp_path):
    csv = _copy(tmp_path)
    prov = json.loads(shipped.sidecar_path(csv).read_text())
    fp = prov["model_fingerprint"]
    ok = shipped.check(csv, extraction_version=EXTRACTION_VERSION, model_fingerprint=fp)
    assert ok.state == "ok" and "Shipped results" in ok.label() and prov["date"] in ok.label()
    stale = shipped.check(csv, extraction_version=EXTRACTION_VERSION + 1, model_fingerprint=fp)
    assert stale.state == "stale" and not stale.fresh and "Stale" in stale.label()
    other = shipped.check(csv, extraction_version=EXTRACTION_VERSION, model_fingerprint="0" * 16)
    assert other.state == "stale" and "model weights" in other.label()
    csv.write_text(csv.read_text().replace("0.8", "0.9", 1))  # one number edited
    altered = shipped.check(csv, extraction_version=EXTRACTION_VERSION, model_fingerprint=fp)
    assert altered.state == "altered" and altered.label().startswith("**Altered")
    shipped.sidecar_path(csv).unlink()
    assert shipped.check(csv, extraction_version=1, model_fingerprint=fp).state == "unknown"


# --- the pages on a fresh cache ---------------------------------------------------------------------


def open_page(page: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=600)
    if page != "explore":
        at.switch_page(PAGES[page])
    return at.run()


def clean(at: AppTest, where: str) -> None:
    assert not at.exception, f"{where}: {[e.value for e in at.exception]}"
    assert not at.error, f"{where}: {[e.value for e in at.error]}"


def test_sweep_opens_on_the_shipped_sweep_without_compute():
    at = open_page("sweep")
    clean(at, "sweep")
    notes = [i.value for i in at.info]
    assert any(
        "Shipped results" in n and "full test set" in n and "explorer sweep" in n for n in notes
    ), f"labelled as shipped, with its provenance: {notes}"
    assert len(at.get("plotly_chart")) == 3, "the heatmap and both curves, before any Compute"
    assert "ddpm-fashion-mnist" in at.code[0].value, "best settings named from the shipped table"
    shown = at.selectbox(key="sweep_vhead")
    assert set(shown.options) >= {"knn", "linear"}
    assert shown.value == D.DEFAULT_HEAD, "the heatmap opens on the app's head, as Explore does"


def test_sweep_labels_a_stale_shipped_table(tmp_path, monkeypatch):
    csv = _copy(tmp_path)
    prov = json.loads(shipped.sidecar_path(csv).read_text())
    shipped.sidecar_path(csv).write_text(json.dumps(prov | {"extraction_version": 0}))
    monkeypatch.setitem(shipped.TABLES, ("ddpm-fashion-mnist", "fashion-mnist"), csv)
    at = open_page("sweep")
    assert not at.exception
    warned = [w.value for w in at.warning]
    assert any("Stale shipped results" in w for w in warned), f"never passed off as fresh: {warned}"


def test_default_views_render_from_the_seed_computing_nothing(monkeypatch):
    """Explore, Compare and Similarity on an empty cache: no extraction, no probe, no UMAP."""
    from explorer import workspace
    from explorer.analysis import embed

    def no(*a, **k):
        raise AssertionError("computed on a fresh start: the warm seed is missing something")

    monkeypatch.setattr(workspace, "ensure_features", no)
    monkeypatch.setattr(workspace, "ensure_pixels", no)
    monkeypatch.setattr(workspace.Workspace, "_fit", no)
    monkeypatch.setattr(embed, "_fit_umap", no)
    at = open_page("explore")
    clean(at, "explore")
    assert [m.value for m in at.metric if m.label == "Top-1 (test)"], "the number is there"
    assert not [c for c in at.caption if "UMAP is being computed" in c.value], "the UMAP is warm"
    for page in ("compare", "similarity"):
        at = open_page(page)
        clean(at, page)
        assert at.get("plotly_chart"), f"{page} draws its figures"
