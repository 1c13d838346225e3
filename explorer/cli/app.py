"""`explorer app`: start the web app's server (this machine only unless --host/--share)."""

from __future__ import annotations

import argparse
import os
import re
import sys

from explorer.cli.options import Command, logger
from explorer.errors import ExplorerError


def app_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", type=int, default=8501, help="port to serve on")
    p.add_argument("--headless", action="store_true", help="do not open a browser")
    p.add_argument(
        "--host",
        default=None,
        help="address to listen on (default: 127.0.0.1, this machine only; 0.0.0.0 = everyone)",
    )
    p.add_argument(
        "--share", action="store_true", help="listen on every interface (same as --host 0.0.0.0)"
    )
    p.add_argument(
        "--data-root",
        action="append",
        default=[],
        metavar="DIR",
        help="when shared, folders whose models and datasets the app may load (repeatable; "
        "added to $EXPLORER_DATA_ROOTS)",
    )
    p.add_argument(
        "--allow-admin", action="store_true", help="show the button that clears the feature cache"
    )


_HOST = re.compile(r"^[A-Za-z0-9.:\[\]-]+$")


def _host(a: argparse.Namespace) -> str:
    """The address to listen on, from --host/--share/--port, or a one-line refusal."""
    if a.host and a.share:
        raise ExplorerError("give --host or --share, not both")
    if not 1 <= a.port <= 65535:
        raise ExplorerError("--port must be between 1 and 65535")
    host = "0.0.0.0" if a.share else (a.host or "127.0.0.1").strip()
    if not _HOST.match(host):
        raise ExplorerError(f"--host '{host}' is not an IP address or host name")
    return host


def _server_env(a: argparse.Namespace, host: str) -> dict:
    """The server's environment: whether it is exposed, admin, and the data roots it may read;
    an exposed server's reach is said on stderr."""
    from explorer import exposure

    exposed = not exposure.is_loopback(host)
    roots = [str(r) for r in exposure.parse_roots(os.pathsep.join(a.data_root))]
    roots += [r for r in os.environ.get(exposure.ROOTS_ENV, "").split(os.pathsep) if r.strip()]
    env = dict(os.environ)
    env |= {
        exposure.EXPOSED_ENV: "1" if exposed else "0",
        exposure.ADMIN_ENV: "1" if a.allow_admin else "0",
        exposure.ROOTS_ENV: os.pathsep.join(roots),
    }
    if exposed:
        policy = exposure.Policy(
            exposed=True, admin=a.allow_admin, roots=exposure.parse_roots(env[exposure.ROOTS_ENV])
        )
        logger.warning(exposure.exposure_text(host, a.port, policy))
    return env


def cmd_app(a: argparse.Namespace) -> int:
    """Start the web app (streamlit run app.py); this machine only unless --host/--share."""
    import signal
    import subprocess

    # APP_ROOT holds app.py, .streamlit/config.toml and assets/: in an installed wheel the package's
    # own explorer/_bundle (explorer/_build.py puts them there), in a clone its top level
    from explorer import paths

    host = _host(a)
    if not paths.APP.exists():
        raise ExplorerError(
            f"{paths.APP} not found; the app ships inside the package (explorer/_bundle in a wheel, the "
            "top level of a clone): reinstall it"
        )
    env = _server_env(a, host)
    # explorer.serve: Streamlit in-process, after loading the default model and views (first page warm)
    cmd = [
        sys.executable,
        "-m",
        "explorer.serve",
        "run",
        str(paths.APP),
        "--server.port",
        str(a.port),
        "--server.address",
        host,
        "--browser.gatherUsageStats",
        "false",
        # no source watcher: it walks every imported module (torch: thousands) for each session
        "--server.fileWatcherType",
        "none",
    ]
    if a.headless:
        cmd += ["--server.headless", "true"]
    # cwd: so .streamlit/config.toml applies
    proc = subprocess.Popen(cmd, cwd=paths.APP_ROOT, env=env)
    try:  # a SIGTERM to `explorer app` stops the server too, instead of orphaning it
        previous = signal.signal(signal.SIGTERM, lambda *_: proc.terminate())
    except ValueError:  # not the main thread: no handler, the finally clause still cleans up
        previous = None
    try:
        return proc.wait()
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        if proc.poll() is None:
            proc.terminate()
            proc.wait()


APP = Command("app", app_args, cmd_app, "explorer app --port 8501")
