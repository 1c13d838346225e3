"""Alignment maps through workspaces: raw pixels as a source, cached on disk.

These extract features in-process; they live after tests/core so that the byte-equality tests
there (threads, torchrun ranks) run on a fresh process state (see the closing note of the
session that moved them: an in-process extraction followed by UMAP changed later threads'
float16 features by a few ulp)."""

import numpy as np
import pytest

import explorer.analysis.alignment as al

# --- maps through workspaces: raw pixels as a source, cached on disk --------------------------------


@pytest.fixture(scope="module")
def tiny_ws(tmp_path_factory):
    from explorer.features.store import FeatureStore
    from explorer.models.loader import load_model
    from explorer.workspace import Workspace
    from tests.conftest import make_tiny_dataset, save_tiny_model

    root = tmp_path_factory.mktemp("align")
    model = load_model(str(save_tiny_model(root / "model")))
    store = FeatureStore(root / "cache")
    return Workspace(model, make_tiny_dataset(n=60), store=store, test_limit=12, device="cpu")


def test_block_x_t_against_the_pixels_reads_each_source_once_then_the_cache(tiny_ws, monkeypatch):
    from explorer.analysis.align_maps import align_table

    table = align_table(
        tiny_ws, tiny_ws, timesteps=[10, 200], layers="1,7", ref_layers="pixels", k=3, n_boot=20
    )
    assert set(table["ref_layer"]) == {"pixels"} and set(table["ref_layer_index"]) == {0}
    assert table["ref_t"].isna().all() and set(table["t"]) == {10, 200}
    assert len(table) == 2 * 2 * 2, "2 blocks x 2 timesteps x (cka, cknna), one pixel column"
    px = np.asarray(tiny_ws.features(tiny_ws.setting(None, "pixels"), "test"), np.float32)
    mid = tiny_ws.setting(200, 7)
    x = np.asarray(tiny_ws.features(mid, "test"), np.float32)
    row = table.query("t == 200 and layer == @mid.layer and metric == 'cka'").iloc[0]
    assert row["value"] == pytest.approx(al.cka(x, px), abs=1e-6), "the core's CKA of the pair"
    assert row["ci_low"] <= row["value"] <= row["ci_high"]

    def no(*a, **k):
        raise AssertionError("computed again: the map should come from the disk cache")

    monkeypatch.setattr(tiny_ws, "ensure", no)
    monkeypatch.setattr(tiny_ws, "features", no)
    again = align_table(
        tiny_ws, tiny_ws, timesteps=[10, 200], layers="1,7", ref_layers="pixels", k=3, n_boot=20
    )
    pd_testing = pytest.importorskip("pandas.testing")
    pd_testing.assert_frame_equal(again, table)
    with pytest.raises(AssertionError, match="computed again"):  # other parameters: another entry
        align_table(tiny_ws, tiny_ws, timesteps=[10], layers="1", ref_layers="pixels", k=4)


def test_pixels_beside_blocks_and_as_the_model_side(tiny_ws):
    from explorer.analysis.align_maps import align_table, source_names

    assert source_names(tiny_ws, "2,pixels") == ["pixels", tiny_ws.catalogue[1].name]
    assert source_names(tiny_ws, ["pixels"]) == ["pixels"]
    table = align_table(
        tiny_ws, tiny_ws, timesteps=10, layers="pixels", ref_layers="pixels,1", metrics="cka"
    )
    assert table["t"].isna().all() and list(table["ref_layer_index"]) == [0, 1]
    assert table.iloc[0]["value"] == pytest.approx(1.0, abs=1e-6), "pixels against themselves"
