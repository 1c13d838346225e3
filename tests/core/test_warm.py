"""Warm defaults: the shipped seed serves the app's default view from the ordinary caches,
verified by checksum; UMAP never blocks (PCA first, UMAP from a background thread); CKA cached."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from explorer import defaults as D
from explorer import warm
from explorer.analysis import embed
from explorer.defaults import PIXEL_POOL
from explorer.features.keys import EXTRACTION_VERSION
from explorer.features.store import FeatureStore, file_checksum
from explorer.paths import cache_dir
from explorer.settings import Setting
from explorer.workspace import Workspace

# --- UMAP without the wait ------------------------------------------------------------------------


def test_umap_or_pca_shows_pca_first_then_the_cached_umap(tmp_path):
    x = np.random.default_rng(0).normal(size=(60, 12)).astype(np.float32)
    xy, shown = embed.umap_or_pca(x, cache_key="k1", cache_root=tmp_path)
    assert shown == "pca" and xy.shape == (60, 2), "nothing cached: PCA at once"
    assert np.allclose(xy, embed.pca_embed(x)), "and it is the PCA of the features"
    embed.wait_for_umaps()
    assert not embed.umap_pending(x.shape, cache_key="k1", cache_root=tmp_path)
    xy2, shown2 = embed.umap_or_pca(x, cache_key="k1", cache_root=tmp_path)
    assert shown2 == "umap", "the background UMAP is picked up once it is done"
    files = list((tmp_path / "embeddings").glob("umap-*.npy"))
    assert len(files) == 1, "it sits in the ordinary UMAP cache"
    direct = embed.umap_embed(x, cache_key="k1", cache_root=tmp_path)
    assert np.array_equal(xy2, direct), "the same entry umap_embed reads (same key and params)"
    xy3, shown3 = embed.umap_or_pca(x + 1, cache_key="k2", cache_root=tmp_path, background=False)
    assert shown3 == "umap" and xy3.shape == (60, 2), "background=False computes it now"


def test_a_failed_background_umap_is_raised_once(tmp_path, monkeypatch):
    def boom(x, kwargs):
        raise RuntimeError("numba broke")

    monkeypatch.setattr(embed, "_fit_umap", boom)
    x = np.random.default_rng(1).normal(size=(30, 5)).astype(np.float32)
    assert embed.umap_or_pca(x, cache_key="bad", cache_root=tmp_path)[1] == "pca"
    embed.wait_for_umaps()
    with pytest.raises(RuntimeError, match="numba broke"):
        embed.umap_or_pca(x, cache_key="bad", cache_root=tmp_path)
    assert embed.umap_or_pca(x, cache_key="bad", cache_root=tmp_path)[1] == "pca", "then it retries"
    embed.wait_for_umaps()


# --- CKA cached by feature keys ---------------------------------------------------------------------


def test_cka_view_is_cached_and_needs_no_features_after(tiny_model_dir, tiny_dataset, tmp_path):
    from explorer.models.loader import load_model

    ws = Workspace(load_model(str(tiny_model_dir)), tiny_dataset, store=FeatureStore(tmp_path))
    names = [lay.name for lay in ws.catalogue][:3]
    settings = [Setting(10, n, "1") for n in names]
    asked = []
    m = ws.cka(settings, ensure=lambda missing: asked.append(len(missing)))
    assert asked == [3], "missing features are reported before computing (progress bar)"
    assert m.shape == (3, 3) and np.allclose(np.diag(m), 1, atol=1e-4)
    assert np.allclose(m, ws.cka(settings)), "the cached matrix is the core's CKA"
    ws.store.clear()  # features gone: the matrix still comes from its cache
    again = ws.cka(settings, ensure=lambda missing: pytest.fail("recomputed"))
    assert np.array_equal(m, again)
    other = ws.cka(settings, debiased=True)
    assert not np.array_equal(m, other), "debiased is a different entry"


# --- the seed ---------------------------------------------------------------------------------------


def test_the_default_view_follows_the_defaults():
    names = [f"b{i}" for i in range(1, 14)]
    stages = ["down"] * 6 + ["mid"] + ["up"] * 6
    v = warm.default_view(names, stages, 1000)
    assert v.explore == (D.DEFAULT_T, "b7", D.DEFAULT_POOL) and v.head == D.DEFAULT_HEAD
    assert v.compare == v.explore, "Compare: trained vs random weights at Explore's setting"
    assert [s[1] for s in v.sim_blocks] == names and {s[0] for s in v.sim_blocks} == {10}
    assert [s[0] for s in v.sim_times] == list(D.SWEEP_TIMESTEPS), "the app's one timestep set"
    assert v.sim_align == (("random", (10,), "all"), ("pixels", D.SWEEP_TIMESTEPS, "pixels")), (
        "Similarity: blocks x blocks against the random twin, blocks x t against the pixels"
    )
    assert v.sim_images == D.DEFAULT_SIMILARITY_IMAGES


def test_the_shipped_grid_is_every_cell_of_the_shipped_sweep():
    settings, heads = warm.shipped_grid()
    assert heads == ("knn", "linear")
    assert len(settings) == len(D.SWEEP_TIMESTEPS) * 13, "every block at every grid t"
    assert {s[0] for s in settings} == set(D.SWEEP_TIMESTEPS) and {s[2] for s in settings} == {"2"}


def test_seed_files_verify_and_a_tampered_file_is_never_imported(tmp_path):
    man = warm.manifest()
    assert man["files"], "the seed is not empty"
    size = sum((warm.SEED / rel).stat().st_size for rel in man["files"])
    assert size < 16 * 2**20, f"the seed stays small ({size / 2**20:.1f} MiB)"
    for rel, digest in man["files"].items():
        assert file_checksum(warm.SEED / rel) == digest, f"{rel} matches the seed's checksum"
    seed = tmp_path / "seed"
    shutil.copytree(warm.SEED, seed)
    victim = next(rel for rel in man["files"] if rel.startswith("results/"))
    data = bytearray((seed / victim).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (seed / victim).write_bytes(bytes(data))
    counts = warm.import_seed(tmp_path / "cache", seed=seed)
    assert counts["refused"] == 1 and counts["imported"] == len(man["files"]) - 1
    assert not (tmp_path / "cache" / victim).exists(), "the altered file stays out of the cache"
    again = warm.import_seed(tmp_path / "cache", seed=seed)
    assert again["imported"] == 0 and again["present"] == len(man["files"]) - 1, "idempotent"
    store = FeatureStore(tmp_path / "cache")
    for key in man["feature_keys"]:
        assert store.check(key)[0] == "ok", "imported feature entries pass the store's own check"


def test_the_seed_serves_exactly_the_app_default_view(tmp_path, monkeypatch):
    """Keys, not luck: with the seed imported, the default view and every cell of the shipped
    grid compute nothing. A changed default, model, shipped sweep or extraction version fails
    here until `python -m explorer.warm --write`."""
    from explorer.analysis import align_maps
    from explorer.analysis.alignment import METRICS
    from explorer.defaults import RANDOM_PREFIX

    man = warm.manifest()
    ws, sim = warm.workspaces(tmp_path)
    view, (grid, heads) = warm.view_of(ws), warm.shipped_grid()
    assert (man["model_fingerprint"], man["extraction_version"]) == (
        ws.model.fingerprint,
        EXTRACTION_VERSION,
    ), "the seed was made by this model and code"
    assert man["view"] == warm.json.loads(warm.json.dumps(view.__dict__)), "and for this view"
    assert man["grid"] == {"settings": [list(s) for s in grid], "heads": list(heads)}
    assert (man["train_limit"], man["test_limit"]) == (D.DEFAULT_TRAIN_LIMIT, D.DEFAULT_TEST_LIMIT)
    explore = Setting(*view.explore)
    wanted = sorted(ws.key(explore, sp) for sp in ("train", "test"))
    assert man["feature_keys"] == wanted, "the seed keeps the features of Explore's setting"

    warm.import_seed(tmp_path)
    assert cache_dir(tmp_path) == ws.store.root
    twin, sim_twin = ws.twin(RANDOM_PREFIX + warm.MODEL), sim.twin(RANDOM_PREFIX + warm.MODEL)

    def no(*a, **k):
        raise AssertionError("the default view computed something the seed should hold")

    for w in (ws, sim, twin, sim_twin):
        monkeypatch.setattr(w, "ensure", no)
        monkeypatch.setattr(w, "_fit", no)
    monkeypatch.setattr(embed, "_fit_umap", no)
    monkeypatch.setattr(align_maps, "alignment_map", no)
    cells = list(dict.fromkeys([explore, Setting(*view.compare), *(Setting(*s) for s in grid)]))
    for head in {view.head, *heads}:
        res = ws.evaluate([*cells, Setting(None, D.PIXELS, PIXEL_POOL)], head)
        assert all(0 < r.top1 <= 1 for r in res.values())
    assert twin.evaluate([Setting(*view.compare)], view.head)
    for w, s in [*((ws, c) for c in cells), (twin, Setting(*view.compare))]:
        xy = w.cached_umap(s)
        assert xy is not None and xy.shape == (len(w.test.indices), 2), f"no UMAP for {s}"
    x = np.asarray(ws.features(explore, "test"))  # the one setting whose features ship
    assert embed.umap_or_pca(x, cache_key=ws.key(explore, "test"), cache_root=ws.store.root)[1] == (
        "umap"
    )
    for group in (view.sim_blocks, view.sim_times):
        m = sim.cka([Setting(*s) for s in group], ensure=no)
        assert m.shape == (len(group), len(group))
    for against, ts, ref_layers in view.sim_align:
        ref = sim_twin if against == "random" else sim
        table = sim.align(ref, timesteps=list(ts), ref_layers=ref_layers, metrics=METRICS)
        assert set(table["metric"]) == set(METRICS) and table["value"].notna().all()


# --- the server's warm-up (process-level preloads) ------------------------------------------------


@pytest.fixture
def preloads():
    warm.forget_preloads()
    yield
    warm.forget_preloads()


def test_a_session_that_asks_early_waits_for_the_preload_and_never_makes_twice(preloads):
    import threading

    gate, made = threading.Event(), []

    def slow():
        gate.wait(10)
        made.append(1)
        return object()

    th = warm.preload([(("k",), slow), (("later",), lambda: warm.preloaded(("k",), object))])
    got = []
    asker = threading.Thread(target=lambda: got.append(warm.preloaded(("k",), lambda: "not me")))
    asker.start()
    asker.join(0.2)
    assert asker.is_alive(), "the session waits while the preload is being made"
    gate.set()
    asker.join(10)
    th.join(10)
    assert made == [1], "made once, by the warm-up"
    assert got[0] is warm.preloaded(("k",), object), "the session got the preloaded object"
    assert warm.preloaded(("later",), object) is got[0], "later steps reuse earlier ones"
    assert warm.preloaded(("other",), lambda: 42) == 42, "keys the warm-up never registered: made"


def test_a_failed_or_self_referring_preload_falls_back_to_making_it(preloads, caplog):
    def boom():
        raise RuntimeError("no model here")

    th = warm.preload([(("bad",), boom), (("self",), lambda: warm.preloaded(("self",), lambda: 7))])
    th.join(10)
    assert not th.is_alive(), "a step that asks for its own key does not wait on itself"
    assert warm.preloaded(("bad",), lambda: "made by the session") == "made by the session"
    assert warm.preloaded(("self",), lambda: 0) == 7
    assert "warm-up step bad failed: no model here" in caplog.text


def test_warm_up_makes_the_default_workspaces_the_pages_then_get(preloads, tmp_path, monkeypatch):
    from explorer.ui import services

    monkeypatch.setenv("EXPLORER_CACHE", str(tmp_path))
    services.warm_up().join(300)
    root, (model, dataset) = str(cache_dir()), services.SEED_PAIR
    args = (model, dataset, D.DEFAULT_TRAIN_LIMIT, D.DEFAULT_TEST_LIMIT, root, "auto")
    ws = services._load_workspace(*args)
    assert services._load_workspace(*args) is ws, "one workspace per process"
    assert services._load_model(model, "auto") is ws.model, "sharing the warm-up's model"
    sim = services._load_workspace(
        *args[:3], min(D.DEFAULT_SIMILARITY_IMAGES, D.DEFAULT_TEST_LIMIT), root, "auto"
    )
    assert sim.model is ws.model and sim is not ws
    assert "catalogue" in vars(ws) or ws.catalogue, "the layer catalogue is ready"
    present = warm.import_seed(root)
    assert present["imported"] == 0 and present["present"] > 0, "the seed is already imported"


def test_explorer_app_serves_through_the_warm_up_without_a_source_watcher(monkeypatch):
    import subprocess

    from explorer import cli

    seen = {}

    class FakeServer:
        def __init__(self, cmd, cwd=None, env=None):
            seen["cmd"] = cmd

        def wait(self):
            return 0

        def poll(self):
            return 0

    monkeypatch.setattr(subprocess, "Popen", FakeServer)
    assert cli.main(["app", "--headless"]) == 0
    cmd = seen["cmd"]
    assert cmd[1:4] == ["-m", "explorer.serve", "run"] and cmd[4].endswith("app.py")
    assert cmd[cmd.index("--server.fileWatcherType") + 1] == "none"


def test_a_shipped_cell_opens_warm_in_explore(tmp_path, monkeypatch):
    """A cell of the shipped grid far from the default (t=300, the last block, the knn head),
    opened in Explore on a fresh cache: the seed serves its probe, the pixel baseline and the
    UMAP; nothing is extracted, fitted or embedded."""
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    from explorer import workspace
    from explorer.data import default_dataset

    if default_dataset() != warm.DATASET:
        pytest.skip("needs Fashion-MNIST installed (the seed's dataset)")
    settings, heads = warm.shipped_grid()
    t, layer, pool = settings[-1]

    def no(*a, **k):
        raise AssertionError("a shipped cell computed something on a fresh start")

    monkeypatch.setenv("EXPLORER_CACHE", str(tmp_path))
    monkeypatch.setattr(workspace, "ensure_features", no)
    monkeypatch.setattr(workspace, "ensure_pixels", no)
    monkeypatch.setattr(workspace.Workspace, "_fit", no)
    monkeypatch.setattr(embed, "_fit_umap", no)
    at = AppTest.from_file(str(Path(__file__).resolve().parents[2] / "app.py"), default_timeout=600)
    at.query_params.update({"t": str(t), "block": layer, "pool": pool, "head": heads[0]})
    at.run()
    assert not at.exception and not at.error, [e.value for e in [*at.exception, *at.error]]
    assert [m.value for m in at.metric if m.label == "Top-1 (test)"], "the number is there"
    assert not [c for c in at.caption if "UMAP is being computed" in c.value], "the UMAP is warm"


def test_the_server_warm_up_prints_no_streamlit_runtime_warnings(tmp_path):
    """`explorer app` warms before Streamlit's runtime exists; the cache decorators' "No
    runtime found" warnings (harmless: storage is the runtime's per call) stay out of the
    terminal, whatever imports Streamlit's loggers first."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "EXPLORER_CACHE": str(tmp_path / "cache")}
    r = subprocess.run(
        [sys.executable, "-c", "from explorer.serve import warm; print(warm(300) > 0)"],
        capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    assert r.returncode == 0 and r.stdout.strip() == "True", r.stderr[-2000:]
    assert "No runtime found" not in r.stderr, r.stderr[-2000:]
