"""Model loading: local folders, pipeline layout, random controls, pickle refusal, built-ins, hub errors."""

from __future__ import annotations

import json

import pytest
import torch

from explorer.errors import ExplorerError
from explorer.models.loader import load_model
from explorer.paths import BUILTIN_MODEL_DIRS

_IGNORED = ("_diffusers_version", "_name_or_path", "_use_default_values", "_class_name")


def _config(model) -> dict:
    return {k: v for k, v in dict(model.denoiser.config).items() if k not in _IGNORED}


def _same_weights(a, b) -> bool:
    sa, sb = a.denoiser.state_dict(), b.denoiser.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_local_folder_loads_with_stable_fingerprint(tiny_model_dir, tiny_unet_config):
    a = load_model(str(tiny_model_dir))
    b = load_model(str(tiny_model_dir))
    assert a.source == "local", f"a folder should load as 'local', got {a.source!r}"
    assert a.path == tiny_model_dir, f"path should be the folder, got {a.path}"
    assert a.fingerprint == b.fingerprint, (
        "two loads of the same folder must give the same fingerprint"
    )
    assert not a.denoiser.training, "a loaded U-Net must be in eval mode"
    assert a.resolution == 16 and a.num_timesteps == 1000, (a.resolution, a.num_timesteps)
    assert a.preprocess.size == 16 and a.preprocess.channels == 1, a.preprocess
    got = list(a.denoiser.config.block_out_channels)
    assert got == list(tiny_unet_config["block_out_channels"]), (
        f"config not read from the folder: {got}"
    )


def test_fingerprint_changes_with_one_weight(tiny_model_dir, model_factory):
    before = load_model(str(tiny_model_dir))
    unet = before.denoiser
    with torch.no_grad():
        unet.conv_in.weight[0, 0, 0, 0] += 1.0
    unet.save_pretrained(tiny_model_dir)
    after = load_model(str(tiny_model_dir))
    assert after.fingerprint != before.fingerprint, (
        "changing one weight and re-saving must change the fingerprint"
    )
    assert torch.equal(after.denoiser.conv_in.weight, unet.conv_in.weight), (
        "the re-saved weight should be loaded"
    )


def test_random_control_same_config_fixed_weights(tmp_path, model_factory):
    # random: initialises with seed 0, like the fixture's untrained weights; seed 1 stands in for training
    folder = model_factory(tmp_path / "trained", seed=1)
    trained = load_model(str(folder))
    r1 = load_model(f"random:{folder}")
    r2 = load_model(f"random:{folder}")
    assert r1.source == "random", f"random: should load as source 'random', got {r1.source!r}"
    assert _config(r1) == _config(trained), (
        "random: must keep the architecture (config) of the trained model"
    )
    assert not _same_weights(r1, trained), "random: must not carry the trained weights"
    assert _same_weights(r1, r2), "random: weights must be identical across loads (fixed seed)"
    assert r1.fingerprint == r2.fingerprint, "random: fingerprint must be stable"
    assert r1.fingerprint != trained.fingerprint, (
        "random: fingerprint must differ from the trained model's"
    )
    assert r1.num_timesteps == trained.num_timesteps, "random: keeps the model's scheduler"
    assert not r1.denoiser.training, "random: U-Net must be in eval mode"


def test_random_control_leaves_global_rng_alone(tiny_model_dir):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    load_model(f"random:{tiny_model_dir}")
    assert torch.equal(torch.rand(3), expected), (
        "building random: weights must not consume the caller's RNG"
    )


def test_pickle_weights_refused_unless_trusted(tmp_path, model_factory, tiny_model_dir):
    folder = model_factory(tmp_path / "pickled", safe_serialization=False)
    assert (folder / "diffusion_pytorch_model.bin").exists(), (
        "fixture should have written a .bin checkpoint"
    )
    assert not list(folder.glob("*.safetensors")), "the pickle folder must hold no safetensors"
    with pytest.raises(ExplorerError, match="--trust-pickle") as e:
        load_model(str(folder))
    assert "\n" not in str(e.value), f"error should be one line: {e.value!r}"
    m = load_model(str(folder), trust_pickle=True)
    assert _same_weights(m, load_model(str(tiny_model_dir))), (
        "trusted .bin must load the same weights as safetensors"
    )


