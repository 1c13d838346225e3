"""`explorer convert adm`: flags and presets, coverage errors, safe loading, and the folder as --model."""

from __future__ import annotations

import json

import pytest
import torch

from explorer.cli import build_parser, main
from explorer.errors import ExplorerError
from explorer.models.convert.adm import diffusers_config, split_qkv
from explorer.models.convert.adm_presets import PRESETS, ADMConfig

from .adm_reference import ADMReference, randomise

# A reduced 256-structure model, 32x32 input: attention at sides 4, 2, 1 (ds 8, 16, 32).
FLAGS = [
    "--image-size",
    "32",
    "--num-channels",
    "32",
    "--channel-mult",
    "1,1,2,2,4,4",
    "--attention-resolutions",
    "4,2,1",
    "--num-head-channels",
    "16",
]


def save_reference(path, **kw) -> dict:
    model = ADMReference(32, (1, 1, 2, 2, 4, 4), 2, (8, 16, 32), num_head_channels=16, **kw)
    randomise(model)
    state = model.state_dict()
    torch.save(state, path)
    return state


def run(argv, capsys):
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_convert_then_layers(tmp_path, capsys):
    save_reference(tmp_path / "m.pt")
    code, out, err = run(
        ["convert", "adm", str(tmp_path / "m.pt"), "--out", str(tmp_path / "dir")] + FLAGS, capsys
    )
    assert code == 0, err
    assert "convert" in err  # the progress bar
    assert f"--model {tmp_path / 'dir'}" in out
    folder = tmp_path / "dir"
    assert (folder / "unet" / "diffusion_pytorch_model.safetensors").exists()
    assert json.loads((folder / "adm_flags.json").read_text())["flags"]["num_channels"] == 32
    code, out, err = run(["layers", "--model", str(folder), "--json"], capsys)
    assert code == 0, err
    layers = json.loads(out)
    assert len(layers) == 37 and layers[18]["name"] == "mid_block" and layers[23]["channels"] == 128
    # converting again into the same folder needs --overwrite, and leaves the folder intact
    code, _, err = run(
        ["convert", "adm", str(tmp_path / "m.pt"), "--out", str(folder)] + FLAGS, capsys
    )
    assert code == 2 and "--overwrite" in err and (folder / "unet" / "config.json").exists()


def test_wrong_flags_list_the_leftovers(tmp_path, capsys):
    save_reference(tmp_path / "m.pt")
    code, _, err = run(
        [
            "convert",
            "adm",
            str(tmp_path / "m.pt"),
            "--out",
            str(tmp_path / "o"),
            "--num-res-blocks",
            "3",
        ]
        + FLAGS,
        capsys,
    )
    assert code == 2
    err = _error_line(err)
    assert "checkpoint keys not used (68)" in err and "model parameters not set (466)" in err
    assert "... and 458 more" in err  # long lists are cut, with their counts
    assert not (tmp_path / "o").exists()
    code, _, err = run(
        ["convert", "adm", str(tmp_path / "m.pt"), "--out", str(tmp_path / "o"), "--class-cond"]
        + FLAGS,
        capsys,
    )
    assert code == 2 and "model parameters not set (1): class_embedding.weight" in _error_line(err)


def _error_line(err: str) -> str:
    """The one error line (after the progress bar's carriage returns); fails if there are more."""
    lines = [ln for ln in err.replace("\r", "\n").splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err
    return lines[0]


def test_extra_and_misshapen_keys(tmp_path):
    from explorer.models.convert.adm import convert_adm

    state = save_reference(tmp_path / "m.pt")
    cfg = ADMConfig(
        image_size=32,
        num_channels=32,
        channel_mult=(1, 1, 2, 2, 4, 4),
        attention_resolutions=(4, 2, 1),
        num_head_channels=16,
    )
    torch.save(state | {"input_blocks.1.0.extra": torch.ones(2)}, tmp_path / "extra.pt")
    with pytest.raises(
        ExplorerError, match=r"checkpoint keys not used \(1\): input_blocks.1.0.extra"
    ):
        convert_adm(tmp_path / "extra.pt", tmp_path / "o", cfg, show_progress=False)
    del state["middle_block.1.qkv.bias"]
    torch.save(state, tmp_path / "missing.pt")
    with pytest.raises(
        ExplorerError,
        match=r"not set \(3\): mid_block.attentions.0.to_k.bias, "
        r"mid_block.attentions.0.to_q.bias, mid_block.attentions.0.to_v.bias$",
    ):
        convert_adm(tmp_path / "missing.pt", tmp_path / "o", cfg, show_progress=False)
    torch.save(state | {"out.2.bias": torch.ones(3)}, tmp_path / "shape.pt")
    with pytest.raises(
        ExplorerError, match=r"shape mismatches \(1\): conv_out.bias \(3,\) vs \(6,\)$"
    ):
        convert_adm(tmp_path / "shape.pt", tmp_path / "o", cfg, show_progress=False)
    assert not (tmp_path / "o").exists()


def test_refuses_pickled_objects(tmp_path, capsys):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"x": Evil()}, tmp_path / "evil.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    torch.save([torch.ones(1)], tmp_path / "list.pt")
    for name, msg in (
        ("evil.pt", "weights-only"),
        ("junk.pt", "weights-only"),
        ("list.pt", "not a state dict"),
        ("missing.pt", "not found"),
    ):
        code, out, err = run(
            ["convert", "adm", str(tmp_path / name), "--out", str(tmp_path / "o")], capsys
        )
        assert code == 2 and msg in err and "Traceback" not in err and "pwned" not in out + err


