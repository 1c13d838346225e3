"""The forward process comes from the model's own scheduler config; VE schedulers are refused."""

from __future__ import annotations

import json

import pytest
import torch

from explorer.errors import ExplorerError
from explorer.models.families.schedulers import vp_scheduler
from explorer.models.loader import load_model


def _own(cls_name: str, **cfg):
    import diffusers

    return getattr(diffusers, cls_name).from_config(
        cfg
    )  # drops keys a class lacks (PNDM: zero SNR)


@pytest.mark.parametrize(
    "cls_name",
    [
        "DDPMScheduler",
        "DDIMScheduler",
        "PNDMScheduler",
        "DPMSolverMultistepScheduler",
        "EulerDiscreteScheduler",
        "EulerAncestralDiscreteScheduler",
        "UniPCMultistepScheduler",
    ],
)
@pytest.mark.parametrize(
    "cfg",
    [
        {"beta_schedule": "linear"},
        {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012},
        {"beta_schedule": "squaredcos_cap_v2"},
        {
            "beta_schedule": "scaled_linear",
            "beta_start": 0.00085,
            "beta_end": 0.012,
            "rescale_betas_zero_snr": True,
        },
    ],
)
def test_alphas_cumprod_is_the_own_schedulers(cls_name, cfg):
    own = _own(cls_name, num_train_timesteps=1000, **cfg)
    sched = vp_scheduler({**dict(own.config), "_class_name": cls_name}, "test")  # as saved
    assert torch.allclose(
        sched.alphas_cumprod.double(), own.alphas_cumprod.double(), rtol=1e-6, atol=1e-9
    ), f"{cls_name} {cfg}: the forward process differs from the scheduler's own"
    x0, eps, t = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4), torch.tensor([0, 999])
    a = own.alphas_cumprod[t].view(-1, 1, 1, 1)
    want = a.sqrt() * x0 + (1 - a).sqrt() * eps
    torch.testing.assert_close(sched.add_noise(x0, eps, t), want, rtol=1e-5, atol=1e-6)
    import inspect

    if (
        cfg.get("rescale_betas_zero_snr")
        and "rescale_betas_zero_snr" in inspect.signature(type(own)).parameters
    ):
        assert own.alphas_cumprod[-1] < 1e-6, "zero terminal SNR reached"


@pytest.mark.parametrize("cls_name", ["ScoreSdeVeScheduler", "KarrasVeScheduler"])
def test_variance_exploding_schedulers_are_refused(cls_name, tiny_model_dir):
    config = {"_class_name": cls_name, "num_train_timesteps": 1000}
    with pytest.raises(ExplorerError, match="variance-exploding") as e:
        vp_scheduler(config, "x")
    assert "\n" not in str(e.value)
    (tiny_model_dir / "scheduler_config.json").write_text(json.dumps(config))
    if cls_name == "ScoreSdeVeScheduler":  # a model loads it as its VE process (issue 20)
        assert load_model(str(tiny_model_dir)).process.kind == "ve"
        return
    with pytest.raises(ExplorerError, match=cls_name):
        load_model(str(tiny_model_dir))


def test_a_ddim_folder_with_zero_snr_changes_the_fingerprint(tiny_model_dir):
    base = load_model(str(tiny_model_dir))
    config = {
        **_own("DDIMScheduler", rescale_betas_zero_snr=True).config,
        "_class_name": "DDIMScheduler",
    }
    (tiny_model_dir / "scheduler_config.json").write_text(json.dumps(config))
    m = load_model(str(tiny_model_dir))
    assert m.fingerprint != base.fingerprint and float(m.scheduler.alphas_cumprod[-1]) < 1e-6
    assert "zero terminal SNR" in m.scheduler_text and "DDIMScheduler" in m.scheduler_text