def test_folder_without_config_is_refused(tmp_path):
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    (empty / "notes.txt").write_text("hello")
    with pytest.raises(ExplorerError, match="not a diffusers model folder"):
        load_model(str(empty))


def test_file_instead_of_folder_is_refused(tiny_model_dir):
    with pytest.raises(ExplorerError, match="is a file"):
        load_model(str(tiny_model_dir / "config.json"))


def test_config_without_weights_is_refused(tmp_path, tiny_model_dir):
    folder = tmp_path / "no-weights"
    folder.mkdir()
    (folder / "config.json").write_text((tiny_model_dir / "config.json").read_text())
    with pytest.raises(ExplorerError, match="no weights"):
        load_model(str(folder))


def test_conditional_unet_alone_is_refused(tmp_path, tiny_model_dir):
    """A Stable Diffusion U-Net without its pipeline would be fed pixels: refused, naming the fix."""
    folder = tmp_path / "cond"
    folder.mkdir()
    config = json.loads((tiny_model_dir / "config.json").read_text())
    config["_class_name"] = "UNet2DConditionModel"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ExplorerError, match="UNet2DConditionModel") as e:
        load_model(str(folder))
    assert "pipeline folder" in str(e.value), f"the error should say what to pass: {e.value}"


def test_unknown_model_class_is_refused(tmp_path, tiny_model_dir):
    folder = tmp_path / "other"
    folder.mkdir()
    config = json.loads((tiny_model_dir / "config.json").read_text())
    config["_class_name"] = "UNet1DModel"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ExplorerError, match="UNet1DModel") as e:
        load_model(str(folder))
    assert "UNet2DModel" in str(e.value), f"the error should say what is read: {e.value}"


def test_unknown_name_suggests_builtin(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ExplorerError, match="ddpm-fashion-mnist") as e:
        load_model("ddpm-fashon-mnist")
    assert "Did you mean" in str(e.value), f"a close name should get a suggestion: {e.value}"


@pytest.mark.timeout(60)
def test_hub_id_offline_is_one_line_error(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read once at import
    with pytest.raises(ExplorerError) as e:
        load_model("someorg/some-model")
    msg = str(e.value)
    assert "someorg/some-model" in msg and "--model DIR" in msg, (
        f"offline error should name the id and --model DIR: {msg}"
    )
    assert "\n" not in msg, f"offline error should be one line: {msg!r}"


def test_pipeline_layout_loads(tmp_path, tiny_model_dir):
    from diffusers import DDPMScheduler

    flat = load_model(str(tiny_model_dir))
    pipe = tmp_path / "pipeline"
    flat.denoiser.save_pretrained(pipe / "unet")
    DDPMScheduler(num_train_timesteps=500).save_pretrained(pipe / "scheduler")
    (pipe / "model_index.json").write_text(json.dumps({"_class_name": "DDPMPipeline"}))
    m = load_model(str(pipe))
    assert m.source == "local", m.source
    assert _same_weights(m, flat), "the unet/ subfolder's weights should be loaded"
    assert m.num_timesteps == 500, (
        f"the scheduler/ subfolder's config should be read, got T={m.num_timesteps}"
    )


def test_missing_scheduler_defaults_to_ddpm_1000(tmp_path, tiny_model_dir):
    folder = tmp_path / "unet-only"
    load_model(str(tiny_model_dir)).denoiser.save_pretrained(folder)
    assert not (folder / "scheduler_config.json").exists()
    assert load_model(str(folder)).num_timesteps == 1000, (
        "no scheduler config -> DDPM with 1000 steps"
    )


def test_builtin_digits_model_loads():
    if not (BUILTIN_MODEL_DIRS["ddpm-digits"] / "config.json").exists():
        pytest.skip("assets/models/ddpm-digits is not present")
    m = load_model("ddpm-digits")
    assert m.source == "builtin", m.source
    assert m.resolution == 16 and m.denoiser.config.in_channels == 1, (
        m.resolution,
        m.denoiser.config.in_channels,
    )
    assert m.num_timesteps == 1000, m.num_timesteps
    assert m.parameters > 100_000, (
        f"the built-in should be a trained model, got {m.parameters} parameters"
    )
    assert load_model("ddpm-digits").fingerprint == m.fingerprint, (
        "built-in fingerprint must be stable"
    )
