"""`python -m explorer.serve run app.py [streamlit options]`: Streamlit in this process, warm.

`explorer app` starts the server through this module so that the work a first page would
otherwise wait for (importing torch and diffusers, loading the default model, dataset and
workspaces, importing the shipped warm seed) is done by the server process before it
answers: a warm-up thread (`explorer.ui.services.warm_up`) is started, joined for at most
`EXPLORER_WARM_TIMEOUT` seconds (default 120; 0 serves at once and lets the warm-up finish
in the background), then Streamlit's own command line runs in-process with the same
arguments. Sessions that arrive while a step is still running wait for that same object.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
import time

from explorer.features import host_memory
from explorer.paths import cache_dir

log = logging.getLogger("explorer.serve")
TIMEOUT_ENV = "EXPLORER_WARM_TIMEOUT"


def warm(timeout_s: float) -> float:
    """Start the warm-up and wait for it up to `timeout_s` seconds; returns the seconds waited."""
    # The app's cache_data decorators, applied before Streamlit's runtime exists (at import and
    # in the warm-up thread), warn that they validate against an in-memory manager; their
    # storage is still the runtime's, per call. Streamlit sets its loggers' levels when it
    # makes them, so the module that owns this one is imported before it is quietened.
    import streamlit.runtime.caching.cache_data_api  # noqa: F401

    quiet = logging.getLogger("streamlit.runtime.caching.cache_data_api")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    t0 = time.perf_counter()
    try:
        from explorer.ui.services import warm_up

        thread = warm_up()
        if timeout_s > 0:
            thread.join(timeout_s)
    finally:
        quiet.setLevel(level)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    host_memory.tune()  # before Streamlit's threads: they share the tuned main heap
    # numba (UMAP) keeps its compiled functions in the cache root, as app.py sets it
    os.environ.setdefault("NUMBA_CACHE_DIR", str(cache_dir() / "numba"))
    try:
        timeout = float(os.environ.get(TIMEOUT_ENV, "120"))
    except ValueError:
        timeout = 120.0
    print("Warming up the default model and views…", file=sys.stderr, flush=True)
    spent = warm(timeout)
    # Streamlit runs a full gc.collect() after every script run; with torch and the model loaded
    # that walks millions of long-lived objects. Move what exists now out of the collector's way.
    gc.collect()
    gc.freeze()
    print(f"Warm in {spent:.1f} s.", file=sys.stderr, flush=True)
    from streamlit.web import cli as stcli

    sys.argv = ["streamlit", *argv]
    return stcli.main()


if __name__ == "__main__":
    raise SystemExit(main())
