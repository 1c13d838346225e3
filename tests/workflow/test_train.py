"""`explorer train`: checkpoints, resume after an interruption, save_pretrained output, model card,
`model_index.json` for `DDPMPipeline`, and the shipped models' folders."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
import torch

import explorer.models.train as train_mod
from explorer.data import load_dataset
from explorer.models.loader import load_model
from explorer.models.train import TrainConfig, model_card, refresh_card, train
from explorer.paths import BUILTIN_MODEL_DIRS
from explorer.results import COLUMNS, load_table

SWEEP = BUILTIN_MODEL_DIRS["ddpm-fashion-mnist"].parents[1] / "results" / "fashion-mnist-sweep.csv"


def test_train_resumes_and_saves_a_loadable_model(tmp_path, monkeypatch, capsys):
    ds = load_dataset("digits")
    cfg = TrainConfig(steps=4, batch_size=8, checkpoint_every=2, flip=False)
    out = tmp_path / "ddpm"
    real_clip = torch.nn.utils.clip_grad_norm_
    calls = {"n": 0}

    def clip_then_die(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # killed during step 3
        return real_clip(*a, **k)

    monkeypatch.setattr(train_mod.torch.nn.utils, "clip_grad_norm_", clip_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(ds, out, cfg, command="explorer train --steps 4")
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["step"] == 2, "the checkpoint holds the last finished multiple of checkpoint_every"

    monkeypatch.setattr(train_mod.torch.nn.utils, "clip_grad_norm_", real_clip)
    train(ds, out, cfg, command="explorer train --steps 4")
    assert "resuming from step 2" in capsys.readouterr().err, "the second run resumes"
    assert not (out / "checkpoint.pt").exists(), "the checkpoint is removed once the model is saved"
    for name in (
        "config.json",
        "diffusion_pytorch_model.safetensors",
        "scheduler_config.json",
        "samples.png",
        "README.md",
    ):
        assert (out / name).exists(), f"{name} is written"
    info = json.loads((out / "training.json").read_text())
    assert info["command"] == "explorer train --steps 4" and len(info["config"]) > 3, (
        "the card records the command"
    )
    assert "Reproduce with" in (out / "README.md").read_text(), (
        "the model card says how to reproduce"
    )
    model = load_model(str(out))
    assert model.num_timesteps == 1000 and model.scheduler.config.beta_schedule == "linear", (
        "DDPM, 1000 linear steps"
    )
    assert model.denoiser.config.sample_size == 16 and model.denoiser.config.in_channels == 1, (
        "digits at 16x16 gray"
    )
    pipe = _pipeline(out)
    assert torch.equal(pipe.unet.conv_in.weight, model.denoiser.conv_in.weight), (
        "the pipeline has the same U-Net"
    )
    assert pipe.scheduler.config.num_train_timesteps == 1000
    from huggingface_hub import ModelCard

    card = ModelCard.load(out / "README.md")
    assert card.data.license == "mit" and card.data.library_name == "diffusers", card.data
    assert card.data.datasets == ["digits"] and "ddpm" in card.data.tags
    assert card.data.eval_results is None, "no sweep, no invented metrics"


def _pipeline(folder):
    from diffusers import DDPMPipeline

    return DDPMPipeline.from_pretrained(str(folder))


def _sweep(model: str) -> pd.DataFrame:
    base = {
        "model": model,
        "dataset": "fashion-mnist",
        "layer": "mid_block",
        "layer_index": 4,
        "pool": "2",
        "head": "linear",
    }
    rows = []
    for t, test, val in (
        (10, 0.70, 0.90),
        (90, 0.95, 0.60),
    ):  # t=90 is best on test, not validation
        rows += [
            {**base, "t": t, "split": "test", "metric": "top1", "value": test},
            {**base, "t": t, "split": "val", "metric": "top1", "value": val},
        ]
    return pd.DataFrame(rows, columns=COLUMNS)


def test_card_metrics_come_from_the_validation_pick():
    info = json.loads((BUILTIN_MODEL_DIRS["ddpm-fashion-mnist"] / "training.json").read_text())
    card = model_card(info, _sweep("ddpm-x"), "ddpm-x")
    (r,) = card.data.eval_results
    assert r.metric_value == 0.70 and "t=10" in r.metric_name, "test top-1 of the validation pick"
    assert r.dataset_type == "zalando-datasets/fashion_mnist" and r.metric_type == "accuracy"
    assert "70.00%" in card.text, "the body shows the same number"
    assert model_card(info, _sweep("other"), "ddpm-x").data.eval_results is None, (
        "only this model's rows"
    )


@pytest.mark.parametrize("name", sorted(BUILTIN_MODEL_DIRS))
def test_shipped_models_load_as_pipelines_and_keep_their_fingerprint(name, tmp_path):
    folder = BUILTIN_MODEL_DIRS[name]
    assert (folder / "model_index.json").exists(), "shipped with model_index.json"
    pipe = _pipeline(folder)
    model = load_model(name)
    assert torch.equal(pipe.unet.conv_in.weight, model.denoiser.conv_in.weight)
    bare = shutil.copytree(
        folder, tmp_path / name, ignore=shutil.ignore_patterns("model_index.json")
    )
    assert load_model(str(bare)).fingerprint == model.fingerprint, (
        "model_index.json leaves features' keys alone"
    )
    from huggingface_hub import ModelCard

    card = ModelCard.load(folder / "README.md")
    assert card.data.library_name == "diffusers" and card.data.license == "mit"
    refreshed = refresh_card(tmp_path / name, load_table(SWEEP))
    assert ModelCard.load(refreshed).data == card.data, "the shipped card is the generator's output"
