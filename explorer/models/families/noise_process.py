"""The forward noise process of a model, from its own scheduler config: one small interface for
every family.

A level is always an integer `t` in `[0, num_levels)`; a process maps it to

- `add_noise(x0, eps, t)`: `x_t` from clean inputs `x0 (B, ...)` and noise `eps` (same shape),
  `t (B,)` long;
- `model_input(x_t, t)`: `(x_in, time)`, what the denoiser is called with: the (preconditioned)
  input and its time input `(B,)`;
- `log_snr(t)`: log(signal² / noise²) of level t, the one axis shared by all families (±inf at
  the ends where a path reaches pure data or pure noise);
- `describe()`: the process in words.

Kinds (`noise_process` picks one from the config's `_class_name`):

- **VP** (DDPM, DDIM, PNDM, DPM-Solver, Euler ...): `x_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps`,
  t in [0, T-1], the denoiser gets t. `VPProcess` wraps the `DDPMScheduler` of
  `schedulers.vp_scheduler`, so its bytes are those of every earlier release.
- **Flow matching** (`FlowMatchEulerDiscreteScheduler` and friends): t in [0, T] (both ends
  included), path time `u = t / T` (0 data, 1 noise); `linear`: `x = (1-u) x0 + u eps`, `gvp`:
  `x = cos(pi u/2) x0 + sin(pi u/2) eps` (the config key `flow_path`). The denoiser's time input
  (`time_input`): `u*T` (SD3: sigma * 1000), `u` (FLUX, REPA's SiT) or `1-u` (the original SiT,
  whose t=1 is data). An inference `shift` is shown, never applied: sigma is set directly.
- **EDM** (`EDMEulerScheduler`, `EDMDPMSolverMultistepScheduler`): `x = x0 + sigma eps` with
  sigma on the config's own schedule (Karras rho, or exponential) from `sigma_min` (t=0) to
  `sigma_max` (t=T-1); the denoiser gets `c_in x` with `c_in = 1/sqrt(sigma² + sigma_data²)`
  and `c_noise = log(sigma)/4`, as the scheduler's `precondition_inputs`/`precondition_noise`.
- **VE** (`ScoreSdeVeScheduler`): `x = x0 + sigma eps`, sigma geometric from `sigma_min` (t=0) to
  `sigma_max` (t=T-1); the denoiser gets x and sigma, as `ScoreSdeVePipeline` calls it.
"""

from __future__ import annotations

import math

import torch

from explorer.errors import ExplorerError
from explorer.models.families.schedulers import MAX_TIMESTEPS, describe, vp_scheduler

FLOW_PATHS = ("linear", "gvp")
TIME_INPUTS = ("u*T", "u", "1-u")
FLOW_FAMILIES = ("dit", "sd3", "flux")  # denoisers a flow-matching scheduler may drive
FLOW_ONLY = ("sd3", "flux")  # trained with flow matching: a VP or EDM schedule contradicts them
FLOW_TIME = {"flux": "u"}  # the family's own time input when the config names none (else u*T)
EDM_CLASSES = ("EDMEulerScheduler", "EDMDPMSolverMultistepScheduler")
REFUSED = {
    "KarrasVeScheduler": "a stochastic sampler whose model reads (x+1)/2 and sigma/2",
    "ScoreSdeVpScheduler": "a continuous-time VP SDE (t in [0, 1], no saved steps)",
    "CMStochasticIterativeScheduler": "a consistency model (its output skips the denoiser)",
}


