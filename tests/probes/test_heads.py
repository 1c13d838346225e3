"""The head registry: parsing and aliases, every head fits through it, errors, the cache key, the CLI."""

from __future__ import annotations

import inspect

import numpy as np
import pandas as pd
import pytest

from explorer.cli import main
from explorer.errors import ExplorerError
from explorer.probes import registry as hmod
from explorer.probes.registry import HEADS, Head, Param, describe_heads, parse_head, parse_heads

# Small settings so every head trains in well under a second.
FAST = {
    "linear": "linear:regs=1e-3/1e-1",
    "linear-bn": "linear-bn:regs=1e-3/1e-1",
    "knn": "knn:k=5",
    "mlp": "mlp:hidden=16:epochs=15:lr=0.01:batch_size=32",
    "attention-small": "attention:dim=8:heads=2:epochs=15:lr=0.01:batch_size=32",
    "attention-paper": "attention-paper:dim=8:heads=2:epochs=15:lr=0.2:batch_size=16",
    "cnn": "cnn:hidden=8:epochs=15:lr=0.2:batch_size=16",
    "fusion": "fusion:dim=8:heads=2:epochs=15:lr=0.01:batch_size=32",
}


def _blobs(n: int, seed: int, maps: bool):
    """3 well-separated classes; rows `(n, 12)` or the same numbers as maps `(n, 3, 2, 2)`."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    centres = np.random.default_rng(7).normal(size=(3, 12)) * 4
    x = (centres[y] + rng.normal(size=(n, 12))).astype(np.float32)
    return (x.reshape(n, 3, 2, 2) if maps else x), y


@pytest.mark.parametrize("name", list(HEADS))
def test_registry_round_trip(name):
    spec = HEADS[name]
    head = parse_head(name)
    assert head.name == name and head.spec is spec, "a bare name resolves to its spec"
    assert head.params == {k: p.default for k, p in spec.params.items()}, (
        "every default is filled in"
    )
    assert head.label == name, "defaults are not written in the label"
    assert spec.description and "\n" not in spec.description, "a one-line description"
    custom = parse_head(FAST[name])
    assert parse_head(custom.label) == custom, (
        f"label {custom.label!r} parses back to the same head"
    )
    assert parse_head(custom) is custom, "a Head passes through"
    assert hash(custom) == hash(parse_head(custom.label)), "heads are hashable by value"


def test_aliases_and_canonical_labels():
    assert parse_head("knn10") == parse_head("knn:k=10") == parse_head(" KNN:k=10 "), (
        "knn10 is knn:k=10"
    )
    assert parse_head("knn10").label == "knn:k=10", "the canonical label names the parameter"
    assert parse_head("knn:k=20") == parse_head("knn"), "a default written out is the default head"
    assert parse_head("linear:regs=1e-3/1e-1").params["regs"] == (1e-3, 1e-1), "tuples split on /"
    assert [h.label for h in parse_heads("linear, knn10,knn:k=10,mlp")] == [
        "linear",
        "knn:k=10",
        "mlp",
    ], "comma-separated, in order, duplicates dropped"
    assert "knn: cosine" in describe_heads() and "k=20" in describe_heads(), (
        "help lists heads and defaults"
    )


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "knnx",
            "unknown head 'knnx'; choose from linear, linear-bn, knn, mlp, attention-small, attention-paper",
        ),
        ("svm", "unknown head 'svm'"),
        ("knn:q=3", "head 'knn' has no parameter 'q'; it takes k, temperature"),
        ("knn:k=0", "head 'knn': k must be a positive integer, got '0'"),
        ("knn:k=abc", "k must be a positive integer, got 'abc'"),
        ("knn:k", "write parameters as knn:name=value"),
        ("mlp:dropout=1.5", "dropout must be a number in [0, 1)"),
        ("linear:regs=1e-3/-1", "regs must be positive numbers"),
        ("attention:dim=10:heads=4", "dim (10) must be a multiple of heads (4)"),
    ],
)
def test_bad_heads_are_one_line_errors(text, message):
    with pytest.raises(ExplorerError) as e:
        parse_head(text)
    assert message in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_no_heads_is_an_error():
    with pytest.raises(ExplorerError, match="no heads given"):
        parse_heads(" , ")


@pytest.mark.parametrize("name", list(HEADS))
def test_every_head_fits_through_the_registry(name):
    head = parse_head(FAST[name])
    tasks = {}
    for key, seed in (("a", 0), ("b", 1)):
        xtr, ytr = _blobs(90, seed, head.spec.maps)
        xte, yte = _blobs(30, seed + 10, head.spec.maps)
        tasks[key] = (xtr, ytr, xte, yte)
    res = head.fit(tasks, n_classes=3, device="cpu")
    assert set(res) == {"a", "b"}, "one result per task"
    for r in res.values():
        assert r.predictions.shape == (30,) and r.confusion.shape == (3, 3), (
            "a prediction per test row"
        )
        assert r.top1 > 0.8, (
            f"{head.label} should separate 3 far-apart blobs (chance 0.33), got {r.top1:.2f}"
        )


def _defaults(
    fn, skip=("device", "n_classes", "max_bank_gb", "progress", "chunk", "standardise")
) -> dict:
    return {
        k: p.default
        for k, p in inspect.signature(fn).parameters.items()
        if p.default is not inspect.Parameter.empty and k not in skip
    }


def test_registry_defaults_match_the_probes():
    from explorer.probes.attention import AttentionProbe
    from explorer.probes.knn import TEMPERATURE
    from explorer.probes.linear import fit_linear_grid
    from explorer.probes.mlp import MLPProbe

    def params(name):
        return parse_head(name).params

    assert params("mlp") == {k: v for k, v in MLPProbe().get_params().items() if k != "device"}, (
        "mlp defaults"
    )
    assert params("attention") == {
        k: v for k, v in AttentionProbe().get_params().items() if k != "device"
    }, "attention defaults"
    from explorer.probes.paper_heads import CNNProbe, PaperAttentionProbe

    for name, cls in (("attention-paper", PaperAttentionProbe), ("cnn", CNNProbe)):
        assert params(name) == {k: v for k, v in cls().get_params().items() if k != "device"}, name
    assert params("linear") == _defaults(fit_linear_grid), "linear defaults"
    assert params("linear-bn") == params("linear"), "linear-bn takes linear's parameters"
    assert params("knn")["temperature"] == TEMPERATURE, "knn temperature"


# --- Workspace and CLI -------------------------------------------------------------------------


@pytest.fixture
def ws(tiny_model_dir, tiny_dataset):
    from explorer.features.store import FeatureStore
    from explorer.models.loader import load_model
    from explorer.workspace import Workspace

    return Workspace(
        load_model(str(tiny_model_dir)),
        tiny_dataset,
        store=FeatureStore(),
        batch_size=32,
        device="cpu",
    )


def test_workspace_evaluate_rejects_unknown_heads(ws):
    from explorer.settings import Setting

    with pytest.raises(ExplorerError, match="unknown head 'knnx'"):
        ws.evaluate([Setting(10, "mid_block", "2")], "knnx")
    with pytest.raises(ExplorerError, match="the attention-small head needs spatial maps"):
        ws.evaluate([Setting(10, "mid_block", "1")], "attention")
    assert not any(ws.store.dir.rglob("*.npy")), "a bad request extracts nothing"


def test_result_key_holds_every_parameter(ws, monkeypatch):
    from explorer.settings import Setting
    from explorer.workspace import Workspace

    s = Setting(10, "mid_block", "2")
    fits = []
    real_fit = Workspace._fit
    monkeypatch.setattr(
        Workspace, "_fit", lambda self, h, ss: fits.append(h.label) or real_fit(self, h, ss)
    )
    first = ws.evaluate([s], "knn10")[s]
    ws.evaluate([s], "knn:k=10")
    assert fits == ["knn:k=10"], "an alias and its canonical form share one cached result"
    ws.evaluate([s], "knn")
    assert len(fits) == 2, "another k is another result"

    spec = HEADS["knn"]
    monkeypatch.setitem(spec.params, "temperature", Param(0.5, float, lambda v: v > 0, "positive"))
    again = ws.evaluate([s], "knn10")[s]
    assert len(fits) == 3, "changing a default never serves the old result"
    assert again.extra["temperature"] == 0.5 and first.extra["temperature"] == 0.07, (
        "the new default was used"
    )


def test_adding_a_head_is_one_entry(ws, monkeypatch):
    from explorer.probes.metrics import ProbeResult
    from explorer.settings import Setting

    def fit_majority(tasks, *, n_classes, device, vote):
        return {
            n: ProbeResult.from_predictions("majority", yte, np.full(len(yte), vote), n_classes)
            for n, (_, _, _, yte) in tasks.items()
        }

    spec = hmod.HeadSpec(
        "majority",
        "always the same class",
        fit_majority,
        {"vote": Param(0, int, lambda v: v >= 0, "a class index")},
    )
    monkeypatch.setitem(HEADS, "majority", spec)
    s = Setting(10, "conv_in", "1")
    r = ws.evaluate([s], "majority:vote=1")[s]
    assert set(r.predictions) == {1}, "the registry entry is all the Workspace needs"
    assert isinstance(parse_head("majority"), Head), "and parsing knows it"


def test_cli_parses_heads_through_the_registry(tiny_model_dir, tmp_path, capsys):
    base = [
        "sweep",
        "--model",
        str(tiny_model_dir),
        "--dataset",
        "digits",
        "--limit",
        "30",
        "--timesteps",
        "10",
        "--layers",
        "-1",
        "--no-baselines",
        "--batch-size",
        "64",
    ]
    assert main([*base, "--heads", "linear,knn:k=0"]) == 2, "a bad parameter fails"
    err = capsys.readouterr().err
    assert "head 'knn': k must be a positive integer" in err and "Traceback" not in err, err
    assert main(["sweep", "--model", str(tmp_path / "missing"), "--heads", "knnx"]) == 2
    assert "unknown head 'knnx'" in capsys.readouterr().err, (
        "heads are checked before the model loads"
    )

    out = tmp_path / "res.csv"
    assert main([*base, "--heads", "knn10,knn:k=10", "--out", str(out)]) == 0, "sweep succeeds"
    df = pd.read_csv(out)
    assert set(df["head"]) == {"knn:k=10"}, "the table names the canonical head once"
