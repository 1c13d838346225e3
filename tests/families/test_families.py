"""Every model family end to end on tiny folders built here: `explorer layers`, extract (equal to
a pass recomputed by hand), early exit, sweep, and the Data & model and Explore pages."""

from __future__ import annotations

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
from explorer.models.layers import build_catalogue, first_tensor
from explorer.models.loader import load_model
from tests.conftest import make_tiny_dataset
from tests.families.tiny import FAMILIES, save_family

COND = {"class-cond": "1"}  # a class-conditional UNet2DModel has no null class: a fixed class
FAMILY = {
    "class-cond": "class-cond-unet",
    "ldm": "latent-unet",
    "sd": "stable-diffusion",
    "dit": "dit",
}


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("families")
    return {k: save_family(k, root / k) for k in FAMILIES}


def _load(folders, kind, **kw):
    if kind in COND and "class_label" not in kw:
        kw["class_label"] = COND[kind]
    return load_model(str(folders[kind]), **kw)


def _hand_features(kind, folder, images, idx, t, lay, labels=None, class_label=None):
    """encode, add_noise with the folder's own scheduler class, call, read the block, pool 2."""
    import diffusers

    m = (
        _load({kind: folder}, kind)
        if class_label is None
        else load_model(str(folder), class_label=class_label)
    )
    net = m.denoiser
    x = m.preprocess(images)
    sub = folder / "scheduler" if (folder / "scheduler").is_dir() else folder
    import json

    cfg = json.loads((sub / "scheduler_config.json").read_text())
    sched = getattr(diffusers, cfg["_class_name"]).from_config(cfg)
    kw = {}
    with torch.no_grad():
        if kind == "ldm":
            z = diffusers.VQModel.from_pretrained(folder / "vqvae").encode(x).latents
        elif kind in ("sd", "dit"):
            vae = diffusers.AutoencoderKL.from_pretrained(folder / "vae")
            z = vae.encode(x).latent_dist.mean * vae.config.scaling_factor
        else:
            z = x
        if kind == "sd":
            from transformers import CLIPTextModel, CLIPTokenizer

            tok = CLIPTokenizer.from_pretrained(folder / "tokenizer")
            ids = tok(
                "", padding="max_length", max_length=tok.model_max_length, return_tensors="pt"
            ).input_ids
            emb = CLIPTextModel.from_pretrained(folder / "text_encoder")(ids)[0]
            kw["encoder_hidden_states"] = emb.expand(len(x), -1, -1)
        elif kind == "dit":
            kw["class_labels"] = torch.full((len(x),), 5)  # the null class: num_embeds_ada_norm
        elif kind == "class-cond":
            kw["class_labels"] = (
                torch.as_tensor(labels) if class_label == "true" else torch.full((len(x),), 1)
            )
        noise = image_noise(idx, 0, tuple(z.shape[1:]))
        tt = torch.full((len(x),), t, dtype=torch.long)
        xt = sched.add_noise(z, noise, tt)
        got = {}
        h = dict(net.named_modules())[lay.hook].register_forward_hook(
            lambda mod, i, o: got.setdefault("x", first_tensor(o))
        )
        net(xt, tt, **kw)
        h.remove()
    fmap = got["x"]
    if fmap.dim() == 3:  # DiT tokens -> patch grid
        fmap = fmap.transpose(1, 2).reshape(len(x), -1, lay.height, lay.width)
    return F.adaptive_avg_pool2d(fmap.float(), 2).flatten(1).numpy()


@pytest.mark.parametrize("kind", FAMILIES)
def test_layers_cli_prints_catalogue_and_family(folders, kind, capsys):
    args = ["layers", "--model", str(folders[kind])] + (
        ["--class-label", COND[kind]] if kind in COND else []
    )
    assert main(args) == 0
    out = capsys.readouterr().out
    cat = build_catalogue(_load(folders, kind).denoiser)
    assert all(lay.name in out for lay in cat), out
    assert f"family: {FAMILY[kind]}" in out and "scheduler:" in out, out
    if kind == "dit":
        assert [lay.name for lay in cat] == [f"transformer_blocks.{i}" for i in range(3)], cat
        assert (cat[0].channels, cat[0].height, cat[0].width) == (16, 4, 4), (
            "tokens on the 4x4 patch grid"
        )
    else:
        assert cat[0].name == "conv_in" and any(lay.name == "mid_block" for lay in cat), cat


