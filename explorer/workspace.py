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
from explorer.layers import LayerSpec, build_catalogue, select_layers
from explorer.probes.metrics import ProbeResult
from explorer.results import ResultStore
from explorer.store import FeatureStore

HEADS = ("linear", "knn", "mlp", "attention")
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

    def evaluate(self, settings: Sequence[Setting], head: str = "linear",
                 progress: bool | Callable[[int, int], None] | None = None) -> dict[Setting, ProbeResult]:
        """Probe results per setting for `head`; cached ones are read, the rest trained together."""
        if head not in HEADS and not head.startswith("knn"):
            raise ExplorerError(f"unknown head '{head}'; choose from {', '.join(HEADS)}")
        params = self._head_params(head)
        keys = {s: ResultStore.key(head, [self.key(s, "train")], [self.key(s, "test")], params) for s in settings}
        out = {s: r for s, k in keys.items() if (r := self.results.get(k)) is not None}
        todo = [s for s in settings if s not in out]
        if not todo:
            return out
        self.ensure(todo, progress=progress)
        fresh = self._fit(head, todo)
        for s, r in fresh.items():
            self.results.put(keys[s], r)
        return out | fresh

    def _head_params(self, head: str) -> dict:
        return {"k": int(head[3:] or 20)} if head.startswith("knn") else {}

    def _fit(self, head: str, settings: list[Setting]) -> dict[Setting, ProbeResult]:
        ytr, yte = self.labels("train"), self.labels("test")
        nc = self.dataset.num_classes
        dev = self.device
        if head == "linear":
            from explorer.probes.linear import fit_linear_grid

            names = {f"{s.t}|{s.layer}|{s.pool}|{s.seed}": s for s in settings}
            res = fit_linear_grid({n: (self.features(s, "train"), ytr) for n, s in names.items()},
                                  {n: (self.features(s, "test"), yte) for n, s in names.items()},
                                  n_classes=nc, device=dev)
            return {names[n]: r for n, r in res.items()}
        out = {}
        for s in settings:
            xtr, xte = self.features(s, "train"), self.features(s, "test")
            if head.startswith("knn"):
                from explorer.probes.knn import fit_knn

                k = self._head_params(head)["k"]
                out[s] = fit_knn(xtr, ytr, xte, yte, ks=(k,), n_classes=nc, device=dev)[k]
            elif head == "mlp":
                from explorer.probes.mlp import fit_mlp

                out[s] = fit_mlp(xtr, ytr, xte, yte, n_classes=nc, device=dev)
            else:  # attention: reads pooled-to-k×k maps as tokens
                from explorer.probes.attention import fit_attention

                k = 1 if s.pool == "max" else int(s.pool) if not s.is_pixels else 0
                if k < 2:
                    raise ExplorerError("the attention head needs spatial maps: use pool 2, 4 or 8")
                shape = (-1, xtr.shape[1] // (k * k), k, k)
                out[s] = fit_attention(np.asarray(xtr).reshape(shape), ytr, np.asarray(xte).reshape(shape), yte,
                                       n_classes=nc, device=dev)
        return out

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
