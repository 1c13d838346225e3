"""Warm defaults: what the app's first views ask for, and a small seed of the caches that holds it.

The app opens Explore, Compare and Similarity on one default view (`default_view`). Its
features, probe results, UMAPs and CKA matrices ship in `assets/warm/`, laid out exactly like
the user's cache root (`features/`, `results/`, `embeddings/`; see `explorer.features.cache_admin`),
with `manifest.json` holding every file's sha256. `import_seed` copies the files the cache
lacks into it, each verified against that checksum first (and feature entries again by the
store when opened), so the first views are served by the ordinary content-addressed caches,
never by a side channel. Regenerate the seed after a default, the model or the extraction
changes (`tests/core/test_warm.py` fails until then):

    python -m explorer.warm --write
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from explorer import defaults as D
from explorer.atomic import atomic_write
from explorer.features.keys import EXTRACTION_VERSION
from explorer.features.store import file_checksum
from explorer.paths import ASSETS, cache_dir
from explorer.settings import Setting

log = logging.getLogger("explorer.warm")
SEED = ASSETS / "warm"
MODEL, DATASET = "ddpm-fashion-mnist", "fashion-mnist"  # the pair the seed is made for
SEED_VERSION = 1


@dataclass(frozen=True)
class DefaultView:
    """The settings the app's pages open on (before anyone touches a control).

    Settings are `(t, layer name, pool)` triples; `sim_images` is Similarity's test-image count.
    """

    explore: tuple[int, str, str]
    compare: tuple[tuple[int, str, str], tuple[int, str, str]]
    sim_blocks: tuple[tuple[int, str, str], ...]
    sim_times: tuple[tuple[int, str, str], ...]
    head: str
    sim_images: int


def default_view(names: Sequence[str], stages: Sequence[str], num_timesteps: int) -> DefaultView:
    """The default view for a model whose blocks are `names` (of `stages`) with T timesteps."""
    t, pool = D.default_t(num_timesteps), D.DEFAULT_POOL
    a = names[D.default_block(stages)]
    b = names[D.compare_block(len(names))]
    times = D.timestep_defaults(num_timesteps, D.SIMILARITY_TIMESTEPS)
    return DefaultView(
        explore=(t, a, pool),
        compare=((t, a, pool), (t, b, pool)),
        sim_blocks=tuple((t, n, pool) for n in names),
        sim_times=tuple((x, a, pool) for x in times) if len(times) >= 2 else (),
        head=D.DEFAULT_HEAD,
        sim_images=D.DEFAULT_SIMILARITY_IMAGES,
    )


def view_of(ws) -> DefaultView:
    """`default_view` of a Workspace's model."""
    cat = ws.catalogue
    return default_view([x.name for x in cat], [x.stage for x in cat], ws.model.num_timesteps)


# --- process-level preload (the server's warm-up) --------------------------------------------------

_PRELOAD: dict[tuple, Future] = {}
_PRELOAD_LOCK = threading.Lock()


def preloaded(key: tuple, make: Callable[[], object]):
    """`make()`, unless the warm-up registered `key`: then its result (waiting for it while it is
    being made, so a session that arrives early never loads the same model twice). A failed
    preload falls back to `make()`. Thread-safe."""
    with _PRELOAD_LOCK:
        fut = _PRELOAD.get(key)
    making_it_now = fut is not None and not fut.done() and fut.maker == threading.get_ident()
    if fut is not None and not making_it_now:  # a step asking for its own key makes it itself
        try:
            return fut.result()
        except Exception:  # the warm-up's failure is logged there; the session tries on its own
            pass
    return make()


def preload(steps: Sequence[tuple[tuple, Callable[[], object]]]) -> threading.Thread:
    """Register every `(key, make)` step at once, then make them in order in a daemon thread
    (later steps may use earlier ones through `preloaded`). Returns the started thread."""
    futs = []
    with _PRELOAD_LOCK:
        for key, make in steps:
            fut = _PRELOAD.get(key)
            if fut is None:
                fut = _PRELOAD[key] = Future()
                fut.maker = None  # the thread id making it, once it runs
                futs.append((key, make, fut))

    def run() -> None:
        for key, make, fut in futs:
            fut.maker = threading.get_ident()
            if not fut.set_running_or_notify_cancel():  # (never cancelled; for form)
                continue
            try:
                fut.set_result(make())
            except BaseException as e:  # noqa: BLE001 - reported, and sessions fall back
                log.warning("warm-up step %s failed: %s", key[0], e)
                fut.set_exception(e)

    th = threading.Thread(target=run, name="explorer-warm-up", daemon=True)
    th.start()
    return th


def forget_preloads() -> None:
    """Drop every preload (tests)."""
    with _PRELOAD_LOCK:
        _PRELOAD.clear()


# --- the seed ---------------------------------------------------------------------------------------


def manifest(seed: Path = SEED) -> dict:
    return json.loads((seed / "manifest.json").read_text())


