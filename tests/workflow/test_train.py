"""`explorer train`: checkpoints, resume after an interruption, save_pretrained output, model card."""

from __future__ import annotations

import json

import pytest
import torch

import explorer.train as train_mod
from explorer.data import load_dataset
from explorer.models import load_model
from explorer.train import TrainConfig, train


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
    for name in ("config.json", "diffusion_pytorch_model.safetensors", "scheduler_config.json", "samples.png",
                 "README.md"):
        assert (out / name).exists(), f"{name} is written"
    info = json.loads((out / "training.json").read_text())
    assert info["command"] == "explorer train --steps 4" and len(info["config"]) > 3, "the card records the command"
    assert "Reproduce with" in (out / "README.md").read_text(), "the model card says how to reproduce"
    model = load_model(str(out))
    assert model.num_timesteps == 1000 and model.scheduler.config.beta_schedule == "linear", "DDPM, 1000 linear steps"
    assert model.unet.config.sample_size == 16 and model.unet.config.in_channels == 1, "digits at 16x16 gray"
