"""The timestep profile: ridge R² against scikit-learn, and the workspace's cached profile."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import Ridge
from sklearn.metrics import r2_score
from sklearn.preprocessing import StandardScaler

from explorer.analysis.profile import ridge_r2
from explorer.features.store import FeatureStore
from explorer.models.loader import load_model
from explorer.workspace import Workspace
from tests.conftest import make_tiny_dataset


@pytest.mark.parametrize("n, d", [(200, 20), (30, 80)])  # primal and dual solves
def test_ridge_r2_is_sklearns_variance_weighted_r2(n, d):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n + 50, d))
    y = x[:, :5] @ rng.normal(size=(5, 7)) + 0.5 * rng.normal(size=(n + 50, 7))
    scaler = StandardScaler().fit(x[:n])
    ref = Ridge(alpha=1.0 * n).fit(scaler.transform(x[:n]), y[:n])
    want = r2_score(y[n:], ref.predict(scaler.transform(x[n:])), multioutput="variance_weighted")
    got = ridge_r2(x[:n], y[:n], x[n:], y[n:], alpha=1.0)
    assert got == pytest.approx(want, abs=1e-6), (got, want)
    assert ridge_r2(y[:n], y[:n], y[n:], y[n:], alpha=1e-9) == pytest.approx(1.0, abs=1e-6)


def test_workspace_profile_is_cached_and_lines_up_with_the_probes(
    tiny_model_dir, tmp_path, monkeypatch
):
    ws = Workspace(
        load_model(str(tiny_model_dir)),
        make_tiny_dataset(n=90),
        store=FeatureStore(tmp_path / "c"),
        batch_size=64,
    )
    asked = []
    df = ws.timestep_profile("mid_block", [10, 300], ensure=lambda m: asked.append(len(m)))
    T = ws.num_timesteps
    assert list(df.t) == [0, 10, 300, T - 1], "the asked levels plus the clean and noisiest"
    assert asked == [4], "missing features announced once, before computing"
    assert np.isnan(df.top1.iloc[0]) and np.isfinite(df.top1.iloc[1]), "probes only where asked"
    assert df.r2_from_noisiest.iloc[-1] > 0.5 and df.r2_from_clean.iloc[0] > 0.5, df
    r = ws.evaluate([ws.setting(300, "mid_block", 2)], "linear")
    assert df.top1.iloc[2] == next(iter(r.values())).top1
    import explorer.workspace as wsmod

    monkeypatch.setattr(wsmod, "profile_rows", lambda *a: pytest.fail("recomputed"))
    again = ws.timestep_profile("mid_block", [10, 300])
    assert again.equals(df), "the second call reads the cache"
