"""The package as a user gets it: a built wheel in a fresh venv, run from another folder.

Also runs the app's pages on the lowest Streamlit that pyproject.toml allows.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import site
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest

from explorer.ui.common import PAGES

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
MODELS = ("ddpm-digits", "ddpm-fashion-mnist")


def _sources(dest: Path) -> Path:
    """A copy of the project's files (tracked and new, not ignored), so the build leaves the tree alone."""
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for rel in filter(None, out.split("\0")):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


def _outer_site_dirs() -> list[str]:
    """This interpreter's site directories, user site first as `site` adds them.

    Inside a virtualenv these are the venv's own (and, if it has them, the system's), which
    `venv --system-site-packages` would miss: that reaches the *base* interpreter's only.
    """
    user = [site.getusersitepackages()] if site.ENABLE_USER_SITE else []
    return [d for d in dict.fromkeys([*user, *site.getsitepackages()]) if os.path.isdir(d)]


def _venv(path: Path) -> Path:
    """A fresh venv that reuses this interpreter's packages (torch etc.); returns its bin folder.

    A `.pth` file in the new venv adds this interpreter's site directories (their own `.pth`
    files run too, as for site-packages) after the venv's site-packages, so what is installed
    into the venv shadows the outer packages, the editable install of this clone included.
    This works whether or not the tests run inside a virtualenv.
    """
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    bin_dir = path / "bin"
    purelib = subprocess.run(
        [
            str(bin_dir / "python"),
            "-c",
            "import sysconfig; print(sysconfig.get_paths()['purelib'])",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    adds = "; ".join(f"site.addsitedir({d!r})" for d in _outer_site_dirs())
    (Path(purelib) / "_outer_site_packages.pth").write_text(f"import site; {adds}\n")
    return bin_dir


def _pip(bin_dir: Path, *args: str) -> None:
    subprocess.run([str(bin_dir / "python"), "-m", "pip", "install", "-q", *args], check=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    """sdist and wheel from `python -m build` (the wheel is built from the sdist, as on PyPI)."""
    src = _sources(tmp_path_factory.mktemp("src"))
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(src)],
        check=True,
        capture_output=True,
    )
    return out


@pytest.fixture(scope="module")
def installed(dist, tmp_path_factory) -> Path:
    """bin/ of a venv with the wheel installed (no deps: they come from this interpreter)."""
    bin_dir = _venv(tmp_path_factory.mktemp("venv") / "v")
    _pip(bin_dir, "--no-deps", "--no-index", str(next(dist.glob("*.whl"))))
    return bin_dir


def test_wheel_and_sdist_carry_the_app_its_config_and_the_models(dist):
    names = set(zipfile.ZipFile(next(dist.glob("*.whl"))).namelist())
    assert {"explorer/_bundle/app.py", "explorer/_bundle/.streamlit/config.toml"} <= names
    for m in MODELS:
        for f in ("config.json", "scheduler_config.json", "diffusion_pytorch_model.safetensors"):
            assert f"explorer/_bundle/assets/models/{m}/{f}" in names
    assert not [n for n in names if n.endswith((".pt", ".bin"))]
    assert "explorer/__main__.py" in names
    for f in ("index.html", "points.js"):  # the images-as-points view works offline from a wheel
        assert f"explorer/ui/points/frontend/dist/{f}" in names
    # the warm seed of the default views, every file its manifest checksums, and the shipped sweep
    seed = json.loads((ROOT / "assets" / "warm" / "manifest.json").read_text())
    assert seed["files"], "the seed lists its files"
    for rel in ["manifest.json", *seed["files"]]:
        assert f"explorer/_bundle/assets/warm/{rel}" in names, rel
    for f in ("fashion-mnist-sweep.csv", "fashion-mnist-sweep.json"):
        assert f"explorer/_bundle/assets/results/{f}" in names
    sdist = subprocess.run(
        ["tar", "tzf", str(next(dist.glob("*.tar.gz")))], capture_output=True, text=True, check=True
    ).stdout
    assert "/app.py\n" in sdist and "/.streamlit/config.toml" in sdist
    assert "/assets/models/ddpm-digits/diffusion_pytorch_model.safetensors" in sdist


def test_installed_wheel_runs_from_any_folder(installed, tmp_path):
    code = "import explorer, explorer.paths as p; print(explorer.__file__); print(p.APP); print(p.BUILTIN_MODELS)"
    where = subprocess.run(
        [str(installed / "python"), "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    venv = str(installed.parent)
    assert all(line.startswith(venv) for line in where), where  # the wheel, not this clone
    layers = subprocess.run(
        [str(installed / "explorer"), "layers", "--model", "ddpm-digits"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert layers.returncode == 0, layers.stderr
    assert layers.stdout.startswith("ddpm-digits:") and "mid_block" in layers.stdout
    opens_full = (
        "import sys; from explorer import shipped, warm; from explorer.features.keys import EXTRACTION_VERSION\n"
        "from explorer.models.loader import load_model\n"
        "fp = load_model('ddpm-fashion-mnist').fingerprint\n"
        "table = shipped.table_for('ddpm-fashion-mnist', 'fashion-mnist')\n"
        "print(table); print(shipped.check(table, extraction_version=EXTRACTION_VERSION,"
        " model_fingerprint=fp).state)\n"
        "import json; print(warm.SEED); print(json.dumps(warm.import_seed(sys.argv[1])))"
    )
    full = subprocess.run(
        [str(installed / "python"), "-c", opens_full, str(tmp_path / "cache")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert full.returncode == 0, full.stderr
    table, state, seed, counts = full.stdout.splitlines()[-4:]
    assert table.startswith(venv) and seed.startswith(venv), (
        "the shipped sweep and seed come from the wheel"
    )
    assert state == "ok", (
        "the bundled sweep passes its checksum, extraction version and weights checks"
    )
    counts = json.loads(counts)
    assert counts["imported"] > 0 and counts["refused"] == 0, counts
    ver = subprocess.run(
        [str(installed / "python"), "-m", "explorer", "--version"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert ver.strip() == "explorer 0.1.0"


def test_installed_wheel_serves_the_app(installed, tmp_path):
    port = _free_port()
    proc = subprocess.Popen(
        [str(installed / "explorer"), "app", "--headless", "--port", str(port)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        body, deadline = "", time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/_stcore/health", timeout=5
                ) as r:
                    body = r.read().decode()
                    break
            except OSError:
                time.sleep(0.5)
        assert body == "ok", (
            f"no health answer; server said: {proc.stdout.read() if proc.poll() is not None else ''}"
        )
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as r:
            assert r.status == 200 and b"<html" in r.read().lower()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


SMOKE = """
import sys
import streamlit
from streamlit.testing.v1 import AppTest
from explorer.ui.common import PAGES

print("streamlit", streamlit.__version__)
link = {"model": "ddpm-digits", "dataset": "digits", "train": "300", "test": "100", "proj": "pca"}
for page in PAGES:
    at = AppTest.from_file(sys.argv[1], default_timeout=600)
    at.query_params.update(link)
    if page != "explore":
        at.switch_page(PAGES[page])
    at.run()
    bad = [e.value for e in at.exception] + [e.value for e in at.error]
    assert not bad, (page, bad)
    print("page", page, "ok")
"""


def lowest_streamlit() -> str:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    found = [
        m.group(1) for d in deps if (m := re.fullmatch(r"streamlit>=([\d.]+)", d.replace(" ", "")))
    ]
    assert found, "pyproject.toml must give streamlit a lower bound"
    return found[0]


def test_every_page_runs_on_the_lowest_allowed_streamlit(tmp_path):
    version = lowest_streamlit()
    bin_dir = _venv(tmp_path / "v")
    _pip(
        bin_dir, f"streamlit=={version}"
    )  # its own dependencies too, where this interpreter's differ
    script = tmp_path / "smoke.py"
    script.write_text(SMOKE)
    run = subprocess.run(
        [str(bin_dir / "python"), str(script), str(ROOT / "app.py")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"streamlit {version}" in run.stdout
    assert run.stdout.count(" ok") == len(PAGES)
