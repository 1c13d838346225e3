"""The compute precision is part of every feature's identity: bf16 features are never fp32's."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from explorer.cli import main
from explorer.errors import ExplorerError
from explorer.features.extract import ensure_features, load_features
from explorer.features.keys import Selection, feature_key
from explorer.features.store import FeatureStore
from explorer.models.device import resolve_precision
from explorer.models.layers import build_catalogue
from explorer.models.loader import load_model


def test_default_precision_is_fp32_on_the_cpu_and_names_are_checked():
    assert resolve_precision(None, torch.device("cpu")) == "fp32"
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"
    assert resolve_precision("BFloat16", torch.device("cpu")) == "bf16"
    assert resolve_precision("half", torch.device("cpu")) == "fp16"
    with pytest.raises(ExplorerError, match="--dtype fp32, bf16 or fp16"):
        resolve_precision("fp8", torch.device("cpu"))


def test_mixed_precision_features_get_their_own_entries(tiny_model_dir, tiny_dataset, tmp_path):
    store = FeatureStore(tmp_path / "cache")
    fp32 = load_model(str(tiny_model_dir))
    bf16 = load_model(str(tiny_model_dir), dtype="bf16")
    assert fp32.fingerprint == bf16.fingerprint and (fp32.precision, bf16.precision) == (
        "fp32",
        "bf16",
    )
    sel = Selection.of(tiny_dataset, "train", 12)
    lay = build_catalogue(fp32.denoiser)[3]
    k32 = feature_key(fp32, tiny_dataset, sel, 10, lay.name, "2", 0)
    k16 = feature_key(bf16, tiny_dataset, sel, 10, lay.name, "2", 0)
    assert k32 != k16, "precision must be part of the key"

    kw = dict(timesteps=[10], layers=[lay], pools=["2"], store=store, progress=False)
    rep = ensure_features(bf16, tiny_dataset, sel, **kw)
    assert rep.computed == 1
    assert store.manifest(k16)["precision"] == "bf16"
    with pytest.raises(KeyError):  # the bf16 entry is never served for an fp32 request
        load_features(fp32, tiny_dataset, sel, t=10, layer=lay.name, pool_name="2", store=store)
    rep = ensure_features(fp32, tiny_dataset, sel, **kw)
    assert (rep.computed, rep.cached) == (1, 0), "fp32 must compute its own entry"
    a = np.asarray(store.load(k32), np.float32)
    b = np.asarray(store.load(k16), np.float32)
    assert not np.array_equal(a, b), "bf16 autocast should change the bytes"
    assert np.abs(a - b).max() < 0.1 * np.abs(a).max() + 0.1, "but only by rounding"


def test_cli_dtype_flag_and_memo_keep_precisions_apart(tiny_model_dir, tmp_path, capsys):
    cache = tmp_path / "cache"
    base = ["extract", "--model", str(tiny_model_dir), "--dataset", "digits", "--timesteps", "10"]
    base += ["--layers", "1,2", "--limit", "30", "--splits", "train", "--cache-dir", str(cache)]
    assert main(base) == 0
    assert main(base) == 0  # the memo answers
    assert "0 computed" in capsys.readouterr().out
    assert main([*base, "--dtype", "bf16"]) == 0
    out = capsys.readouterr().out
    assert "2 computed, 0 from cache" in out, out
    precisions = {e.get("precision") for e in FeatureStore(cache).entries()}
    assert precisions == {"fp32", "bf16"}, precisions
    assert main([*base, "--dtype", "fp8"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown precision 'fp8'" in err[0], err
