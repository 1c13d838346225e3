"""The forward noising process from a model's own scheduler config (variance-preserving family).

Every VP scheduler (DDPM, DDIM, PNDM, DPM-Solver, Euler, Heun, LMS, UniPC, DEIS ...) shares
`x_t = sqrt(a_t) x_0 + sqrt(1 - a_t) eps` with `a_t = alphas_cumprod[t]`. The returned object
is a `DDPMScheduler` (its `add_noise`) whose `alphas_cumprod` equals the one the model's own
scheduler class computes from its config (beta schedule, `rescale_betas_zero_snr` and class
quirks included). Variance-exploding, EDM and flow-matching schedulers are refused here: they
are not VP; `noise_process` builds their processes and sends only VP configs here.
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


MAX_TIMESTEPS = 100_000  # real models train on 1000 to 4000 steps


def vp_scheduler(config: dict, where: str):
    """A `DDPMScheduler` with the model scheduler's `alphas_cumprod`, or a one-line ExplorerError.

    The schedule must be a valid forward process (`check_schedule`): the features of an
    impossible one would be computed, cached and probed as if they meant something."""
    import diffusers
    from diffusers import DDPMScheduler

    steps = config.get("num_train_timesteps", 1000)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ExplorerError(
            f"{where}: num_train_timesteps must be a positive integer, got {steps!r}"
        )
    if steps > MAX_TIMESTEPS:
        raise ExplorerError(
            f"{where}: num_train_timesteps must be at most {MAX_TIMESTEPS}, got {steps}; "
            "real models use 1000 to 4000"
        )
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
    check_schedule(sched, config, where)
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
        _check_alphas_cumprod(ac, f"{where} ({cls_name})")
        sched.alphas_cumprod = ac.clone().float()  # a class quirk, e.g. Euler's zero-SNR 2**-24
        sched.explorer_source = cls_name  # enters the fingerprint (see explorer.models.loader)
    return sched


def check_schedule(sched, config: dict, where: str) -> None:
    """Refuse a schedule that is not a forward noising process, naming the bad values: one
    beta per step, betas in (0, 1) (the last may be 1 for zero terminal SNR), growing from
    beta_start to beta_end, so alphas_cumprod lies in (0, 1] and never increases."""
    cfg = sched.config
    bad = f"{where} is not a valid noise schedule"
    steps = int(cfg.num_train_timesteps)
    trained = cfg.trained_betas
    if trained is not None and len(trained) != steps:
        raise ExplorerError(
            f"{bad}: trained_betas has {len(trained)} values for num_train_timesteps={steps}; "
            "give one beta per step"
        )
    linear = trained is None and cfg.beta_schedule in ("linear", "scaled_linear")
    if linear and cfg.beta_start > cfg.beta_end:
        raise ExplorerError(
            f"{bad}: beta_start ({cfg.beta_start:g}) is above beta_end ({cfg.beta_end:g}); "
            "the noise must grow with t, swap them"
        )
    betas = sched.betas.double()
    inner = betas[:-1] if getattr(cfg, "rescale_betas_zero_snr", False) else betas
    if not (bool(((inner > 0) & (inner < 1)).all()) and 0 < float(betas[-1]) <= 1):
        given, fix = (
            (f"{len(trained)} trained_betas", "trained_betas")
            if trained is not None
            else (
                f"beta_start={cfg.beta_start:g}, beta_end={cfg.beta_end:g}, {cfg.beta_schedule}",
                "beta_start and beta_end",
            )
        )
        raise ExplorerError(
            f"{bad}: betas must lie in (0, 1), but these run from {float(betas.min()):g} to "
            f"{float(betas.max()):g} ({given}); fix {fix}"
        )
    _check_alphas_cumprod(sched.alphas_cumprod, where)


def _check_alphas_cumprod(ac: torch.Tensor, where: str) -> None:
    ac = ac.double()
    problem = None
    if not bool(torch.isfinite(ac).all()):
        problem = "some are not finite"
    elif float(ac.max()) > 1 or float(ac[0]) <= 0 or float(ac.min()) < 0:
        problem = f"they run from {float(ac.min()):g} to {float(ac.max()):g}"
    elif bool((up := ac[1:] > ac[:-1] + 1e-6).any()):  # below 1e-6 all is noise: Euler's
        t = int(torch.nonzero(up)[0]) + 1  # zero-SNR end (2**-24) may sit above its neighbour
        problem = f"they increase at t={t} ({float(ac[t - 1]):g} to {float(ac[t]):g})"
    if problem:
        raise ExplorerError(
            f"{where} is not a valid noise schedule: alphas_cumprod must be in (0, 1] and "
            f"non-increasing, but {problem}"
        )


def describe(sched) -> str:
    """The noise schedule in words, e.g. "DDIMScheduler config: linear betas, T=1000"."""
    if text := getattr(sched, "explorer_text", None):  # a source without noise (an encoder)
        return text
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
