"""What lives under the cache root, checking it, and clearing it: pure core for the CLI and the app.

Parts of `<cache>/` (see `paths.cache_dir`):
    features/    feature entries (`store.FeatureStore`), with partial/, quarantine/, locks/
    results/     probe results (`results.ResultStore`)
    embeddings/  UMAP / aligned-UMAP layouts (`analysis.embed`)
    sweeps/      the app's sweep tables
    requests/    request memos of `explorer extract` (`request_memo`)
    scans/ logs/ image-folder scan cache, logs of skipped images
    uploads/     datasets unpacked from uploaded zips (user data: cleared only when named)
    .trash/      parts being cleared: renamed here whole, then deleted (see `store.remove_tree`)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from explorer.errors import ExplorerError
from explorer.features.store import FeatureStore, empty_trash, remove_tree
from explorer.paths import cache_dir

PARTS = {
    "features": "features",
    "results": "results",
    "umaps": "embeddings",
    "sweeps": "sweeps",
    "requests": "requests",
    "scans": "scans",
    "logs": "logs",
    "uploads": "uploads",
}
DEFAULT_CLEAR = ("features", "results", "umaps", "sweeps", "requests", "scans", "logs")


@dataclass
class PartInfo:
    name: str
    path: Path
    files: int
    bytes: int


def _du(path: Path) -> tuple[int, int]:
    files = size = 0
    if path.is_dir():
        for p in path.rglob("*"):
            if p.is_file():
                files += 1
                size += p.stat().st_size
    return files, size


def inventory(root: str | os.PathLike | None = None) -> list[PartInfo]:
    """Files and bytes of every part of the cache root."""
    base = cache_dir(root)
    return [PartInfo(name, base / sub, *_du(base / sub)) for name, sub in PARTS.items()]


@dataclass
class VerifyReport:
    """What `verify` found: entries intact, adopted (legacy, checksum now recorded), damaged."""

    ok: int = 0
    adopted: int = 0
    damaged: list[tuple[str, str]] = field(
        default_factory=list
    )  # (key, reason), now in quarantine/
    incomplete: int = 0  # arrays without a manifest: interrupted commits, recomputed when needed
    partial: int = 0  # entries being written (or interrupted; resumed on the next run)
    quarantine: Path | None = None

    def summary(self) -> str:
        s = (
            f"{self.ok + self.adopted + len(self.damaged)} feature entries: {self.ok} ok, "
            f"{self.adopted} legacy adopted (checksum recorded), {len(self.damaged)} damaged"
        )
        if self.damaged:
            s += f" (moved to {self.quarantine}; they are recomputed when next needed)"
        if self.incomplete or self.partial:
            s += f"; {self.partial} partial and {self.incomplete} uncommitted arrays (resumed or redone on the next run)"
        return s


def verify(
    root: str | os.PathLike | None = None, store: FeatureStore | None = None
) -> VerifyReport:
    """Check every feature entry's checksum (adopting legacy ones); quarantine the damaged."""
    store = store or FeatureStore(root)
    rep = VerifyReport(quarantine=store.quarantine_dir)
    for key in store.entry_keys():
        status, detail = store.check(key)
        if status == "ok":
            rep.ok += 1
        elif status == "adopted":
            rep.adopted += 1
        elif status == "damaged":
            rep.damaged.append((key, detail))
    manifests = {p.stem for p in store.dir.glob("??/*.json")}
    rep.incomplete = sum(1 for p in store.dir.glob("??/*.npy") if p.stem not in manifests)
    rep.partial = sum(1 for _ in store.partial_dir.glob("*.npy"))
    return rep


def clear(
    root: str | os.PathLike | None = None, parts: list[str] | tuple[str, ...] | None = None
) -> dict[str, int]:
    """Delete the chosen `parts` (default `DEFAULT_CLEAR`); returns bytes freed per part."""
    parts = list(parts or DEFAULT_CLEAR)
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise ExplorerError(f"unknown cache part '{unknown[0]}'; choose from {', '.join(PARTS)}")
    base = cache_dir(root)
    empty_trash(base)  # what an interrupted clear left
    freed = {}
    for name in parts:
        path = base / PARTS[name]
        freed[name] = _du(path)[1]
        if name == "features":
            FeatureStore(base).clear()
        else:  # whole or gone for any reader, even if this process is killed meanwhile
            remove_tree(path, base)
    return freed
