"""The forward noising process from a model's own scheduler config (variance-preserving family).

Every VP scheduler (DDPM, DDIM, PNDM, DPM-Solver, Euler, Heun, LMS, UniPC, DEIS ...) shares
`x_t = sqrt(a_t) x_0 + sqrt(1 - a_t) eps` with `a_t = alphas_cumprod[t]`. The returned object
is a `DDPMScheduler` (its `add_noise`) whose `alphas_cumprod` equals the one the model's own
scheduler class computes from its config (beta schedule, `rescale_betas_zero_snr` and class
quirks included). Variance-exploding and continuous-sigma schedulers are refused.
"""

from __future__ import annotations

import torch

from explorer.errors import ExplorerError

_REFUSED = {
    "ScoreSdeVeScheduler": "variance-exploding (x_t = x_0 + sigma eps)",
    "KarrasVeScheduler": "variance-exploding with continuous sigmas",
    "ScoreSdeVpScheduler": "continuous-time",
    "CMStochasticIterativeScheduler": "continuous-sigma (consistency model)",
    "EDMEulerScheduler": "continuous-sigma (EDM)",
    "EDMDPMSolverMultistepScheduler": "continuous-sigma (EDM)",
}
_DDPM_KEYS = (
    "num_train_timesteps",
    "beta_start",
    "beta_end",
    "beta_schedule",
    "trained_betas",
    "prediction_type",
    "clip_sample",
)


def vp_scheduler(config: dict, where: str):
    """A `DDPMScheduler` with the model scheduler's `alphas_cumprod`, or a one-line ExplorerError."""
    import diffusers
    from diffusers import DDPMScheduler

    cls_name = str(config.get("_class_name", "DDPMScheduler"))
    why = _REFUSED.get(cls_name) or (
        "flow matching, not a noise schedule" if "FlowMatch" in cls_name else None
    )
    if why:
        raise ExplorerError(
            f"{where}: {cls_name} is {why}; the explorer supports variance-preserving "
            "schedulers (DDPM, DDIM, PNDM, DPM-Solver, Euler ...) only, for now"
        )
    kwargs = {k: config[k] for k in _DDPM_KEYS if k in config}
    if config.get("rescale_betas_zero_snr"):
        kwargs["rescale_betas_zero_snr"] = True
    try:
        sched = DDPMScheduler(**kwargs)
    except (ValueError, TypeError, RuntimeError, NotImplementedError) as e:
        raise ExplorerError(f"{where} is not a usable noise schedule ({_first_line(e)})") from e
    sched.explorer_class = cls_name  # for display only (not in the fingerprint)
    if cls_name == "DDPMScheduler":
        return sched
    own_cls = getattr(diffusers, cls_name, None)
    if own_cls is None or not hasattr(own_cls, "from_config"):
        raise ExplorerError(
            f"{where}: unknown scheduler class '{cls_name}' (not in diffusers "
            f"{diffusers.__version__}); re-save it as DDPMScheduler or DDIMScheduler"
        )
    try:
        own = own_cls.from_config(config)
    except (ValueError, TypeError, RuntimeError, NotImplementedError) as e:
        raise ExplorerError(
            f"{where}: cannot build {cls_name} from its config ({_first_line(e)})"
        ) from e
    ac = getattr(own, "alphas_cumprod", None)
    if not isinstance(ac, torch.Tensor) or ac.shape != sched.alphas_cumprod.shape:
        raise ExplorerError(
            f"{where}: {cls_name} has no variance-preserving alphas_cumprod over "
            f"{sched.config.num_train_timesteps} steps; it is not supported"
        )
    if not torch.allclose(ac.double(), sched.alphas_cumprod.double(), rtol=1e-6, atol=1e-9):
        sched.alphas_cumprod = ac.clone().float()  # a class quirk, e.g. Euler's zero-SNR 2**-24
        sched.explorer_source = cls_name  # enters the fingerprint (see explorer.models.loader)
    return sched


def describe(sched) -> str:
    """The noise schedule in words, e.g. "DDIMScheduler config: linear betas, T=1000"."""
    cfg = sched.config
    betas = "trained betas" if cfg.trained_betas is not None else f"{cfg.beta_schedule} betas"
    zero = ", zero terminal SNR" if getattr(cfg, "rescale_betas_zero_snr", False) else ""
    return (
        f"{getattr(sched, 'explorer_class', 'DDPMScheduler')} config: {betas}{zero}, "
        f"T={cfg.num_train_timesteps}, {cfg.prediction_type} prediction (variance-preserving)"
    )


def _first_line(e: BaseException) -> str:
    text = str(e)
    return text.splitlines()[0] if text else type(e).__name__
