"""Converters from other diffusion codebases' checkpoints to diffusers folders the explorer opens:
guided-diffusion's ADM (`adm`) and SiT / REPA (`sit`)."""
