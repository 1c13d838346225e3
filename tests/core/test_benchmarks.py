"""`python -m benchmarks`: the figure machinery at --quick sizes on a tiny model, and the
BENCHMARKS.md writer (structure only: no timing is asserted)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # `benchmarks` is not installed
from benchmarks.__main__ import RUNNERS, run_figures, select  # noqa: E402
from benchmarks.common import Context, figure  # noqa: E402
from benchmarks.table import BEGIN, END, SECTION, markdown, print_table, write_section  # noqa: E402
from explorer.models.loader import load_model  # noqa: E402

KEYS = {"figure", "name", "value", "unit", "target", "met", "note"}


@pytest.fixture
def ctx(tiny_model_dir, tiny_dataset, tmp_path):
    return Context(
        model=load_model(str(tiny_model_dir)),
        dataset=tiny_dataset,
        quick=True,
        workdir=tmp_path / "bench",
    )


def test_extraction_figures_on_a_tiny_model(ctx):
    figs = run_figures(["1", "2", "3"], ctx, echo=lambda _: None)
    assert [f["figure"] for f in figs] == ["1", "2", "3"]
    for f in figs:
        assert set(f) == KEYS
        assert isinstance(f["value"], float) and math.isfinite(f["value"]) and f["value"] > 0, f
        assert isinstance(f["met"], bool), f
        assert f["note"] and f["target"]
    assert "all 9 layers" in figs[0]["name"], "L is the tiny catalogue's 9 probe points"
    assert "0.8·L = 7.2×" in figs[0]["target"]
    assert figs[2]["note"].count("FLOPs") == 3, "three blocks k, each with its FLOPs share"


def test_cached_read_figure_on_a_tiny_model(ctx):
    (f,) = run_figures(["4"], ctx, echo=lambda _: None)
    assert f["value"] > 0 and math.isfinite(f["value"])
    assert "1,000×" in f["name"] and "checksum verified" in f["note"]


def test_a_failing_figure_is_a_row_not_a_crash(ctx, monkeypatch):
    def boom(_):
        raise RuntimeError("no luck")

    monkeypatch.setitem(RUNNERS, "2", boom)
    (f,) = run_figures(["2"], ctx, echo=lambda _: None)
    assert f["value"] is None and f["met"] is None and "no luck" in f["note"]


def test_gpu_figure_says_so_without_a_gpu(ctx, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    (f,) = run_figures(["8"], ctx, echo=lambda _: None)
    assert f["value"] is None and "no GPU on this machine" in f["note"]
    assert "python -m benchmarks --only 8" in f["note"]


def test_only_picks_figures_and_their_parts():
    assert select(None) == list(RUNNERS)
    assert select("1,4,5") == ["1", "4", "5"]
    assert select("3") == ["3", "3b"]
    with pytest.raises(SystemExit, match="unknown figure"):
        select("1,99")


def test_benchmarks_md_section_is_written_then_replaced(tmp_path):
    md = tmp_path / "BENCHMARKS.md"
    md.write_text("# Benchmarks\n\nIntro.\n\n## First view\n\nKept as it is.\n")
    figs = [
        figure("1", "one pass", 12.5, "×", "≥ 10.4×", True, "13 layers"),
        figure("2", "capture | cost", 1.3, "×", "≤ 1.10×", False, "pooling on 2 cores"),
        figure("8", "GPU", None, "", "point 5", None, "no GPU on this machine"),
    ]
    kw = dict(
        date="2026-11-27 05:00 UTC", machine="a CPU", command="python -m benchmarks", load="1"
    )
    write_section(md, markdown(figs, **kw))
    first = md.read_text()
    assert first.index(SECTION) < first.index("## First view"), "new section goes first"
    assert "Kept as it is." in first and first.count(BEGIN) == 1 and first.count(END) == 1
    assert "| 1 | one pass | 12.5× | ≥ 10.4× | MET | 13 layers |" in first
    assert "capture \\| cost" in first and "**MISSED**" in first
    assert "- Figure 2 (capture | cost): pooling on 2 cores" in first
    assert "| 8 | GPU | — | point 5 | NOT RUN | no GPU on this machine |" in first

    write_section(md, markdown(figs, **kw))
    assert md.read_text() == first, "writing the same result again changes nothing"
    figs[0]["value"] = 13.0
    write_section(md, markdown(figs, **kw | {"date": "2026-11-28 05:00 UTC"}))
    again = md.read_text()
    assert again.count(SECTION) == 1 and "13.0×" in again and "12.5×" not in again
    assert "2026-11-28" in again and "2026-11-27 05:00" not in again
    assert "Kept as it is." in again

    text = print_table(figs)
    assert "MET" in text and "MISSED" in text and "NOT RUN" in text


def test_full_dataset_run_calls_a_freeze_only_what_the_full_set_caused():
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    from full_dataset import frozen_pages  # a script of benchmarks/, as its siblings import it

    def row(page, limits, load, after):
        return {"page": page, "limits": limits, "load_ms": load, "after_ms": after}

    rows = [
        row("Explore", "default", 750, 760),
        row("Explore", "all again", 170, 880),  # under 1 s
        row("Data", "default", 1380, 0),
        row("Data", "all again", 120, 1420),  # the page's own start
        row("Compare", "default", 800, 0),
        row("Compare", "all", 900, 1900),  # first open, beside a computing server: not judged
        row("Compare", "all again", 700, 2400),  # 3x the default: a freeze
        row("Sweep", "all again", 1200, 0),  # nothing to compare with: a long task is a freeze
    ]
    assert frozen_pages(rows) == ["Compare", "Sweep"]
