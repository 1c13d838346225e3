"""What an extraction did, per call and per request: the lines `explorer extract` prints.

Free of torch, so a request answered from its memo (`explorer.features.request_memo`) reports
without loading it.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ExtractReport:
    """What one `ensure_features` call did."""

    computed: int = 0  # entries written by this call
    cached: int = 0  # entries already there
    images: int = 0
    forward_passes: int = 0  # batches x jobs run
    seconds: float = 0.0
    location: str = ""
    skipped: list[str] = field(default_factory=list)

    def summary(self) -> str:
        total = self.computed + self.cached
        s = (
            f"{total} feature sets for {self.images} images: {self.computed} computed, {self.cached} from cache, "
            f"in {self.seconds:.1f}s; stored in {self.location}"
        )
        if self.skipped:
            s += f"; {len(self.skipped)} unreadable images skipped"
        return s


@dataclass
class ExtractOutcome:
    """What a request did: per split, the report (None when answered from the request memo)."""

    reports: dict[str, ExtractReport | None]
    keys: dict[str, list[str]]
    images: dict[str, int]
    location: str
    from_memo: bool = False
    skipped: int = 0  # unreadable images left out
    skipped_log: str | None = None  # their names

    def lines(self) -> list[str]:
        """One summary line per split, as `explorer extract` prints them."""
        out = []
        for split, rep in self.reports.items():
            if rep is None:
                n = len(self.keys[split])
                out.append(
                    f"{split}: {n} feature sets for {self.images[split]} images: 0 computed, {n} from cache; "
                    f"stored in {self.location}"
                )
            else:
                out.append(f"{split}: {rep.summary()}")
        return out
