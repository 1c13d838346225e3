"""Probe results on disk, and the tidy results table.

A probe result is cached under `<cache>/results/<key>.npz` (arrays) with its scalars in
JSON inside the same file, keyed by the feature keys it was trained on plus the head, its
parameters and its version, so a result is never recomputed. A reload gives back the
arrays, the scalars and every scalar entry of `extra`; non-scalar extras are not stored.
Each file has its checksum beside it (`explorer.features.checked`): a damaged one is
recomputed, never served.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from zipfile import BadZipFile

import numpy as np
import pandas as pd

from explorer.atomic import atomic_write
from explorer.errors import ExplorerError
from explorer.features.checked import read_checked, write_checked
from explorer.features.store import content_key
from explorer.paths import cache_dir
from explorer.probes.metrics import ProbeResult

PROBE_VERSION = 1
# a head whose stored results changed gets its own version, so only its cached results go stale
HEAD_VERSIONS = {"knn": 2, "linear-bn": 1}  # knn 2: k-NN reports val_top1
COLUMNS = [
    "model",
    "dataset",
    "t",
    "log_snr",  # log(signal²/noise²) of level t: one x-axis across families (NaN: pixels, fused)
    "layer",
    "layer_index",
    "pool",
    "head",
    "split",
    "metric",
    "value",
]
TEXT_COLUMNS = (
    "model",
    "dataset",
    "layer",
    "pool",
    "head",
    "split",
    "metric",
)  # kept as text ("1" stays "1")


class ResultStore:
    """`ProbeResult`s by content key, as atomic `.npz` files."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.dir = cache_dir(root) / "results"
        self.dir.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def key(
        head: str, train_keys: list[str], test_keys: list[str], params: dict | None = None
    ) -> str:
        return content_key(
            {
                "head": head,
                "train": train_keys,
                "test": test_keys,
                "params": params or {},
                "version": HEAD_VERSIONS.get(head.rstrip("0123456789"), PROBE_VERSION),
            }
        )

    def path(self, key: str) -> Path:
        return self.dir / f"{key}.npz"

    def get(self, key: str) -> ProbeResult | None:
        """The cached result, or None when it is missing or damaged (then it is recomputed)."""
        data = read_checked(self.path(key), lambda b: _parse_result(b) is not None)
        return None if data is None else _parse_result(data)

    def put(self, key: str, r: ProbeResult) -> None:
        meta = {
            "head": r.head,
            "top1": r.top1,
            "ci_low": r.ci_low,
            "ci_high": r.ci_high,
            "extra": {
                k: v
                for k, v in r.summary().items()
                if k not in ("head", "top1", "ci_low", "ci_high")
            },
        }
        buf = io.BytesIO()
        np.savez(
            buf,
            per_class=r.per_class,
            confusion=r.confusion,
            predictions=r.predictions,
            meta=np.array(json.dumps(meta, default=float)),
        )
        write_checked(self.path(key), buf.getvalue())


