"""CLI conventions: python -m explorer, --version, help with defaults and an example, -v/-q, sweep --config."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from importlib.metadata import version

import pandas as pd
import pytest

import explorer
from explorer.cli import COMMANDS, build_parser, main


def test_python_dash_m_and_version():
    r = subprocess.run(
        [sys.executable, "-m", "explorer", "--version"], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"explorer {explorer.__version__}"
    assert explorer.__version__ == version("diffusion-feature-explorer"), (
        "one version, the package's"
    )
    r = subprocess.run(
        [sys.executable, "-m", "explorer", "layers", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0 and "usage: explorer layers" in r.stdout


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_option_has_help_defaults_shown_and_an_example(name):
    parser = build_parser().commands[name]
    text = parser.format_help()
    for action in parser._actions:
        if action.help == argparse.SUPPRESS or isinstance(action, argparse._HelpAction):
            continue
        flag = "/".join(action.option_strings) or action.dest
        assert action.help and action.help.strip(), f"{name} {flag} has no help text"
        if action.default not in (None, False, argparse.SUPPRESS) and action.option_strings:
            formatted = parser._get_formatter()._get_help_string(action)
            assert "default" in formatted.lower(), (
                f"{name} {flag}: default {action.default!r} not shown"
            )
    epilog = text.rstrip().split("\n\n")[-1]
    assert epilog.startswith("example:\n  explorer " + name), (
        f"{name}: help must end with an example"
    )


def test_default_values_appear_in_help():
    text = build_parser().commands["extract"].format_help()
    assert "(default: 256)" in " ".join(text.split()), "--batch-size shows its default"
    assert "(default: auto)" in " ".join(text.split()), "--device shows its default"


def _extract(model, *extra):
    return [
        "extract",
        "--model",
        str(model),
        "--dataset",
        "digits",
        "--timesteps",
        "10",
        "--layers",
        "1",
        "--limit",
        "30",
        *extra,
    ]


def test_quiet_and_verbose_go_through_logging(tiny_model_dir, capsys):
    assert main(_extract(tiny_model_dir)) == 0
    normal = capsys.readouterr()
    assert "model " in normal.err and "timesteps x" in normal.err, "the run is described on stderr"
    assert "train: " in normal.out and "test: " in normal.out, "results on stdout"

    assert main(["-q", *_extract(tiny_model_dir)]) == 0
    quiet = capsys.readouterr()
    assert "timesteps x" not in quiet.err, "-q silences info messages"
    assert "train: " in quiet.out, "-q keeps the results on stdout"

    assert main([*_extract(tiny_model_dir), "-qq", "--timesteps", "5000"]) == 2, (
        "flag after the command too"
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), (
        "errors still show under -qq, as one line"
    )


SWEEP_TOML = """\
# a sweep, re-runnable
[sweep]
dataset = "digits"
timesteps = [10, 90]
layers = "1,-1"
pools = ["2"]
heads = "linear"
limit = 40
no-baselines = true
batch-size = 64
"""


def test_sweep_reads_a_toml_config_flags_override_and_provenance_records_it(
    tiny_model_dir, tmp_path
):
    cfg = tmp_path / "sweep.toml"
    cfg.write_text(SWEEP_TOML + f'model = "{tiny_model_dir}"\n')
    out = tmp_path / "res.csv"
    assert main(["sweep", "--config", str(cfg), "--timesteps", "90", "--out", str(out)]) == 0
    df = pd.read_csv(out)
    assert set(df["t"]) == {90}, "the flag overrides the file's timesteps"
    assert df["layer"].nunique() == 2 and set(df["model"]) == {str(tiny_model_dir)}, (
        "the file's layers, no baselines"
    )

    prov = json.loads((tmp_path / "res.csv.provenance.json").read_text())
    opts = prov["options"]
    assert opts["timesteps"] == "90" and opts["layers"] == "1,-1" and opts["limit"] == 40
    assert (
        opts["no-baselines"] is True
        and opts["heads"] == "linear"
        and opts["model"] == str(tiny_model_dir)
    )
    assert prov["config_file"] == str(cfg) and prov["command"][:2] == ["explorer", "sweep"]

    # The recorded options re-run the sweep exactly.
    again = tmp_path / "again.toml"
    again.write_text(
        "\n".join(f"{k} = {json.dumps(v)}" for k, v in opts.items() if v is not None and k != "out")
        + "\n"
    )
    out2 = tmp_path / "res2.csv"
    assert main(["sweep", "--config", str(again), "--out", str(out2)]) == 0
    cols = ["model", "t", "layer", "pool", "head", "split", "metric", "value"]
    first, second = pd.read_csv(out)[cols], pd.read_csv(out2)[cols]
    assert len(first) > 0 and "top1" in set(first["metric"])
    pd.testing.assert_frame_equal(first, second)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("timestep = [10]\n", "unknown option 'timestep'"),
        ("timesteps = [10\n", "is not valid TOML"),
        ("[sweep.layers]\na = 1\n", "must be a value or a list"),
    ],
)
def test_bad_sweep_config_is_one_error_line(tmp_path, capsys, text, expected):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    assert main(["sweep", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0], err
    assert main(["sweep", "--config", str(tmp_path / "missing.toml")]) == 2
    assert "not found" in capsys.readouterr().err
