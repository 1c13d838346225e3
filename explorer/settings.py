"""What a user typed -> one canonical setting: the CLI, the notebook API and the app all use this.

A `Setting` is where features are read: timestep, layer name (or "pixels"), pooling and noise
seed. `parse_pools`, `parse_timesteps`, `parse_seeds` and `check_timesteps` read the text forms
(`"1,2,max"`, `"10,90,150"`, `"0:1000:100"`, `"0,1,2"`); `Workspace.setting` resolves a layer
given as an index or a name against the model's catalogue.

A `Fused` holds member `Setting`s and a mode:
- `"concat"`: the members' features side by side, `(N, D1 + D2 + ...)`, for linear, k-NN and
  MLP; the `fusion` head (`explorer.probes.fusion`) reads them as one token set instead;
- `"mean"`: DIFT's ensemble, the element-wise mean of members of one shape (typically one
  setting under several noise seeds), `(N, D)`.

Text form of a fused setting (CLI `--fuse`, the sweep table's `layer` column): members joined
by `+`, each `BLOCK@T`, optionally `~SEED` and `/POOL`; a mean starts with `mean:`. Examples:
`"24@150+19@90"`, `"mean:24@150~0+24@150~1"`, `"24@150/map16+19@90/4"`. BLOCK is the block
index or layer name; a member without `/POOL` takes the pool given beside the text.

Free of torch and numpy-heavy work, so the CLI's cached fast path can import it.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from explorer.defaults import PIXELS, POOLS
from explorer.errors import ExplorerError


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


def parse_pools(spec: str | int | Sequence) -> list[str]:
    """ "2" / 2 / "1,2,max" / ["1", 2] -> canonical pool names from POOLS."""
    items = spec if isinstance(spec, list | tuple) else str(spec).split(",")
    out = []
    for it in items:
        p = str(it).strip().lower()
        p = {"gap": "1", "avg": "1", "gmp": "max"}.get(p, p)
        if p not in POOLS:
            raise ExplorerError(
                f"unknown pooling '{it}'; choose from {', '.join(POOLS)} "
                "(k×k average, global max, or the map up to 16×16)"
            )
        if p not in out:
            out.append(p)
    return out


def parse_timesteps(spec: str | int | Sequence[int]) -> list[int]:
    """ "10,90,150" or "0:1000:100" (start:stop:step), an int or a list -> list of ints."""
    if isinstance(spec, int):
        return [spec]
    if not isinstance(spec, str):
        return [as_int(t, "timestep") for t in spec]
    out: list[int] = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if ":" in part:
                a, b, *c = (int(v) for v in part.split(":"))
                out += list(range(a, b, c[0] if c else 1))
            else:
                out.append(int(part))
        except ValueError as e:
            raise ExplorerError(
                f"cannot read timesteps '{spec}'; use a list like 10,90,150 or a range 0:1000:100"
            ) from e
    return out


def check_timesteps(timesteps: Sequence[int], num_levels: int) -> list[int]:
    """Validate timesteps against the model's levels `[0, num_levels)` (`LoadedModel.num_timesteps`:
    T for a VP schedule, T + 1 for flow matching, whose t = T is pure noise); returns them as
    sorted unique ints."""
    out = sorted({int(t) for t in timesteps})
    bad = [t for t in out if not 0 <= t < num_levels]
    if bad:
        raise ExplorerError(
            f"timestep {bad[0]} is outside [0, {num_levels}); this model has {num_levels} noise "
            f"levels, so pick t from 0 to {num_levels - 1}"
        )
    if not out:
        raise ExplorerError("no timesteps given; pass e.g. --timesteps 10,90,150")
    return out


def parse_seeds(spec: str | int | Sequence[int]) -> list[int]:
    """ "0,1,2", 0 or [0, 1, 2] -> [0, 1, 2]; a clear error for anything else."""
    if isinstance(spec, str):
        try:
            return [int(s) for s in spec.split(",") if s.strip()]
        except ValueError:
            raise ExplorerError(
                f"cannot read seeds '{spec}'; give integers separated by commas"
            ) from None
    if isinstance(spec, int):
        return [spec]
    return [as_int(s, "seed") for s in spec]


def as_int(value, what: str) -> int:
    """An int from an int-like value or a digit string; a clear error otherwise."""
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    try:
        return operator.index(value)
    except TypeError:
        raise ExplorerError(f"{what} must be an integer, not {value!r}") from None


MODES = ("concat", "mean")
MEAN_PREFIX = "mean:"


@dataclass(frozen=True)
class Fused:
    """Member settings (order matters: it fixes the column order) and how they combine."""

    members: tuple[Setting, ...]
    mode: str = "concat"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ExplorerError(
                f"unknown fusion mode '{self.mode}'; choose from {', '.join(MODES)}"
            )
        if len(self.members) < 2:
            raise ExplorerError("a fused setting needs at least 2 members")
        if len(set(self.members)) != len(self.members):
            raise ExplorerError("a fused setting lists the same setting twice")
        if any(m.is_pixels for m in self.members):
            raise ExplorerError("raw pixels cannot be a member of a fused setting")

    @property
    def is_ensemble(self) -> bool:
        """A mean over noise draws of one (t, layer, pool)."""
        return self.mode == "mean" and len({(m.t, m.layer, m.pool) for m in self.members}) == 1


def is_fused_text(text: str) -> bool:
    """Whether a table's `layer` value is a fused setting's text (it has a `@`)."""
    return isinstance(text, str) and "@" in text


def parse_fused(text: str) -> tuple[list[tuple[str, str, str | None, str | None]], str]:
    """`"24@150~1/2+mid@90"` -> ([(block, t, seed or None, pool or None), ...], mode), unresolved."""
    body = str(text).strip()
    mode = "concat"
    if body.lower().startswith(MEAN_PREFIX):
        body, mode = body[len(MEAN_PREFIX) :], "mean"
    members = []
    for part in body.split("+"):
        part = part.strip()
        rest, _, pool = part.partition("/")
        rest, _, seed = rest.partition("~")
        block, at, t = rest.partition("@")
        if not at or not block.strip() or not t.strip():
            raise ExplorerError(
                f"fused setting '{text}': write members as BLOCK@T joined by '+' "
                f"(e.g. 24@150+19@90), got '{part}'"
            )
        members.append((block.strip(), t.strip(), seed.strip() or None, pool.strip() or None))
    if len(members) < 2:
        raise ExplorerError(f"fused setting '{text}' has one member; join at least two with '+'")
    return members, mode


def format_fused(f: Fused, block_of: Callable[[str], int | str], pool: str | None = None) -> str:
    """The text form of `f`: members as `BLOCK@T` (`~SEED` if not 0, `/POOL` if not `pool`).

    `block_of(layer_name)` gives the block index (or name) written. `parse_fused` reads it back.
    """
    parts = []
    for m in f.members:
        s = f"{block_of(m.layer)}@{m.t}" + (f"~{m.seed}" if m.seed else "")
        parts.append(s + (f"/{m.pool}" if m.pool != pool else ""))
    return (MEAN_PREFIX if f.mode == "mean" else "") + "+".join(parts)


def shared_pool(f: Fused) -> str:
    """The members' pooling when they share one, else their poolings joined by `+`."""
    pools = list(dict.fromkeys(m.pool for m in f.members))
    return pools[0] if len(pools) == 1 else "+".join(pools)
