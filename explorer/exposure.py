"""Who may load what: the app's access policy when it is shared on a network (pure, no Streamlit).

`explorer app` listens on 127.0.0.1 unless told otherwise. When it is exposed
(`--host 0.0.0.0` or `--share`), free-text model and dataset paths, typed or arriving in a
link, are accepted only under the folders of `EXPLORER_DATA_ROOTS`; built-in names,
`random:<built-in>` and uploaded zips (extracted under the cache's `uploads/`) are always
allowed. Clearing the cache from the app needs `EXPLORER_ALLOW_ADMIN=1` (`--allow-admin`).

Environment (set by `explorer app`, or by hand for `streamlit run app.py`):

- `EXPLORER_EXPOSED=1`: the app is reachable from other machines; apply the path roots.
- `EXPLORER_DATA_ROOTS`: folders (separated by `os.pathsep`) whose contents an exposed
  app may load.
- `EXPLORER_ALLOW_ADMIN=1`: show the *Clear* button of the feature cache.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path

from explorer.defaults import ENCODER_PREFIX, RANDOM_PREFIX
from explorer.errors import ExplorerError
from explorer.paths import BUILTIN_MODEL_DIRS, cache_dir

EXPOSED_ENV = "EXPLORER_EXPOSED"
ROOTS_ENV = "EXPLORER_DATA_ROOTS"
ADMIN_ENV = "EXPLORER_ALLOW_ADMIN"
MAX_SPEC_CHARS = 4096  # longer than any real path; a longer one is a crafted link
_TRUE = ("1", "true", "yes", "on")


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE


def is_loopback(host: str | None) -> bool:
    """True for addresses only this machine can reach (127.x, ::1, localhost)."""
    host = (host or "").strip()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_roots(raw: str | None) -> tuple[Path, ...]:
    """`EXPLORER_DATA_ROOTS` -> resolved folders (symlinks and `..` resolved, `~` expanded)."""
    roots = []
    for part in (raw or "").split(os.pathsep):
        if part.strip():
            roots.append(Path(os.path.realpath(Path(part.strip()).expanduser())))
    return tuple(roots)


@dataclass(frozen=True)
class Policy:
    """What this app process may do. `exposed=False` (local use) accepts any path."""

    exposed: bool = False
    admin: bool = False
    roots: tuple[Path, ...] = ()
    uploads: Path | None = field(default=None)  # always-allowed folder of extracted uploads

    @classmethod
    def from_env(cls, address: str | None = None) -> Policy:
        """The policy of this process: `$EXPLORER_EXPOSED`, or a non-loopback `address` the
        server listens on (Streamlit's `server.address`; None = not known, taken as local)."""
        exposed = env_flag(EXPOSED_ENV) or (address is not None and not is_loopback(address))
        return cls(
            exposed=exposed,
            admin=env_flag(ADMIN_ENV),
            roots=parse_roots(os.environ.get(ROOTS_ENV)),
            uploads=Path(os.path.realpath(cache_dir() / "uploads")),
        )

    def allowed_folders(self) -> tuple[Path, ...]:
        return self.roots + ((self.uploads,) if self.uploads else ())

    def roots_text(self) -> str:
        return ", ".join(str(r) for r in self.roots) or f"none (set {ROOTS_ENV})"


def _check_text(spec: str, what: str) -> None:
    if "\x00" in spec or any(ord(c) < 32 for c in spec):
        raise ExplorerError(f"the {what} contains control characters; give a plain path or name")
    if len(spec) > MAX_SPEC_CHARS:
        raise ExplorerError(
            f"the {what} is {len(spec)} characters long, over {MAX_SPEC_CHARS}; give a real path"
        )


def resolve_inside(spec: str, folders: tuple[Path, ...]) -> Path | None:
    """`spec` as a real path (`~`, `..` and symlinks resolved) when it lies inside one of
    `folders`, else None."""
    real = Path(os.path.realpath(Path(spec).expanduser()))
    for root in folders:
        if real == root or real.is_relative_to(root):
            return real
    return None


def _check_path(spec: str, what: str, policy: Policy, given: str | None = None) -> None:
    """Refuse `spec` unless it lies under the allowed folders (`given`: the text as the user gave
    it, e.g. with its `random:` prefix, for the message)."""
    if resolve_inside(spec, policy.allowed_folders()) is None:
        raise ExplorerError(
            f"{what} '{given or spec}' is outside the folders this shared app may read; allowed roots: "
            f"{policy.roots_text()}. Put it under one of them, or upload a zip"
        )


def check_model(spec: str, policy: Policy) -> None:
    """Raise ExplorerError unless `policy` lets the app load model `spec`."""
    _check_text(spec, "model")
    base = spec.removeprefix(RANDOM_PREFIX).removeprefix(ENCODER_PREFIX)
    if not policy.exposed or base in BUILTIN_MODEL_DIRS:
        return
    _check_path(base, "model", policy, given=spec)


def check_dataset(spec: str, policy: Policy, builtins: tuple[str, ...] = ()) -> None:
    """Raise ExplorerError unless `policy` lets the app load dataset `spec`
    (`builtins`: the built-in dataset names, always allowed)."""
    _check_text(spec, "dataset")
    if not policy.exposed or spec in builtins:
        return
    _check_path(spec, "dataset", policy)


def can_clear(policy: Policy) -> bool:
    """Clearing the cache from the app is an admin action, on for `--allow-admin` only."""
    return policy.admin


CLEAR_NOTE = (
    "Clearing the cache from the app is off. Start it with `explorer app --allow-admin` "
    f"(or set {ADMIN_ENV}=1) to enable the button, or run `explorer cache clear` on the server."
)


def exposure_text(host: str, port: int, policy: Policy) -> str:
    """The paragraph `explorer app` prints when it listens beyond this machine."""
    roots = policy.roots_text()
    admin = (
        "can clear the feature cache (--allow-admin is on)"
        if policy.admin
        else "cannot clear the cache (add --allow-admin to allow it)"
    )
    return (
        f"The app listens on {host}:{port}: anyone who can reach this machine on port {port} "
        "can use it, with no login and no encryption. They can run the built-in models and "
        "datasets, upload zips of images (kept under the cache's uploads/ folder, within "
        "EXPLORER_UPLOAD_MAX_MB / EXPLORER_UPLOAD_MAX_FILES), use CPU/GPU time, and load "
        f"model and dataset folders under the data roots: {roots}. They cannot read other "
        f"paths, and they {admin}. Share it only on a network you trust."
    )