def _parse_result(data: bytes) -> ProbeResult | None:
    """A `ProbeResult` from the bytes of a result file; None when they cannot be read whole."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            return ProbeResult(
                head=meta["head"],
                top1=meta["top1"],
                ci_low=meta["ci_low"],
                ci_high=meta["ci_high"],
                per_class=z["per_class"],
                confusion=z["confusion"],
                predictions=z["predictions"],
                extra=dict(meta["extra"]),
            )
    except (OSError, ValueError, KeyError, TypeError, EOFError, NotImplementedError, BadZipFile):
        return None  # unreadable (a damaged zip fails in many ways): recompute


def tidy_rows(base: dict, results: list[ProbeResult]) -> list[dict]:
    """Rows of the results table for one (model, dataset, t, layer, pool, head) over noise draws.

    `base` holds model, dataset, t, layer, layer_index, pool, head. Metrics: top1 (mean over
    draws), top1_std (0 for one draw), ci_low/ci_high (95% bootstrap of the first draw), draws;
    and, on split "val", top1 on the validation split where the head reports it.
    """
    top = np.array([r.top1 for r in results])
    rows = [
        {**base, "split": "test", "metric": "top1", "value": float(top.mean())},
        {
            **base,
            "split": "test",
            "metric": "top1_std",
            "value": float(top.std(ddof=1)) if len(top) > 1 else 0.0,
        },
        {**base, "split": "test", "metric": "ci_low", "value": float(results[0].ci_low)},
        {**base, "split": "test", "metric": "ci_high", "value": float(results[0].ci_high)},
        {**base, "split": "test", "metric": "draws", "value": float(len(results))},
    ]
    vals = [v for r in results if (v := r.extra.get("val_top1")) is not None and np.isfinite(v)]
    if vals:
        rows.append({**base, "split": "val", "metric": "top1", "value": float(np.mean(vals))})
    return rows


def paired_rows(base: dict, name: str, diff: tuple[float, float, float]) -> list[dict]:
    """Rows `name`, `name_low`, `name_high` (split test): this setting's top-1 minus a
    reference's on the same test images, with its paired-bootstrap 95% interval.

    Names in use: `vs_pixels` (the raw-pixel probe, same head) and `vs_random` (the
    random-weights model at the same t, layer, pool and head).
    """
    return [
        {**base, "split": "test", "metric": name + sfx, "value": float(v)}
        for sfx, v in zip(("", "_low", "_high"), diff, strict=True)
    ]


def to_frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=COLUMNS)


def save_table(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write CSV or Parquet (by suffix) atomically."""
    path = Path(path)
    try:
        if path.suffix == ".parquet":
            return atomic_write(path, lambda tmp: df.to_parquet(tmp, index=False))
        return atomic_write(path, lambda tmp: df.to_csv(tmp, index=False))
    except OSError as e:
        if e.filename is None:  # a failed write names no file: say which (a full disk's message)
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise


def with_text_columns(df: pd.DataFrame) -> pd.DataFrame:
    """`df` with every `TEXT_COLUMNS` column as str (read_csv and concat turn pools "1" into 1)."""
    return df.astype({c: str for c in TEXT_COLUMNS})


def load_table(path: str | os.PathLike) -> pd.DataFrame:
    """A results table; one written before the `log_snr` column gets it as NaN."""
    path = Path(path)
    text_cols = {c: str for c in TEXT_COLUMNS}
    df = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path, dtype=text_cols)
    missing = set(COLUMNS) - set(df.columns) - {"log_snr"}
    if missing:
        raise ExplorerError(f"{path} is not a results table: missing columns {sorted(missing)}")
    return with_log_snr(df)


def with_log_snr(df: pd.DataFrame) -> pd.DataFrame:
    """`df` with a `log_snr` column after `t`: as it is, or NaN for a table written without it."""
    if "log_snr" in df.columns:
        return df
    out = df.copy()
    out.insert(
        list(out.columns).index("t") + 1 if "t" in out else len(out.columns), "log_snr", np.nan
    )
    return out


PAIRED = ("vs_pixels", "vs_random")
PAIRED_METRICS = [f"{n}{s}" for n in PAIRED for s in ("", "_low", "_high")]
WIDE_METRICS = ["top1", "top1_std", "ci_low", "ci_high", "val_top1", *PAIRED_METRICS]


def accuracy_view(df: pd.DataFrame, head: str | None = None, fused: bool = False) -> pd.DataFrame:
    """Wide view: one row per (model, t, layer, pool, head) with top1, top1_std, ci_low, ci_high,
    val_top1 and the paired differences of `PAIRED_METRICS` (NaN where a table lacks them), then
    the level's `log_snr` (NaN for tables written without it).

    Fused settings' rows (`layer` like "24@150+19@90", t NaN) are left out unless `fused`."""
    if not fused:
        df = df[~df["layer"].astype(str).str.contains("@", regex=False)]
    test = df[(df["split"] == "test") & df["metric"].isin(WIDE_METRICS)]
    val = df[(df["split"] == "val") & (df["metric"] == "top1")].assign(metric="val_top1")
    d = pd.concat([test, val], ignore_index=True)
    if head is not None:
        d = d[d["head"] == head]
    keys = ["model", "dataset", "t", "layer", "layer_index", "pool", "head"]
    if d.empty:
        return pd.DataFrame(columns=keys + WIDE_METRICS + ["log_snr"])
    wide = d.pivot_table(index=keys, columns="metric", values="value", dropna=False).reset_index()
    wide.columns.name = None
    for m in WIDE_METRICS:
        if m not in wide:
            wide[m] = np.nan
    wide = wide.dropna(subset=["top1"])[keys + WIDE_METRICS]
    levels = with_log_snr(d)[["model", "t", "log_snr"]].drop_duplicates(["model", "t"])
    return wide.merge(levels, on=["model", "t"], how="left").set_axis(wide.index)


