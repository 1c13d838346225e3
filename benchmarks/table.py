"""The figures as a printed table and as a section of BENCHMARKS.md (replaced in place)."""

from __future__ import annotations

import math
import re
from pathlib import Path

SECTION = "## Issue 11: `python -m benchmarks`"
BEGIN, END = "<!-- benchmarks:begin -->", "<!-- benchmarks:end -->"


def value_text(f: dict) -> str:
    v = f.get("value")
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    unit = f.get("unit") or ""
    if unit == "×":
        return f"{v:.1f}×" if v >= 10 else f"{v:.2f}×"
    if unit == "s":
        return f"{v:.3f} s" if v < 1 else f"{v:.1f} s"
    return f"{v:.3g}{(' ' + unit) if unit else ''}"


def verdict(f: dict) -> str:
    if f.get("value") is None and f.get("met") is None:
        return "NOT RUN"
    return {True: "MET", False: "MISSED", None: "—"}[f.get("met")]


def print_table(figs: list[dict]) -> str:
    """Plain-text table, one figure per line with its note below."""
    lines = []
    for f in figs:
        lines.append(
            f"{f['figure']:>3}  {verdict(f):8} {value_text(f):>10}  target {f['target'] or 'report':<26} "
            f"{f['name']}"
        )
        if f.get("note"):
            lines.append(f"{'':14}{f['note']}")
    return "\n".join(lines)


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown(figs: list[dict], *, date: str, machine: str, command: str, load: str) -> str:
    """The BENCHMARKS.md section: when, where, the command, the table, the missed targets."""
    rows = [
        "| # | figure | result | target | verdict | details |",
        "|---|---|---|---|---|---|",
    ]
    rows += [
        f"| {f['figure']} | {_cell(f['name'])} | {value_text(f)} | {_cell(f['target'] or 'report')} "
        f"| {'**MISSED**' if f.get('met') is False else verdict(f)} | {_cell(f.get('note', ''))} |"
        for f in figs
    ]
    missed = [f for f in figs if f.get("met") is False]
    out = [
        SECTION,
        "",
        BEGIN,
        "",
        "Every figure of issue 11's table, measured in one run: each is a ratio of two timings "
        "taken in that run, except where the target is a bound in seconds.",
        "",
        f"**When and where.** {date}; {machine}; load average (1 min) {load}.",
        "",
        f"**Command.**\n\n```bash\n{command}\n```",
        "",
        "**Result.**",
        "",
        *rows,
        "",
    ]
    if missed:
        out += ["**Missed targets and why.**", ""]
        out += [f"- Figure {f['figure']} ({f['name']}): {f.get('note', '')}" for f in missed]
        out.append("")
    out += [END, ""]
    return "\n".join(out)


def write_section(path: Path, section: str) -> None:
    """Put `section` into the markdown file at `path`: replaces the previous one (between the
    markers, heading included) or appends it; every other section is kept as it was."""
    path = Path(path)
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    pattern = re.compile(
        re.escape(SECTION) + r"\s*" + re.escape(BEGIN) + r".*?" + re.escape(END) + r"\n?",
        re.DOTALL,
    )
    if pattern.search(text):
        text = pattern.sub(lambda _: section, text, count=1)
    elif "\n## " in text:  # first in the file, above the older sections
        at = text.index("\n## ") + 1
        text = text[:at] + section + "\n" + text[at:]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)
