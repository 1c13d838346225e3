"""The notebook API: `import explorer`, one canonical setting for every spelling, the README's block."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import explorer
from explorer.features.store import FeatureStore
from explorer.models.loader import load_model
from explorer.settings import Setting
from explorer.workspace import Workspace

README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.fixture
def ws(tiny_model_dir, tiny_dataset):
    return Workspace(
        load_model(str(tiny_model_dir)), tiny_dataset, store=FeatureStore(), batch_size=32
    )


def test_import_is_light_and_the_surface_is_small():
    code = "import sys, explorer; print(sorted(explorer.__all__)); print('torch' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.splitlines() == [
        "['ExplorerError', 'Setting', 'Workspace', '__version__', 'open']",
        "False",
    ]
    assert explorer.Workspace is Workspace and explorer.Setting is Setting
    with pytest.raises(AttributeError):
        explorer.nothing_here  # noqa: B018


def test_every_spelling_reaches_one_cache_entry(ws):
    mid = ws.layer("mid")
    spellings = [
        (10, "mid", 2),
        (10, "mid_block", "2"),
        (10, mid.index, 2),
        ("10", str(mid.index), "2"),
        (np.int64(10), mid.hook, 2),
    ]
    canon = {ws.setting(*s) for s in spellings}
    assert canon == {Setting(10, "mid_block", "2", 0)}
    keys = {ws.key(Setting(*s), "train") for s in spellings}
    assert len(keys) == 1, "one cache key, however it is spelled"

    x = ws.features(Setting(10, "mid", 2), "train")  # caches under the canonical name ...
    assert ws.store.has(ws.key(Setting(10, "mid_block", "2"), "train"))
    assert np.array_equal(x, ws.features(Setting(10, mid.index, "2"), "train")), (
        "... and finds it again"
    )
    stored = {p.name for p in ws.store.dir.rglob("*.npy")}
    assert len(stored) == 1, f"one entry for one setting, not {stored}"


def test_evaluate_answers_under_the_callers_settings_and_reuses_the_cache(ws, monkeypatch):
    a, b = Setting(10, "mid", 2), Setting(10, "mid_block", "2")
    res = ws.evaluate([a, b], "linear")
    assert set(res) == {a, b} and res[a].top1 == res[b].top1
    monkeypatch.setattr(Workspace, "_fit", lambda *_: pytest.fail("recomputed a cached probe"))
    r = ws.probe(10, ws.layer("mid").index, pool="2")
    assert r.top1 == res[a].top1


def test_keyword_features_give_sklearn_ready_arrays(ws):
    X, y = ws.features(t=10, layer="mid", pool=2, split="test")
    assert X.dtype == np.float32 and y.dtype == np.int64 and X.ndim == 2 and len(X) == len(y)
    assert np.array_equal(y, ws.labels("test"))
    px = ws.setting(None, "pixels", 2)
    assert px.is_pixels and ws.features(px, "test").shape[0] == len(y)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda ws: ws.setting(10, "nope", 2), "unknown layer 'nope'"),
        (lambda ws: ws.setting(10, "mid", 3), "unknown pooling '3'"),
        (lambda ws: ws.setting(10, "mid", "2,4"), "give one pooling"),
        (lambda ws: ws.setting(5000, "mid", 2), "timestep 5000 is outside"),
        (lambda ws: ws.setting("ten", "mid", 2), "timestep must be an integer"),
        (lambda ws: ws.setting(1.5, "mid", 2), "timestep must be an integer"),
        (lambda ws: ws.features(t=10, layer="mid", split="val"), "unknown split 'val'"),
        (lambda ws: ws.features(), "give a Setting"),
        (lambda ws: ws.sweep(timesteps=[10], layers="nope"), "unknown layer 'nope'"),
    ],
)
def test_bad_input_is_a_clear_error(ws, call, message):
    with pytest.raises(explorer.ExplorerError, match=re.escape(message)):
        call(ws)


def test_sweep_from_python_is_the_cli_table(ws):
    df = ws.sweep(timesteps=[10, 90], layers=[1, "mid"], pools=[2], heads="linear", baselines=True)
    assert set(df["t"].dropna()) == {10, 90}
    assert {ws.model.name, "pixels"} <= set(df["model"]) and any(
        m.startswith("random:") for m in df["model"]
    )
    assert "top1" in set(df["metric"])


@pytest.mark.slow
def test_readme_python_block_runs(capsys):
    section = README.read_text().split("## Use it from Python", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 1, "the section has one python block"
    exec(compile(blocks[0], str(README), "exec"), {"__name__": "readme"})
    out = capsys.readouterr().out
    assert re.search(r"top-1 at t=10, mid block, 2x2 pooling: \d+\.\d%", out), out
    assert "best reg" in out and "mid_block" in out
