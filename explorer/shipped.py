"""The shipped sweep: a results table in `assets/results/` and its provenance sidecar.

`assets/results/fashion-mnist-sweep.csv` is the sweep of the built-in Fashion-MNIST model that
the README quotes; `fashion-mnist-sweep.json` beside it records how it was made: the sha256 of
the CSV, the date, the command that regenerates it, the extraction version and the model's
fingerprint. The app opens its Sweep page on this table, labelled with that provenance, and
checks it first: an edited table (checksum) or one made by other code or weights (extraction
version, fingerprint) is labelled as such, never passed off as fresh.

After regenerating the CSV, refresh the sidecar:

    python -m explorer.shipped --write [--date YYYY-MM-DD] [--command "explorer sweep ..."]
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from explorer.atomic import atomic_write
from explorer.features.keys import EXTRACTION_VERSION
from explorer.paths import ASSETS

RESULTS = ASSETS / "results"
# (model, dataset) -> the shipped table of that pair
TABLES = {("ddpm-fashion-mnist", "fashion-mnist"): RESULTS / "fashion-mnist-sweep.csv"}
COMMAND = (
    "explorer sweep --model ddpm-fashion-mnist --dataset fashion-mnist --timesteps 10,50,90,150,300 "
    "--layers all --pools 2 --heads linear,knn --train-limit 6000 "
    "--out assets/results/fashion-mnist-sweep.csv"
)


def sidecar_path(csv: Path) -> Path:
    return csv.with_suffix(".json")


def sha256(path: Path) -> str:
    return "sha256:" + hashlib.sha256(Path(path).read_bytes()).hexdigest()


@dataclass
class Shipped:
    """A shipped table's provenance and what checking it found.

    `state`: "ok" (checksum, extraction version and model fingerprint all match), "altered"
    (the CSV is not the one the sidecar describes), "stale" (made by another extraction
    version or other weights), or "unknown" (no readable sidecar).
    """

    csv: Path
    provenance: dict
    state: str
    problems: list[str] = field(default_factory=list)

    @property
    def fresh(self) -> bool:
        return self.state == "ok"

    def label(self) -> str:
        """One paragraph (Markdown) for the page: what the table is, and whether it can be trusted."""
        p = self.provenance
        what = f"**Shipped results** (`{self.csv.name}`): computed on the full test set"
        if p.get("test_images"):
            what += f" ({p['test_images']:,} images)"
        if p.get("train_images"):
            what += f" with {p['train_images']:,} train images"
        if p.get("date"):
            what += f" on {p['date']}"
        what += f", by `{p.get('command', COMMAND)}`."
        if self.state == "ok":
            return (
                what + " Checked: checksum, extraction version and model weights match. "
                "*Compute* runs your own sweep on the sidebar's limits and replaces it."
            )
        if self.state == "unknown":
            return what + " **Unverified:** its provenance file is missing or unreadable."
        kind = "Altered" if self.state == "altered" else "Stale"
        return (
            f"**{kind} shipped results, not fresh:** "
            + "; ".join(self.problems)
            + ". "
            + what
            + " Press *Compute* to make a fresh table."
        )


def check(csv: Path, *, extraction_version: int, model_fingerprint: str | None) -> Shipped:
    """Compare the shipped `csv` with its sidecar and with the running code and model."""
    side = sidecar_path(csv)
    try:
        prov = json.loads(side.read_text())
        want = prov["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return Shipped(csv, {}, "unknown", ["no provenance"])
    problems = []
    if sha256(csv) != want:
        return Shipped(csv, prov, "altered", ["the table does not match its recorded checksum"])
    if prov.get("extraction_version") != extraction_version:
        problems.append(
            f"made with extraction version {prov.get('extraction_version')}, "
            f"this code uses {extraction_version}"
        )
    if model_fingerprint is not None and prov.get("model_fingerprint") != model_fingerprint:
        problems.append(
            f"made with model weights {prov.get('model_fingerprint')}, "
            f"the model here is {model_fingerprint}"
        )
    return Shipped(csv, prov, "stale" if problems else "ok", problems)


def table_for(model: str, dataset: str) -> Path | None:
    """The shipped table of a (built-in model, built-in dataset) pair, if there is one."""
    path = TABLES.get((model, dataset))
    return path if path is not None and path.is_file() else None


# --- writing the sidecar ------------------------------------------------------------------------


def _git_date(path: Path) -> str | None:
    """The date of the last commit of `path` when the file is unchanged since it, else None."""
    try:
        root = subprocess.run(
            ["git", "rev-parse", "--show-toplevel"],
            cwd=path.parent,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        rel = str(path.resolve().relative_to(root))
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", rel],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        date = subprocess.run(
            ["git", "log", "-1", "--format=%cs", "--", rel],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, ValueError, subprocess.CalledProcessError):
        return None
    return date if date and not dirty else None


def provenance(
    csv: Path,
    *,
    date: str | None = None,
    command: str = COMMAND,
    model: str = "ddpm-fashion-mnist",
    dataset: str = "fashion-mnist",
) -> dict:
    """The sidecar of `csv`: checksum, date, command, versions and the model's fingerprint."""
    import pandas as pd

    # the model (torch) loads only to write provenance, never to check the shipped table
    from explorer.data import load_dataset
    from explorer.models.loader import load_model

    m = load_model(model, device="cpu")
    ds = load_dataset(dataset)
    df = pd.read_csv(csv)
    date = date or _git_date(csv) or dt.date.fromtimestamp(csv.stat().st_mtime).isoformat()
    limit = _train_limit(command)
    return {
        "file": csv.name,
        "sha256": sha256(csv),
        "rows": int(len(df)),
        "date": date,
        "command": command,
        "extraction_version": EXTRACTION_VERSION,
        "model": model,
        "model_fingerprint": m.fingerprint,
        "dataset": dataset,
        "dataset_fingerprint": ds.fingerprint,
        "test_images": int(len(ds.subset("test", None))),
        "train_images": limit or int(len(ds.subset("train", None))),
    }


def _train_limit(command: str) -> int | None:
    words = command.split()
    for flag in ("--train-limit", "--limit"):
        if flag in words and words.index(flag) + 1 < len(words):
            return int(words[words.index(flag) + 1])
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m explorer.shipped", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument("--write", action="store_true", help="write the sidecar of every shipped table")
    ap.add_argument(
        "--date", default=None, help="when the table was made (default: its last commit)"
    )
    ap.add_argument("--command", default=COMMAND, help="the command that regenerates it")
    a = ap.parse_args(argv)
    for (model, dataset), csv in TABLES.items():
        if a.write:
            prov = provenance(csv, date=a.date, command=a.command, model=model, dataset=dataset)
            atomic_write(sidecar_path(csv), json.dumps(prov, indent=1) + "\n")
            print(f"wrote {sidecar_path(csv)}")
        s = check(
            csv, extraction_version=EXTRACTION_VERSION, model_fingerprint=None
        )  # weights: app
        print(f"{csv.name}: {s.state}" + (f" ({'; '.join(s.problems)})" if s.problems else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
