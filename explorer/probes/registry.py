"""The probe heads: one registry that the CLI, `Workspace`, the app and the result cache read.

A head is written `name` or `name:param=value[:param=value...]`, e.g. `knn:k=10` or
`mlp:hidden=256:epochs=50`; tuple parameters separate items with `/` (`linear:regs=1e-4/1e-3`).
`knn10` is an alias of `knn:k=10`, and `attention` (the old name) of `attention-small`. `parse_head` turns any of these into a `Head` holding every
parameter, defaults included, so the result-cache key changes whenever a default does.

Adding a head = one `HeadSpec` in `HEADS` (and its tests).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from explorer.defaults import DEFAULT_K
from explorer.errors import ExplorerError

# x_train (N, ...), y_train (N,), x_test (M, ...), y_test (M,); `...` is (D,) or (C, h, w).
Task = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
FitFn = Callable[
    ..., dict
]  # (tasks: {name: Task}, *, n_classes, device, **params) -> {name: ProbeResult}


@dataclass(frozen=True)
class Param:
    """One hyperparameter: its default, how text becomes a value, and what values are allowed."""

    default: Any
    parse: Callable[[str], Any]
    check: Callable[[Any], bool]
    rule: str  # what `check` accepts, for messages: "a positive integer"


@dataclass(frozen=True)
class HeadSpec:
    """A head: its fit function, parameters with defaults, input kind and a one-line description.

    `fit(tasks, n_classes=, device=, **params)` scores every task at once; `maps` heads take
    features as `(N, C, h, w)` maps, others as `(N, D)` rows. `number_param` names the parameter
    a number after the name sets (`knn10` -> k=10); `check` is a rule across parameters.
    """

    name: str
    description: str
    fit: FitFn
    params: dict[str, Param] = field(default_factory=dict)
    maps: bool = False
    sets: bool = False  # takes a list of member maps per task (a fused setting's token set)
    number_param: str | None = None
    check: Callable[[dict], str | None] | None = None  # a rule across parameters: message or None


@dataclass(frozen=True)
class Head:
    """A head with every parameter resolved (defaults included); hashable."""

    name: str
    items: tuple[tuple[str, Any], ...]

    @property
    def spec(self) -> HeadSpec:
        return HEADS[self.name]

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.items)

    @property
    def label(self) -> str:
        """Canonical text: the name plus the parameters that differ from their defaults."""
        spec = self.spec
        diff = [
            f"{k}={_show(v)}"
            for k, v in self.items
            if k in spec.params and v != spec.params[k].default
        ]
        return ":".join([self.name, *diff])

    def fit(self, tasks: Mapping[str, Task], *, n_classes: int, device: str = "auto") -> dict:
        """`{name: ProbeResult}` for every task (see `HeadSpec.fit`)."""
        return self.spec.fit(dict(tasks), n_classes=n_classes, device=device, **self.params)


# --- parsing -----------------------------------------------------------------------------------


def _show(v: Any) -> str:
    return "/".join(_show(x) for x in v) if isinstance(v, tuple) else str(v)


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(x) for x in text.split("/"))


ALIASES = {"attention": "attention-small"}  # old names -> registry names (old links, tables)


def canonical_name(name: str) -> str:
    """A head name with old aliases resolved: `"attention"` -> `"attention-small"`."""
    name = str(name).strip().lower()
    return ALIASES.get(name, name)


def _split_alias(text: str) -> tuple[str, dict[str, str]]:
    """`knn10` -> ("knn", {"k": "10"}) for heads with a `number_param`; else (text, {})."""
    text = canonical_name(text)
    for spec in HEADS.values():
        rest = text[len(spec.name) :]
        if spec.number_param and text.startswith(spec.name) and rest.isdigit():
            return spec.name, {spec.number_param: rest}
    return text, {}


def parse_head(head: str | Head) -> Head:
    """`"knn:k=10"`, `"knn10"` or `"linear"` -> a `Head`; one-line `ExplorerError` if invalid."""
    if isinstance(head, Head):
        return head
    text = str(head).strip()
    name, *assignments = text.split(":")
    name, given = _split_alias(name.strip().lower())
    spec = HEADS.get(name)
    if spec is None:
        raise ExplorerError(
            f"unknown head '{text}'; choose from {', '.join(HEADS)} (parameters as knn:k=10)"
        )
    for a in assignments:
        key, eq, value = a.partition("=")
        key = key.strip()
        if not eq or not key:
            raise ExplorerError(f"head '{text}': write parameters as {name}:name=value, got '{a}'")
        if key not in spec.params:
            takes = ", ".join(spec.params) or "no parameters"
            raise ExplorerError(f"head '{name}' has no parameter '{key}'; it takes {takes}")
        given[key] = value.strip()
    values = {}
    for key, p in spec.params.items():
        if key not in given:
            values[key] = p.default
            continue
        try:
            v = p.parse(given[key])
            ok = p.check(v)
        except ValueError:
            ok = False
        if not ok:
            raise ExplorerError(f"head '{name}': {key} must be {p.rule}, got '{given[key]}'")
        values[key] = v
    if spec.check and (problem := spec.check(values)):
        raise ExplorerError(f"head '{text}': {problem}")
    return Head(name, tuple(values.items()))


def parse_heads(text: str) -> list[Head]:
    """Comma-separated heads (`"linear,knn10,mlp:hidden=64"`), each checked; no duplicates."""
    heads = [parse_head(h) for h in text.split(",") if h.strip()]
    if not heads:
        raise ExplorerError(f"no heads given; choose from {', '.join(HEADS)}")
    return list(dict.fromkeys(heads))


def describe_heads() -> str:
    """One line per head: name, description and parameters with defaults (for --help)."""
    lines = []
    for spec in HEADS.values():
        params = ", ".join(f"{k}={_show(p.default)}" for k, p in spec.params.items())
        lines.append(f"{spec.name}: {spec.description} [{params}]")
    return "; ".join(lines)


# --- parameters ---------------------------------------------------------------------------------


def _pos_int(default: int) -> Param:
    return Param(default, int, lambda v: v >= 1, "a positive integer")


def _pos_float(default: float) -> Param:
    return Param(default, float, lambda v: v > 0 and np.isfinite(v), "a positive number")


def _unit(default: float) -> Param:
    return Param(default, float, lambda v: 0 <= v < 1, "a number in [0, 1)")


def _seed(default: int = 0) -> Param:
    return Param(default, int, lambda v: v >= 0, "a non-negative integer")


def _non_neg(default: float) -> Param:
    return Param(default, float, lambda v: v >= 0, "a non-negative number")


def _minibatch(epochs: int, batch_size: int, lr: float) -> dict:
    return {"epochs": _pos_int(epochs), "batch_size": _pos_int(batch_size), "lr": _pos_float(lr)}


def _train_params(
    epochs: int, batch_size: int, lr: float, weight_decay: float, patience: int
) -> dict:
    """The minibatch-training parameters shared by the early-stopped neural heads."""
    return {
        **_minibatch(epochs, batch_size, lr),
        "weight_decay": _non_neg(weight_decay),
        "patience": _pos_int(patience),
        "val_fraction": _unit(0.1),
        "seed": _seed(),
    }


def _sgd_params(epochs: int, batch_size: int, lr: float) -> dict:
    """The paper's recipe: plain SGD, lr x`gamma` every `step` epochs, no early stopping."""
    return {
        **_minibatch(epochs, batch_size, lr),
        "step": _pos_int(7),
        "gamma": Param(0.1, float, lambda v: 0 < v <= 1, "a number in (0, 1]"),
        "weight_decay": _non_neg(0.0),
        "val_fraction": _unit(0.0),
        "seed": _seed(),
    }