def best_on_validation(wide: pd.DataFrame) -> pd.Series | None:
    """The row of `wide` (accuracy_view rows) with the highest val_top1, ties to the smaller t,
    then the earlier block; None when no row has a validation accuracy. Test top-1 is never read."""
    scored = (
        wide[np.isfinite(wide["val_top1"].astype(float))] if "val_top1" in wide else wide.iloc[:0]
    )
    if scored.empty:
        return None
    order = scored.assign(_t=scored["t"].astype(float).fillna(-1)).sort_values(
        ["val_top1", "_t", "layer_index", "pool"],
        ascending=[False, True, True, True],
        kind="stable",
    )
    return order.drop(columns="_t").iloc[0]


def ranked_cells(wide: pd.DataFrame) -> tuple[pd.DataFrame, bool]:
    """`wide`'s rows best first, and whether by validation top-1 (else by test top-1, when no
    row has one); ties go to the smaller t, then the earlier block (as `best_on_validation`)."""
    by_val = "val_top1" in wide and bool(wide["val_top1"].notna().any())
    cells = wide.sort_values(
        ["val_top1" if by_val else "top1", "t", "layer_index"],
        ascending=[False, True, True],
        kind="stable",
    )
    return cells, by_val


def sweep_slice(
    wide: pd.DataFrame, model: str, head: str | None = None, pool: str | None = None
) -> pd.DataFrame:
    """The rows of `wide` (accuracy_view rows) of `model`, and of `head` and `pool` when given."""
    keep = wide["model"] == model
    if head is not None:
        keep &= wide["head"] == head
    if pool is not None:
        keep &= wide["pool"] == pool
    return wide[keep]


def best_settings(df: pd.DataFrame) -> pd.DataFrame:
    """The best setting per (model, head), chosen on validation top-1, never on test.

    Ties go to the smaller t, then the earlier block. A (model, head) with no validation
    accuracy is listed only when it has a single setting (the raw-pixel baseline); column
    `selected_by` says "validation" or "only setting".
    """
    wide = accuracy_view(df)
    picks = []
    for _, g in wide.groupby(["model", "head"], sort=False):
        best = best_on_validation(g)
        if best is not None:
            picks.append(best.to_frame().T.assign(selected_by="validation"))
        elif len(g) == 1:
            picks.append(g.assign(selected_by="only setting"))
    if not picks:
        return wide.iloc[:0].assign(selected_by=pd.Series(dtype=str))
    out = pd.concat(picks).infer_objects()
    return out.sort_values(["head", "top1"], ascending=[True, False])


def beats(row, name: str) -> bool | None:
    """Whether a wide row's paired interval `name` (vs_pixels, vs_random) lies above 0:
    True/False, or None when the table has no such interval."""
    low, high = row.get(f"{name}_low", np.nan), row.get(f"{name}_high", np.nan)
    if not (np.isfinite(low) and np.isfinite(high)):
        return None
    return bool(low > 0)


def paired_words(row, name: str, reference: str) -> str:
    """A phrase on a wide row's paired difference `name` against `reference`, e.g.
    "+4.40 points vs raw pixels [+3.70, +5.10]: beyond noise"; "" when absent."""
    d, low, high = (row.get(f"{name}{s}", np.nan) for s in ("", "_low", "_high"))
    if not np.isfinite(d):
        return ""
    verdict = "within noise" if low <= 0 <= high else "beyond noise"
    return f"{100 * d:+.2f} points vs {reference} [{100 * low:+.2f}, {100 * high:+.2f}]: {verdict}"
