"""Stable Diffusion XL end to end on a tiny pipeline folder built here: `explorer layers`, the
conditioning (equal to diffusers' own pipeline), a stored feature equal to a pass recomputed by
hand, early exit, extract and sweep via the CLI, the Explore page, and incomplete folders."""

from __future__ import annotations

import contextlib
import io
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from explorer.cli import main
from explorer.errors import ExplorerError
from explorer.features.capture import capture_pass, extract_features, image_noise
from explorer.features.extract import ensure_features, load_features
from explorer.features.keys import Selection, feature_key
from explorer.features.store import FeatureStore
from explorer.models.layers import build_catalogue, first_tensor
from explorer.models.loader import load_model
from tests.conftest import make_tiny_dataset
from tests.families.tiny import save_family
from tests.families.tiny_sdxl import PROJECTION, SCALING, TIME_DIM, WIDTHS, save_sdxl

SIDE = 16  # the tiny pipeline's images: 16x16 pixels, 8x8 latents


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return save_sdxl(tmp_path_factory.mktemp("sdxl") / "sdxl")


def _hand_conditioning(folder: Path, prompt: str) -> dict:
    """The U-Net's keyword arguments by the pipeline's formula, from the saved components."""
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    states = []
    for enc_cls, sub in ((CLIPTextModel, ""), (CLIPTextModelWithProjection, "_2")):
        tok = CLIPTokenizer.from_pretrained(folder / f"tokenizer{sub}")
        enc = enc_cls.from_pretrained(folder / f"text_encoder{sub}")
        ids = tok(
            prompt, padding="max_length", max_length=tok.model_max_length, return_tensors="pt"
        ).input_ids
        out = enc(ids, output_hidden_states=True)
        states.append(out.hidden_states[-2])  # penultimate layer, as SDXL
    return {
        "encoder_hidden_states": torch.cat(states, dim=-1),  # (1, 8, 16 + 24)
        "added_cond_kwargs": {
            "text_embeds": out.text_embeds,  # pooled + projected, from text_encoder_2
            "time_ids": torch.tensor([[SIDE, SIDE, 0, 0, SIDE, SIDE]], dtype=torch.float32),
        },
    }


def _hand_features(folder: Path, images: torch.Tensor, idx, t: int, lay) -> np.ndarray:
    """`images (B, 3, 16, 16)` in [-1, 1]: encode with the VAE, noise at t with the scheduler's own alphas_cumprod, call the U-Net
    with the conditioning built above, read the block, pool 2x2."""
    import diffusers

    net = diffusers.UNet2DConditionModel.from_pretrained(folder / "unet").eval()
    vae = diffusers.AutoencoderKL.from_pretrained(folder / "vae")
    assert vae.config.scaling_factor == SCALING
    sched = diffusers.EulerDiscreteScheduler.from_pretrained(folder / "scheduler")
    with torch.no_grad():
        z = vae.encode(images).latent_dist.mean * vae.config.scaling_factor
        kw = _hand_conditioning(folder, "")
        b = len(z)
        kw["encoder_hidden_states"] = kw["encoder_hidden_states"].expand(b, -1, -1)
        kw["added_cond_kwargs"] = {k: v.expand(b, -1) for k, v in kw["added_cond_kwargs"].items()}
        a = sched.alphas_cumprod[t]
        xt = a.sqrt() * z + (1 - a).sqrt() * image_noise(idx, 0, tuple(z.shape[1:]))
        got = {}

        def read(module, inputs, output) -> None:  # returns None: the output is left as it is
            got["x"] = first_tensor(output)

        h = dict(net.named_modules())[lay.hook].register_forward_hook(read)
        net(xt, torch.full((b,), t), **kw)
        h.remove()
    return F.adaptive_avg_pool2d(got["x"].float(), 2).flatten(1).numpy()


