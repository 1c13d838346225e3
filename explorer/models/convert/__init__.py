"""Converters from other diffusion codebases' checkpoints to diffusers folders the explorer opens."""