def import_seed(root: str | os.PathLike | None = None, seed: Path = SEED) -> dict[str, int]:
    """Copy the seed's files that the cache root lacks into it, each verified against the seed's
    sha256 first; a file that fails is skipped (and reported), never imported. Returns counts:
    imported, present, refused."""
    counts = {"imported": 0, "present": 0, "refused": 0}
    try:
        files = manifest(seed)["files"]
    except (OSError, ValueError, KeyError):
        return counts
    base = cache_dir(root)
    # feature arrays before their manifests: an entry is visible only once its manifest is there
    for rel in sorted(files, key=lambda r: (r.endswith(".json"), r)):
        dst = base / rel
        if dst.exists():
            counts["present"] += 1
            continue
        src = seed / rel
        if not src.is_file() or file_checksum(src) != files[rel]:
            log.warning("warm seed file %s does not match its checksum; not imported", rel)
            counts["refused"] += 1
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(dst, lambda tmp, src=src: shutil.copyfile(src, tmp))
        counts["imported"] += 1
    return counts


def compute_view(ws, ws_sim, view: DefaultView) -> dict[str, list[str]]:
    """Compute everything `view` shows (probe results, UMAPs, CKA) in the workspaces' caches;
    returns the feature keys that the seed keeps (train and test of every probed setting)."""
    from explorer.analysis.embed import umap_or_pca  # umap/numba: on use only
    from explorer.defaults import PIXEL_POOL

    probed = [Setting(*view.explore), *(Setting(*s) for s in view.compare)]
    probed = list(dict.fromkeys(probed))
    ws.evaluate(probed + [Setting(None, D.PIXELS, PIXEL_POOL)], view.head)
    for s in probed:
        umap_or_pca(
            np.asarray(ws.features(s, "test")),
            cache_key=ws.key(s, "test"),
            cache_root=ws.store.root,
            background=False,
        )
    ws_sim.cka([Setting(*s) for s in view.sim_blocks])
    if view.sim_times:
        ws_sim.cka([Setting(*s) for s in view.sim_times])
    return {"features": sorted({ws.key(s, sp) for s in probed for sp in ("train", "test")})}


def workspaces(root: str | os.PathLike | None = None, *, device: str = "cpu"):
    """The app's default workspaces on the seed's pair: (main, Similarity's smaller test split)."""
    # torch and the models load here, not when the app imports warm.py for its seed check
    from explorer.data import load_dataset
    from explorer.features.store import FeatureStore
    from explorer.models.loader import load_model
    from explorer.workspace import Workspace

    model, ds = load_model(MODEL, device=device), load_dataset(DATASET)
    store = FeatureStore(root)
    kw = dict(store=store, train_limit=D.DEFAULT_TRAIN_LIMIT, device=device)
    ws = Workspace(model, ds, test_limit=D.DEFAULT_TEST_LIMIT, **kw)
    sim = Workspace(
        model, ds, test_limit=min(D.DEFAULT_SIMILARITY_IMAGES, D.DEFAULT_TEST_LIMIT), **kw
    )
    return ws, sim


def write_seed(seed: Path = SEED) -> dict:
    """Recompute the default view in an empty cache and keep its files as the seed."""
    with tempfile.TemporaryDirectory() as tmp:
        ws, sim = workspaces(tmp)
        view = view_of(ws)
        keep = compute_view(ws, sim, view)
        root = Path(tmp)
        rels = [
            p.relative_to(root).as_posix()
            for sub in ("results", "embeddings")
            for p in sorted((root / sub).glob("*"))
            if p.is_file() and not p.name.endswith(".tmp")
        ]
        for key in keep["features"]:
            npy, js = ws.store.paths(key)
            rels += [npy.relative_to(root).as_posix(), js.relative_to(root).as_posix()]
        if seed.exists():
            shutil.rmtree(seed)
        for rel in rels:
            (seed / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(root / rel, seed / rel)
        man = {
            "version": SEED_VERSION,
            "model": MODEL,
            "model_fingerprint": ws.model.fingerprint,
            "dataset": DATASET,
            "dataset_fingerprint": ws.dataset.fingerprint,
            "extraction_version": EXTRACTION_VERSION,
            "train_limit": D.DEFAULT_TRAIN_LIMIT,
            "test_limit": D.DEFAULT_TEST_LIMIT,
            "view": json.loads(json.dumps(view.__dict__)),
            "feature_keys": keep["features"],
            "files": {rel: file_checksum(seed / rel) for rel in sorted(rels)},
        }
        (seed / "manifest.json").write_text(json.dumps(man, indent=1) + "\n")
    return man


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m explorer.warm", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument("--write", action="store_true", help="recompute the seed into assets/warm/")
    ap.add_argument("--cache-dir", default=None, help="import the seed into this cache root")
    a = ap.parse_args(argv)
    if a.write:
        man = write_seed()
        size = sum((SEED / r).stat().st_size for r in man["files"])
        print(f"wrote {len(man['files'])} files ({size / 2**20:.1f} MiB) to {SEED}")
    else:
        print(import_seed(a.cache_dir))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