def test_layers_cli_names_the_family_and_its_conditioning(folder, capsys):
    assert main(["layers", "--model", str(folder)]) == 0
    out = capsys.readouterr().out
    cat = build_catalogue(load_model(str(folder)).denoiser)
    assert all(lay.name in out for lay in cat), out
    assert cat[0].name == "conv_in" and any(lay.name == "mid_block" for lay in cat), cat
    assert "family: sdxl" in out and f"× {SCALING:g}" in out, out
    assert f"original {SIDE}×{SIDE}, crop (0, 0), target {SIDE}×{SIDE}" in out, out


@pytest.mark.parametrize("prompt", [None, "cat"])
def test_conditioning_equals_the_sdxl_pipelines(folder, prompt):
    """diffusers' `StableDiffusionXLPipeline.encode_prompt` (the conditional branch) and its
    time ids are the oracle; the empty prompt is encoded, never zeroed."""
    import diffusers

    cond = load_model(str(folder), prompt=prompt).adapter.condition
    pipe = diffusers.StableDiffusionXLPipeline.from_pretrained(folder)
    emb, _, pooled, _ = pipe.encode_prompt(prompt or "", do_classifier_free_guidance=False)
    assert cond.embedding.shape == (1, 8, sum(WIDTHS)) and cond.pooled.shape == (1, PROJECTION)
    torch.testing.assert_close(cond.embedding, emb, rtol=0, atol=0)
    torch.testing.assert_close(cond.pooled, pooled, rtol=0, atol=0)
    ids = pipe._get_add_time_ids(
        (SIDE, SIDE), (0, 0), (SIDE, SIDE), torch.float32, text_encoder_projection_dim=PROJECTION
    )
    assert torch.equal(cond.ids, ids) and pipe.unet.config.addition_time_embed_dim == TIME_DIM
    assert pooled.abs().sum() > 0, "the empty prompt's pooled embedding is not zeroed"
    kw = load_model(str(folder), prompt=prompt).adapter.net_kwargs(3)
    assert kw["encoder_hidden_states"].shape == (3, 8, sum(WIDTHS))
    assert kw["added_cond_kwargs"]["time_ids"].shape == (3, 6)


def test_stored_feature_equals_a_pass_by_hand_and_early_exit_equals_full(folder, tmp_path):
    ds = make_tiny_dataset(n=20)
    model = load_model(str(folder))
    assert model.adapter.key_parts() == {"family": "sdxl", "cond": "prompt:"}
    cat = build_catalogue(model.denoiser)
    lay = next(lay for lay in cat if lay.kind.startswith("resnet+attn"))  # reads the prompt
    sel = Selection.of(ds, "train", 8)
    store = FeatureStore(tmp_path / "c")
    ensure_features(
        model, ds, sel, timesteps=[300], layers=[lay], pools=["2"], store=store, progress=False
    )
    got = load_features(model, ds, sel, t=300, layer=lay.name, pool_name="2", store=store)
    want = _hand_features(folder, model.preprocess(ds.images(sel.indices)), sel.indices, 300, lay)
    err = float(np.abs(got.astype(np.float32) - want).max())
    print(
        f"sdxl {lay.name} t=300: max |stored - by hand| = {err:.3g} (scale {np.abs(want).max():.3g})"
    )
    np.testing.assert_allclose(got.astype(np.float32), want, rtol=2e-3, atol=2e-3)
    x = model.preprocess(ds.images(sel.indices))
    exact = capture_pass(  # the same pass before float16 storage
        model.denoiser,
        model.scheduler,
        model.adapter.encode(x),
        image_noise(sel.indices, 0, model.adapter.input_shape),
        timestep=300,
        layers=[lay],
        pools=["2"],
        net_kwargs=model.adapter.net_kwargs(len(x)),
    )[(lay.name, "2")].numpy()
    print(f"  before float16 storage: {float(np.abs(exact - want).max()):.3g}")
    np.testing.assert_allclose(exact, want, rtol=1e-4, atol=1e-4)
    key = feature_key(model, ds, sel, 300, lay.name, "2", 0)
    assert store.manifest(key)["family"] == "sdxl", "the family is recorded with the entry"

    kw = dict(timesteps=[300], layers=[cat[1]], pools=["2", "max"], indices=sel.indices)
    early = extract_features(model, x, **kw)
    full = extract_features(model, x, stop_early=False, **kw)
    assert early.keys() == full.keys() and early
    for k in early:
        np.testing.assert_array_equal(early[k], full[k], err_msg=f"early exit changed {k}")


