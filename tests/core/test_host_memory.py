"""The host allocator tuning of CPU passes: freed activation buffers are reused, not faulted
in again; free memory beyond `KEEP_BYTES` is handed back; numbers are unchanged.

Each check runs in a fresh interpreter: the tuning is process-wide and one-way.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from explorer.features import host_memory

pytestmark = pytest.mark.skipif(
    host_memory._glibc() is None, reason="glibc's allocator only (Linux)"
)


def _run(code: str, *, system: bool = False, timeout: int = 120) -> dict:
    env = dict(os.environ)
    env.pop(host_memory.ENV, None)
    if system:
        env[host_memory.ENV] = "system"
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


FAULTS = """
import json, resource, torch
from explorer.features import host_memory
tuned = host_memory.tune()
torch.manual_seed(0)
net = torch.nn.Sequential(  # a U-Net-like stretch: activations of 8-32 MiB, made and freed in turn
    torch.nn.Conv2d(8, 32, 3, padding=1), torch.nn.GroupNorm(8, 32), torch.nn.SiLU(),
    torch.nn.Conv2d(32, 32, 3, padding=1), torch.nn.GroupNorm(8, 32), torch.nn.SiLU(),
    torch.nn.Upsample(scale_factor=2.0), torch.nn.Conv2d(32, 8, 3, padding=1),
)
x = torch.randn(16, 8, 64, 64)
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
with torch.inference_mode():
    for _ in range(2):  # the first passes grow the heap
        net(x)
    before = faults()
    for _ in range(5):
        net(x)
print(json.dumps({"tuned": tuned, "faults": faults() - before}))
"""


def test_freed_activations_are_reused_instead_of_faulted_in_again():
    tuned, system = _run(FAULTS), _run(FAULTS, system=True)
    assert tuned["tuned"] is True and system["tuned"] is False
    pages = (8 << 20) // os.sysconf("SC_PAGE_SIZE")  # the smallest activation
    # glibc's default maps and unmaps each activation: its pages fault in again in every pass
    assert system["faults"] > 5 * pages, system
    # tuned: the heap keeps freed activations and later passes reuse their pages (the heap may
    # still grow by a few activations while its free blocks settle: 4 of them were seen once on a
    # loaded machine, exactly at the old bound of 4)
    assert tuned["faults"] < 6 * pages and 10 * tuned["faults"] < system["faults"], (tuned, system)


RELEASE = """
import json, torch
from explorer.features import host_memory

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * {page}

host_memory.tune()
x = torch.empty({mib} << 18)  # float32: {mib} MiB
x.fill_(1.0)
pin = torch.ones(1 << 16)  # 256 KiB above it: the freed block is inside the heap, not on top
del x
before = rss()
host_memory.release()
print(json.dumps({{"free": host_memory.free_bytes(), "dropped": before - rss()}}))
"""


def test_release_keeps_free_memory_up_to_the_bound_and_hands_back_the_rest():
    page, mib = os.sysconf("SC_PAGE_SIZE"), 1 << 20
    small = _run(RELEASE.format(page=page, mib=64))
    large = _run(RELEASE.format(page=page, mib=host_memory.KEEP_BYTES // mib + 256))
    # 64 MiB free: kept, resident, for the next batch
    assert small["free"] >= 64 * mib and small["dropped"] < 8 * mib, small
    # more than KEEP_BYTES free: malloc_trim hands its pages back to the system
    assert large["free"] > host_memory.KEEP_BYTES, large
    assert large["dropped"] > host_memory.KEEP_BYTES, large


FEATURES = """
import json, sys, torch
import numpy as np
from explorer.features.capture import forward_features
from explorer.models.layers import build_catalogue
from explorer.models.loader import load_model

m = load_model(sys.argv[1])
layers = build_catalogue(m.denoiser)
g = torch.Generator().manual_seed(0)
x0 = torch.rand((12, 1, 16, 16), generator=g) * 2 - 1
noise = torch.randn(x0.shape, generator=g)
out = []
for _ in range(3):  # later passes run on reused (dirty) buffers when tuned
    feats = forward_features(m.denoiser, m.scheduler, x0, noise, timestep=300, layers=layers,
                             pools=["1", "2", "max"], stop_early=False)
    out.append({f"{k[0]}|{k[1]}": v.numpy().tobytes().hex() for k, v in sorted(feats.items())})
np.save(sys.argv[2], np.array([json.dumps(o, sort_keys=True) for o in out]))
print(json.dumps({"passes": len(out)}))
"""


def test_features_are_byte_identical_with_the_tuned_allocator(tiny_model_dir, tmp_path):
    got = {}
    for system in (False, True):
        path = tmp_path / f"{system}.npy"
        code = FEATURES.replace("sys.argv[1]", repr(str(tiny_model_dir)))
        code = code.replace("sys.argv[2]", repr(str(path)))
        assert _run(code, system=system)["passes"] == 3
        got[system] = list(np.load(path))
    assert got[False][0] == got[True][0]  # tuned vs glibc's defaults
    assert len(set(got[False])) == 1  # every tuned pass, on reused buffers, the same


def test_opt_out_and_repeat_calls():
    code = """
    import json
    from explorer.features import host_memory
    print(json.dumps({"first": host_memory.tune(), "again": host_memory.tune(),
                      "is": host_memory.is_tuned()}))
    """
    assert _run(code) == {"first": True, "again": True, "is": True}
    assert _run(code, system=True) == {"first": False, "again": False, "is": False}


def test_an_unknown_choice_says_so_in_one_line_and_tunes():
    env = dict(os.environ, **{host_memory.ENV: "off"})
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "from explorer.features import host_memory; print(host_memory.tune())",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert out.stdout.strip() == "True"
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "EXPLORER_HOST_MALLOC='off' is not a choice" in lines[0], lines
