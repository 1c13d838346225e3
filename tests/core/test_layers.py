"""The layer catalogue: forward order, real shapes, the paper's ADM numbering, and layer selection."""

from __future__ import annotations

import pytest
import torch

from explorer.errors import ExplorerError
from explorer.models.layers import LayerSpec, build_catalogue, first_tensor, select_layers

# The tiny U-Net of conftest.TINY_UNET, written out by hand once to pin the numbering rule.
TINY_EXPECTED = [
    ("conv_in", "down", "conv", 8, 16),
    ("down_blocks.0.resnets.0", "down", "resnet", 8, 16),
    ("down_blocks.0.downsamplers.0", "down", "downsample", 8, 8),
    ("down_blocks.1.resnets.0", "down", "resnet+attn", 16, 8),
    ("mid_block", "mid", "mid", 16, 8),
    ("up_blocks.0.resnets.0", "up", "resnet+attn", 16, 8),
    ("up_blocks.0.resnets.1", "up", "resnet+attn+upsample", 16, 16),
    ("up_blocks.1.resnets.0", "up", "resnet", 8, 16),
    ("up_blocks.1.resnets.1", "up", "resnet", 8, 16),
]

ADM = dict(
    sample_size=256,
    in_channels=3,
    out_channels=6,
    block_out_channels=(256, 256, 512, 512, 1024, 1024),
    layers_per_block=2,
    down_block_types=("ResnetDownsampleBlock2D",) * 3 + ("AttnDownBlock2D",) * 3,
    up_block_types=("AttnUpBlock2D",) * 3 + ("ResnetUpsampleBlock2D",) * 3,
    attention_head_dim=64,
    resnet_time_scale_shift="scale_shift",
    downsample_type="resnet",
    upsample_type="resnet",
)

DDPM_CIFAR10 = dict(
    sample_size=32,
    block_out_channels=(128, 256, 256, 256),
    layers_per_block=2,
    down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
)


def _meta_unet(cfg: dict):
    from diffusers import UNet2DModel

    with torch.device("meta"):
        return UNet2DModel(**cfg)


@pytest.fixture(scope="module")
def tiny_unet(tiny_unet_config):
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    return UNet2DModel(**tiny_unet_config).eval()


@pytest.fixture(scope="module")
def adm_catalogue() -> list[LayerSpec]:
    return build_catalogue(_meta_unet(ADM))