@pytest.mark.parametrize("kind", FAMILIES)
def test_stored_feature_equals_a_pass_by_hand_and_early_exit_equals_full(folders, kind, tmp_path):
    ds = make_tiny_dataset(n=20)
    model = _load(folders, kind)
    cat = build_catalogue(model.denoiser)
    lay = cat[len(cat) // 2]
    sel = Selection.of(ds, "train", 8)
    store = FeatureStore(tmp_path / "c")
    ensure_features(
        model, ds, sel, timesteps=[300], layers=cat, pools=["2"], store=store, progress=False
    )
    got = load_features(model, ds, sel, t=300, layer=lay.name, pool_name="2", store=store).astype(
        np.float32
    )
    want = _hand_features(kind, folders[kind], ds.images(sel.indices), sel.indices, 300, lay)
    np.testing.assert_allclose(
        got, want, rtol=2e-2, atol=2e-3, err_msg=f"{kind}: stored != by hand"
    )

    x = model.preprocess(ds.images(sel.indices))
    early = extract_features(
        model, x, timesteps=[300], layers=[cat[1]], pools=["2", "max"], indices=sel.indices
    )
    full = extract_features(
        model,
        x,
        timesteps=[300],
        layers=[cat[1]],
        pools=["2", "max"],
        indices=sel.indices,
        stop_early=False,
    )
    for k in early:
        np.testing.assert_array_equal(early[k], full[k], err_msg=f"{kind}: early exit changed {k}")
    key = feature_key(model, ds, sel, 300, lay.name, "2", 0)
    assert store.manifest(key)["family"] == FAMILY[kind], "the family is recorded with the entry"


def test_pixel_unet_keys_are_unchanged_and_families_differ(folders, tiny_model_dir):
    """The key of a plain pixel U-Net has no family part (only the precision beside the setting)."""
    from explorer.features.keys import EXTRACTION_VERSION
    from explorer.features.store import content_key

    ds = make_tiny_dataset()
    sel = Selection.of(ds, "train", 8)
    m = load_model(str(tiny_model_dir))
    old = content_key(
        {
            "dataset": ds.fingerprint,
            "selection": sel.fingerprint,
            "preprocess": m.preprocess.tag,
            "layer": "mid_block",
            "pool": "2",
            "version": EXTRACTION_VERSION,
            "model": m.fingerprint,
            "t": 10,
            "seed": 0,
            "precision": "fp32",
        }
    )
    assert feature_key(m, ds, sel, 10, "mid_block", "2", 0) == old
    a = feature_key(_load(folders, "class-cond", class_label="1"), ds, sel, 10, "mid_block", "2", 0)
    b = feature_key(_load(folders, "class-cond", class_label="2"), ds, sel, 10, "mid_block", "2", 0)
    assert a != b, "the class label is part of the key"


def test_class_label_true_uses_each_label_and_is_marked(folders, tmp_path, capsys):
    ds = make_tiny_dataset(n=20)
    model = _load(folders, "class-cond", class_label="true")
    assert model.adapter.leaks_label and model.name.endswith("#class-label=true")
    cat = build_catalogue(model.denoiser)
    sel = Selection.of(ds, "train", 8)
    store = FeatureStore(tmp_path / "c")
    ensure_features(
        model, ds, sel, timesteps=[50], layers=[cat[4]], pools=["2"], store=store, progress=False
    )
    got = load_features(model, ds, sel, t=50, layer=cat[4].name, pool_name="2", store=store).astype(
        np.float32
    )
    want = _hand_features(
        "class-cond",
        folders["class-cond"],
        ds.images(sel.indices),
        sel.indices,
        50,
        cat[4],
        labels=ds.labels[sel.indices],
        class_label="true",
    )
    np.testing.assert_allclose(got, want, rtol=2e-2, atol=2e-3)
    assert (
        store.manifest(feature_key(model, ds, sel, 50, cat[4].name, "2", 0))["label_leaking"]
        is True
    )
    assert main(["layers", "--model", str(folders["class-cond"]), "--class-label", "true"]) == 0
    assert "label-leaking" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, match",
    [
        ({}, "pick --class-label"),
        ({"class_label": "null"}, "no unconditional class"),
        ({"class_label": "9"}, "outside"),
        ({"class_label": "maybe"}, "null, an integer class or true"),
    ],
)
def test_class_cond_without_usable_default_says_what_to_pick(folders, args, match):
    with pytest.raises(ExplorerError, match=match):
        load_model(str(folders["class-cond"]), **args)