# --- fit functions ------------------------------------------------------------------------------


def _fit_linear(tasks: dict[str, Task], *, n_classes: int, device: str, **params) -> dict:
    from explorer.probes.linear import fit_linear_grid  # torch: the registry loads without it

    train = {n: (t[0], t[1]) for n, t in tasks.items()}
    test = {n: (t[2], t[3]) for n, t in tasks.items()}
    return fit_linear_grid(train, test, n_classes=n_classes, device=device, **params)


def _fit_linear_bn(tasks: dict[str, Task], *, n_classes: int, device: str, **params) -> dict:
    return _fit_linear(tasks, n_classes=n_classes, device=device, standardise="batchnorm", **params)


def _fit_knn(
    tasks: dict[str, Task], *, n_classes: int, device: str, k: int, temperature: float
) -> dict:
    from explorer.probes.knn import fit_knn  # torch: the registry loads without it

    return {
        n: fit_knn(*t, ks=(k,), temperature=temperature, n_classes=n_classes, device=device)[k]
        for n, t in tasks.items()
    }


def _one_by_one(module: str, fn: str) -> Callable[..., dict]:
    """A fit function that trains `explorer.<module>.<fn>` on each task in turn (imported lazily)."""

    def fit(tasks: dict[str, Task], *, n_classes: int, device: str, **params) -> dict:
        import importlib

        fit_one = getattr(importlib.import_module(f"explorer.{module}"), fn)
        return {
            n: fit_one(*t, n_classes=n_classes, device=device, **params) for n, t in tasks.items()
        }

    fit.__name__ = f"_fit_{fn.removeprefix('fit_')}"
    return fit


