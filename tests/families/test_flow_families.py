"""SD3, FLUX, PixArt and SiT (a DiT on a flow-matching scheduler) end to end on tiny folders built
here: `explorer layers`, extract (equal to a pass recomputed by hand from the pipeline's own
parts), early exit, t = T on flow models, sweep with `log_snr`, and the refusals."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from explorer.cli import main
from explorer.errors import ExplorerError
from explorer.features.capture import extract_features, image_noise
from explorer.features.extract import ensure_features, load_features
from explorer.features.keys import Selection, feature_key
from explorer.features.store import FeatureStore
from explorer.models.layers import build_catalogue
from explorer.models.loader import load_model
from tests.conftest import make_tiny_dataset
from tests.families.tiny import save_family
from tests.families.tiny_flow import FLOW_KINDS, save_flow_family
from tests.ui.apptest import explore_shows_a_probe

BLOCKS = {
    "sd3": ["transformer_blocks.0", "transformer_blocks.1", "transformer_blocks.2"],
    "flux": [  # dual-stream first, then single-stream, in forward order
        "transformer_blocks.0",
        "transformer_blocks.1",
        "single_transformer_blocks.0",
        "single_transformer_blocks.1",
    ],
    "pixart": ["transformer_blocks.0", "transformer_blocks.1"],
    "sit": ["transformer_blocks.0", "transformer_blocks.1", "transformer_blocks.2"],
}
FLOW = ("sd3", "flux", "sit")
ERRORS: dict[str, float] = {}  # max |stored - by hand| per family, printed at the end


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("flow")
    return {k: save_flow_family(k, root / k) for k in FLOW_KINDS}


def _latents(folder, x: torch.Tensor) -> torch.Tensor:
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(folder / "vae")
    z = vae.encode(x).latent_dist.mean
    return (z - (vae.config.shift_factor or 0.0)) * vae.config.scaling_factor


def _clip(folder, enc, tok, cls, prompt=""):
    import transformers

    tokenizer = transformers.CLIPTokenizer.from_pretrained(folder / tok)
    ids = tokenizer(prompt, padding="max_length", max_length=8, return_tensors="pt").input_ids
    return getattr(transformers, cls).from_pretrained(folder / enc)(ids, output_hidden_states=True)


def _t5(folder, enc, tok, length, masked=False, prompt=""):
    """T5 states of the padded prompt; only PixArt's pipeline passes the attention mask."""
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(folder / tok)
    out = tokenizer(prompt, padding="max_length", max_length=length, return_tensors="pt")
    model = transformers.T5EncoderModel.from_pretrained(folder / enc)
    mask = out.attention_mask if masked else None
    return model(out.input_ids, attention_mask=mask)[0], out.attention_mask