def test_sdxl_keys_never_meet_sd_keys(folder, tmp_path):
    """The same prompt on an SD and an SDXL folder: different family in the key parts."""
    ds = make_tiny_dataset(n=20)
    sel = Selection.of(ds, "train", 8)
    sd = load_model(str(save_family("sd", tmp_path / "sd")))
    xl = load_model(str(folder))
    assert sd.adapter.key_parts() == {"family": "stable-diffusion", "cond": "prompt:"}
    assert xl.adapter.key_parts()["family"] == "sdxl"
    assert feature_key(sd, ds, sel, 10, "mid_block", "2", 0) != feature_key(
        xl, ds, sel, 10, "mid_block", "2", 0
    )


def test_extract_and_sweep_cli(folder, tmp_path):
    common = ["--model", str(folder), "--dataset", "digits", "--limit", "20"]
    common += ["--cache-dir", str(tmp_path / "c")]
    args = ["--timesteps", "10", "--layers", "1,4", "--pool", "2"]
    assert main(["extract", *common, "--prompt", "cat", *args]) == 0
    out = tmp_path / "r.csv"
    sweep = ["--timesteps", "10", "--layers", "4", "--pools", "1", "--heads", "linear"]
    assert main(["sweep", *common, *sweep, "--out", str(out)]) == 0
    from explorer.results import load_table

    df = load_table(out)
    ours = df[(df["model"] == str(folder)) & (df["metric"] == "top1") & (df["split"] == "test")]
    assert len(ours) == 1 and 0 <= float(ours["value"].iloc[0]) <= 1, df
    assert {"pixels", "random:" + str(folder)} <= set(df["model"]), "the baselines ran too"


def _run_cli(args: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(args)
    return code, err.getvalue()


@pytest.mark.parametrize(
    "broken, message",
    [
        ("no-text-encoder-2", "has an SDXL U-Net but no text_encoder_2/"),
        ("refiner-widths", "only the SDXL base layout (no aesthetic score) is supported"),
    ],
)
def test_incomplete_or_mismatched_folder_is_one_line_and_writes_nothing(
    folder, tmp_path, broken, message
):
    bad = tmp_path / broken
    if broken == "no-text-encoder-2":
        shutil.copytree(folder, bad)
        shutil.rmtree(bad / "text_encoder_2")
    else:  # a refiner-like U-Net: 5 time ids (aesthetic score) + the pooled embedding
        save_sdxl(bad, projection_class_embeddings_input_dim=5 * TIME_DIM + PROJECTION)
    with pytest.raises(ExplorerError, match=re.escape(message)):
        load_model(str(bad))
    cache = tmp_path / "cache"
    code, err = _run_cli(
        ["extract", "--model", str(bad), "--dataset", "digits", "--limit", "20"]
        + ["--cache-dir", str(cache), "--timesteps", "10", "--layers", "1"]
    )
    assert code == 2 and "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert message in last and len([ln for ln in err.splitlines() if "error" in ln]) == 1, err
    assert not cache.exists() or not any(p.is_file() for p in cache.rglob("*")), (
        f"nothing written: {sorted(cache.rglob('*'))}"
    )


@pytest.mark.slow
def test_explore_page_probes_an_sdxl_block(folder):
    from streamlit.testing.v1 import AppTest

    app = str(Path(__file__).resolve().parents[2] / "app.py")
    at = AppTest.from_file(app, default_timeout=600)
    at.query_params.update(
        {"model": str(folder), "dataset": "digits", "train": "40", "test": "20", "proj": "pca"}
    )
    at.run()
    assert not at.exception and not at.error, [e.value for e in (*at.exception, *at.error)]
    top1 = [m.value for m in at.metric if m.label == "Top-1 (test)"]
    assert top1 and top1[0].endswith("%"), (
        f"no probe accuracy shown: {[m.label for m in at.metric]}"
    )