_fit_mlp = _one_by_one("probes.mlp", "fit_mlp")
_fit_attention = _one_by_one("probes.attention", "fit_attention")
_fit_attention_paper = _one_by_one("probes.paper_heads", "fit_attention_paper")
_fit_cnn = _one_by_one("probes.paper_heads", "fit_cnn")
_fit_fusion = _one_by_one("probes.fusion", "fit_fusion")


OPTIMIZERS = ("adamw", "adam", "sgd")


def _dim_splits(params: dict) -> str | None:
    if params["dim"] % params["heads"]:
        return f"dim ({params['dim']}) must be a multiple of heads ({params['heads']})"
    return None


def _transformer(
    name: str,
    description: str,
    fit: FitFn,
    *,
    dim: int,
    heads: int,
    params: dict,
    sets: bool = False,
) -> HeadSpec:
    """A transformer head on maps: `dim`, `depth` (2) and `heads` (`dim` a multiple of `heads`),
    then `params`."""
    sizes = {"dim": _pos_int(dim), "depth": _pos_int(2), "heads": _pos_int(heads)}
    return HeadSpec(name, description, fit, sizes | params, maps=True, sets=sets, check=_dim_splits)


def _linear_params() -> dict[str, Param]:
    """`linear`'s parameters (shared by `linear-bn`)."""
    return {
        "regs": Param(
            (1e-5, 1e-4, 1e-3, 1e-2, 1e-1),
            _floats,
            lambda v: len(v) > 0 and min(v) > 0,
            "positive numbers like 1e-4/1e-3",
        ),
        "val_fraction": _unit(0.1),
        "seed": _seed(),
        "max_iter": _pos_int(500),
        "tol": _pos_float(1e-6),
    }


# --- the registry -------------------------------------------------------------------------------

HEADS: dict[str, HeadSpec] = {
    spec.name: spec
    for spec in [
        HeadSpec(
            "linear",
            "logistic regression, reg picked on a validation split (all settings at once)",
            _fit_linear,
            _linear_params(),
        ),
        HeadSpec(
            "linear-bn",
            "REPA's probe: BatchNorm without affine (train mean/var, eps 1e-6), then linear as above;"
            " REPA uses pool 1 (patch-mean) on the tokens",
            _fit_linear_bn,
            _linear_params(),
        ),
        HeadSpec(
            "knn",
            "cosine k-nearest neighbours with a temperature-weighted vote",
            _fit_knn,
            {"k": _pos_int(DEFAULT_K), "temperature": _pos_float(0.07)},
            number_param="k",
        ),
        HeadSpec(
            "mlp",
            "one-hidden-layer MLP, early-stopped on a validation split (optimizer adamw, adam or sgd)",
            _fit_mlp,
            {
                "hidden": _pos_int(512),
                "dropout": _unit(0.2),
                **_train_params(100, 256, 1e-3, 1e-2, 10),
                "optimizer": Param(
                    "adamw", str.lower, lambda v: v in OPTIMIZERS, "one of adamw, adam, sgd"
                ),
            },
        ),
        _transformer(
            "attention-small",
            "small transformer (dim 128, position embedding) over pool 2/4/8 maps; not the paper's head",
            _fit_attention,
            dim=128,
            heads=8,
            params={"dropout": _unit(0.0), **_train_params(30, 128, 5e-4, 0.05, 8)},
        ),
        _transformer(
            "attention-paper",
            "the paper's attention head: map up to 16x16, 1x1 conv to 1024, 2 ViT blocks, SGD (pool map16)",
            _fit_attention_paper,
            dim=1024,
            heads=8,
            params=_sgd_params(28, 64, 0.05),
        ),
        HeadSpec(
            "cnn",
            "small conv head: 2 x (3x3 conv, BatchNorm, ReLU), global average pool, linear; SGD",
            _fit_cnn,
            {"hidden": _pos_int(256), **_sgd_params(28, 64, 0.05)},
            maps=True,
        ),
        _transformer(
            "fusion",
            "transformer over the tokens of several settings (fused, e.g. 24@150+19@90), source embeddings",
            _fit_fusion,
            dim=128,
            heads=4,
            params=_train_params(30, 128, 5e-4, 0.05, 8),
            sets=True,
        ),
    ]
}
HEAD_NAMES: tuple[str, ...] = tuple(HEADS)