def test_conditioning_options_are_checked(folders, tiny_model_dir):
    with pytest.raises(ExplorerError, match="leaks the answer"):
        load_model(str(folders["sd"]), prompt="a photo of a {label}")
    with pytest.raises(ExplorerError, match="--prompt applies to Stable Diffusion"):
        load_model(str(folders["dit"]), prompt="x")
    with pytest.raises(ExplorerError, match="not class-conditional"):
        load_model(str(tiny_model_dir), class_label="3")
    dit = load_model(str(folders["dit"]), class_label="2")
    assert dit.adapter.key_parts()["cond"] == "class:2"
    a, b = load_model(str(folders["sd"])), load_model(str(folders["sd"]), prompt="cat")
    assert not torch.equal(a.adapter.condition.embedding, b.adapter.condition.embedding), (
        "the prompt is used"
    )


def test_pipeline_folders_are_never_fed_pixels(folders, tmp_path):
    import shutil

    for kind, sub in (("sd", "vae"), ("ldm", "vqvae"), ("dit", "vae")):
        broken = tmp_path / f"{kind}-no-{sub}"
        shutil.copytree(folders[kind], broken)
        shutil.rmtree(broken / sub)
        with pytest.raises(ExplorerError, match="vae"):
            load_model(str(broken))
    with pytest.raises(ExplorerError, match="alone"):
        load_model(str(folders["dit"] / "transformer"))


def test_sd_without_transformers_names_the_extra(folders, monkeypatch):
    import builtins

    real = builtins.__import__

    def no_transformers(name, *a, **kw):
        if name.startswith("transformers"):
            raise ImportError(name)
        return real(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_transformers)
    with pytest.raises(ExplorerError, match=r'pip install -e "\.\[sd\]"'):
        load_model(str(folders["sd"]))


def test_random_weights_keep_the_autoencoder(tmp_path):
    folder = save_family("dit", tmp_path / "dit", seed=3)  # seed 0 is the random: seed
    trained, rnd = load_model(str(folder)), load_model("random:" + str(folder))
    assert rnd.fingerprint != trained.fingerprint and rnd.family == "dit"
    assert not torch.equal(
        rnd.denoiser.pos_embed.proj.weight, trained.denoiser.pos_embed.proj.weight
    )
    enc_a, enc_b = trained.adapter.encoder.vae, rnd.adapter.encoder.vae
    assert all(
        torch.equal(p, q) for p, q in zip(enc_a.parameters(), enc_b.parameters(), strict=True)
    )


@pytest.mark.parametrize("kind", FAMILIES)
def test_extract_and_sweep_cli(folders, kind, tmp_path):
    cond = ["--class-label", COND[kind]] if kind in COND else []
    common = [
        "--model",
        str(folders[kind]),
        *cond,
        "--dataset",
        "digits",
        "--limit",
        "20",
        "--cache-dir",
        str(tmp_path / "c"),
    ]
    assert main(["extract", *common, "--timesteps", "10", "--layers", "1,2", "--pool", "2"]) == 0
    out = tmp_path / "r.csv"
    assert (
        main(
            [
                "sweep",
                *common,
                "--timesteps",
                "10",
                "--layers",
                "2",
                "--pools",
                "1",
                "--heads",
                "linear",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    from explorer.results import load_table

    df = load_table(out)
    models = set(df["model"])
    assert any(str(folders[kind]) in m for m in models), models
    if kind in COND:
        assert any(m.endswith(f"#class-label={COND[kind]}") for m in models), (
            "the table records the class"
        )


def test_models_under_explorer_models_are_listed(folders, monkeypatch, tmp_path):
    from explorer.models.loader import local_models

    monkeypatch.setenv("EXPLORER_MODELS", str(folders["sd"].parent))
    assert local_models() == sorted(str(folders[k]) for k in FAMILIES)
    monkeypatch.setenv("EXPLORER_MODELS", str(tmp_path / "missing"))
    assert local_models() == []
