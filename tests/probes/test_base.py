"""The shared estimator bases: scikit-learn parameters and clone on every probe."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone

from explorer.probes.attention import AttentionProbe
from explorer.probes.base import TorchProbe
from explorer.probes.linear import LinearProbe
from explorer.probes.mlp import MLPProbe

PROBES = [
    (LinearProbe(1e-3, max_iter=50, device="cpu"), np.zeros((30, 4), np.float32)),
    (MLPProbe(16, epochs=2, lr=3e-3, device="cpu"), np.zeros((30, 4), np.float32)),
    (AttentionProbe(dim=8, heads=2, epochs=2, device="cpu"), np.zeros((30, 3, 2, 2), np.float32)),
]


@pytest.mark.parametrize("probe,shape_of", PROBES, ids=lambda p: type(p).__name__)
def test_clone_and_params_on_every_probe(probe, shape_of):
    params = probe.get_params()
    assert "device" in params and params["device"] == "cpu", (
        f"get_params lists the arguments: {params}"
    )
    rng = np.random.default_rng(0)
    x = rng.normal(size=shape_of.shape).astype(np.float32)
    y = np.arange(len(x)) % 3
    fitted = clone(probe).fit(x, y)
    copy = clone(fitted)
    assert copy is not fitted and copy.get_params() == params, "clone keeps every parameter"
    assert not hasattr(copy, "classes_"), "a clone is unfitted"
    assert copy.set_params(device="cpu") is copy, "set_params returns the estimator"
    assert clone(probe).fit(x, y).predict(x).shape == (len(x),), "a clone fits and predicts"


def test_neural_probes_share_one_fit_flow():
    for cls in (MLPProbe, AttentionProbe):
        assert issubclass(cls, TorchProbe), f"{cls.__name__} uses the shared flow"
        assert "fit" not in vars(cls) and "predict_proba" not in vars(cls), (
            f"{cls.__name__} has its own fit"
        )
    keys = {
        "epochs",
        "batch_size",
        "lr",
        "weight_decay",
        "patience",
        "val_fraction",
        "device",
        "seed",
    }
    for probe in (MLPProbe(), AttentionProbe()):
        assert keys <= set(probe.get_params()), f"training parameters of {type(probe).__name__}"
