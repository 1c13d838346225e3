"""Models: a diffusion model folder (or built-in name, hub id, `random:<model>`) -> `LoadedModel`.

- `loader`: resolve and load a model with its own scheduler and family adapter, fingerprinted;
- `weights`: `from_pretrained` from local safetensors (pickle only when trusted), one-line errors;
- `families/`: one adapter per model family (how images are encoded and the model conditioned);
- `layers`, `hooks`: the probe-point catalogue in forward order and per-thread forward hooks;
- `convert/`: other codebases' checkpoints (guided-diffusion ADM) -> diffusers folders;
- `accel`, `device`: speed options and the compute device / precision; `train`: the small DDPM
  trainer of the built-in models.

Submodules are imported explicitly; this package imports nothing (torch loads with `loader`).
"""
