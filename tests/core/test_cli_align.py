"""`explorer align`: two tiny diffusion models, a model against itself, a tiny reference encoder,
the Workspace call behind it, and one-line errors for bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from explorer.analysis.align_maps import COLUMNS, align_table
from explorer.cli import main
from explorer.errors import ExplorerError
from explorer.features.store import FeatureStore
from explorer.models.loader import load_model
from explorer.workspace import Workspace
from tests.conftest import make_tiny_dataset, save_tiny_model
from tests.families.tiny_encoders import save_encoder


def run(tmp_path, model, reference, *extra):
    out = tmp_path / "align.csv"
    argv = ["align", "--model", str(model), "--reference", str(reference), "--dataset", "digits"]
    argv += ["--limit", "40", "--batch-size", "64", "--boot", "50", "--out", str(out), *extra]
    return main(argv), out


def test_a_model_against_itself_is_one_on_the_diagonal(tiny_model_dir, tmp_path, capsys):
    rc, out = run(tmp_path, tiny_model_dir, tiny_model_dir, "--timesteps", "10", "--layers", "2-5")
    assert rc == 0, capsys.readouterr().err
    df = pd.read_csv(out)
    assert list(df.columns) == COLUMNS
    assert set(df["metric"]) == {"cka", "cknna"}
    assert set(df["t"]) == {10} and set(df["ref_t"]) == {10}
    assert len(df) == 4 * 9 * 2, "4 model blocks x 9 reference blocks x 2 metrics"
    diag = df[df["layer"] == df["ref_layer"]]
    assert len(diag) == 8
    np.testing.assert_allclose(diag["value"], 1.0, atol=1e-6)
    np.testing.assert_allclose(diag[["ci_low", "ci_high"]].to_numpy(), 1.0, atol=1e-6)
    off = df[df["layer"] != df["ref_layer"]]
    assert (off["value"] < 1 - 1e-6).all() and (off["ci_low"] <= off["value"]).all()
    assert "cka (t=10)" in capsys.readouterr().out, "the maps are printed"


def test_two_models_block_x_t_against_a_fixed_reference_block(tiny_model_dir, tmp_path):
    other = save_tiny_model(tmp_path / "other", seed=1)
    rc, out = run(
        tmp_path,
        tiny_model_dir,
        other,
        *("--timesteps", "10,200", "--ref-layers", "mid", "--ref-timestep", "0"),
        *("--metric", "cknna,mutual_knn", "--k", "5"),
    )
    assert rc == 0
    df = pd.read_csv(out)
    assert set(df["t"]) == {10, 200} and set(df["ref_t"]) == {0}
    assert set(df["ref_layer"]) == {"mid_block"}
    assert len(df) == 2 * 9 * 2 and set(df["k"]) == {5}
    assert df["value"].between(-1, 1).all()


def test_against_a_reference_encoder(tiny_model_dir, tmp_path):
    enc = save_encoder("dinov2", tmp_path / "dino")
    rc, out = run(tmp_path, tiny_model_dir, f"encoder:{enc}", "--timesteps", "10", "--layers", "7")
    assert rc == 0
    df = pd.read_csv(out)
    assert df["ref_t"].isna().all(), "an encoder has no timestep"
    assert set(df["ref_layer"]) == {"encoder.layer.0", "encoder.layer.1"}
    assert df["reference"].iloc[0] == f"encoder:{enc}" and len(df) == 2 * 2
    # the encoder as the model: its t does not apply; against itself CKNNA is 1
    rc, out = run(tmp_path, enc, enc, "--metric", "cknna")
    df = pd.read_csv(out)
    assert rc == 0 and df["t"].isna().all()
    np.testing.assert_allclose(df[df["layer"] == df["ref_layer"]]["value"], 1.0, atol=1e-9)
    # ... and against a diffusion reference, that reference is read at each timestep given
    rc, out = run(tmp_path, enc, tiny_model_dir, "--timesteps", "10,90", "--ref-layers", "1,9")
    df = pd.read_csv(out)
    assert rc == 0 and df["t"].isna().all() and set(df["ref_t"]) == {10, 90}
    assert len(df) == 2 * 2 * 2 * 2, "2 encoder blocks x 2 reference blocks x 2 t x 2 metrics"


@pytest.mark.parametrize(
    "extra, expected",
    [
        (("--metric", "cka,foo"), "unknown metric 'foo'"),
        (("--k", "0"), "--k must be at least 1"),
        (("--k", "40", "--metric", "cknna"), "k=40 neighbours need more than 40 images"),
        (("--ref-timestep", "5000"), "timestep 5000 is outside"),
    ],
)
def test_bad_input_is_one_error_line(tiny_model_dir, tmp_path, capsys, extra, expected):
    rc, out = run(tmp_path, tiny_model_dir, tiny_model_dir, "--layers", "1", "-q", *extra)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and expected in err[0], err
    assert not out.exists()


def test_workspace_align_needs_the_same_images(tiny_model_dir, tmp_path):
    model = load_model(str(tiny_model_dir))
    store = FeatureStore(tmp_path / "cache")
    ws = Workspace(model, make_tiny_dataset(n=60), store=store, test_limit=12, device="cpu")
    df = ws.align(str(tiny_model_dir), timesteps=10, layers="1,2", ref_layers="1", n_boot=0)
    assert len(df) == 2 * 2 and df["ci_low"].isna().all()
    fewer = Workspace(model, make_tiny_dataset(n=60), store=store, test_limit=9, device="cpu")
    with pytest.raises(ExplorerError, match="different image counts"):
        align_table(ws, fewer, timesteps=10, layers="1", ref_layers="1")
    other = Workspace(model, make_tiny_dataset(n=60, seed=1), store=store, test_limit=12)
    with pytest.raises(ExplorerError, match="different images"):
        align_table(ws, other, timesteps=10, layers="1", ref_layers="1")
