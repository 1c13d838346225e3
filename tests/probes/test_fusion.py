"""Fused settings: concatenation, DIFT's ensemble, keys, the text form and the `fusion` head."""

from __future__ import annotations

import numpy as np
import pytest

from explorer.errors import ExplorerError
from explorer.features.store import FeatureStore
from explorer.models.loader import load_model
from explorer.probes.combine import fuse_features
from explorer.probes.fusion import FusionProbe, fit_fusion, pack_maps
from explorer.probes.registry import parse_head
from explorer.settings import Fused, format_fused, parse_fused
from explorer.workspace import Workspace


@pytest.fixture
def ws(tiny_model_dir, tiny_dataset):
    return Workspace(
        load_model(str(tiny_model_dir)), tiny_dataset, store=FeatureStore(), batch_size=32
    )


def test_concatenation_equals_manual_hstack(ws):
    a, b = ws.setting(150, 4, 2), ws.setting(90, "mid", "gap")
    fused = ws.features((a, b), "test")
    manual = np.hstack([ws.features(a, "test"), ws.features(b, "test")])
    assert fused.shape == manual.shape and fused.shape[1] > ws.features(a, "test").shape[1]
    np.testing.assert_array_equal(fused, manual)
    # the notebook and text forms give the same fused setting
    assert ws.fused([(150, 4), (90, "mid", "gap")]) == Fused((a, b))
    assert ws.fused("4@150+mid@90/gap", pool=2) == Fused((a, b))


def test_dift_ensemble_is_the_mean_of_the_members(ws):
    draws = [ws.setting(150, 4, 2, seed) for seed in (0, 1, 2)]
    mean = ws.features(Fused(tuple(draws), "mean"), "train")
    members = np.stack([np.asarray(ws.features(s, "train"), dtype=np.float32) for s in draws])
    assert not np.allclose(members[0], members[1])  # the draws differ
    np.testing.assert_allclose(mean, members.mean(0), rtol=1e-6, atol=1e-6)
    assert ws.fused("mean:4@150~0+4@150~1+4@150~2").is_ensemble


def test_fused_key_changes_with_membership_order_and_mode(ws):
    a, b, c = ws.setting(150, 4, 2), ws.setting(90, 7, 2), ws.setting(90, 6, 2)
    head = parse_head("linear")
    keys = [
        ws.result_key(head, f)
        for f in (
            Fused((a, b)),
            Fused((b, a)),
            Fused((a, c)),
            Fused((a, b, c)),
            Fused((a, b), "mean"),
        )
    ]
    assert len(set(keys)) == len(keys)
    assert ws.result_key(head, Fused((a, b))) == ws.result_key(head, ws.canonical((a, b)))
    assert ws.result_key(head, a) not in keys


def test_fused_probe_is_cached_like_any_other(ws):
    r1 = ws.probe(fuse=[(150, 4), (90, 7)], head="linear")
    n = len(list(ws.results.dir.glob("*.npz")))
    r2 = ws.probe(fuse="4@150+7@90", head="linear")
    assert len(list(ws.results.dir.glob("*.npz"))) == n
    np.testing.assert_array_equal(r1.predictions, r2.predictions)
    assert r1.predictions.shape == ws.labels("test").shape


def test_fused_inputs_are_checked_in_one_line(ws):
    with pytest.raises(ExplorerError, match="BLOCK@T"):
        ws.fused("4-150+7@90")
    with pytest.raises(ExplorerError, match="one member"):
        ws.fused("4@150")
    with pytest.raises(ExplorerError, match="twice"):
        ws.fused("4@150+4@150")
    with pytest.raises(ExplorerError, match="one map"):
        ws.probe(fuse="4@150+7@90", head="attention-paper")
    with pytest.raises(ExplorerError, match="one shape"):
        fuse_features([np.zeros((3, 4)), np.zeros((3, 5))], "mean")


def test_text_form_round_trips(ws):
    f = ws.fused("mean:4@150~1+4@150~2/4", pool=2)
    text = format_fused(f, lambda name: ws.layer(name).index, pool="2")
    assert text == "mean:4@150~1+4@150~2/4"
    assert ws.fused(text, pool=2) == f
    assert parse_fused("24@150+19@90") == (
        [("24", "150", None, None), ("19", "90", None, None)],
        "concat",
    )


def _xor_maps(n: int, seed: int):
    """Two members whose signs a, b are each useless alone; the label is a == b."""
    rng = np.random.default_rng(seed)
    a, b = rng.choice([-1.0, 1.0], n), rng.choice([-1.0, 1.0], n)
    v1, v2 = (
        np.array([1.0, -1, 1, -1]),
        np.array([1.0, 1, -1, -1, 1, -1]),
    )  # sign patterns over channels
    m1 = a[:, None, None, None] * v1[:, None, None] + 0.3 * rng.standard_normal((n, 4, 2, 2))
    m2 = b[:, None, None, None] * v2[:, None, None] + 0.3 * rng.standard_normal((n, 6, 1, 1))
    return [m1.astype(np.float32), m2.astype(np.float32)], (a == b).astype(np.int64)


def test_fusion_head_learns_what_only_the_combination_tells():
    from explorer.probes.linear import LinearProbe

    xtr, ytr = _xor_maps(400, 0)
    xte, yte = _xor_maps(200, 1)
    res = fit_fusion(
        xtr,
        ytr,
        xte,
        yte,
        n_classes=2,
        dim=32,
        heads=4,
        epochs=60,
        lr=3e-3,
        patience=60,
        device="cpu",
    )
    assert res.top1 > 0.9
    for i in range(2):  # each member alone: chance
        alone = LinearProbe().fit(xtr[i].reshape(400, -1), ytr).score(xte[i].reshape(200, -1), yte)
        assert alone < 0.65
    assert res.extra["members"] == 2


def test_pack_maps_and_shape_check():
    rows, shapes = pack_maps([np.ones((5, 3, 16, 16)), np.ones((5, 2, 1, 1))])
    assert shapes == [(3, 8, 8), (2, 1, 1)] and rows.shape == (5, 3 * 64 + 2)
    x, y = _xor_maps(40, 0)
    probe = FusionProbe(dim=8, heads=2, epochs=1, device="cpu").fit(x, y)
    with pytest.raises(ExplorerError, match="fitted on"):
        probe.predict([x[1], x[0]])


def test_fusion_head_through_the_workspace(ws):
    r = ws.probe(fuse="4@150+7@90", head="fusion:dim=16:heads=2:epochs=2")
    assert r.head == "fusion" and r.extra["members"] == 2
    one = ws.probe(150, 4, 2, head="fusion:dim=16:heads=2:epochs=2")  # a one-member token set
    assert one.extra["members"] == 1


def test_fused_gain_pairs_the_fused_result_with_each_member():
    from explorer.probes.combine import fused_gain
    from explorer.probes.metrics import ProbeResult

    y = np.arange(200) % 2
    a = np.where(np.arange(200) < 120, y, 1 - y)  # 60% right
    b = np.where(np.arange(200) < 140, y, 1 - y)  # 70%
    f = np.where(np.arange(200) < 180, y, 1 - y)  # 90%
    ra, rb, rf = (ProbeResult.from_predictions("linear", y, p, 2) for p in (a, b, f))
    gain = fused_gain(ra, rb, rf, y)
    assert gain.vs_a.diff == pytest.approx(0.3) and gain.vs_b.diff == pytest.approx(0.2)
    assert gain.vs_best is gain.vs_b and gain.vs_b.low > 0
    assert "A+B" in gain.words()
