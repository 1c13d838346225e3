"""A fixed prompt's conditioning for the text-conditioned transformers, encoded as each family's
diffusers pipeline encodes its `prompt` (the conditional branch; empty prompt by default):

- SD3 / SD3.5 (`StableDiffusion3Pipeline`): both CLIP encoders (`text_encoder`, `text_encoder_2`,
  `CLIPTextModelWithProjection`, 77 tokens): penultimate hidden states concatenated, zero-padded
  to the T5 width, then the T5 tokens (`text_encoder_3`, 256; zeros when the folder has no T5)
  appended: `(1, 77 + 256, D)`; pooled: both projections concatenated `(1, P)`.
- FLUX.1 (`FluxPipeline`): CLIP `text_encoder` pooled output `(1, P)`; T5 `text_encoder_2`,
  512 tokens: `(1, 512, D)`.
- PixArt-α/Σ: T5 `text_encoder` (120 tokens for α, 300 for Σ) with its attention mask; the
  prompt lowercased and stripped, as the pipeline does without caption cleaning.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from explorer.errors import ExplorerError
from explorer.models.families.base import Condition, token_ids
from explorer.models.families.latent import SD_INSTALL, load_tokenizer
from explorer.models.weights import load_component


class TextCondition(Condition):
    """Fixed tensors `(1, ...)` of one prompt, expanded to every batch; `tag` names it in keys."""

    def __init__(self, prompt: str, tensors: dict[str, torch.Tensor], extra: str = ""):
        self.prompt, self.tensors, self.extra = prompt, tensors, extra
        self.tag = "prompt:" + prompt + (f";{extra}" if extra else "")

    def kwargs(self, batch: int, labels, device) -> dict:
        return {k: v.to(device).expand(batch, *v.shape[1:]) for k, v in self.tensors.items()}

    def describe(self) -> str:
        text = "the empty prompt" if not self.prompt else f"the fixed prompt {self.prompt!r}"
        return text + (f"; {self.extra.replace('=', ' ')}" if self.extra else "")

    def to(self, device) -> TextCondition:
        self.tensors = {k: v.to(device) for k, v in self.tensors.items()}
        return self


def _transformers(name: str):
    try:
        import transformers
    except ImportError:
        raise ExplorerError(
            f"text-conditioned models need the transformers package: {SD_INSTALL}"
        ) from None
    return getattr(transformers, name)


def encoder_pair(folder: Path, enc: str, tok: str, cls: str, trust_pickle: bool, what: str):
    """(text encoder `cls` from `folder/enc`, tokenizer from `folder/tok`, fingerprint parts)."""
    for sub in (enc, tok):
        if not (folder / sub).is_dir():
            raise ExplorerError(
                f"{folder} has no {sub}/: {what} needs its pipeline's text encoders and "
                "tokenizers; pass the whole pipeline folder"
            )
    model, parts = load_component(folder / enc, _transformers(cls), trust_pickle, "text encoder")
    tokenizer, digest = load_tokenizer(folder / tok, _transformers("AutoTokenizer"))
    return model.eval(), tokenizer, parts + [digest]


@torch.inference_mode()
def sd3(folder: Path, prompt: str, joint_dim: int, trust_pickle: bool):
    """`({"encoder_hidden_states": (1, L, D), "pooled_projections": (1, P)}, parts)`."""
    states, pooled, parts = [], [], []
    for enc, tok in (("text_encoder", "tokenizer"), ("text_encoder_2", "tokenizer_2")):
        model, tokenizer, p = encoder_pair(
            folder, enc, tok, "CLIPTextModelWithProjection", trust_pickle, "SD3"
        )
        out = model(token_ids(tokenizer, prompt)[0], output_hidden_states=True)
        states.append(out.hidden_states[-2].float())
        pooled.append(out[0].float())
        parts += p
    clip = torch.cat(states, dim=-1)
    clip = F.pad(clip, (0, joint_dim - clip.shape[-1]))  # as the pipeline: to the T5 width
    if (folder / "text_encoder_3").is_dir():
        model, tokenizer, p = encoder_pair(
            folder, "text_encoder_3", "tokenizer_3", "T5EncoderModel", trust_pickle, "SD3"
        )
        t5 = model(token_ids(tokenizer, prompt, 256)[0])[0].float()
        parts += p
    else:  # SD3 without T5: the pipeline feeds zeros
        t5 = torch.zeros(1, 256, joint_dim)
        parts.append("no-t5")
    seq = torch.cat([clip, t5], dim=-2)
    return {
        "encoder_hidden_states": seq.clone(),
        "pooled_projections": torch.cat(pooled, -1).clone(),
    }, parts


@torch.inference_mode()
def flux(folder: Path, prompt: str, trust_pickle: bool):
    """`({"encoder_hidden_states": (1, 512, D), "pooled_projections": (1, P)}, parts)`."""
    clip, ctok, parts = encoder_pair(
        folder, "text_encoder", "tokenizer", "CLIPTextModel", trust_pickle, "FLUX"
    )
    t5, ttok, p = encoder_pair(
        folder, "text_encoder_2", "tokenizer_2", "T5EncoderModel", trust_pickle, "FLUX"
    )
    pooled = clip(token_ids(ctok, prompt)[0]).pooler_output.float()
    seq = t5(token_ids(ttok, prompt, 512)[0])[0].float()
    return {"encoder_hidden_states": seq.clone(), "pooled_projections": pooled.clone()}, parts + p


@torch.inference_mode()
def pixart(folder: Path, prompt: str, length: int, trust_pickle: bool):
    """`({"encoder_hidden_states": (1, length, D), "encoder_attention_mask": (1, length)}, parts)`."""
    t5, tok, parts = encoder_pair(
        folder, "text_encoder", "tokenizer", "T5EncoderModel", trust_pickle, "PixArt"
    )
    ids, mask = token_ids(tok, prompt.lower().strip(), length)
    seq = t5(ids, attention_mask=mask)[0].float()
    return {"encoder_hidden_states": seq.clone(), "encoder_attention_mask": mask.float()}, parts
