"""One model on one dataset: the facade the CLI and the app use for features, probes, UMAP and CKA.

Everything goes through the on-disk caches (features, probe results, embeddings), so a
setting computed once — by the app, `explorer extract` or `explorer sweep` — is served
from disk everywhere after.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cached_property

import numpy as np
import pandas as pd

from explorer import overview
from explorer.analysis.align_maps import align_table
from explorer.analysis.cka import cka_matrix
from explorer.analysis.profile import RIDGE_ALPHA, profile_rows
from explorer.data import ImageDataset, load_dataset
from explorer.defaults import PIXEL_POOL, PIXELS, POOLS
from explorer.errors import ExplorerError
from explorer.features.extract import ensure_features
from explorer.features.keys import Selection, feature_key
from explorer.features.pixels import ensure_pixels
from explorer.features.reports import ExtractOutcome
from explorer.features.sizes import pooled_shape
from explorer.features.store import FeatureStore, content_key
from explorer.models.accel import is_compiled
from explorer.models.device import resolve_device
from explorer.models.layers import LayerSpec, build_catalogue, select_layers
from explorer.models.loader import load_model
from explorer.probes.combine import fuse_features
from explorer.probes.metrics import ProbeResult
from explorer.probes.registry import Head, parse_head
from explorer.results import ResultStore
from explorer.search import search
from explorer.settings import (
    Fused,
    Setting,
    as_int,
    check_timesteps,
    parse_fused,
    parse_pools,
    parse_timesteps,
)
from explorer.sweep import plan_for, run_sweep

CKA_VERSION = 1  # part of a cached CKA matrix's key
PROFILE_VERSION = 1  # part of a cached timestep profile's key


def _map_side(s: Setting | Fused) -> int:
    """k of a k x k average pooling (16 for the map up to 16x16); 0 for raw pixels, global max
    (for a fused setting, its smallest member's)."""
    if isinstance(s, Fused):
        return min(_map_side(m) for m in s.members)
    if s.pool == "map16" and not s.is_pixels:
        return 16
    return 0 if s.is_pixels or not s.pool.isdigit() else int(s.pool)


class Workspace:
    """A model, a dataset and its train/test selections, over the feature and result caches."""

    def __init__(
        self,
        model,
        dataset: ImageDataset,
        *,
        store: FeatureStore | None = None,
        train_limit: int | None = None,
        test_limit: int | None = None,
        batch_size: int = 256,
        device: str = "auto",
        progress: bool | Callable[[int, int], None] = False,
        workers: int | None = None,
        trust_pickle: bool = False,
    ):
        self.model, self.dataset = model, dataset
        self.trust_pickle = trust_pickle  # for `twin`: a control loads as this model did
        self.progress = progress  # default for extraction started by any view (CLI: a tqdm bar)
        self.store = store or FeatureStore()
        self.results = ResultStore(self.store.root)
        self.train = Selection.of(dataset, "train", train_limit)
        self.test = Selection.of(dataset, "test", test_limit)
        self.batch_size, self.device = batch_size, device
        self.workers = workers  # image-decoding processes (None: `streaming.default_workers`)
        self.limits = {"train_limit": train_limit, "test_limit": test_limit}
        self._other_sels: dict[str, Selection] = {}

    @classmethod
    def open(
        cls,
        model_spec: str,
        dataset_spec: str,
        *,
        device: str = "auto",
        cache_dir=None,
        trust_pickle: bool = False,
        compile: bool = False,
        dtype: str | None = None,
        **kw,
    ) -> Workspace:
        dataset = load_dataset(dataset_spec)
        model = load_model(
            model_spec,
            trust_pickle=trust_pickle,
            device=resolve_device(device),
            compile=compile,
            dtype=dtype,
        )
        return cls(
            model,
            dataset,
            store=FeatureStore(cache_dir),
            device=device,
            trust_pickle=trust_pickle,
            **kw,
        )

    # --- what the views show (plain values: views never touch the model object or the caches) -

    @property
    def model_name(self) -> str:
        return self.model.name

    @property
    def num_timesteps(self) -> int:
        return int(self.model.num_timesteps)

    def describe(self) -> dict:
        """{"dataset": ..., "model": ...}: plain facts (`overview.describe_dataset/_model`)."""
        return {
            "dataset": overview.describe_dataset(
                self.dataset, len(self.train.indices), len(self.test.indices)
            ),
            "model": overview.describe_model(self.model),
        }

    def cache_overview(self):
        """`overview.CacheOverview` of this workspace's cache root."""
        return overview.cache_overview(self.store.root)

    def clear_features(self) -> None:
        """Delete every cached feature entry (probe results, UMAPs and sweep tables stay)."""
        self.store.clear()

    # --- catalogue ------------------------------------------------------------------------------

    @cached_property
    def catalogue(self) -> list[LayerSpec]:
        return build_catalogue(self.model.denoiser)

    def layer(self, spec: str | int) -> LayerSpec:
        return select_layers(self.catalogue, [spec])[0]

    @cached_property
    def _layer_names(self) -> frozenset[str]:
        return frozenset(lay.name for lay in self.catalogue)

    def setting(
        self, t: int | str | None, layer: str | int, pool: str | int = 2, seed: int | str = 0
    ) -> Setting:
        """The one canonical `Setting` for any spelling: layer 7, "7", "mid", "mid_block" or its hook
        name, pool 2 or "2" (or "gap"/"max"), t and seed as ints or digit strings.

        `layer="pixels"` is the raw-pixel baseline (t, pool and seed do not apply).
        """
        if isinstance(layer, str) and layer.strip().lower() == PIXELS:
            return Setting(None, PIXELS, PIXEL_POOL)
        if isinstance(layer, str) and "," in layer:
            raise ExplorerError(f"give one layer, not '{layer}'")
        lay = self.layer(layer)
        pools = parse_pools(pool)
        if len(pools) != 1:
            raise ExplorerError(f"give one pooling, not '{pool}'")
        if not getattr(self.model.adapter, "noised", True):
            t = 0  # a reference encoder: no timestep, its one level is 0
        t = check_timesteps([as_int(t, "timestep")], self.model.num_timesteps)[0]
        return Setting(t, lay.name, pools[0], as_int(seed, "seed"))

    def canonical(self, s: Setting | Fused | tuple) -> Setting | Fused:
        """`s` in canonical form (every entry point reads and writes the caches through this); a
        plain tuple of settings is a `Fused` concatenation."""
        if isinstance(s, tuple) and not isinstance(s, Setting):
            s = Fused(tuple(s))
        if isinstance(s, Fused):
            members = tuple(self.canonical(m) for m in s.members)
            return s if members == s.members else Fused(members, s.mode)
        if s.is_pixels or (
            s.layer in self._layer_names
            and isinstance(s.pool, str)
            and s.pool in POOLS
            and type(s.t) is int
            and type(s.seed) is int
        ):
            return s
        return self.setting(s.t, s.layer, s.pool, s.seed)

    def fused(
        self,
        members: str | Sequence,
        pool: str | int = 2,
        mode: str | None = None,
        seed: int | str = 0,
    ) -> Fused:
        """A canonical `Fused` from its text (`"24@150+19@90"`, `"mean:24@150~0+24@150~1"`, see
        `explorer.settings`) or from `(t, layer)` pairs (`[(150, 24), (90, 19)]`); members take
        `pool` and `seed` unless they name theirs; `mode` "concat" (default) or "mean"."""
        if isinstance(members, str):
            parts, text_mode = parse_fused(members)
            mode = mode or text_mode
            made = [
                self.setting(t, b, p or pool, sd if sd is not None else seed)
                for b, t, sd, p in parts
            ]
        else:
            made = []
            for m in members:
                if isinstance(m, Setting):
                    made.append(self.canonical(m))
                elif isinstance(m, Sequence) and len(m) in (2, 3, 4):
                    made.append(
                        self.setting(
                            m[0], m[1], *(m[2:] or [pool]), *([] if len(m) > 3 else [seed])
                        )
                    )
                else:
                    raise ExplorerError(f"a fused member is (t, layer) or a Setting, not {m!r}")
        return Fused(tuple(made), mode or "concat")

    def members(self, s: Setting | Fused) -> tuple[Setting, ...]:
        return s.members if isinstance(s, Fused) else (s,)

    def labels(self, split: str) -> np.ndarray:
        return self.dataset.labels[self.selection(split).indices]

    def selection(self, split: str) -> Selection:
        """The fixed image selection of `split` (train and test capped by their limits; any other
        split of the dataset by the test limit)."""
        if split in ("train", "test"):
            return {"train": self.train, "test": self.test}[split]
        if split not in self.dataset.splits:
            raise ExplorerError(
                f"unknown split '{split}'; this dataset has {', '.join(self.dataset.splits)}"
            )
        if split not in self._other_sels:
            self._other_sels[split] = Selection.of(self.dataset, split, self.limits["test_limit"])
        return self._other_sels[split]

    # --- features -------------------------------------------------------------------------------

    def ensure(
        self,
        settings: Sequence[Setting],
        progress: bool | Callable[[int, int], None] | None = None,
        splits: Sequence[str] = ("train", "test"),
    ) -> int:
        """Compute whatever of `settings` is missing, one forward pass per (t, seed) for all layers.

        Returns the number of feature entries computed.
        """
        progress = self.progress if progress is None else progress
        settings = [m for s in settings for m in self.members(self.canonical(s))]
        computed = 0
        groups: dict[tuple[int, int], list[Setting]] = {}
        for s in settings:
            if s.is_pixels:
                for split in splits:
                    ensure_pixels(
                        self.model,
                        self.dataset,
                        self.selection(split),
                        s.pool,
                        store=self.store,
                        workers=self.workers,
                    )
            else:
                groups.setdefault((s.t, s.seed), []).append(s)
        for (t, seed), group in groups.items():
            layers = select_layers(self.catalogue, sorted({s.layer for s in group}))
            pools = sorted({s.pool for s in group})
            for split in splits:
                rep = ensure_features(
                    self.model,
                    self.dataset,
                    self.selection(split),
                    timesteps=[t],
                    layers=layers,
                    pools=pools,
                    seeds=[seed],
                    store=self.store,
                    batch_size=self.batch_size,
                    progress=progress,
                    workers=self.workers,
                )
                computed += rep.computed
        return computed

    def extract_grid(
        self,
        timesteps: Sequence[int],
        layers: str | int | Sequence,
        pools: str | Sequence,
        seeds: Sequence[int] = (0,),
        splits: Sequence[str] = ("train", "test"),
        progress: bool | Callable[[int, int], None] | None = None,
    ) -> ExtractOutcome:
        """Every (t, layer, pool, seed) of a grid for `splits`, computing only what is missing.

        One forward pass per batch and (t, seed) serves every layer and pooling. Returns an
        `ExtractReport` and the grid's feature keys per split.
        """
        progress = self.progress if progress is None else progress
        if not getattr(self.model.adapter, "noised", True):
            timesteps = [0]  # a reference encoder: any t reads its one level, 0
        ts = check_timesteps([as_int(t, "timestep") for t in timesteps], self.model.num_timesteps)
        lays = select_layers(self.catalogue, layers)
        pool_names = parse_pools(pools)
        seed_list = [as_int(x, "seed") for x in seeds]
        out = ExtractOutcome({}, {}, {}, str(self.store.dir))
        for split in splits:
            sel = self.selection(split)
            out.reports[split] = ensure_features(
                self.model,
                self.dataset,
                sel,
                timesteps=ts,
                layers=lays,
                pools=pool_names,
                seeds=seed_list,
                store=self.store,
                batch_size=self.batch_size,
                progress=progress,
                workers=self.workers,
            )
            out.keys[split] = [
                feature_key(self.model, self.dataset, sel, t, lay.name, p, sd)
                for t in ts
                for lay in lays
                for p in pool_names
                for sd in seed_list
            ]
            out.images[split] = len(sel.indices)
        return out

    def key(self, s: Setting, split: str) -> str:
        s = self.canonical(s)
        if s.is_pixels:
            return feature_key(
                self.model, self.dataset, self.selection(split), None, PIXELS, s.pool, None
            )
        return feature_key(
            self.model, self.dataset, self.selection(split), s.t, s.layer, s.pool, s.seed
        )

    def is_cached(self, s: Setting | Fused) -> bool:
        return all(
            self.store.has(self.key(m, sp))
            for m in self.members(self.canonical(s))
            for sp in ("train", "test")
        )

    def features(
        self,
        s: Setting | None = None,
        split: str = "test",
        *,
        t: int | None = None,
        layer: str | int | None = None,
        pool: str | int = 2,
        seed: int = 0,
    ):
        """`(N, D) float16` features of one setting (computed first if missing).

        Called with keywords instead, `features(t=10, layer="mid", pool=2, split="test")` returns
        `(X, y)`: `(N, D) float32` features and `(N,) int64` labels, ready for scikit-learn.
        """
        if s is None:
            if layer is None:
                raise ExplorerError("give a Setting, or t=, layer= and pool=")
            s = self.setting(t, layer, pool, seed)
            return np.asarray(self.features(s, split), dtype=np.float32), self.labels(split).astype(
                np.int64
            )
        s = self.canonical(s)
        if isinstance(s, Fused):  # computed from its members' cached features, not stored
            return fuse_features([self.features(m, split) for m in s.members], s.mode)
        if not self.store.has(self.key(s, split)):
            self.ensure([s], splits=[split])
        return self.store.load(self.key(s, split))

    # --- probes ---------------------------------------------------------------------------------

    def evaluate(
        self,
        settings: Sequence[Setting | Fused],
        head: str | Head = "linear",
        progress: bool | Callable[[int, int], None] | None = None,
    ) -> dict[Setting, ProbeResult]:
        """Probe results per setting for `head` (e.g. "knn:k=10", see `explorer.probes.registry`).

        Cached ones are read, the rest trained together. The cache key holds every parameter
        of the head, defaults included. A `Fused` (or a tuple of settings) is keyed by its
        members' feature keys in order plus its mode.
        """
        asked = list(settings)
        canon = {s: self.canonical(s) for s in asked}
        if any(c != s for s, c in canon.items()):
            res = self.evaluate(list(dict.fromkeys(canon.values())), head, progress)
            return {s: res[canon[s]] for s in asked}
        head = parse_head(head)
        _check_fusion(head, settings)
        if head.spec.maps and (flat := [s for s in settings if _map_side(s) < 2]):
            raise ExplorerError(
                f"the {head.name} head needs spatial maps: use pool 2, 4, 8 or map16, "
                f"not {'raw pixels' if flat[0].is_pixels else 'pool ' + flat[0].pool}"
            )
        keys = {s: self.result_key(head, s) for s in settings}
        out = {s: r for s, k in keys.items() if (r := self.results.get(k)) is not None}
        todo = [s for s in settings if s not in out]
        if not todo:
            return out
        self.ensure(todo, progress=progress)
        fresh = self._fit(head, todo)
        for s, r in fresh.items():
            self.results.put(keys[s], r)
        return out | fresh

    def result_key(self, head: Head, s: Setting | Fused) -> str:
        members = self.members(s)
        params = head.params | ({"fusion": s.mode} if isinstance(s, Fused) else {})
        return ResultStore.key(
            head.name,
            [self.key(m, "train") for m in members],
            [self.key(m, "test") for m in members],
            params,
        )

    def _fit(
        self, head: Head, settings: list[Setting | Fused]
    ) -> dict[Setting | Fused, ProbeResult]:
        ytr, yte = self.labels("train"), self.labels("test")
        names = {repr(s): s for s in settings}

        def read(s, split):
            if head.spec.sets:  # a token set: the member maps (a mean is one member)
                if isinstance(s, Fused) and s.mode == "concat":
                    return [self._maps(m, split) for m in s.members]
                return [self._maps(s, split)]
            return self._maps(s, split) if head.spec.maps else self.features(s, split)

        tasks = {n: (read(s, "train"), ytr, read(s, "test"), yte) for n, s in names.items()}
        res = head.fit(tasks, n_classes=self.dataset.num_classes, device=self.device)
        return {names[n]: r for n, r in res.items()}

    def _maps(self, s: Setting | Fused, split: str) -> np.ndarray:
        """`(N, C, h, w)` features of a setting as maps (for heads that read positions); of a
        mean `Fused`, the mean of its members' maps."""
        if isinstance(s, Fused):
            return fuse_features([self._maps(m, split) for m in s.members], s.mode)
        x = np.asarray(self.features(s, split))
        return x.reshape(len(x), *pooled_shape(self.layer(s.layer), s.pool))

    # --- views ----------------------------------------------------------------------------------

    def embedding(self, s: Setting, method: str = "umap", split: str = "test") -> np.ndarray:
        """`(N, 2) float32` UMAP (cached on disk) or PCA of one setting's features."""
        from explorer.analysis.embed import pca_embed, umap_embed  # umap/numba: on use only

        s = self.canonical(s)
        x = np.asarray(self.features(s, split), dtype=np.float32)
        if method == "pca":
            return pca_embed(x)
        return umap_embed(  # labels: a set over the fit cap is subsampled by class, as in the app
            x, cache_key=self.key(s, split), cache_root=self.store.root, labels=self.labels(split)
        )

    def cached_umap(self, s: Setting, split: str = "test") -> np.ndarray | None:
        """The `(N, 2)` UMAP of one setting when it is on disk (as `embedding` caches it), read
        without its features: None when it is not cached (and for raw pixels)."""
        from explorer.analysis.embed import cached_umap  # umap/numba: on use only

        s = self.canonical(s)
        if s.is_pixels:
            return None
        dim = int(np.prod(pooled_shape(self.layer(s.layer), s.pool)))
        shape = (len(self.selection(split).indices), dim)
        return cached_umap(
            shape, cache_key=self.key(s, split), cache_root=self.store.root, stratified=True
        )

    def aligned_embedding(self, settings: Sequence[Setting], split: str = "test") -> np.ndarray:
        """`(K, N, 2) float32` aligned UMAP of K settings (e.g. one block over K timesteps) on
        the same images, cached on disk under their feature keys: reopening it computes nothing."""
        from explorer.analysis.embed import aligned_umap  # umap/numba: on use only

        settings = [self.canonical(s) for s in settings]
        if len(settings) < 2:
            raise ExplorerError("an aligned embedding needs at least 2 settings")
        self.ensure([s for s in settings if not self.store.has(self.key(s, split))], splits=[split])
        xs = [np.asarray(self.features(s, split), dtype=np.float32) for s in settings]
        keys = [self.key(s, split) for s in settings]
        return np.stack(aligned_umap(xs, cache_key=keys, cache_root=self.store.root))

    def cka(
        self,
        settings: Sequence[Setting],
        split: str = "test",
        debiased: bool = False,
        *,
        ensure: Callable[[list], None] | None = None,
    ) -> np.ndarray:
        """`(K, K)` linear CKA between the features of `settings` on the same images, cached on
        disk under `embeddings/` (keyed by the features' content keys), so a repeated map needs
        no features at all. `ensure(missing_settings)` runs first, e.g. to show a progress bar."""
        from explorer.analysis.embed import cached_matrix, cached_only  # umap/numba: on use only

        settings = [self.canonical(s) for s in settings]
        keys = [self.key(s, split) for s in settings]
        key = content_key({"features": keys})
        params, shape = {"debiased": bool(debiased), "v": CKA_VERSION}, (len(keys), len(keys))
        hit = cached_only("cka", key, params, shape, self.store.root)
        if hit is not None:
            return hit
        missing = [s for s, k in zip(settings, keys, strict=True) if not self.store.has(k)]
        if missing and ensure is not None:
            ensure(missing)

        def compute() -> np.ndarray:
            self.ensure(settings, splits=[split])
            feats = [np.asarray(self.features(s, split), dtype=np.float32) for s in settings]
            return cka_matrix(feats, debiased=debiased)

        return cached_matrix("cka", key, params, shape, compute, self.store.root)

    def timestep_profile(
        self,
        layer: str | int,
        timesteps: Sequence[int] | str,
        pool: str | int = 2,
        head: str = "linear",
        *,
        ensure: Callable[[list], None] | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> pd.DataFrame:
        """Why this t, for one block: per level t, the R² of its features from the block's clean
        (t=0) and noisiest (t=T-1) features (`analysis.profile`), beside `head`'s test top-1 with
        its interval and its validation top-1. Cached on disk like a CKA map; `ensure(missing)` is
        called before features are computed, `progress(done, total)` while they are."""
        from explorer.analysis.embed import cached_matrix, cached_only  # umap/numba: on use only

        ts = check_timesteps(parse_timesteps(timesteps), self.num_timesteps)
        clean, noisiest = 0, self.num_timesteps - 1
        levels = sorted({*ts, clean, noisiest})
        at = {x: self.setting(x, layer, pool) for x in levels}
        keys = [self.key(at[x], sp) for x in levels for sp in ("train", "test")]
        key = content_key({"features": keys, "clean": clean, "noisiest": noisiest})
        params, shape = {"alpha": RIDGE_ALPHA, "v": PROFILE_VERSION}, (len(levels), 2)
        r2 = cached_only("profile", key, params, shape, self.store.root)
        if r2 is None:
            missing = [s for s in at.values() if not self.is_cached(s)]
            if missing and ensure is not None:
                ensure(missing)
            self.ensure(list(at.values()), progress=progress)

            def compute() -> np.ndarray:
                feats = {
                    x: (self.features(at[x], "train"), self.features(at[x], "test")) for x in levels
                }
                return profile_rows(feats, clean, noisiest)

            r2 = cached_matrix("profile", key, params, shape, compute, self.store.root)
        probes = self.evaluate([at[x] for x in ts], head)
        rows = []
        for x, (from_clean, from_noisiest) in zip(levels, r2, strict=True):
            r = probes.get(at[x])
            rows.append(
                {
                    "t": x,
                    "r2_from_clean": float(from_clean),
                    "r2_from_noisiest": float(from_noisiest),
                    "top1": r.top1 if r else np.nan,
                    "ci_low": r.ci_low if r else np.nan,
                    "ci_high": r.ci_high if r else np.nan,
                    "val_top1": r.extra.get("val_top1", np.nan) if r else np.nan,
                }
            )
        return pd.DataFrame(rows)

    # --- notebook conveniences ------------------------------------------------------------------

    def probe(
        self,
        t: int | None = None,
        layer: str | int | None = None,
        pool: str | int = 2,
        head: str | Head = "linear",
        seed: int = 0,
        *,
        fuse: str | Sequence | None = None,
        mode: str | None = None,
    ) -> ProbeResult:
        """Train (or read from cache) one probe; `.top1`, `.ci_low`, `.per_class`, `.confusion`.

        `fuse=[(150, 24), (90, 19)]` (or `"24@150+19@90"`) probes a fused setting instead of
        `t`/`layer`: concatenated for linear/knn/mlp, a token set for head `fusion`; `mode="mean"`
        averages the members (DIFT's ensemble, e.g. `[(150, 24, 2, 0), (150, 24, 2, 1)]`).
        """
        if fuse is not None:
            s = self.fused(fuse, pool, mode, seed)
        elif layer is None:
            raise ExplorerError("give t= and layer=, or fuse=")
        else:
            s = self.setting(t, layer, pool, seed)
        return self.evaluate([s], head)[s]

    def twin(self, model_spec: str) -> Workspace:
        """Another model (e.g. `random:<this model>`) on the same dataset, selections, store and
        device settings: a sweep's control."""
        model = load_model(
            model_spec,
            trust_pickle=self.trust_pickle,
            device=next(self.model.denoiser.parameters()).device,
            compile=is_compiled(self.model.denoiser),
            dtype=self.model.precision,
        )
        return Workspace(
            model,
            self.dataset,
            store=self.store,
            batch_size=self.batch_size,
            device=self.device,
            workers=self.workers,
            trust_pickle=self.trust_pickle,
            **self.limits,
        )

    def align(
        self,
        reference: Workspace | str,
        timesteps: Sequence[int] | int | str | None = None,
        layers: str | int | Sequence = "all",
        ref_layers: str | int | Sequence = "all",
        **kw,
    ) -> pd.DataFrame:
        """Alignment (CKA, CKNNA, mutual k-NN) between this model's blocks and a reference's on
        the same test images, as a tidy table (`explorer.analysis.align_maps.align_table`:
        `ref_timestep`, `pool`, `metrics`, `k`, `split`, `n_boot`, `seed`, `progress`).
        `reference` is a workspace on the same images or a model spec (a diffusion model,
        `random:<model>`, or a reference encoder folder), opened as this workspace's twin."""
        ref = self.twin(reference) if isinstance(reference, str) else reference
        return align_table(
            self, ref, timesteps=timesteps, layers=layers, ref_layers=ref_layers, **kw
        )

    def search(
        self,
        timesteps: Sequence[int] | int | str = (10, 50, 90, 150, 300),
        layers: str | int | Sequence = "all",
        pools: str | int | Sequence = 2,
        **kw,
    ):
        """The validation-best linear setting of the grid without computing the grid
        (`explorer.search.search`: successive halving; `eta`, `first`, `final`, `progress`)."""
        return search(self, timesteps=timesteps, layers=layers, pools=pools, **kw)

    def sweep(
        self,
        timesteps: Sequence[int] | int | str = (10, 90, 150),
        layers: str | int | Sequence = "all",
        pools: str | int | Sequence = 2,
        heads: str | Sequence[str] = "linear",
        seeds: int | Sequence[int] = 0,
        *,
        baselines: bool = True,
        out=None,
        progress: bool | Callable[[int, int], None] = False,
        fuse: Sequence = (),
        seed_average: str = "accuracy",
    ):
        """A grid of probes as the tidy results table (a `pandas.DataFrame`, as `explorer sweep` writes).

        `baselines` adds raw pixels and the same model with random weights; `out` also saves the
        table. `fuse`: fused settings also probed (texts like "24@150+19@90", pair lists or
        `Fused`, pool the first of `pools`); `seed_average="features"` probes the mean features
        over `seeds` (DIFT). The plan is `explorer.sweep.plan_for`'s, as in the CLI and the app.
        """
        plan = plan_for(
            self,
            timesteps=timesteps,
            layers=layers,
            pools=pools,
            heads=heads,
            seeds=seeds,
            baselines=baselines,
            fuse=fuse,
            seed_average=seed_average,
        )
        return run_sweep(self, plan, out=out, progress=progress)


def _check_fusion(head: Head, settings) -> None:
    """Fused concatenations go to row heads (linear, knn, mlp) or `fusion`, not other map heads."""
    for s in settings:
        if isinstance(s, Fused) and s.mode == "concat" and head.spec.maps and not head.spec.sets:
            raise ExplorerError(
                f"the {head.name} head reads one map; fuse settings with linear, knn, "
                "mlp (concatenated) or fusion (a token set), or use mode mean"
            )
