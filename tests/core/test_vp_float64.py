"""VP noising reads alphas_cumprod built in float64 and cast after indexing, as ADM does."""

import math

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler

from explorer.models.families.noise_process import VPProcess, alphas_cumprod64


def _adm_alphas_cumprod(kind: str, steps: int = 1000) -> np.ndarray:
    """guided-diffusion's `get_named_beta_schedule`, written from its definition (numpy float64)."""
    if kind == "linear":
        scale = 1000 / steps
        betas = np.linspace(scale * 0.0001, scale * 0.02, steps, dtype=np.float64)
    else:  # cosine
        f = [math.cos((i / steps + 0.008) / 1.008 * math.pi / 2) ** 2 for i in range(steps + 1)]
        betas = np.array([min(1 - f[i + 1] / f[i], 0.999) for i in range(steps)])
    return np.cumprod(1.0 - betas)


@pytest.mark.parametrize(
    "kind,config", [("linear", {}), ("cosine", {"beta_schedule": "squaredcos_cap_v2"})]
)
def test_alphas_cumprod_matches_adm_in_float64(kind, config):
    ac = alphas_cumprod64(DDPMScheduler(**config))
    ref = _adm_alphas_cumprod(kind)
    assert ac.dtype == torch.float64
    assert np.allclose(ac.numpy(), ref, rtol=1e-12, atol=0), np.abs(ac.numpy() - ref).max()


def test_add_noise_casts_after_indexing():
    proc = VPProcess(DDPMScheduler())
    x0, eps = torch.ones(3, 1, 2, 2), torch.ones(3, 1, 2, 2)
    t = torch.tensor([0, 10, 999])
    got = proc.add_noise(x0, torch.zeros_like(eps), t)[:, 0, 0, 0]
    ref = _adm_alphas_cumprod("linear")[[0, 10, 999]]
    want = torch.tensor(np.sqrt(ref), dtype=torch.float32)
    assert torch.equal(got, want), (got, want)
    noise_part = proc.add_noise(torch.zeros_like(x0), eps, t)[:, 0, 0, 0]
    want_noise = torch.tensor(np.sqrt(1 - ref), dtype=torch.float32)
    assert torch.equal(noise_part, want_noise), (noise_part, want_noise)
    # float32 betas (diffusers' own add_noise) put sqrt(1 - a_0) 8.3e-5 away from 0.01
    own = DDPMScheduler().add_noise(torch.zeros_like(x0), eps, t)[0, 0, 0, 0]
    assert abs(float(own) / 0.01 - 1) > 5e-5 and abs(float(noise_part[0]) / 0.01 - 1) < 1e-6
