"""The `explorer` command: layer table, extract with its cache fast path, one-line errors for bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from explorer.cli import main, options
from explorer.features.store import FeatureStore
from explorer.models.layers import build_catalogue
from explorer.models.loader import load_model


def _extract_args(model_dir, cache, *extra):
    return [
        "extract",
        "--model",
        str(model_dir),
        "--dataset",
        "digits",
        "--timesteps",
        "10,90",
        "--layers",
        "all",
        "--pool",
        "2",
        "--limit",
        "40",
        "--cache-dir",
        str(cache),
        *extra,
    ]


def test_layers_prints_every_point(tiny_model_dir, capsys):
    assert main(["layers", "--model", str(tiny_model_dir)]) == 0, "layers should succeed"
    out = capsys.readouterr().out
    cat = build_catalogue(load_model(str(tiny_model_dir)).denoiser)
    for lay in cat:
        assert lay.name in out, f"{lay.name} missing from the table:\n{out}"
    assert "16x8x8" in out and "fingerprint" in out, (
        f"table should show shapes and the fingerprint:\n{out}"
    )
    rows = [line for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert [int(r.split()[0]) for r in rows] == list(range(1, len(cat) + 1)), (
        f"rows not numbered 1..n:\n{out}"
    )


def test_layers_json(tiny_model_dir, capsys):
    assert main(["layers", "--model", str(tiny_model_dir), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["index"] for r in rows] == list(range(1, 10)), rows
    assert rows[4]["name"] == "mid_block" and rows[4]["channels"] == 16, rows[4]


def _layer_rows(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.strip()[:1].isdigit()]


def test_layers_of_a_class_conditional_model_need_no_class_label(tmp_path, capsys):
    """The catalogue does not depend on the class, so `explorer layers` asks for none; extraction
    still refuses to guess one."""
    from tests.families.tiny import save_family

    folder = str(save_family("class-cond", tmp_path / "class-cond"))
    assert main(["layers", "--model", folder]) == 0, capsys.readouterr().err
    unlabelled = capsys.readouterr().out
    assert main(["layers", "--model", folder, "--class-label", "3"]) == 0
    labelled = capsys.readouterr().out
    assert len(_layer_rows(unlabelled)) == len(_layer_rows(labelled)) > 0, (
        f"same points with and without a label:\n{unlabelled}\n{labelled}"
    )
    assert _layer_rows(unlabelled) == _layer_rows(labelled), "same names and shapes"
    assert "no --class-label given" in unlabelled, "the header says no class was chosen"

    args = ["extract", "--model", folder, "--dataset", "digits", "--timesteps", "10"]
    rc = main([*args, "--layers", "1", "--limit", "20", "--cache-dir", str(tmp_path / "c")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("error:"), err
    assert "pick --class-label N" in err[0], err


def test_extract_then_identical_run_is_served_from_the_memo(
    tiny_model_dir, tmp_path, capsys, monkeypatch
):
    cache = tmp_path / "cache"
    assert main(_extract_args(tiny_model_dir, cache)) == 0, "extract should succeed"
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith(("train:", "test:"))]
    assert len(lines) == 2, f"one summary per split expected:\n{out}"
    assert all(
        "18 feature sets for 40 images: 18 computed, 0 from cache" in line for line in lines
    ), out
    assert len(FeatureStore(cache).entries()) == 2 * 18, (
        "2 splits x 2 t x 9 layers x 1 pool entries expected"
    )

    def no_model(*_a, **_k):
        raise AssertionError("an identical run must not open the model or the dataset")

    monkeypatch.setattr(options, "open_inputs", no_model)
    monkeypatch.setattr("explorer.workspace.Workspace.open", no_model)
    assert main(_extract_args(tiny_model_dir, cache)) == 0
    out = capsys.readouterr().out
    assert out.count("0 computed, 18 from cache") == 2, f"second run should compute nothing:\n{out}"


def test_memo_is_ignored_when_the_model_changes(tiny_model_dir, tmp_path, capsys):
    cache = tmp_path / "cache"
    assert main(_extract_args(tiny_model_dir, cache, "--splits", "test")) == 0
    capsys.readouterr()
    model = load_model(str(tiny_model_dir))
    with torch.no_grad():
        model.denoiser.conv_in.bias.add_(0.5)
    model.denoiser.save_pretrained(tiny_model_dir)
    assert main(_extract_args(tiny_model_dir, cache, "--splits", "test")) == 0
    out = capsys.readouterr().out
    assert "18 computed" in out, (
        f"new weights must be extracted again, not served from the memo:\n{out}"
    )


def test_memo_fast_path_does_not_import_torch(tiny_model_dir, tmp_path):
    cache = tmp_path / "cache"
    assert main(_extract_args(tiny_model_dir, cache, "--splits", "test")) == 0
    code = (
        "import sys; from explorer.cli import main; rc = main(sys.argv[1:]); "
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', rc)"
    )
    r = subprocess.run(
        [sys.executable, "-c", code, *_extract_args(tiny_model_dir, cache, "--splits", "test")],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ),
    )
    assert r.returncode == 0, r.stderr
    assert "0 computed" in r.stdout and "NO-TORCH 0" in r.stdout, (
        f"fast path should skip torch:\n{r.stdout}\n{r.stderr}"
    )


# --- bad input: one line on stderr, non-zero exit, never a traceback ------------------------------

BAD = {
    "unknown model": ["--model", "no-such-model"],
    "unknown dataset": ["--dataset", "no-such-data"],
    "not a diffusers folder": ["--model", "{empty}"],
    "timestep 1000": ["--timesteps", "1000"],
    "timestep -1": ["--timesteps=-1"],
    "unknown layer": ["--layers", "up_blocks.0.resnet.1"],
    "layer out of range": ["--layers", "99"],
    "bad pool": ["--pool", "3"],
    "bad device": ["--device", "cuda"],
}
EXPECT = {
    "unknown model": "no-such-model",
    "unknown dataset": "no-such-data",
    "not a diffusers folder": "not a diffusers model folder",
    "timestep 1000": "outside [0, 1000)",
    "timestep -1": "outside [0, 1000)",
    "unknown layer": "Did you mean: up_blocks.0.resnets.1",
    "layer out of range": "1 to 9",
    "bad pool": "unknown pooling '3'",
    "bad device": "CUDA is not available",
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_error_line(tmp_path, model_factory, capsys, case):
    if case == "bad device" and torch.cuda.is_available():
        pytest.skip("CUDA is available here, so --device cuda is not an error")
    model_dir = model_factory(tmp_path / "tiny")
    (tmp_path / "empty").mkdir()
    extra = [a.replace("{empty}", str(tmp_path / "empty")) for a in BAD[case]]
    rc = main(
        _extract_args(model_dir, tmp_path / "cache", *extra)
    )  # an escaping exception fails the test
    captured = capsys.readouterr()
    assert rc != 0, f"{case}: exit code should be non-zero"
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), (
        f"{case}: want one 'error:' line, got:\n{captured.err}"
    )
    assert EXPECT[case] in lines[0], f"{case}: error should mention {EXPECT[case]!r}: {lines[0]}"


SUBPROCESS_CASES = {  # one fails before the model loads, one after diffusers is imported
    "layers on a non-model folder": ["layers", "--model", "{empty}"],
    "extract at timestep -1": [
        "extract",
        "--model",
        "{model}",
        "--dataset",
        "digits",
        "--timesteps=-1",
        "--layers",
        "mid",
        "--cache-dir",
        "{cache}",
    ],
}


@pytest.mark.timeout(300)
def test_bad_input_from_the_shell_has_no_traceback(tmp_path, model_factory):
    """The real entry point (`python -m explorer.cli`): no traceback, no import noise, one line."""
    model_dir = model_factory(tmp_path / "tiny")
    (tmp_path / "empty").mkdir()
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    env.pop("EXPLORER_DEBUG", None)
    procs = {}
    for case, argv in SUBPROCESS_CASES.items():  # started together: each pays the torch import
        subs = {
            "{model}": str(model_dir),
            "{empty}": str(tmp_path / "empty"),
            "{cache}": str(tmp_path / "cache"),
        }
        argv = [subs.get(a, a) for a in argv]
        procs[case] = subprocess.Popen(
            [sys.executable, "-m", "explorer.cli", *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=tmp_path,
        )
    for case, p in procs.items():
        _out, err = p.communicate(timeout=240)
        assert "Traceback" not in err, f"{case}: traceback shown:\n{err}"
        assert p.returncode not in (0, None), (
            f"{case}: exit code should be non-zero, got {p.returncode}"
        )
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:"), (
            f"{case}: want one 'error:' line, got:\n{err}"
        )


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("no-such-model", "unknown model 'no-such-model'"),
        ("{empty}", "not a diffusers model folder"),
    ],
)
def test_layers_bad_model_is_one_error_line(tmp_path, capsys, model, expected):
    (tmp_path / "empty").mkdir()
    assert main(["layers", "--model", model.replace("{empty}", str(tmp_path / "empty"))]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and expected in err[0], err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_bad_device_message(tiny_model_dir, tmp_path, capsys):
    assert main(_extract_args(tiny_model_dir, tmp_path / "c", "--device", "cuda")) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "--device cpu" in err, err
