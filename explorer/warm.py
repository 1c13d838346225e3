"""Warm defaults: what the app's first views ask for, and a small seed of the caches that holds it.

The app opens Explore, Compare and Similarity on one default view (`default_view`): Explore on
the validation-best setting, Compare on the trained model against its random-weights twin there,
Similarity with its CKA maps and its alignment maps against the random twin and against the raw
pixels. Every cell of the shipped sweep (`shipped_grid`: its settings and heads, at the app's
default limits) opens warm in Explore too. Their probe results, UMAPs, CKA matrices and
alignment maps ship in `assets/warm/` (with the features of Explore's default setting only: the
pages read the rest from those derived caches without features), laid out exactly like
the user's cache root (`features/`, `results/`, `embeddings/`; see `explorer.features.cache_admin`),
with `manifest.json` holding every file's sha256. `import_seed` copies the files the cache
lacks into it, each verified against that checksum first (and feature entries again by the
store when opened), so the first views are served by the ordinary content-addressed caches,
never by a side channel. Regenerate the seed after a default, the model, the shipped sweep or
the extraction changes (`tests/core/test_warm.py` fails until then); this one command does it all:

    python -m explorer.warm --write
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from explorer import defaults as D
from explorer import shipped
from explorer.atomic import atomic_write
from explorer.features.keys import EXTRACTION_VERSION
from explorer.features.store import file_checksum
from explorer.paths import ASSETS, cache_dir
from explorer.settings import Setting

log = logging.getLogger("explorer.warm")
SEED = ASSETS / "warm"
MODEL, DATASET = "ddpm-fashion-mnist", "fashion-mnist"  # the pair the seed is made for
SEED_VERSION = 2


@dataclass(frozen=True)
class DefaultView:
    """The settings the app's pages open on (before anyone touches a control).

    Settings are `(t, layer name, pool)` triples. `compare` is Compare's one setting, on the
    random-weights twin (A) and on the trained model (B), as the page puts them. `sim_align` lists Similarity's
    alignment maps with "Compare with" at its default (random weights): `(against, timesteps,
    ref_layers)`, `against` "random" (the twin) or "pixels" (the model's own input); `sim_images`
    is Similarity's test-image count.
    """

    explore: tuple[int, str, str]
    compare: tuple[int, str, str]
    sim_blocks: tuple[tuple[int, str, str], ...]
    sim_times: tuple[tuple[int, str, str], ...]
    sim_align: tuple[tuple[str, tuple[int, ...], str], ...]
    head: str
    sim_images: int


def default_view(names: Sequence[str], stages: Sequence[str], num_timesteps: int) -> DefaultView:
    """The default view for a model whose blocks are `names` (of `stages`) with T timesteps."""
    t, pool = D.default_t(num_timesteps), D.DEFAULT_POOL
    a = names[D.default_block(stages)]
    times = D.timestep_defaults(num_timesteps, D.SIMILARITY_TIMESTEPS)
    against_pixels = (("pixels", tuple(times), D.PIXELS),) if times else ()
    return DefaultView(
        explore=(t, a, pool),
        compare=(t, a, pool),
        sim_blocks=tuple((t, n, pool) for n in names),
        sim_times=tuple((x, a, pool) for x in times) if len(times) >= 2 else (),
        sim_align=(("random", (t,), "all"), *against_pixels),
        head=D.DEFAULT_HEAD,
        sim_images=D.DEFAULT_SIMILARITY_IMAGES,
    )


def shipped_grid() -> tuple[tuple[tuple[int, str, str], ...], tuple[str, ...]]:
    """The shipped sweep's `(t, layer, pool)` settings of the seed's model (in t, then block
    order) and its heads: the cells the Sweep page opens in Explore."""
    from explorer.results import load_table  # pandas: not for the app's seed check

    path = shipped.table_for(MODEL, DATASET)
    if path is None:
        return (), ()
    df = load_table(path)
    mine = df[(df["model"] == MODEL) & df["t"].notna()]
    cells = mine.drop_duplicates(["t", "layer", "pool"]).sort_values(["t", "layer_index"])
    settings = tuple((int(r.t), str(r.layer), str(r.pool)) for r in cells.itertuples())
    return settings, tuple(sorted(mine["head"].unique()))


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


def compute_view(ws, ws_sim, view: DefaultView, grid=((), ())) -> dict[str, list[str]]:
    """Compute everything `view` and the shipped `grid` (settings, heads) show in the
    workspaces' caches: probe results (and the pixel baseline) for every head, UMAPs, the
    random twin's side of Compare, CKA and alignment maps. Returns the feature keys the seed
    keeps (train and test of Explore's default setting)."""
    from explorer.analysis.alignment import METRICS
    from explorer.analysis.embed import umap_or_pca  # umap/numba: on use only
    from explorer.defaults import PIXEL_POOL, RANDOM_PREFIX

    settings, heads = grid
    explore, compare = Setting(*view.explore), Setting(*view.compare)
    cells = list(dict.fromkeys([explore, compare, *(Setting(*s) for s in settings)]))
    twin = ws.twin(RANDOM_PREFIX + ws.model.name)
    for head in dict.fromkeys([view.head, *heads]):
        log.info("probes: %s on %d settings", head, len(cells))
        ws.evaluate([*cells, Setting(None, D.PIXELS, PIXEL_POOL)], head)
    twin.evaluate([compare], view.head)
    for w, s in [*((ws, c) for c in cells), (twin, compare)]:
        umap_or_pca(
            np.asarray(w.features(s, "test")),
            cache_key=w.key(s, "test"),
            cache_root=w.store.root,
            background=False,
            labels=w.labels("test"),
        )
    ws_sim.cka([Setting(*s) for s in view.sim_blocks])
    if view.sim_times:
        ws_sim.cka([Setting(*s) for s in view.sim_times])
    sim_twin = ws_sim.twin(RANDOM_PREFIX + ws.model.name)
    for against, ts, ref_layers in view.sim_align:
        ref = sim_twin if against == "random" else ws_sim
        ws_sim.align(
            ref, timesteps=list(ts), ref_layers=ref_layers, pool=view.explore[2], metrics=METRICS
        )
    return {"features": sorted({ws.key(explore, sp) for sp in ("train", "test")})}


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


def write_seed(seed: Path = SEED, work: str | os.PathLike | None = None) -> dict:
    """Recompute the default view in an empty cache and keep its files as the seed. `work`: a
    cache root to compute in instead, kept afterwards, so a rerun after an interruption
    computes only what is missing (every file under its results/ and embeddings/ goes into the
    seed: give each seed its own folder)."""
    with contextlib.ExitStack() as stack:
        tmp = work if work is not None else stack.enter_context(tempfile.TemporaryDirectory())
        ws, sim = workspaces(tmp)
        view, grid = view_of(ws), shipped_grid()
        keep = compute_view(ws, sim, view, grid)
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
            "grid": json.loads(json.dumps({"settings": grid[0], "heads": grid[1]})),
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
    ap.add_argument(
        "--work",
        default=None,
        help="with --write: compute in this cache root and keep it (a rerun after an "
        "interruption computes only what is missing); default: a temporary folder",
    )
    a = ap.parse_args(argv)
    if a.write:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
        start = time.perf_counter()
        man = write_seed(work=a.work)
        size = sum((SEED / r).stat().st_size for r in man["files"])
        took = time.perf_counter() - start
        print(f"wrote {len(man['files'])} files ({size / 2**20:.1f} MiB) to {SEED} in {took:.0f}s")
    else:
        print(import_seed(a.cache_dir))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