def test_flags_and_presets():
    p = build_parser()
    from explorer.cli.convert import adm_config_from_args

    default = adm_config_from_args(p.parse_args(["convert", "adm", "x.pt", "--out", "o"]))
    assert default == PRESETS["imagenet256-uncond"]
    assert default.widths == [256, 256, 512, 512, 1024, 1024] and default.attention_ds == {
        8,
        16,
        32,
    }
    assert default.out_channels == 6 and not default.class_cond
    c64 = adm_config_from_args(
        p.parse_args(["convert", "adm", "x.pt", "--out", "o", "--preset", "imagenet64-cond"])
    )
    assert (
        c64.widths == [192, 384, 576, 768]
        and c64.use_new_attention_order
        and c64.noise_schedule == "cosine"
    )
    changed = adm_config_from_args(
        p.parse_args(
            [
                "convert",
                "adm",
                "x.pt",
                "--out",
                "o",
                "--image-size",
                "128",
                "--no-learn-sigma",
                "--class-cond",
            ]
        )
    )
    assert changed.mult == (1, 1, 2, 3, 4) and changed.out_channels == 3 and changed.class_cond
    for bad in (
        ["--noise-schedule", "quadratic"],
        ["--num-head-channels", "48"],
        ["--channel-mult", "1,x"],
        ["--image-size", "100"],
    ):
        with pytest.raises(ExplorerError):
            adm_config_from_args(p.parse_args(["convert", "adm", "x.pt", "--out", "o"] + bad))


def test_what_diffusers_cannot_express():
    """Per-level head widths (128x128 model: 4 heads at 512/768/1024 channels) and a conv_in narrower
    than the time embedding's base width (512x512 model, channel_mult 0.5,...) are refused by name."""
    with pytest.raises(ExplorerError, match="one head width"):
        diffusers_config(PRESETS["imagenet128-cond"])
    with pytest.raises(ExplorerError, match="block_out_channels"):
        diffusers_config(ADMConfig(image_size=512))
    assert diffusers_config(PRESETS["imagenet64-cond"])["attention_head_dim"] == 64


def test_split_qkv_layouts():
    heads, d = 2, 3
    rows = torch.arange(3 * heads * d)
    q, k, v = split_qkv(rows, heads, new_order=False)  # [q0 k0 v0 | q1 k1 v1]
    assert q.tolist() == [0, 1, 2, 9, 10, 11] and k.tolist() == [3, 4, 5, 12, 13, 14]
    assert v.tolist() == [6, 7, 8, 15, 16, 17]
    q, k, v = split_qkv(rows, heads, new_order=True)  # [q0 q1 | k0 k1 | v0 v1]
    assert q.tolist() == list(range(6)) and v.tolist() == list(range(12, 18))


def test_class_cond_cli_notes_missing_labels(tmp_path, capsys):
    from explorer.cli.convert import adm_config_from_args
    from explorer.models.convert.adm import module_pairs

    save_reference(tmp_path / "c.pt", num_classes=1000)
    argv = [
        "convert",
        "adm",
        str(tmp_path / "c.pt"),
        "--out",
        str(tmp_path / "c"),
        "--class-cond",
    ] + FLAGS
    code, out, err = run(argv, capsys)
    assert code == 0, err
    n = len(module_pairs(adm_config_from_args(build_parser().parse_args(argv))))
    assert f"{n}/{n}" in err  # the progress bar completes
    assert "class-conditional" in err and not (tmp_path / "c" / "model_index.json").exists()
    assert (
        json.loads((tmp_path / "c" / "unet" / "config.json").read_text())["num_class_embeds"]
        == 1000
    )
