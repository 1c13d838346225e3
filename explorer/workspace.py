"""One model on one dataset: the facade the CLI and the app use for features, probes, UMAP and CKA.

Everything goes through the on-disk caches (features, probe results, embeddings), so a
setting computed once — by the app, `explorer extract` or `explorer sweep` — is served
from disk everywhere after.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from explorer.data import ImageDataset, load_dataset
from explorer.errors import ExplorerError
from explorer.features import PIXELS, Selection, ensure_features, ensure_pixels, feature_key
from explorer.heads import HEAD_NAMES, Head, parse_head
from explorer.layers import LayerSpec, build_catalogue, select_layers
from explorer.probes.metrics import ProbeResult
from explorer.results import ResultStore
from explorer.store import FeatureStore

HEADS = HEAD_NAMES  # the registry's names (explorer.heads.HEADS has the specs)
PIXEL_POOL = "full"


@dataclass(frozen=True)
class Setting:
    """Where features are read: timestep, layer name (or "pixels"), pooling, noise seed."""

    t: int | None
    layer: str
    pool: str
    seed: int = 0

    @property
    def is_pixels(self) -> bool:
        return self.layer == PIXELS


def _map_side(s: Setting) -> int:
    """k of a k x k average pooling; 0 for raw pixels, global max or anything not a map."""
    return 0 if s.is_pixels or not s.pool.isdigit() else int(s.pool)


class Workspace:
    """A model, a dataset and its train/test selections, over the feature and result caches."""

    def __init__(self, model, dataset: ImageDataset, *, store: FeatureStore | None = None,
                 train_limit: int | None = None, test_limit: int | None = None, batch_size: int = 256,
                 device: str = "auto", progress: bool | Callable[[int, int], None] = False):
        self.model, self.dataset = model, dataset
        self.progress = progress  # default for extraction started by any view (CLI: a tqdm bar)
        self.store = store or FeatureStore()
        self.results = ResultStore(self.store.root)
        self.train = Selection.of(dataset, "train", train_limit)
        self.test = Selection.of(dataset, "test", test_limit)
        self.batch_size, self.device = batch_size, device

    @classmethod
    def open(cls, model_spec: str, dataset_spec: str, *, device: str = "auto", cache_dir=None,
             trust_pickle: bool = False, **kw) -> Workspace:
        from explorer.device import resolve_device
        from explorer.models import load_model

        dataset = load_dataset(dataset_spec)
        model = load_model(model_spec, trust_pickle=trust_pickle, device=resolve_device(device))
        return cls(model, dataset, store=FeatureStore(cache_dir), device=device, **kw)

    # --- catalogue ------------------------------------------------------------------------------

    @cached_property
    def catalogue(self) -> list[LayerSpec]:
        return build_catalogue(self.model.unet)

    def layer(self, spec: str | int) -> LayerSpec:
        return select_layers(self.catalogue, [spec])[0]

    def labels(self, split: str) -> np.ndarray:
        return self.dataset.labels[self._sel(split).indices]

    def _sel(self, split: str) -> Selection:
        return {"train": self.train, "test": self.test}[split]

    # --- features -------------------------------------------------------------------------------

    def ensure(self, settings: Sequence[Setting], progress: bool | Callable[[int, int], None] | None = None,
               splits: Sequence[str] = ("train", "test")) -> int:
        """Compute whatever of `settings` is missing, one forward pass per (t, seed) for all layers.

        Returns the number of feature entries computed.
        """
        progress = self.progress if progress is None else progress
        computed = 0
        groups: dict[tuple[int, int], list[Setting]] = {}
        for s in settings:
            if s.is_pixels:
                for split in splits:
                    ensure_pixels(self.model, self.dataset, self._sel(split), s.pool, store=self.store)
            else:
                groups.setdefault((s.t, s.seed), []).append(s)
        for (t, seed), group in groups.items():
            layers = select_layers(self.catalogue, sorted({s.layer for s in group}))
            pools = sorted({s.pool for s in group})
            for split in splits:
                rep = ensure_features(self.model, self.dataset, self._sel(split), timesteps=[t], layers=layers,
                                      pools=pools, seeds=[seed], store=self.store, batch_size=self.batch_size,
                                      progress=progress)
                computed += rep.computed
        return computed

    def key(self, s: Setting, split: str) -> str:
        if s.is_pixels:
            return feature_key(self.model, self.dataset, self._sel(split), None, PIXELS, s.pool, None)
        return feature_key(self.model, self.dataset, self._sel(split), s.t, s.layer, s.pool, s.seed)

    def is_cached(self, s: Setting) -> bool:
        return all(self.store.has(self.key(s, sp)) for sp in ("train", "test"))

    def features(self, s: Setting, split: str) -> np.ndarray:
        """`(N, D) float16` features of one setting (computed first if missing)."""
        if not self.store.has(self.key(s, split)):
            self.ensure([s], splits=[split])
        return self.store.load(self.key(s, split))

    # --- probes ---------------------------------------------------------------------------------

    def evaluate(self, settings: Sequence[Setting], head: str | Head = "linear",
                 progress: bool | Callable[[int, int], None] | None = None) -> dict[Setting, ProbeResult]:
        """Probe results per setting for `head` (e.g. "knn:k=10", see `explorer.heads`).

        Cached ones are read, the rest trained together. The cache key holds every parameter
        of the head, defaults included.
        """
        head = parse_head(head)
        if head.spec.maps and (flat := [s for s in settings if _map_side(s) < 2]):
            raise ExplorerError(f"the {head.name} head needs spatial maps: use pool 2, 4 or 8, "
                                f"not {'raw pixels' if flat[0].is_pixels else 'pool ' + flat[0].pool}")
        keys = {s: ResultStore.key(head.name, [self.key(s, "train")], [self.key(s, "test")], head.params)
                for s in settings}
        out = {s: r for s, k in keys.items() if (r := self.results.get(k)) is not None}
        todo = [s for s in settings if s not in out]
        if not todo:
            return out
        self.ensure(todo, progress=progress)
        fresh = self._fit(head, todo)
        for s, r in fresh.items():
            self.results.put(keys[s], r)
        return out | fresh

    def _fit(self, head: Head, settings: list[Setting]) -> dict[Setting, ProbeResult]:
        ytr, yte = self.labels("train"), self.labels("test")
        names = {f"{s.t}|{s.layer}|{s.pool}|{s.seed}": s for s in settings}
        read = self._maps if head.spec.maps else self.features
        tasks = {n: (read(s, "train"), ytr, read(s, "test"), yte) for n, s in names.items()}
        res = head.fit(tasks, n_classes=self.dataset.num_classes, device=self.device)
        return {names[n]: r for n, r in res.items()}

    def _maps(self, s: Setting, split: str) -> np.ndarray:
        """`(N, C, k, k)` features of a setting pooled to k x k (for heads that read positions)."""
        k = _map_side(s)
        x = np.asarray(self.features(s, split))
        return x.reshape(len(x), -1, k, k)

    # --- views ----------------------------------------------------------------------------------

    def embedding(self, s: Setting, method: str = "umap", split: str = "test") -> np.ndarray:
        """`(N, 2) float32` UMAP (cached on disk) or PCA of one setting's features."""
        from explorer.analysis.embed import pca_embed, umap_embed

        x = np.asarray(self.features(s, split), dtype=np.float32)
        if method == "pca":
            return pca_embed(x)
        return umap_embed(x, cache_key=self.key(s, split), cache_root=self.store.root)

    def cka(self, settings: Sequence[Setting], split: str = "test", debiased: bool = False) -> np.ndarray:
        """`(K, K)` linear CKA between the features of `settings` on the same images."""
        from explorer.analysis.cka import cka_matrix

        self.ensure(list(settings), splits=[split])
        return cka_matrix([np.asarray(self.features(s, split), dtype=np.float32) for s in settings],
                          debiased=debiased)