def _view(coef: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """`(B,)` float64 coefficients -> `(B, 1, ..., 1)` in `like`'s dtype and device."""
    return coef.to(like.device, like.dtype).view(-1, *([1] * (like.dim() - 1)))


class NoiseProcess:
    """Base of the non-VP processes; see the module docstring for the interface."""

    kind = "none"
    config: dict  # the scheduler config as saved (its canonical form enters the fingerprint)

    @property
    def num_train_timesteps(self) -> int:
        return int(self.config["num_train_timesteps"])

    @property
    def num_levels(self) -> int:
        """Levels t run over `[0, num_levels)`."""
        return self.num_train_timesteps

    def add_noise(self, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a, b = self.coefficients(t)
        return _view(a, x0) * x0 + _view(b, x0) * eps

    def coefficients(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`(B,)` float64 signal and noise scales of levels `t (B,)`."""
        raise NotImplementedError

    def model_input(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def log_snr(self, t: int) -> float:
        a, b = (float(c) for c in self.coefficients(torch.tensor([int(t)])))
        if b == 0:
            return math.inf
        if a == 0:
            return -math.inf
        return 2 * (math.log(a) - math.log(b))

    def describe(self) -> str:
        raise NotImplementedError


def alphas_cumprod64(scheduler) -> torch.Tensor:
    """`(T,)` float64 `alphas_cumprod` of a VP scheduler, from its config's betas in float64.

    diffusers builds betas in float32, which shifts `sqrt(1 - a_t)` by 8.3e-5 (relative) at t=0
    on DDPM's linear schedule; ADM builds them in float64 and casts after indexing. A class's own
    quirk (`explorer_source`, e.g. Euler's zero-SNR end) or a schedule not rebuilt here keeps
    the scheduler's float32 values."""
    if (done := getattr(scheduler, "explorer_ac64", None)) is not None:
        return done
    ac = _alphas_cumprod64(scheduler)
    scheduler.explorer_ac64 = ac  # built once per scheduler, not per batch
    return ac


def _alphas_cumprod64(scheduler) -> torch.Tensor:
    ac32 = scheduler.alphas_cumprod
    cfg = scheduler.config
    steps = int(cfg.num_train_timesteps)
    kind = getattr(cfg, "beta_schedule", None)
    lo, hi = getattr(cfg, "beta_start", None), getattr(cfg, "beta_end", None)
    if getattr(scheduler, "explorer_source", None) or kind is None:
        return ac32.double()
    if getattr(cfg, "trained_betas", None) is not None:
        betas = torch.tensor(cfg.trained_betas, dtype=torch.float64)
    elif kind == "linear":
        betas = torch.linspace(lo, hi, steps, dtype=torch.float64)
    elif kind == "scaled_linear":
        betas = torch.linspace(lo**0.5, hi**0.5, steps, dtype=torch.float64) ** 2
    elif kind == "squaredcos_cap_v2":

        def bar(x: float) -> float:
            return math.cos((x + 0.008) / 1.008 * math.pi / 2) ** 2

        betas = torch.tensor(
            [min(1 - bar((i + 1) / steps) / bar(i / steps), 0.999) for i in range(steps)],
            dtype=torch.float64,
        )
    elif kind == "sigmoid":
        betas = torch.sigmoid(torch.linspace(-6, 6, steps, dtype=torch.float64)) * (hi - lo) + lo
    else:
        return ac32.double()
    if getattr(cfg, "rescale_betas_zero_snr", False):
        from diffusers.schedulers.scheduling_ddpm import rescale_zero_terminal_snr

        betas = rescale_zero_terminal_snr(betas)
    ac = torch.cumprod(1.0 - betas, dim=0)
    if ac.shape != ac32.shape or not torch.allclose(ac.float(), ac32, rtol=1e-4, atol=1e-6):
        return ac32.double()  # not the schedule the scheduler computed: keep its own
    return ac


class VPProcess(NoiseProcess):
    """A variance-preserving schedule behind the interface: `scheduler` is the `DDPMScheduler` of
    `schedulers.vp_scheduler` (or an encoder's one-level `NoNoise`), used exactly as before."""

    kind = "vp"

    def __init__(self, scheduler):
        self.scheduler = scheduler
        self.alphas_cumprod = alphas_cumprod64(scheduler)  # (T,) float64

    @property
    def config(self):
        return self.scheduler.config

    @property
    def num_train_timesteps(self) -> int:
        return int(self.scheduler.config.num_train_timesteps)

    def add_noise(self, x0, eps, t):
        a, b = self.coefficients(t)  # float64, cast after indexing (as ADM does)
        return _view(a, x0) * x0 + _view(b, x0) * eps

    def coefficients(self, t):
        a = self.alphas_cumprod[t.cpu()]
        return a.sqrt(), (1 - a).sqrt()

    def model_input(self, x, t):
        return x, t

    def describe(self) -> str:
        return describe(self.scheduler)


class FlowProcess(NoiseProcess):
    """Rectified flow / flow matching: t in [0, T], `u = t/T`; see the module docstring."""

    kind = "flow"

    def __init__(self, config: dict, family: str | None, where: str):
        self.config = config
        self.where = where
        self.path = config.get("flow_path", "linear")
        self.time_input = config.get("time_input", FLOW_TIME.get(family or "", "u*T"))
        if self.path not in FLOW_PATHS:
            raise ExplorerError(
                f"{where}: flow_path {self.path!r} is not one of {', '.join(FLOW_PATHS)}"
            )
        if self.time_input not in TIME_INPUTS:
            raise ExplorerError(
                f"{where}: time_input {self.time_input!r} is not one of {', '.join(TIME_INPUTS)}"
            )

    @property
    def num_levels(self) -> int:
        return self.num_train_timesteps + 1  # t = T (pure noise) is a level too

    def u(self, t: torch.Tensor) -> torch.Tensor:
        return t.to(torch.float64) / self.num_train_timesteps

    def coefficients(self, t):
        u = self.u(t)
        if self.path == "linear":
            return 1 - u, u
        # gvp: exact at the ends (cos(pi/2) is 6e-17 in floating point)
        a = torch.where(u >= 1, torch.zeros_like(u), torch.cos(math.pi * u / 2))
        return a, torch.sin(math.pi * u / 2)

    def model_input(self, x, t):
        u = self.u(t)
        time = {"u*T": u * self.num_train_timesteps, "u": u, "1-u": 1 - u}[self.time_input]
        return x, time.to(torch.float32)

    def describe(self) -> str:
        cfg = self.config
        cls = cfg.get("_class_name", "FlowMatchEulerDiscreteScheduler")
        shift = cfg.get("shift")
        shown = (
            ""
            if shift in (None, 1, 1.0)
            else f", trained with shift {float(shift):g} (shown, not applied)"
        )
        if cfg.get("use_dynamic_shifting"):
            shown += ", dynamic shifting at sampling (not applied)"
        path = (
            "x = (1-u) x0 + u eps" if self.path == "linear" else "x = cos(πu/2) x0 + sin(πu/2) eps"
        )
        return (
            f"{cls} config: flow matching, {self.path} path {path}, u = t/T, "
            f"T={self.num_train_timesteps}, time input {self.time_input}{shown}"
        )


class SigmaProcess(NoiseProcess):
    """`x = x0 + sigma eps` (EDM, with preconditioning; VE, without); see the module docstring."""

    def __init__(self, config: dict, where: str):
        self.config = config
        cls = config.get("_class_name", "")
        self.kind = "edm" if cls in EDM_CLASSES else "ve"
        default = (0.002, 80.0) if self.kind == "edm" else (0.01, 1348.0)
        self.sigma_min = _positive(config.get("sigma_min", default[0]), "sigma_min", where)
        self.sigma_max = _positive(config.get("sigma_max", default[1]), "sigma_max", where)
        if self.sigma_min >= self.sigma_max:
            raise ExplorerError(
                f"{where}: sigma_min ({self.sigma_min:g}) must be below sigma_max ({self.sigma_max:g})"
            )
        self.sigma_data = _positive(config.get("sigma_data", 0.5), "sigma_data", where)
        self.schedule = (
            config.get("sigma_schedule", "karras") if self.kind == "edm" else "geometric"
        )
        if self.schedule not in ("karras", "exponential", "geometric"):
            raise ExplorerError(
                f"{where}: sigma_schedule {self.schedule!r} is not karras or exponential"
            )
        self.rho = _positive(config.get("rho", 7.0), "rho", where)

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        """`(B,)` float64 sigma of levels t: sigma_min at t=0, sigma_max at t=T-1."""
        r = t.to(torch.float64) / max(self.num_train_timesteps - 1, 1)
        lo, hi = self.sigma_min, self.sigma_max
        if self.schedule == "karras":
            a, b = lo ** (1 / self.rho), hi ** (1 / self.rho)
            return (a + r * (b - a)) ** self.rho
        return torch.exp(math.log(lo) + r * (math.log(hi) - math.log(lo)))

    def coefficients(self, t):
        s = self.sigma(t)
        return torch.ones_like(s), s

    def model_input(self, x, t):
        s = self.sigma(t)
        if self.kind == "ve":
            return x, s.to(torch.float32)
        c_in = 1 / torch.sqrt(s**2 + self.sigma_data**2)
        return _view(c_in, x) * x, (0.25 * torch.log(s)).to(torch.float32)

    def describe(self) -> str:
        cls = self.config.get("_class_name", "")
        if self.kind == "ve":
            return (
                f"{cls} config: variance-exploding x = x0 + σ eps, σ geometric from "
                f"{self.sigma_min:g} (t=0) to {self.sigma_max:g} (t={self.num_train_timesteps - 1}), "
                "time input σ"
            )
        return (
            f"{cls} config: EDM x = x0 + σ eps, {self.schedule} σ from {self.sigma_min:g} (t=0) "
            f"to {self.sigma_max:g} (t={self.num_train_timesteps - 1}), input × c_in "
            f"(σ_data {self.sigma_data:g}), time input log(σ)/4"
        )


def _positive(value, name: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ExplorerError(f"{where}: {name} must be a positive number, not {value!r}")
    return float(value)


def as_process(scheduler) -> NoiseProcess:
    """A `NoiseProcess` as it is; a diffusers VP scheduler (or an encoder's `NoNoise`) wrapped."""
    return scheduler if isinstance(scheduler, NoiseProcess) else VPProcess(scheduler)


def noise_process(config: dict, where: str, family: str | None = None, net: str = ""):
    """The forward process of a saved scheduler `config` for a denoiser of `family` (class `net`):
    a `DDPMScheduler` for VP (as `vp_scheduler` builds it), else a `NoiseProcess`; a one-line
    ExplorerError for a class that cannot be expressed or a scheduler that contradicts the net."""
    from diffusers.configuration_utils import FrozenDict

    cls = str(config.get("_class_name", "DDPMScheduler"))
    if why := REFUSED.get(cls):
        raise ExplorerError(f"{where}: {cls} is {why}; the explorer cannot express it")
    flow = "FlowMatch" in cls
    whose = f"the denoiser is a {net or family}"
    if flow and family is not None and family not in FLOW_FAMILIES:
        shift = config.get("shift")
        raise ExplorerError(
            f"{where}: {cls}{f' (shift {shift})' if shift is not None else ''} is flow matching "
            f"but {whose}, trained with a noise schedule; restore the model's own scheduler/"
        )
    if not flow and family in FLOW_ONLY:
        raise ExplorerError(
            f"{where}: {cls} is not flow matching but {whose}, trained with flow matching; "
            "restore the model's own scheduler/ (FlowMatchEulerDiscreteScheduler)"
        )
    if not (flow or cls in EDM_CLASSES or cls == "ScoreSdeVeScheduler"):
        return vp_scheduler(config, where)
    steps = config.get("num_train_timesteps", 2000 if cls == "ScoreSdeVeScheduler" else 1000)
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= MAX_TIMESTEPS:
        raise ExplorerError(
            f"{where}: num_train_timesteps must be an integer from 1 to {MAX_TIMESTEPS}, got {steps!r}"
        )
    frozen = FrozenDict({**config, "num_train_timesteps": steps})
    return FlowProcess(frozen, family, where) if flow else SigmaProcess(frozen, where)


def default_process(family: str | None):
    """The process of a folder without a scheduler config: DDPM's 1000 linear steps, or for a
    family trained with flow matching, the linear path over 1000 steps."""
    if family in FLOW_ONLY:
        return noise_process(
            {"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000},
            "default scheduler",
            family,
        )
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")
