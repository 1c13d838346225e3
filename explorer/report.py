"""Reports of a sweep's tidy results table: Markdown tables and a self-contained HTML file.

`python -m explorer.report results.csv` prints the Markdown tables (the README's measured
section); `write_html_report` (`explorer report`) writes one HTML file for collaborators, with
plotly.js and the images-as-points view (its bundle and atlas) inline so it opens offline. Selection follows the results module: the best setting
is the highest validation top-1; test top-1 is reported with its 95% interval, and
differences come from the paired bootstrap stored in the table.
"""

from __future__ import annotations

import hashlib
import html
import json
import platform
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd

from explorer.atomic import atomic_write
from explorer.defaults import PIXELS, RANDOM_PREFIX
from explorer.errors import ExplorerError
from explorer.results import accuracy_view, best_settings, load_table
from explorer.settings import Setting


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%" if np.isfinite(x) else "—"


def _interval(row: pd.Series, name: str) -> str:
    """`+4.40 [+3.70, +5.10]` points, with ✓ when the paired interval excludes 0."""
    d, low, high = (float(row.get(f"{name}{s}", np.nan)) for s in ("", "_low", "_high"))
    if not np.isfinite(d):
        return "—"
    mark = " ✓" if low > 0 or high < 0 else ""
    return f"{100 * d:+.2f} [{100 * low:+.2f}, {100 * high:+.2f}]{mark}"


def _where(row: pd.Series) -> str:
    if row["layer"] == PIXELS:
        return "—"
    return f"block {int(row['layer_index'])} (`{row['layer']}`), t={int(row['t'])}"


def best_table(df: pd.DataFrame) -> str:
    """One row per (model, head): the setting best on validation, its val and test top-1 (95%
    interval), and its paired difference in points vs raw pixels and vs random weights."""
    best = best_settings(df)
    order = {PIXELS: 2}
    best = best.assign(
        _o=[order.get(m, 1 if m.startswith(RANDOM_PREFIX) else 0) for m in best["model"]]
    )
    lines = [
        "| features | head | best setting (on validation) | val top-1 | test top-1 [95% CI] "
        "| vs pixels, points [paired 95%] | vs random weights, points [paired 95%] |",
        "|---|---|---|---|---|---|---|",
    ]
    for _, r in best.sort_values(["head", "_o"]).iterrows():
        test = f"{_pct(r['top1'])} [{_pct(r['ci_low'])}, {_pct(r['ci_high'])}]"
        lines.append(
            f"| {r['model']} | {r['head']} | {_where(r)} | {_pct(r['val_top1'])} | {test} "
            f"| {_interval(r, 'vs_pixels')} | {_interval(r, 'vs_random')} |"
        )
    return "\n".join(lines)


