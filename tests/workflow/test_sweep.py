"""Workspace, probe-result cache, sweeps and the tidy results table (tiny models, seconds)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from explorer.cli import main
from explorer.defaults import PIXELS, RANDOM_PREFIX
from explorer.features.store import FeatureStore
from explorer.models.loader import load_model
from explorer.results import COLUMNS, accuracy_view, best_settings, load_table
from explorer.settings import Setting
from explorer.sweep import SweepPlan, describe_best, run_sweep, summary_lines
from explorer.workspace import Workspace


@pytest.fixture
def ws(tiny_model_dir, tiny_dataset):
    return Workspace(
        load_model(str(tiny_model_dir)), tiny_dataset, store=FeatureStore(), batch_size=32
    )


def test_evaluate_caches_results_and_never_recomputes(ws, monkeypatch):
    s = [Setting(10, "mid_block", "2"), Setting(10, "conv_in", "1")]
    first = ws.evaluate(s, "linear")
    assert set(first) == set(s), "one result per setting"
    assert all(0.0 <= r.top1 <= 1.0 and r.ci_low <= r.top1 <= r.ci_high for r in first.values()), (
        "top-1 inside its CI"
    )
    assert first[s[0]].confusion.sum() == len(ws.test.indices), "confusion counts every test image"

    import explorer.workspace as wsmod

    monkeypatch.setattr(
        wsmod.Workspace, "_fit", lambda *a, **k: pytest.fail("a cached result was recomputed")
    )
    again = ws.evaluate(s, "linear")
    for k in s:
        assert again[k].top1 == first[k].top1, "the cached result is the same result"
        assert np.array_equal(again[k].predictions, first[k].predictions), (
            "cached predictions round-trip"
        )


def test_knn_and_pixels_heads(ws):
    px = Setting(None, PIXELS, "full")
    res = ws.evaluate([px], "knn10")[px]
    assert res.predictions.shape == (len(ws.test.indices),), "a prediction per test image"
    feats = ws.features(px, "train")
    assert feats.shape == (len(ws.train.indices), 16 * 16), "pixels are the flattened model input"


def test_unknown_head_is_a_clear_error(ws):
    from explorer.errors import ExplorerError

    with pytest.raises(ExplorerError, match="unknown head"):
        ws.evaluate([Setting(10, "mid_block", "2")], "svm")


def test_sweep_table_has_baselines_draws_and_is_tidy(tiny_model_dir, tiny_dataset, tmp_path):
    store = FeatureStore()
    main_ws = Workspace(load_model(str(tiny_model_dir)), tiny_dataset, store=store, batch_size=32)
    ctrl = Workspace(
        load_model(RANDOM_PREFIX + str(tiny_model_dir)), tiny_dataset, store=store, batch_size=32
    )
    plan = SweepPlan(
        [10, 300],
        ["conv_in", "mid_block"],
        ["1", "2"],
        ["linear", "knn"],
        seeds=[0, 1],
        controls=[ctrl],
    )
    out = tmp_path / "r.csv"
    seen = []
    df = run_sweep(main_ws, plan, out=out, report=lambda event: seen.append(event.fraction))
    assert list(df.columns) == COLUMNS, "the documented column order"
    assert seen and seen[-1] == 1.0 and seen == sorted(seen), "progress rises to 100%"
    back = load_table(out)
    assert len(back) == len(df), "the table on disk is the whole table"
    models = set(df["model"])
    assert models == {PIXELS, str(tiny_model_dir), RANDOM_PREFIX + str(tiny_model_dir)}, (
        f"baselines present: {models}"
    )
    wide = accuracy_view(df, "linear")
    n_settings = 2 * 2 * 2 * 2 + 1  # models x t x layers x pools, plus pixels
    assert len(wide) == n_settings, f"one row per setting, got {len(wide)}"
    draws = df[(df.metric == "draws") & (df.model != PIXELS)]["value"]
    assert (draws == 2).all(), "two noise draws are averaged per setting"
    assert (df[df.metric == "top1_std"]["value"] >= 0).all(), "std across draws is reported"
    best = best_settings(df)
    assert best.groupby(["model", "head"]).size().max() == 1, "one best setting per model and head"
    assert "best" in describe_best(df), "the best setting is named"


def test_noise_draws_change_features(ws):
    a = np.asarray(ws.features(Setting(300, "mid_block", "2", seed=0), "test"))
    b = np.asarray(ws.features(Setting(300, "mid_block", "2", seed=1), "test"))
    assert not np.array_equal(a, b), "another seed is another noise draw"


def test_sweep_cli_writes_table_and_reuses_cache(tiny_model_dir, tmp_path):
    out = tmp_path / "res.csv"
    args = [
        "sweep",
        "--model",
        str(tiny_model_dir),
        "--dataset",
        "digits",
        "--limit",
        "60",
        "--timesteps",
        "10,90",
        "--layers",
        "1,-1",
        "--heads",
        "linear",
        "--out",
        str(out),
        "--batch-size",
        "64",
    ]
    assert main(args) == 0, "sweep succeeds"
    df = pd.read_csv(out)
    assert {"pixels", f"random:{tiny_model_dir}"} <= set(df["model"]), (
        "baselines are in the CLI table"
    )
    before = {p.name for p in (FeatureStore().dir).rglob("*.npy")}
    assert main(args) == 0, "re-run succeeds"
    after = {p.name for p in (FeatureStore().dir).rglob("*.npy")}
    assert before == after, "the re-run computed no new features"


def test_sweep_cli_bad_head_is_one_line(tiny_model_dir):
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "explorer.cli",
            "sweep",
            "--model",
            str(tiny_model_dir),
            "--dataset",
            "digits",
            "--heads",
            "svm",
            "--limit",
            "20",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode != 0, "bad head fails"
    assert "Traceback" not in r.stderr and "unknown head 'svm'" in r.stderr, r.stderr


def test_cka_and_embed_from_the_cli(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "cka.csv"
    base = ["--model", str(tiny_model_dir), "--dataset", "digits", "--limit", "60"]
    assert main(["cka", *base, "--timesteps", "90", "--layers", "1,-1", "--out", str(out)]) == 0, (
        "block x block"
    )
    m = pd.read_csv(out, index_col=0)
    assert m.shape == (2, 2) and np.allclose(np.diag(m.values), 1.0, atol=1e-4), (
        "CKA of a setting with itself is 1"
    )
    assert (
        main(["cka", *base, "--timesteps", "10,300", "--layers", "mid", "--out", str(out)]) == 0
    ), "t x t"
    assert list(pd.read_csv(out, index_col=0).columns) == ["t=10", "t=300"], (
        "t x t is labelled by timestep"
    )
    assert main(["cka", *base, "--timesteps", "10,300", "--layers", "all"]) == 2, (
        "several of both is refused"
    )
    emb = tmp_path / "e.csv"
    assert main(["embed", *base, "--method", "pca", "--out", str(emb)]) == 0, "embed succeeds"
    e = pd.read_csv(emb)
    assert list(e.columns) == ["x", "y", "label", "class"] and len(e) > 0, "one row per test image"


def _row(model, t, layer, idx, head, metric, value, split="test", pool="2"):
    return {
        "model": model,
        "dataset": "d",
        "t": t,
        "layer": layer,
        "layer_index": idx,
        "pool": pool,
        "head": head,
        "split": split,
        "metric": metric,
        "value": value,
    }


def _setting(model, t, layer, idx, test, val=None, vs_px=None, head="linear"):
    rows = [
        _row(model, t, layer, idx, head, "top1", test),
        _row(model, t, layer, idx, head, "ci_low", test - 0.01),
        _row(model, t, layer, idx, head, "ci_high", test + 0.01),
    ]
    if val is not None:
        rows.append(_row(model, t, layer, idx, head, "top1", val, split="val"))
    if vs_px is not None:
        names = ("vs_pixels", "vs_pixels_low", "vs_pixels_high")
        rows += [_row(model, t, layer, idx, head, n, v) for n, v in zip(names, vs_px, strict=True)]
    return rows


def test_best_setting_is_chosen_on_validation_not_test():
    rows = (
        _setting("m", 10, "a", 1, test=0.80, val=0.90, vs_px=(0.05, 0.03, 0.07))
        + _setting("m", 10, "b", 2, test=0.85, val=0.70, vs_px=(0.10, 0.08, 0.12))  # best on test
        + _setting("m", 50, "a", 1, test=0.75, val=0.90)  # ties on val: smaller t wins
        + _setting(PIXELS, None, PIXELS, 0, test=0.75)
        + _setting("old", 10, "a", 1, test=0.9)
        + _setting("old", 50, "a", 1, test=0.8)
    )
    df = pd.DataFrame(rows, columns=COLUMNS)
    best = best_settings(df).set_index("model")
    assert best.loc["m", "layer"] == "a" and best.loc["m", "t"] == 10, (
        "highest val top-1, not highest test"
    )
    assert best.loc["m", "top1"] == pytest.approx(0.80), "its test top-1 is reported"
    assert best.loc["m", "selected_by"] == "validation"
    assert best.loc[PIXELS, "selected_by"] == "only setting", "a single setting needs no selection"
    assert "old" not in best.index, "without validation accuracy no best is picked on test"
    text = describe_best(df)
    assert "t=10, layer 1 (a)" in text and "test 80.00% [79.00, 81.00]" in text, text
    assert "+5.00 points vs raw pixels [+3.00, +7.00]: beyond noise" in text, text
    assert "linear for old: no validation accuracy" in text, text


def test_old_tables_without_new_metrics_still_load(tmp_path):
    old = pd.DataFrame(_setting("m", 10, "a", 1, test=0.8), columns=COLUMNS)
    old.to_csv(tmp_path / "old.csv", index=False)
    wide = accuracy_view(load_table(tmp_path / "old.csv"))
    assert (
        len(wide) == 1
        and np.isnan(wide["val_top1"]).all()
        and np.isnan(wide["vs_pixels_low"]).all()
    ), "absent metrics are NaN columns, not errors"


def test_sweep_writes_paired_intervals_and_knn_validation(tiny_model_dir, tiny_dataset):
    store = FeatureStore()
    main_ws = Workspace(load_model(str(tiny_model_dir)), tiny_dataset, store=store, batch_size=32)
    ctrl = Workspace(
        load_model(RANDOM_PREFIX + str(tiny_model_dir)), tiny_dataset, store=store, batch_size=32
    )
    plan = SweepPlan([10], ["conv_in", "mid_block"], ["2"], ["linear", "knn"], controls=[ctrl])
    df = run_sweep(main_ws, plan)
    wide = accuracy_view(df)
    models = wide[wide["model"] != PIXELS]
    assert len(models) == 8 and np.isfinite(models["val_top1"]).all(), (
        "every linear and k-NN row has val top-1"
    )
    assert np.isfinite(models["vs_pixels"]).all(), (
        "every setting is paired with the pixel probe of its head"
    )
    trained = wide[wide["model"] == str(tiny_model_dir)]
    assert np.isfinite(trained["vs_random"]).all(), "the model is paired with random weights"
    assert wide[wide["model"] != str(tiny_model_dir)]["vs_random"].isna().all(), (
        "only the model itself"
    )
    assert (models["vs_pixels_low"] <= models["vs_pixels"]).all() and (
        models["vs_pixels"] <= models["vs_pixels_high"]
    ).all()
    px = wide[(wide["model"] == PIXELS)].set_index("head")["top1"]
    for r in models.itertuples():
        assert r.vs_pixels == pytest.approx(r.top1 - px[r.head]), "the difference is of test top-1s"
    rnd = wide[wide["model"] == RANDOM_PREFIX + str(tiny_model_dir)].set_index(["layer", "head"])[
        "top1"
    ]
    for r in trained.itertuples():
        assert r.vs_random == pytest.approx(r.top1 - rnd[(r.layer, r.head)]), (
            "same t, layer, pool and head"
        )
    text = "\n".join(summary_lines(trained[trained["head"] == "linear"], "random"))
    assert (
        "of 2 cells beat raw pixels" in text
        and "of 2 cells beat random weights at the same setting" in text
    )


def test_summary_lines_say_what_is_noise():
    rows = (
        _setting("m", 10, "a", 1, test=0.80, val=0.90, vs_px=(0.05, 0.03, 0.07))
        + _setting("m", 10, "b", 2, test=0.805, val=0.70, vs_px=(0.055, 0.035, 0.075))
        + _setting("m", 50, "a", 1, test=0.76, val=0.60, vs_px=(0.01, -0.01, 0.03))
        + _setting("m", 50, "b", 2, test=0.70, val=0.50, vs_px=(-0.05, -0.07, -0.03))
    )
    wide = accuracy_view(pd.DataFrame(rows, columns=COLUMNS))
    text = "\n".join(summary_lines(wide, "random:m"))
    assert "Best on validation (90.00%): t=10, block 1 (a), test top-1 80.00%" in text, text
    assert "+5.00 points vs raw pixels [+3.00, +5.00]" not in text and "beyond noise" in text, text
    assert (
        "2 of 4 cells beat raw pixels beyond noise" in text and "1 are within noise of it" in text
    ), text
    assert "random weights at the same setting beyond" not in text, "no vs_random rows, no sentence"
    assert "1 other cells have test intervals overlapping the best's" in text, text
    old = accuracy_view(pd.DataFrame(_setting("m", 10, "a", 1, test=0.8), columns=COLUMNS))
    assert "no validation accuracy" in summary_lines(old)[0], "old tables: no best, no ▲"


def test_sweep_progress_events():
    from explorer.sweep import SweepProgress

    start = SweepProgress(0, 4, "raw-pixel baseline", 0.5)
    assert (
        start.fraction == 0 and np.isnan(start.eta) and start.text() == "[  0%] raw-pixel baseline"
    )
    assert start.within(5, 10) == pytest.approx(0.125), "half of the first of 4 steps"
    mid = SweepProgress(2, 4, "m: t=10, 2 layers", 8.0)
    assert mid.fraction == 0.5 and mid.eta == pytest.approx(8.0)
    assert mid.text() == "[ 50%] m: t=10, 2 layers (eta 8s)"
    assert mid.within(10, 10) == pytest.approx(0.75) and mid.within(0, 0) == pytest.approx(0.5)
    end = SweepProgress(4, 4, "done", 20.0)
    assert end.fraction == 1.0 and end.eta == 0.0 and end.within(7, 10) == 1.0
    assert SweepProgress(0, 0, "done", 0.0).fraction == 1.0
    plan = SweepPlan([10, 90, 150], ["mid_block"], ["2"], controls=[object()])
    assert plan.steps == 7 and SweepPlan([10], ["mid_block"], ["2"], pixels=False).steps == 1


def test_run_sweep_reports_every_step(ws):
    seen = []
    plan = SweepPlan([10, 20], ["mid_block"], ["2"])
    run_sweep(ws, plan, report=seen.append)
    assert [e.done for e in seen] == [0, 1, 2, 3] and {e.total for e in seen} == {3}
    assert seen[0].current == "raw-pixel baseline" and seen[-1].current == "done"
    assert "t=20" in seen[2].current and all(e.elapsed >= 0 for e in seen)