def _by_hand(kind, folder, images, idx, t, block):
    """Encode, noise at level t, call the bare transformer with the pipeline's conditioning, read
    the block's image tokens, lay them on the 4x4 patch grid, pool 2x2: `(B, D*4)`."""
    from diffusers import (
        DiTTransformer2DModel,
        DPMSolverMultistepScheduler,
        FluxTransformer2DModel,
        PixArtTransformer2DModel,
        SD3Transformer2DModel,
    )

    x = load_model(str(folder)).preprocess(images)
    with torch.no_grad():
        z = _latents(folder, x)
        eps = image_noise(idx, 0, tuple(z.shape[1:]))
        b, u = len(z), t / 1000
        xt = (1 - u) * z + u * eps  # flow matching: t = 1000 u
        if kind == "sd3":
            net = SD3Transformer2DModel.from_pretrained(folder / "transformer")
            a = _clip(folder, "text_encoder", "tokenizer", "CLIPTextModelWithProjection")
            c = _clip(folder, "text_encoder_2", "tokenizer_2", "CLIPTextModelWithProjection")
            t5, _ = _t5(folder, "text_encoder_3", "tokenizer_3", 256)
            clip = torch.cat([a.hidden_states[-2], c.hidden_states[-2]], -1)
            seq = torch.cat([F.pad(clip, (0, t5.shape[-1] - clip.shape[-1])), t5], -2)
            pooled = torch.cat([a.text_embeds, c.text_embeds], -1)
            kw = dict(
                encoder_hidden_states=seq.expand(b, -1, -1), timestep=torch.full((b,), u * 1000)
            )
            call = dict(hidden_states=xt, pooled_projections=pooled.expand(b, -1), **kw)
        elif kind == "flux":
            net = FluxTransformer2DModel.from_pretrained(folder / "transformer")
            pooled = _clip(folder, "text_encoder", "tokenizer", "CLIPTextModel").pooler_output
            seq, _ = _t5(folder, "text_encoder_2", "tokenizer_2", 512)
            c, h = z.shape[1], z.shape[2] // 2
            packed = xt.reshape(b, c, h, 2, h, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, h * h, 4 * c)
            rows, cols = torch.meshgrid(torch.arange(h), torch.arange(h), indexing="ij")
            ids = torch.stack([torch.zeros_like(rows), rows, cols], -1).reshape(-1, 3).float()
            call = dict(
                hidden_states=packed,
                encoder_hidden_states=seq.expand(b, -1, -1),
                pooled_projections=pooled.expand(b, -1),
                timestep=torch.full((b,), u),
                img_ids=ids,
                txt_ids=torch.zeros(seq.shape[1], 3),
                guidance=torch.full((b,), 3.5),
            )
        elif kind == "pixart":
            net = PixArtTransformer2DModel.from_pretrained(folder / "transformer")
            cfg = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
            tt = torch.full((b,), t, dtype=torch.long)
            abar = DPMSolverMultistepScheduler.from_config(cfg).alphas_cumprod[t]  # VP
            xt = abar.sqrt() * z + (1 - abar).sqrt() * eps
            seq, mask = _t5(
                folder, "text_encoder", "tokenizer", 300, masked=True
            )  # PixArt-Σ: 300 tokens
            call = dict(
                hidden_states=xt,
                encoder_hidden_states=seq.expand(b, -1, -1),
                timestep=tt,
                added_cond_kwargs={"resolution": None, "aspect_ratio": None},
                encoder_attention_mask=mask.expand(b, -1),
            )
        else:  # sit: the converted folder's time input is u; the null class is index 5
            net = DiTTransformer2DModel.from_pretrained(folder / "transformer")
            call = dict(
                hidden_states=xt, timestep=torch.full((b,), u), class_labels=torch.full((b,), 5)
            )
        got = {}
        module = dict(net.named_modules())[block]
        hook = module.register_forward_hook(lambda m, i, o: got.setdefault("x", o))
        net(**call)
        hook.remove()
    tokens = got["x"][1] if kind in ("sd3", "flux") else got["x"]  # joint blocks: (text, image)
    grid = tokens.transpose(1, 2).reshape(b, -1, 4, 4)
    return F.adaptive_avg_pool2d(grid.float(), 2).flatten(1).numpy()


@pytest.mark.parametrize("kind", FLOW_KINDS)
def test_layers_cli_numbers_the_blocks_in_forward_order(folders, kind, capsys):
    assert main(["layers", "--model", str(folders[kind])]) == 0
    out = capsys.readouterr().out
    cat = build_catalogue(load_model(str(folders[kind])).denoiser)
    assert [lay.name for lay in cat] == BLOCKS[kind], cat
    assert all((lay.height, lay.width) == (4, 4) for lay in cat), "image tokens on the 4x4 grid"
    assert f"family: {kind}" in out and all(name in out for name in BLOCKS[kind]), out
    if kind in FLOW:
        assert "flow matching" in out and "T=1000" in out, out
    if kind == "flux":
        assert "guidance 3.5" in out and "shift 3" in out, "fixed guidance and the shift, shown"