def test_tiny_catalogue_names_stages_kinds(tiny_unet):
    cat = build_catalogue(tiny_unet)
    got = [(lay.name, lay.stage, lay.kind, lay.channels, lay.height) for lay in cat]
    assert got == TINY_EXPECTED, f"catalogue does not follow the numbering rule:\n{got}"
    assert [lay.index for lay in cat] == list(range(1, len(cat) + 1)), (
        "indices must be 1-based and contiguous"
    )
    assert all(lay.height == lay.width for lay in cat), "square input gives square maps"
    assert all(lay.reduction == 16 // lay.height for lay in cat), [lay.reduction for lay in cat]


def test_tiny_catalogue_matches_a_real_forward(tiny_unet):
    """Hook every catalogue module ourselves: call order and output shapes must match the catalogue."""
    cat = build_catalogue(tiny_unet)
    modules = dict(tiny_unet.named_modules())
    order: list[str] = []
    shapes: dict[str, tuple] = {}

    def record(name):
        def hook(_m, _i, out):
            order.append(name)
            shapes[name] = tuple(first_tensor(out).shape)

        return hook

    handles = [modules[lay.hook].register_forward_hook(record(lay.hook)) for lay in cat]
    try:
        with torch.no_grad():
            tiny_unet(torch.randn(3, 1, 16, 16), torch.tensor([5, 50, 500]))
    finally:
        for h in handles:
            h.remove()
    assert order == [lay.hook for lay in cat], f"catalogue is not in forward order: {order}"
    for lay in cat:
        assert shapes[lay.hook] == (3, lay.channels, lay.height, lay.width), (
            f"{lay.name}: catalogue says {lay.channels}x{lay.height}x{lay.width}, forward gave {shapes[lay.hook]}"
        )


def test_build_catalogue_leaves_no_hooks_and_keeps_mode(tiny_unet):
    tiny_unet.train()
    try:
        build_catalogue(tiny_unet)
        assert tiny_unet.training, "build_catalogue must restore train mode"
    finally:
        tiny_unet.eval()
    leftover = [n for n, m in tiny_unet.named_modules() if m._forward_hooks]
    assert not leftover, f"hooks left behind on {leftover}"


def test_adm_layout_gives_the_papers_37_blocks(adm_catalogue):
    cat = adm_catalogue
    assert len(cat) == 37, f"the paper's ADM has 37 blocks, catalogue has {len(cat)}"
    by_index = {lay.index: lay for lay in cat}
    b19, b24 = by_index[19], by_index[24]
    assert (b19.name, b19.channels, b19.height, b19.width) == ("mid_block", 1024, 8, 8), b19
    assert (b24.name, b24.channels, b24.height, b24.width) == (
        "up_blocks.1.resnets.1",
        1024,
        16,
        16,
    ), b24
    assert by_index[7].name == "down_blocks.1.downsamplers.0", by_index[7]
    assert by_index[1].name == "conv_in", by_index[1]
    assert by_index[37].name == "up_blocks.5.resnets.2", by_index[37]
    assert [lay.stage for lay in cat] == ["down"] * 18 + ["mid"] + ["up"] * 18, [
        lay.stage for lay in cat
    ]


def test_adm_channel_table(adm_catalogue):
    table = {
        range(1, 8): 256,
        range(8, 14): 512,
        range(14, 26): 1024,
        range(26, 32): 512,
        range(32, 38): 256,
    }
    for blocks, channels in table.items():
        for b in blocks:
            got = adm_catalogue[b - 1].channels
            assert got == channels, (
                f"block {b} should have {channels} channels (docs/method.md), has {got}"
            )


def test_ddpm_cifar10_layout_count():
    cat = build_catalogue(_meta_unet(DDPM_CIFAR10))
    # conv_in + 4x2 down resnets + 3 downsamplers + mid + 4x3 up resnets
    assert len(cat) == 1 + 8 + 3 + 1 + 12, (
        f"google/ddpm-cifar10-32 should have 25 points, got {len(cat)}"
    )
    assert cat[-1].channels == 128 and cat[-1].height == 32, cat[-1]
    assert sum(lay.kind.endswith("upsample") for lay in cat) == 3, "three up blocks upsample"


# --- select_layers --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_cat(tiny_unet):
    return build_catalogue(tiny_unet)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("all", list(range(1, 10))),
        (None, list(range(1, 10))),
        ("1,3", [1, 3]),
        ("3,1", [1, 3]),
        ("-1", [9]),
        (-2, [8]),
        ("2-4", [2, 3, 4]),
        ("4-2", [2, 3, 4]),
        ("mid", [5]),
        ("mid_block,conv_in", [1, 5]),
        ("up_blocks.0.resnets.1", [7]),
        ("up_blocks.0.upsamplers.0", [7]),  # the hooked module's path names the same point
        (["1", 2, "2"], [1, 2]),
    ],
)
def test_select_layers(tiny_cat, spec, expected):
    got = [lay.index for lay in select_layers(tiny_cat, spec)]
    assert got == expected, f"select_layers({spec!r}) -> {got}, expected {expected}"


def test_select_unknown_name_suggests(tiny_cat):
    with pytest.raises(ExplorerError) as e:
        select_layers(tiny_cat, "up_blocks.0.resnet.1")
    msg = str(e.value)
    assert "up_blocks.0.resnets.1" in msg, f"a close name should be suggested: {msg}"
    assert "explorer layers" in msg, f"the error should point to `explorer layers`: {msg}"


@pytest.mark.parametrize("spec", ["10", "0", "-10", "2-12"])
def test_select_out_of_range_gives_valid_range(tiny_cat, spec):
    with pytest.raises(ExplorerError, match=r"out of range \(1 to 9") as e:
        select_layers(tiny_cat, spec)
    assert "\n" not in str(e.value), f"one-line error expected: {e.value!r}"


def test_layer_spec_label_and_dict(tiny_cat):
    lay = tiny_cat[4]
    assert lay.label == "05 · mid_block · 16×8×8", lay.label
    d = lay.to_dict()
    assert d["name"] == "mid_block" and d["channels"] == 16 and d["index"] == 5, d
