"""The noise processes of `explorer.models.families.noise_process`: x_t, the denoiser's input and
time, and log SNR, for VP, flow matching (linear, GVP; every time input), EDM and VE, checked
against the formulas and against diffusers' own schedulers; and what is refused."""

from __future__ import annotations

import math

import pytest
import torch

from explorer.errors import ExplorerError
from explorer.models.families.noise_process import as_process, noise_process
from explorer.models.families.schedulers import vp_scheduler

FLOW = {"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000}


def _x():
    torch.manual_seed(0)
    return torch.randn(3, 2, 4, 4), torch.randn(3, 2, 4, 4)


def test_vp_is_the_schedule_in_float64_cast_after_indexing():
    """As ADM: betas and alphas_cumprod in float64, indexed, then cast (diffusers' float32
    schedule moves sqrt(1 - a_0) by 8.3e-5); within float32 rounding of the DDPM scheduler's."""
    sched = vp_scheduler({"beta_schedule": "linear"}, "x")
    proc = as_process(sched)
    want = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0)
    torch.testing.assert_close(proc.alphas_cumprod, want, rtol=1e-12, atol=0)
    x0, eps = _x()
    t = torch.tensor([0, 500, 999])
    a = want[t].view(-1, 1, 1, 1)
    exact = a.sqrt().float() * x0 + (1 - a).sqrt().float() * eps
    torch.testing.assert_close(proc.add_noise(x0, eps, t), exact, rtol=0, atol=1e-6)
    torch.testing.assert_close(
        proc.add_noise(x0, eps, t), sched.add_noise(x0, eps, t), rtol=1e-3, atol=1e-4
    )
    x_in, time = proc.model_input(x0, t)
    assert x_in is x0 and torch.equal(time, t) and proc.num_levels == 1000
    assert proc.log_snr(500) == pytest.approx(math.log(want[500] / (1 - want[500])), rel=1e-9)


@pytest.mark.parametrize("path", ["linear", "gvp"])
@pytest.mark.parametrize("time_input, want", [("u*T", 250.0), ("u", 0.25), ("1-u", 0.75)])
def test_flow_matching_path_time_input_and_log_snr(path, time_input, want):
    proc = noise_process({**FLOW, "flow_path": path, "time_input": time_input}, "x", "dit")
    x0, eps = _x()
    t = torch.tensor([0, 250, 1000])
    xt = proc.add_noise(x0, eps, t)
    assert torch.equal(xt[0], x0[0]) and torch.equal(xt[2], eps[2]), "t=0 is data, t=T pure noise"
    a, b = (1 - 0.25, 0.25) if path == "linear" else (math.cos(math.pi / 8), math.sin(math.pi / 8))
    torch.testing.assert_close(xt[1], a * x0[1] + b * eps[1])
    assert proc.model_input(x0, t)[1][1].item() == pytest.approx(want)
    assert proc.num_levels == 1001, "t = T is a level of a flow model"
    assert proc.log_snr(0) == math.inf and proc.log_snr(1000) == -math.inf
    assert proc.log_snr(250) == pytest.approx(2 * math.log(a / b))
    snrs = [proc.log_snr(t) for t in range(0, 1001, 50)]
    assert all(x > y for x, y in zip(snrs, snrs[1:], strict=False)), "log SNR falls with t"


def test_flow_time_defaults_per_family_and_shift_is_shown_not_applied():
    sd3 = noise_process({**FLOW, "shift": 3.0}, "x", "sd3")
    flux = noise_process({**FLOW, "shift": 3.0, "use_dynamic_shifting": True}, "x", "flux")
    t = torch.tensor([400])
    assert sd3.model_input(torch.zeros(1), t)[1].item() == pytest.approx(400.0)  # sigma * 1000
    assert flux.model_input(torch.zeros(1), t)[1].item() == pytest.approx(0.4)  # sigma
    x0, eps = torch.ones(1, 1), torch.zeros(1, 1)
    assert sd3.add_noise(x0, eps, t).item() == pytest.approx(0.6), "sigma = t/T, unshifted"
    assert "shift 3 (shown, not applied)" in sd3.describe() and "time input u*T" in sd3.describe()
    assert "dynamic shifting" in flux.describe()


def test_edm_matches_the_schedulers_own_sigmas_and_preconditioning():
    from diffusers import EDMEulerScheduler

    own = EDMEulerScheduler()
    proc = noise_process(dict(own.config) | {"_class_name": "EDMEulerScheduler"}, "x", "pixel-unet")
    own.set_timesteps(1000)
    sigmas = own.sigmas[:-1].flip(0).double()  # sigma_min .. sigma_max over the 1000 levels
    t = torch.arange(1000)
    torch.testing.assert_close(proc.sigma(t), sigmas, rtol=1e-5, atol=0)
    x0, eps = _x()
    lvl = torch.tensor([0, 500, 999])
    s = proc.sigma(lvl).float().view(-1, 1, 1, 1)
    torch.testing.assert_close(proc.add_noise(x0, eps, lvl), x0 + s * eps)
    x_in, time = proc.model_input(x0, lvl)
    for i in range(3):
        torch.testing.assert_close(x_in[i], own.precondition_inputs(x0[i], s[i, 0, 0, 0]))
        torch.testing.assert_close(time[i], own.precondition_noise(s[i, 0, 0, 0]).reshape(()))
    assert proc.log_snr(500) == pytest.approx(-2 * math.log(float(proc.sigma(torch.tensor([500])))))


def test_ve_is_geometric_and_calls_the_net_with_sigma():
    proc = noise_process({"_class_name": "ScoreSdeVeScheduler"}, "x", "pixel-unet")
    assert proc.kind == "ve" and proc.num_levels == 2000
    s = proc.sigma(torch.tensor([0, 1999]))
    assert s.tolist() == pytest.approx([0.01, 1348.0])
    x0, eps = _x()
    x_in, time = proc.model_input(x0, torch.tensor([1999, 0, 0]))
    assert x_in is x0 and time[0].item() == pytest.approx(1348.0)


@pytest.mark.parametrize(
    "config, family, match",
    [
        ({"_class_name": "KarrasVeScheduler"}, None, "KarrasVeScheduler is a stochastic"),
        ({"_class_name": "ScoreSdeVpScheduler"}, None, "ScoreSdeVpScheduler is a continuous"),
        ({"_class_name": "CMStochasticIterativeScheduler"}, None, "consistency model"),
        ({**FLOW, "shift": 3.0}, "stable-diffusion", r"\(shift 3.0\) is flow matching but"),
        ({**FLOW}, "pixel-unet", "is flow matching but"),
        ({"_class_name": "DDIMScheduler"}, "flux", "trained with flow matching"),
        ({"_class_name": "EDMEulerScheduler"}, "sd3", "trained with flow matching"),
        ({**FLOW, "flow_path": "cosine"}, "dit", "flow_path 'cosine' is not one of"),
        ({**FLOW, "time_input": "t"}, "dit", "time_input 't' is not one of"),
        ({**FLOW, "num_train_timesteps": 0}, "dit", "num_train_timesteps must be"),
        ({"_class_name": "EDMEulerScheduler", "sigma_min": 5.0, "sigma_max": 1.0}, None, "below"),
    ],
)
def test_what_cannot_be_expressed_or_contradicts_the_net_is_refused(config, family, match):
    with pytest.raises(ExplorerError, match=match) as e:
        noise_process(config, "sched.json", family, "")
    assert "\n" not in str(e.value)