@pytest.mark.parametrize("kind", FLOW_KINDS)
def test_stored_feature_equals_a_pass_by_hand_and_early_exit_equals_full(folders, kind, tmp_path):
    ds = make_tiny_dataset(n=12)
    model = load_model(str(folders[kind]))
    cat = build_catalogue(model.denoiser)
    sel = Selection.of(ds, "train", 4)
    store = FeatureStore(tmp_path / "c")
    top = model.num_timesteps - 1  # flow matching: t = T = 1000 (pure noise) is a level
    assert top == (1000 if kind in FLOW else 999)
    ts = [300, top]
    ensure_features(
        model, ds, sel, timesteps=ts, layers=cat, pools=["2"], store=store, progress=False
    )
    for t in ts:
        for lay in (cat[len(cat) // 2], cat[-1]):
            got = load_features(model, ds, sel, t=t, layer=lay.name, pool_name="2", store=store)
            want = _by_hand(kind, folders[kind], ds.images(sel.indices), sel.indices, t, lay.name)
            np.testing.assert_allclose(got.astype(np.float32), want, rtol=2e-2, atol=2e-3)
            ERRORS[kind] = max(ERRORS.get(kind, 0.0), float(np.abs(got - want).max()))
    x = model.preprocess(ds.images(sel.indices))
    kw = dict(timesteps=[300], layers=[cat[1]], pools=["2", "max"], indices=sel.indices)
    early, full = (
        extract_features(model, x, **kw),
        extract_features(model, x, stop_early=False, **kw),
    )
    for k in early:
        np.testing.assert_array_equal(early[k], full[k], err_msg=f"{kind}: early exit changed {k}")
    entry = store.manifest(feature_key(model, ds, sel, 300, cat[0].name, "2", 0))
    assert entry["family"] == kind, "the family is recorded with the entry"
    print(f"\n{kind}: max |stored - by hand| = {ERRORS[kind]:.2e}")


def test_families_and_conditioning_enter_the_key(folders):
    ds = make_tiny_dataset(n=12)
    sel = Selection.of(ds, "train", 4)
    keys = {
        k: feature_key(load_model(str(folders[k])), ds, sel, 300, "transformer_blocks.0", "2", 0)
        for k in FLOW_KINDS
    }
    assert len(set(keys.values())) == len(FLOW_KINDS)
    flux = load_model(str(folders["flux"]))
    assert flux.adapter.key_parts() == {"family": "flux", "cond": "prompt:;guidance=3.5"}
    cat = load_model(str(folders["sd3"]), prompt="cat")
    assert feature_key(cat, ds, sel, 300, "transformer_blocks.0", "2", 0) != keys["sd3"]
    assert cat.name.endswith("#prompt=cat") and "'cat'" in cat.adapter.describe()["conditioning"]


@pytest.mark.parametrize("kind", ["sd3", "flux", "sit"])
def test_extract_and_sweep_cli_with_log_snr(folders, kind, tmp_path):
    common = ["--model", str(folders[kind]), "--dataset", "digits", "--limit", "20"]
    common += ["--cache-dir", str(tmp_path / "c")]
    assert (
        main(["extract", *common, "--timesteps", "250,1000", "--layers", "1,2", "--pool", "2"]) == 0
    )
    out = tmp_path / "r.csv"
    args = ["--timesteps", "250,1000", "--layers", "2", "--pools", "1", "--heads", "linear"]
    assert main(["sweep", *common, *args, "--out", str(out)]) == 0
    from explorer.results import accuracy_view, load_table

    df = load_table(out)
    rows = df[df["model"] == str(folders[kind])]
    by_t = rows.groupby("t")["log_snr"].first().to_dict()
    assert by_t[250] == pytest.approx(2 * np.log(0.75 / 0.25)) and by_t[1000] == -np.inf, by_t
    assert df[df["layer"] == "pixels"]["log_snr"].isna().all(), "pixels have no level"
    wide = accuracy_view(df)
    assert wide.loc[wide["t"] == 250, "log_snr"].notna().all(), "the wide view carries log_snr"


def test_a_table_without_log_snr_still_reads(tmp_path):
    from explorer.results import COLUMNS, accuracy_view, load_table

    old = [c for c in COLUMNS if c != "log_snr"]
    path = tmp_path / "old.csv"
    row = ["m", "d", 10, "mid_block", 7, "1", "linear", "test", "top1", 0.5]
    path.write_text(",".join(old) + "\n" + ",".join(map(str, row)) + "\n")
    df = load_table(path)
    assert list(df.columns) == COLUMNS and df["log_snr"].isna().all()
    assert accuracy_view(df)["log_snr"].isna().all()


def test_vp_levels_stop_below_T_and_flow_levels_reach_it(folders, tiny_model_dir):
    with pytest.raises(ExplorerError, match=r"outside \[0, 1000\)"):
        extract_features(
            load_model(str(tiny_model_dir)), torch.zeros(1, 1, 16, 16), timesteps=[1000], layers=[]
        )
    sit = load_model(str(folders["sit"]))
    assert sit.num_timesteps == 1001 and sit.log_snr(1000) == -np.inf and sit.log_snr(0) == np.inf
    with pytest.raises(ExplorerError, match=r"outside \[0, 1001\)"):
        extract_features(sit, torch.zeros(1, 3, 16, 16), timesteps=[1001], layers=[])


def _nothing_written(cache) -> bool:
    return not cache.exists() or not any(p.is_file() for p in cache.rglob("*"))


def _extract(folder, cache, capsys) -> str:
    capsys.readouterr()  # what building the folders printed
    args = ["extract", "--model", str(folder), "--dataset", "digits", "--limit", "10"]
    assert main([*args, "--cache-dir", str(cache), "--timesteps", "10", "--layers", "1"]) != 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "error" in line.lower()]
    assert "Traceback" not in err and len(lines) == 1, err  # (transformers' load bars aside)
    return lines[0]


def test_a_scheduler_that_contradicts_the_net_is_refused(folders, tmp_path, capsys):
    sd = save_family("sd", tmp_path / "sd")  # an SD U-Net given a flow-matching scheduler
    cfg = {
        "_class_name": "FlowMatchEulerDiscreteScheduler",
        "num_train_timesteps": 1000,
        "shift": 3.0,
    }
    (sd / "scheduler" / "scheduler_config.json").write_text(json.dumps(cfg))
    err = _extract(sd, tmp_path / "c1", capsys)
    assert "flow matching" in err and "shift 3.0" in err and "UNet2DConditionModel" in err, err
    assert _nothing_written(tmp_path / "c1")
    sd3 = tmp_path / "sd3-ddpm"  # an SD3 transformer given a VP scheduler
    shutil.copytree(folders["sd3"], sd3)
    (sd3 / "scheduler" / "scheduler_config.json").write_text(
        json.dumps({"_class_name": "DDPMScheduler"})
    )
    err = _extract(sd3, tmp_path / "c2", capsys)
    assert "trained with flow matching" in err, err
    assert _nothing_written(tmp_path / "c2")


def test_a_flux_folder_without_its_text_encoders_is_refused(folders, tmp_path, capsys):
    flux = tmp_path / "flux-no-t5"
    shutil.copytree(folders["flux"], flux)
    shutil.rmtree(flux / "text_encoder_2")
    err = _extract(flux, tmp_path / "c", capsys)
    assert "text_encoder_2" in err and "text encoders" in err, err
    assert _nothing_written(tmp_path / "c")
    with pytest.raises(ExplorerError, match="alone"):
        load_model(str(folders["flux"] / "transformer"))
    with pytest.raises(ExplorerError, match="--class-label applies"):
        load_model(str(folders["sd3"]), class_label="1")


def test_edm_preconditioning_reaches_the_net(tiny_model_dir, tmp_path):
    """A pixel U-Net on an EDM scheduler: x = x0 + sigma eps, called with c_in x and log(sigma)/4."""
    from diffusers import EDMEulerScheduler, UNet2DModel

    EDMEulerScheduler().save_pretrained(tiny_model_dir)
    m = load_model(str(tiny_model_dir))
    assert m.process.kind == "edm" and "EDM" in m.scheduler_text
    cat = build_catalogue(m.denoiser)
    x = torch.rand(3, 1, 16, 16) * 2 - 1
    got = extract_features(m, x, timesteps=[500], layers=[cat[-1]], pools=["1"])[
        (500, cat[-1].name, "1")
    ]
    ramp = 500 / 999  # Karras: sigma_min at t=0, sigma_max at t=T-1
    sigma = (0.002 ** (1 / 7) + ramp * (80 ** (1 / 7) - 0.002 ** (1 / 7))) ** 7
    eps = image_noise(np.arange(3), 0, (1, 16, 16))
    net = UNet2DModel.from_pretrained(tiny_model_dir)
    read = {}
    module = dict(net.named_modules())[cat[-1].hook]
    module.register_forward_hook(lambda mod, i, o: read.setdefault("x", o))
    with torch.no_grad():
        c_in = 1 / np.sqrt(sigma**2 + 0.25)
        net((x + sigma * eps) * c_in, torch.full((3,), 0.25 * np.log(sigma)))
    want = read["x"].mean(dim=(2, 3)).numpy()
    np.testing.assert_allclose(got.astype(np.float32), want, rtol=2e-2, atol=2e-3)


@pytest.mark.slow
@pytest.mark.parametrize("kind", FLOW_KINDS)
def test_explore_page_probes_a_block(folders, kind):
    explore_shows_a_probe(str(folders[kind]))


@pytest.mark.slow
def test_data_model_page_shows_the_guidance_and_the_flow(folders):
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    from explorer.ui.common import PAGES

    at = AppTest.from_file(str(Path(__file__).resolve().parents[2] / "app.py"), default_timeout=600)
    at.query_params.update(
        {"model": str(folders["flux"]), "dataset": "digits", "train": "40", "test": "20"}
    )
    at.switch_page(PAGES["data"])
    at.run()
    assert not at.exception and not at.error, [e.value for e in (*at.exception, *at.error)]
    text = " ".join(m.value for m in at.markdown)
    for words in ("flux", "guidance 3.5", "flow matching", "shift 3 (shown, not applied)"):
        assert words in text, f"'{words}' missing: {text[:800]}"


def test_full_size_flux_numbers_57_blocks_in_forward_order():
    """FLUX.1 on the meta device (no weights): 19 dual-stream blocks (1-19), then 38
    single-stream blocks (20-57), 3072 channels on the 64x64 grid of 1024 px images."""
    from diffusers import FluxTransformer2DModel

    from explorer.models.families.token_net import FluxNet

    with torch.device("meta"):
        net = FluxNet.wrap(
            FluxTransformer2DModel(guidance_embeds=True), sample_size=128, guidance=3.5
        )
    cat = build_catalogue(net)
    assert len(cat) == 57 and cat[18].name == "transformer_blocks.18"
    assert cat[19].name == "single_transformer_blocks.0" and cat[27].index == 28
    assert cat[27].name == "single_transformer_blocks.8", "block 28 is the 9th single-stream block"
    assert {(lay.channels, lay.height, lay.width) for lay in cat} == {(3072, 64, 64)}


def test_gpu_figure_says_so_without_a_gpu(monkeypatch):
    import sys
    from pathlib import Path
    from types import SimpleNamespace

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # `benchmarks` is not installed
    from benchmarks.flow_families import fig8b_gpu_layouts

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    (row,) = fig8b_gpu_layouts(SimpleNamespace(quick=True))
    assert row["figure"] == "8b" and row["value"] is None and "no GPU" in row["note"]


def test_pixart_alpha_1024_gets_resolution_and_aspect_ratio_as_its_pipeline_builds_them(
    folders, tmp_path
):
    """PixArt-α at 1024 px (`use_additional_conditions`) also embeds the image's size and aspect
    ratio; `PixArtAlphaPipeline` passes `resolution` = (height, width) and `aspect_ratio` =
    height / width per image. Our wrapper must pass the same, and the values must matter."""
    folder = shutil.copytree(folders["pixart"], tmp_path / "alpha")
    from diffusers import PixArtTransformer2DModel

    torch.manual_seed(0)
    cfg = dict(PixArtTransformer2DModel.load_config(folder / "transformer"))
    alpha = PixArtTransformer2DModel.from_config({**cfg, "use_additional_conditions": True})
    alpha.save_pretrained(folder / "transformer")
    index = folder / "model_index.json"
    index.write_text(
        json.dumps({**json.loads(index.read_text()), "_class_name": "PixArtAlphaPipeline"})
    )
    model = load_model(str(folder))
    net, side = model.adapter.net, model.adapter.image_size
    assert net.transformer.use_additional_conditions and side == 16
    assert "PixArt-α" in model.adapter.loaded_from
    torch.manual_seed(0)
    z, t = torch.randn(2, 4, 8, 8), torch.tensor([300, 700])
    cond = model.adapter.condition.kwargs(2, None, "cpu")

    def pipeline_call(height: float, width: float) -> torch.Tensor:
        added = {
            "resolution": torch.tensor([[height, width]]).repeat(2, 1),
            "aspect_ratio": torch.tensor([[height / width]]).repeat(2, 1),
        }
        return net.transformer(
            z, encoder_hidden_states=cond["encoder_hidden_states"], timestep=t,
            added_cond_kwargs=added, encoder_attention_mask=cond["encoder_attention_mask"],
        ).sample  # fmt: skip

    with torch.no_grad():
        ours = net(z, t, **cond).sample
        assert torch.equal(ours, pipeline_call(side, side))
        assert not torch.allclose(ours, pipeline_call(2 * side, side), atol=1e-4), (
            "the size embedding reaches the output, so passing the right one is checked"
        )
    ds = make_tiny_dataset(n=8)
    sel = Selection.of(ds, "train", 4)
    cat = build_catalogue(model.denoiser)
    store = FeatureStore(tmp_path / "c")
    ensure_features(
        model, ds, sel, timesteps=[300], layers=cat, pools=["2"], store=store, progress=False
    )
    got = load_features(model, ds, sel, t=300, layer=cat[-1].name, pool_name="2", store=store)
    assert got.shape[0] == 4 and np.isfinite(got).all()