def grid_table(df: pd.DataFrame, model: str, head: str, metric: str = "top1") -> str:
    """Blocks (rows) × timesteps (columns) of `metric` in % for one model and head; the cell
    best on validation is bold. `metric` may be any accuracy_view column (top1, val_top1, ...)."""
    wide = accuracy_view(df, head)
    wide = wide[wide["model"] == model]
    if wide.empty:
        return ""
    best = best_settings(df[(df["model"] == model) & (df["head"] == head)])
    pick = (best["layer_index"].iloc[0], best["t"].iloc[0]) if len(best) else None
    ts = sorted(wide["t"].unique())
    lines = [
        "| block | layer | " + " | ".join(f"t={int(t)}" for t in ts) + " |",
        "|---|---|" + "---|" * len(ts),
    ]
    for (idx, layer), g in wide.groupby(["layer_index", "layer"], sort=True):
        vals = g.set_index("t")[metric]
        cells = []
        for t in ts:
            v = vals.get(t, np.nan)
            text = f"{100 * v:.1f}" if np.isfinite(v) else "—"
            cells.append(f"**{text}**" if pick == (idx, t) else text)
        lines.append(f"| {int(idx)} | `{layer}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report(df: pd.DataFrame) -> str:
    """The best-setting table, then per model and head the test and val grids."""
    parts = [
        "Best settings (chosen on validation top-1; ✓: paired 95% interval excludes 0):",
        "",
        best_table(df),
    ]
    wide = accuracy_view(df)
    for (model, head), g in wide[wide["model"] != PIXELS].groupby(["model", "head"], sort=True):
        for metric, what in (("top1", "test"), ("val_top1", "validation")):
            if g[metric].notna().any():
                grid = grid_table(df, model, head, metric)
                parts += [
                    "",
                    f"{head} {what} top-1 (%), {model} (bold: best on validation):",
                    "",
                    grid,
                ]
    return "\n".join(parts)


# --- HTML ------------------------------------------------------------------------------------------

PACKAGES = (
    "diffusion-feature-explorer",
    "torch",
    "diffusers",
    "numpy",
    "scikit-learn",
    "pandas",
    "plotly",
    "umap-learn",
    "streamlit",
    "safetensors",
)


def versions() -> dict[str, str]:
    """Python and the installed versions of the packages a result depends on."""
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def table_checksum(df: pd.DataFrame, source: str | Path | None = None) -> str:
    """sha256 of the table file when `source` is readable, else of the table as CSV."""
    try:
        data = Path(source).read_bytes() if source else None
    except OSError:
        data = None
    return hashlib.sha256(data if data is not None else df.to_csv(index=False).encode()).hexdigest()


def _esc(x) -> str:
    return html.escape(str(x))


def _html_table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_esc(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _setting_text(r) -> str:
    if r["layer"] == PIXELS:
        return "raw pixels"
    return f"t={int(r['t'])}, block {int(r['layer_index'])} ({r['layer']}), pool {r['pool']}"


def best_html(df: pd.DataFrame) -> str:
    """The best setting per (model, head), chosen on validation, as an HTML table."""
    rows = []
    for _, r in best_settings(df).iterrows():
        rows.append(
            [
                r["model"],
                r["head"],
                _setting_text(r),
                _pct(float(r["val_top1"])),
                f"{_pct(r['top1'])} [{_pct(r['ci_low'])}, {_pct(r['ci_high'])}]",
                _interval(r, "vs_pixels"),
                _interval(r, "vs_random"),
                r["selected_by"],
            ]
        )
    return _html_table(
        [
            "features",
            "head",
            "best setting",
            "val top-1",
            "test top-1 [95% CI]",
            "vs pixels, points [paired 95%]",
            "vs random weights, points [paired 95%]",
            "selected by",
        ],
        rows,
    )


def _main_models(df: pd.DataFrame) -> list[str]:
    return sorted(
        m for m in df["model"].unique() if m != PIXELS and not str(m).startswith(RANDOM_PREFIX)
    )


def _pick(options: list[str], wanted: str | None, prefer: str, what: str) -> str:
    if wanted is not None and wanted not in options:
        raise ExplorerError(
            f"the table has no {what} '{wanted}'; it has {', '.join(options) or 'none'}"
        )
    return wanted or (prefer if prefer in options else options[0])


class _Figures:
    """Figures as HTML fragments; the first carries plotly.js inline, the rest reuse it."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, fig) -> str:
        self.count += 1
        return fig.to_html(
            full_html=False,
            include_plotlyjs=self.count == 1,
            config={"displaylogo": False},
            default_height="520px",
        )


def _sweep_section(df: pd.DataFrame, model: str, head: str, pool: str, fig_html: _Figures) -> str:
    from explorer import figures  # plotly: only for the HTML report, not the Markdown tables

    wide = accuracy_view(df)
    wide = wide.assign(t=wide["t"].astype(float))
    cur = wide[(wide["model"] == model) & (wide["head"] == head) & (wide["pool"] == pool)]
    if cur.empty:
        return f"<p class='missing'>No rows for {_esc(model)}, head {_esc(head)}, pool {_esc(pool)}.</p>"
    base = figures.sweep_baselines(wide, head, pool, RANDOM_PREFIX + model)
    return "\n".join(
        [
            f"<h2>{_esc(model)} · head {_esc(head)} · pool {_esc(pool)}</h2>",
            fig_html(figures.sweep_heatmap(cur, base, width=FIGURE_WIDTH)),
            "<p>Curves: test top-1 with its 95% bootstrap interval (error bars); dashed lines: "
            "baselines.</p>",
            fig_html(figures.accuracy_vs_timestep(cur, base, width=FIGURE_WIDTH)),
            fig_html(figures.accuracy_vs_block(cur, base, width=FIGURE_WIDTH)),
        ]
    )


def _workspace_section(df: pd.DataFrame, ws, head: str, fig_html: _Figures, compute: bool) -> str:
    """Per-class results, confusions and a UMAP of the best setting of `ws`'s model."""
    from explorer import figures  # plotly: only for the HTML report, not the Markdown tables

    name = ws.model.name
    best = best_settings(df[(df["model"] == name) & (df["head"] == head)])
    if best.empty or best.iloc[0]["layer"] == PIXELS:
        return (
            f"<h2>Per-class results and UMAP</h2><p class='missing'>Not available: the table "
            f"has no setting of {_esc(name)} with head {_esc(head)} chosen on validation.</p>"
        )
    r = best.iloc[0]
    s = Setting(int(r["t"]), str(r["layer"]), str(r["pool"]))
    out = [
        f"<h2>Best setting of {_esc(name)}, {_esc(head)} head: {_esc(_setting_text(r))}</h2>",
        f"<p>Recomputed from the feature and probe caches on {len(ws.train.indices)} train / "
        f"{len(ws.test.indices)} test images of {_esc(ws.dataset.name)}.</p>",
    ]
    if not compute and not ws.is_cached(s):
        return "\n".join(
            [
                *out,
                "<p class='missing'>Per-class results and UMAP: not available "
                "(this setting's features are not cached).</p>",
            ]
        )
    res = ws.evaluate([s], head)[s]
    classes = [str(c) for c in ws.dataset.class_names]
    out += [
        f"<p>Test top-1 {_pct(res.top1)} [{_pct(res.ci_low)}, {_pct(res.ci_high)}].</p>",
        fig_html(figures.per_class_bars(classes, res.per_class, res.top1)),
        fig_html(figures.confusion_heatmap(res.confusion, classes, width=FIGURE_WIDTH)),
    ]
    ts = sorted(set(df[df["model"] == name]["t"].dropna().astype(int))) or [s.t]
    levels = [0, *ts, ws.num_timesteps - 1]
    if compute or all(ws.is_cached(ws.setting(x, s.layer, s.pool)) for x in levels):
        profile = ws.timestep_profile(s.layer, ts, s.pool, head)
        block = f"block {int(r['layer_index'])} ({r['layer']})"
        out.append(fig_html(figures.timestep_profile(profile, block)))
    else:
        out.append("<p class='missing'>Timestep profile: not available (features not cached).</p>")
    xy = ws.embedding(s, "umap")
    title = f"UMAP of the test features · {_setting_text(r)}"
    out.append(points_html(ws, xy, np.asarray(res.predictions), classes, title))
    return "\n".join(out)


def points_html(ws, xy: np.ndarray, predictions: np.ndarray, classes: list[str], title: str) -> str:
    """The test embedding `(N, 2)` as images-as-points, offline: the view's bundle and an atlas
    of the N test images inline (hover for label, prediction and index; zoom for thumbnails;
    the legend hides classes; box or lasso to count a selection)."""
    from explorer.analysis.atlas import atlas_from_reader, to_png
    from explorer.figures import class_colors
    from explorer.ui.points import colors
    from explorer.ui.points.payload import inline_html, payload

    idx = np.asarray(ws.test.indices)
    y = ws.labels("test")
    pixels, lay = atlas_from_reader(ws.dataset.images, idx)
    coloring = colors.point_colors("true class", y, class_colors(len(classes)), classes)
    args = payload(
        xy, [title], y, classes, coloring, to_png(pixels), lay, idx,
        predictions=predictions, height=600,
    )  # fmt: skip
    return (
        f"<h3>{_esc(title)}</h3><p>Each of the {len(idx):,} test images is drawn as itself at "
        f"its place ({lay.cell} px thumbnails); wheel to zoom, hover for label, prediction "
        "and dataset index, click the legend to hide a class.</p>\n"
        + inline_html(args, element_id="embedding")
    )


def _search_section(rounds_csv: str | Path, fig_html: _Figures) -> str:
    """The setting search's rounds (its `--out` table) and, when beside it, its summary."""
    from explorer import figures  # plotly: only for the HTML report, not the Markdown tables
    from explorer.search import summary_path

    rounds = pd.read_csv(rounds_csv)
    out = ["<h2>Setting search</h2>"]
    side = summary_path(rounds_csv)
    if side.exists():
        out.append("<pre>" + _esc("\n".join(json.loads(side.read_text())["lines"])) + "</pre>")
    out.append(fig_html(figures.search_rounds(rounds)))
    return "\n".join(out)


# The page is at most 1100 px wide and reads from 800 px windows: figures are drawn for the
# narrowest (FIGURE_WIDTH), wide tables scroll inside their own box, long lines wrap.
FIGURE_WIDTH = 720
_STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:14px;display:block;max-width:100%;overflow-x:auto}
td,th{border:1px solid #ccc;padding:4px 8px}
th{background:#f3f3f3}.missing{color:#a33}code,pre{background:#f6f6f6;padding:2px 4px}
pre{white-space:pre-wrap;overflow-wrap:anywhere}td{overflow-wrap:anywhere}
.plotly-graph-div{max-width:100%}
@media (max-width:900px){body{margin:1em auto;padding:0 .75em}table{font-size:13px}}"""


def html_report(
    df: pd.DataFrame,
    *,
    head: str | None = None,
    pool: str | None = None,
    workspace=None,
    compute: bool = True,
    search: str | Path | None = None,
    source: str | Path | None = None,
    command: str | None = None,
) -> str:
    """One self-contained HTML page of a results table: best settings (validation), heatmap and
    curves with intervals per main model, per-class results and a UMAP of the best setting when a
    `workspace` is given (from the caches; computed if missing unless `compute` is False), and
    the exact settings and package versions. plotly.js is inline: no network, no server."""
    wide = accuracy_view(df)
    if wide.empty:
        raise ExplorerError("the results table has no test accuracies; nothing to report")
    models = _main_models(df) or sorted(wide["model"].unique())
    head = _pick(sorted(wide["head"].unique()), head, "linear", "head")
    pools = sorted(wide[(wide["head"] == head) & wide["model"].isin(models)]["pool"].unique())
    pool = _pick(pools or ["2"], pool, "2", "pool")
    fig_html = _Figures()
    parts = [
        "<h1>Diffusion Feature Explorer: sweep report</h1>",
        f"<p>{_esc(', '.join(models))} on {_esc(', '.join(map(str, df['dataset'].unique())))}; "
        f"{len(wide)} results. The best setting is chosen on validation top-1, never on test; "
        "✓ marks a paired 95% interval that excludes 0.</p>",
        "<h2>Best settings</h2>",
        best_html(df),
    ]
    parts += [_sweep_section(df, m, head, pool, fig_html) for m in models]
    if search is not None:
        parts.append(_search_section(search, fig_html))
    if workspace is not None:
        parts.append(_workspace_section(df, workspace, head, fig_html, compute))
    else:
        parts.append(
            "<h2>Per-class results and UMAP</h2><p class='missing'>Not available: the sweep "
            "table holds overall accuracies only. Write the report with <code>explorer report "
            "--workspace --model M --dataset D --limit N</code> (or from the app's Sweep page) "
            "to add per-class results, confusions and a UMAP of the best setting.</p>"
        )
    facts = [
        ["command", command or "(not recorded)"],
        ["table", str(source or "(in memory)")],
        ["table sha256", table_checksum(df, source)],
        ["rows", len(df)],
        ["figures", f"head {head}, pool {pool}"],
        ["written", datetime.now(timezone.utc).isoformat(timespec="seconds")],
    ]
    if workspace is not None:
        facts += [
            ["model fingerprint", workspace.model.fingerprint],
            ["dataset fingerprint", workspace.dataset.fingerprint],
            [
                "images",
                f"{len(workspace.train.indices)} train / {len(workspace.test.indices)} test",
            ],
        ]
    facts += [[k, v] for k, v in versions().items()]
    parts += ["<h2>Settings and versions</h2>", _html_table(["", ""], facts)]
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<title>Sweep report</title><style>"
        + _STYLE
        + "</style></head><body>\n"
        + "\n".join(parts)
        + "\n</body></html>\n"
    )


def write_html_report(df: pd.DataFrame, out: str | Path, **kw) -> Path:
    """`html_report(df, **kw)` written atomically to `out`."""
    return atomic_write(Path(out), html_report(df, **kw))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m explorer.report RESULTS.csv", file=sys.stderr)
        return 2
    print(report(load_table(args[0])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
