"""Bad input, counted: one table of CLI and app cases, each with the one-line message expected.

Every case asserts: the exact message (or an exact substring of it), no traceback, and no
cache entry created, changed or removed (the cache is snapshot before and after; it holds
entries computed beforehand, so a case that wrongly wrote or cleared would show).
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from explorer import cli
from explorer.ui.common import PAGES

pytestmark = pytest.mark.slow

APP = str(Path(__file__).resolve().parents[1] / "app.py")
LINK = {"model": "ddpm-digits", "dataset": "digits", "train": "300", "test": "100", "proj": "pca"}
# memos that only speed up a re-check, never cache entries: file hashes and folder scans
MEMOS = ("file-hashes.json", "scans/")


# --- inputs on disk -------------------------------------------------------------------------


def _png_folder(root: Path, classes=("a", "b"), n: int = 6, corrupt: bool = False) -> str:
    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            if corrupt:
                (root / c / f"{i}.png").write_bytes(b"not a png at all")
            else:
                img = rng.integers(0, 255, (16, 16), dtype=np.uint8)
                Image.fromarray(img).save(root / c / f"{i}.png")
    return str(root)


def _zip(path: Path, entries: dict[str, bytes], compress=zipfile.ZIP_DEFLATED) -> str:
    with zipfile.ZipFile(path, "w", compress) as z:
        for name, data in entries.items():
            z.writestr(name, data)
    return str(path)


def _lying_zip(path: Path, png: bytes) -> str:
    """A bomb whose headers claim 100 bytes for an entry that inflates to 5 MB."""
    import struct

    real = 5 * 2**20
    _zip(path, {"a/big.png": b"\0" * real, "b/x.png": png})
    data = bytearray(path.read_bytes())
    for sig, off in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):  # local, central headers
        at = data.find(sig)
        assert struct.unpack_from("<I", data, at + off)[0] == real
        struct.pack_into("<I", data, at + off, 100)
    path.write_bytes(bytes(data))
    return str(path)


def _edit_json(folder: Path, name: str, **changes) -> None:
    cfg = json.loads((folder / name).read_text())
    (folder / name).write_text(json.dumps(cfg | changes))


def _variant(base: Path, dest: Path) -> Path:
    shutil.copytree(base, dest)
    return dest


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, model_factory) -> dict[str, str]:
    """Every bad (and good) input the cases refer to, by name."""
    w = tmp_path_factory.mktemp("bad-inputs")
    tiny = model_factory(w / "tiny")
    p = {"tiny": str(tiny), "imgs": _png_folder(w / "imgs"), "w": str(w)}
    (w / "empty").mkdir()
    p["empty"] = str(w / "empty")
    p["corrupt_imgs"] = _png_folder(w / "corrupt", corrupt=True)
    p["one_class"] = _png_folder(w / "one-class", classes=("only",))
    png = io.BytesIO()
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(png, format="PNG")
    p["bomb"] = _zip(w / "bomb.zip", {"a/big.png": b"\0" * (5 * 2**20), "b/x.png": png.getvalue()})
    p["dotdot"] = _zip(w / "dotdot.zip", {"a/1.png": png.getvalue(), "../evil.png": png.getvalue()})
    p["absolute"] = _zip(w / "abs.zip", {"/etc/evil.png": png.getvalue()})
    p["liar_zip"] = _lying_zip(w / "liar.zip", png.getvalue())
    p["no_images"] = _zip(w / "text.zip", {"a/readme.txt": b"hello"})
    (w / "broken.zip").write_bytes(b"PK\x03\x04 this is not really a zip")
    p["broken_zip"] = str(w / "broken.zip")
    (w / "data.tar.gz").write_bytes(b"\x1f\x8b not really")
    p["tarball"] = str(w / "data.tar.gz")

    liar = _variant(tiny, w / "liar")  # config says 16/32 channels; the weights have 8/16
    _edit_json(liar, "config.json", block_out_channels=[16, 32])
    p["liar"] = str(liar)
    p["liar_in"] = str(_variant(tiny, w / "liar-in"))  # config says RGB input; weights are gray
    _edit_json(Path(p["liar_in"]), "config.json", in_channels=3)
    pipe = w / "pipeline"  # a pipeline whose model_index.json names a scheduler it lacks
    shutil.copytree(tiny, pipe / "unet")
    (pipe / "unet" / "scheduler_config.json").unlink()
    (pipe / "model_index.json").write_text(
        json.dumps({"_class_name": "DDPMPipeline", "scheduler": ["diffusers", "DDPMScheduler"]})
    )
    p["no_scheduler"] = str(pipe)
    bad_sched = _variant(tiny, w / "bad-sched")
    (bad_sched / "scheduler_config.json").write_text("{oops")
    p["bad_sched"] = str(bad_sched)
    neg_sched = _variant(tiny, w / "neg-sched")
    _edit_json(neg_sched, "scheduler_config.json", num_train_timesteps=-5)
    p["neg_sched"] = str(neg_sched)
    not_json = _variant(tiny, w / "not-json")
    (not_json / "config.json").write_text("[1, 2")
    p["not_json"] = str(not_json)
    vae = _variant(tiny, w / "vae")
    _edit_json(vae, "config.json", _class_name="AutoencoderKL")
    p["vae"] = str(vae)
    no_weights = _variant(tiny, w / "no-weights")
    for f in no_weights.glob("*.safetensors"):
        f.unlink()
    p["no_weights"] = str(no_weights)
    pickled = _variant(tiny, w / "pickled")
    for f in pickled.glob("*.safetensors"):
        f.rename(f.with_suffix(".bin"))
    p["pickled"] = str(pickled)
    p["a_file"] = str(tiny / "config.json")
    return p


# --- the cache, filled beforehand -------------------------------------------------------------


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """`relpath -> (size, mtime_ns)` of every cache file except the memos."""
    out = {}
    for f in root.rglob("*"):
        rel = f.relative_to(root).as_posix()
        if f.is_file() and not f.name.endswith(".lock") and not rel.startswith(MEMOS):
            st = f.stat()
            out[rel] = (st.st_size, st.st_mtime_ns)
    return out


@pytest.fixture(scope="module")
def filled_cache(tmp_path_factory, inputs) -> Path:
    """A cache holding features of the tiny model and of each page's default setting."""
    root = tmp_path_factory.mktemp("filled-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EXPLORER_CACHE", str(root))
        args = ["extract", "--model", inputs["tiny"], "--dataset", inputs["imgs"]]
        assert (
            cli.main([*args, "--timesteps", "10", "--layers", "1", "--cache-dir", str(root)]) == 0
        )
        for page in ("explore", "data", "similarity", "compare", "sweep"):
            at = open_page(page)
            assert not at.exception and not at.error, (page, at.exception, at.error)
    assert any((root / "features").rglob("*.npy")), "the cache holds entries to protect"
    return root


@pytest.fixture
def cache(_hermetic_cache, filled_cache, monkeypatch) -> Path:
    monkeypatch.setenv("EXPLORER_CACHE", str(filled_cache))
    monkeypatch.delenv("EXPLORER_EXPOSED", raising=False)
    monkeypatch.delenv("EXPLORER_DATA_ROOTS", raising=False)
    monkeypatch.delenv("EXPLORER_ALLOW_ADMIN", raising=False)
    return filled_cache


# --- the cases --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cli:
    args: list[str]  # `{name}` is replaced by inputs[name]
    message: str  # the whole last stderr line is "error: ..." holding this
    env: dict = field(default_factory=dict)


@dataclass(frozen=True)
class App:
    page: str
    params: dict  # query string, over LINK; `{name}` is replaced by inputs[name]
    message: str  # exact substring of the one st.error, or of a toast for `where="toast"`
    where: str = "error"
    env: dict = field(default_factory=dict)
    upload: str | None = None  # an input to upload as a zip in the sidebar


EX = ["extract", "--model", "{tiny}", "--dataset", "{imgs}", "--timesteps", "10", "--layers", "1"]
NOT_DATASET = "is not a dataset folder: expected class subfolders of images"
OUTSIDE = "is outside the folders this shared app may read; allowed roots:"
EXPOSED = {"EXPLORER_EXPOSED": "1", "EXPLORER_DATA_ROOTS": "{imgs}"}
MISMATCH = (
    "config.json does not match the weights: conv_in.weight is [8, 1, 3, 3] in the weights but "
    "[16, 1, 3, 3] by the config; the config was edited or belongs to other weights"
)

CASES = {
    # CLI: limits and numbers
    "cli-negative-limit": Cli(
        [*EX, "--limit", "-5"], "--batch-size and --limit must be positive integers"
    ),
    "cli-zero-batch": Cli(
        [*EX, "--batch-size", "0"], "--batch-size and --limit must be positive integers"
    ),
    "cli-text-limit": Cli([*EX, "--limit", "abc"], "argument --limit: invalid int value: 'abc'"),
    "cli-float-limit": Cli([*EX, "--limit", "1e3"], "argument --limit: invalid int value: '1e3'"),
    "cli-negative-steps": Cli(
        ["train", "--out", "{w}/out", "--steps", "-1"],
        "--steps and --batch-size must be positive integers",
    ),
    "cli-huge-port": Cli(["app", "--port", "99999"], "--port must be between 1 and 65535"),
    "cli-bad-host": Cli(["app", "--host", "a b"], "--host 'a b' is not an IP address or host name"),
    # CLI: settings
    "cli-unknown-pool": Cli(
        [*EX[:-4], "--pool", "3"], "unknown pooling '3'; choose from 1, 2, 4, 8, max"
    ),
    "cli-unknown-layer": Cli([*EX[:-4], "--layers", "nope"], "unknown layer 'nope'"),
    "cli-layer-out-of-range": Cli(
        [*EX[:-4], "--layers", "99"], "layer 99 is out of range (1 to 9, or -1 to -9)"
    ),
    "cli-timestep-too-big": Cli(
        [*EX[:-4], "--timesteps", "5000"], "timestep 5000 is outside [0, 1000)"
    ),
    "cli-negative-timestep": Cli(
        [*EX[:-4], "--timesteps", "-3"], "timestep -3 is outside [0, 1000)"
    ),
    "cli-text-timesteps": Cli([*EX[:-4], "--timesteps", "abc"], "cannot read timesteps 'abc'"),
    "cli-text-seeds": Cli(
        [*EX, "--seeds", "x"], "cannot read seeds 'x'; give integers separated by commas"
    ),
    "cli-unknown-split": Cli(
        [*EX, "--splits", "foo"], "unknown split 'foo'; this dataset has train, test"
    ),
    "cli-unknown-head": Cli(
        ["sweep", "--model", "{tiny}", "--dataset", "{imgs}", "--heads", "svm"],
        "unknown head 'svm'; choose from",
    ),
    "cli-embed-bad-timestep": Cli(
        ["embed", "--model", "{tiny}", "--dataset", "{imgs}", "--timestep", "-1"],
        "timestep -1 is outside [0, 1000)",
    ),
    # CLI: datasets
    "cli-empty-folder": Cli([*EX, "--dataset", "{empty}"], NOT_DATASET),
    "cli-unreadable-images": Cli([*EX, "--dataset", "{corrupt_imgs}"], "no readable images in"),
    "cli-one-class": Cli(
        [*EX, "--dataset", "{one_class}"], "an ImageFolder needs at least 2 class subfolders"
    ),
    "cli-missing-dataset": Cli([*EX, "--dataset", "{w}/nowhere"], "no such path"),
    "cli-zip-bomb": Cli(
        [*EX, "--dataset", "{bomb}"],
        "the zip expands to more than 1 MB (5.0 MB), over the upload limit",
        {"EXPLORER_UPLOAD_MAX_MB": "1"},
    ),
    "cli-zip-lying-sizes": Cli(
        [*EX, "--dataset", "{liar_zip}"], "zip entry 'a/big.png' is corrupt"
    ),
    "cli-zip-dotdot": Cli(
        [*EX, "--dataset", "{dotdot}"],
        "zip entry '../evil.png' points outside the archive ('..'); refusing the whole zip",
    ),
    "cli-zip-absolute": Cli(
        [*EX, "--dataset", "{absolute}"], "zip entry '/etc/evil.png' has an absolute path"
    ),
    "cli-zip-no-images": Cli([*EX, "--dataset", "{no_images}"], "the zip holds no images"),
    "cli-zip-corrupt": Cli(
        [*EX, "--dataset", "{broken_zip}"], "the upload is not a valid zip file"
    ),
    "cli-tarball": Cli([*EX, "--dataset", "{tarball}"], "is an archive; extract it first"),
    "cli-bad-upload-limit": Cli(
        [*EX, "--dataset", "{dotdot}"], "bad upload limit", {"EXPLORER_UPLOAD_MAX_MB": "lots"}
    ),
    # CLI: models
    "cli-config-lies-channels": Cli(["layers", "--model", "{liar}"], MISMATCH),
    "cli-config-lies-input": Cli(
        ["layers", "--model", "{liar_in}"],
        "config.json does not match the weights: conv_in.weight is [8, 1, 3, 3] in the weights "
        "but [8, 3, 3, 3]",
    ),
    "cli-missing-scheduler": Cli(
        ["layers", "--model", "{no_scheduler}"], "declares a scheduler but"
    ),
    "cli-corrupt-scheduler": Cli(
        ["layers", "--model", "{bad_sched}"], "scheduler_config.json: Expecting property name"
    ),
    "cli-negative-scheduler-steps": Cli(
        ["layers", "--model", "{neg_sched}"],
        "num_train_timesteps must be a positive integer, got -5",
    ),
    "cli-config-not-json": Cli(["layers", "--model", "{not_json}"], "config.json: Expecting"),
    "cli-not-a-unet": Cli(
        ["layers", "--model", "{vae}"], "describes a AutoencoderKL; the explorer reads UNet2DModel"
    ),
    "cli-no-weights": Cli(["layers", "--model", "{no_weights}"], "has a config but no weights"),
    "cli-pickle-weights": Cli(
        ["layers", "--model", "{pickled}"], "is a pickle checkpoint, which can run code"
    ),
    "cli-model-is-a-file": Cli(["layers", "--model", "{a_file}"], "is a file; pass the folder"),
    "cli-unknown-model": Cli(["layers", "--model", "{w}/nowhere"], "unknown model"),
    "cli-empty-model-folder": Cli(
        ["layers", "--model", "{empty}"], "is not a diffusers model folder"
    ),
    # App: garbage and out-of-range query strings, on every page
    "app-t-text": App(
        "explore",
        {"t": "abc"},
        "Ignored `t=abc` from the link: not a whole number from 0 to 999",
        "toast",
    ),
    "app-t-too-big": App(
        "explore",
        {"t": "5000"},
        "Ignored `t=5000` from the link: 5000 is outside 0 to 999",
        "toast",
    ),
    "app-t-negative": App("explore", {"t": "-1"}, "-1 is outside 0 to 999", "toast"),
    "app-t-endless": App(
        "explore",
        {"t": "9" * 5000},
        "Ignored `t=999999999999999999999999999999999999999…` from the link: not a whole number",
        "toast",
    ),
    "app-block-range": App(
        "explore",
        {"block": "99"},
        "Ignored `block=99` from the link: block 99 is out of range (1 to 13)",
        "toast",
    ),
    "app-block-name": App(
        "explore",
        {"block": "../etc"},
        "Ignored `block=../etc` from the link: not one of the choices here",
        "toast",
    ),
    "app-pool": App(
        "explore",
        {"pool": "3"},
        "Ignored `pool=3` from the link: not one of the choices here",
        "toast",
    ),
    "app-head": App("explore", {"head": "svm"}, "Ignored `head=svm`", "toast"),
    "app-train-negative": App(
        "data", {"train": "-5"}, "Ignored `train=-5` from the link: negative limit -5", "toast"
    ),
    "app-train-text": App(
        "data",
        {"train": "lots"},
        "Ignored `train=lots` from the link: not a whole number of images",
        "toast",
    ),
    "app-test-huge": App(
        "data",
        {"test": "99999999999999999999"},
        "limit 99999999999999999999 is over the maximum of 10000000",
        "toast",
    ),
    "app-data-n": App(
        "data", {"n": "0"}, "Ignored `n=0` from the link: 0 is outside 1 to 20", "toast"
    ),
    "app-sim-n": App(
        "similarity",
        {"n": "7"},
        "Ignored `n=7` from the link: not one of the choices here",
        "toast",
    ),
    "app-sim-debiased": App(
        "similarity",
        {"debiased": "maybe"},
        "Ignored `debiased=maybe` from the link: not a boolean",
        "toast",
    ),
    "app-sim-ts": App(
        "similarity",
        {"ts": ["10", "abc"]},
        "Ignored `ts=10,abc` from the link: not a valid value",
        "toast",
    ),
    "app-sweep-heads": App("sweep", {"heads": ["svm"]}, "Ignored `heads=svm`", "toast"),
    "app-compare-mode": App("compare", {"mode": "zzz"}, "Ignored `mode=zzz`", "toast"),
    # App: paths
    "app-empty-folder": App("data", {"dataset": "{empty}"}, NOT_DATASET),
    "app-unreadable-images": App("data", {"dataset": "{corrupt_imgs}"}, "no readable images in"),
    "app-nul-in-dataset": App(
        "data", {"dataset": "a\x00b"}, "the dataset contains control characters"
    ),
    "app-config-lies": App("data", {"model": "{liar}"}, MISMATCH),
    "app-missing-scheduler": App("data", {"model": "{no_scheduler}"}, "declares a scheduler but"),
    "app-exposed-dataset-outside": App(
        "data", {"dataset": "/etc"}, f"dataset '/etc' {OUTSIDE}", env=EXPOSED
    ),
    "app-exposed-random-outside": App(
        "data", {"model": "random:{tiny}"}, f"model '{{tiny}}' {OUTSIDE}", env=EXPOSED
    ),
    "app-exposed-dotdot": App("data", {"dataset": "{imgs}/../corrupt"}, OUTSIDE, env=EXPOSED),
    "app-upload-bomb": App(
        "data",
        {},
        "the zip expands to more than 1 MB",
        env={"EXPLORER_UPLOAD_MAX_MB": "1"},
        upload="bomb",
    ),
    "app-upload-dotdot": App(
        "data", {}, "zip entry '../evil.png' points outside the archive", upload="dotdot"
    ),
}


def fill(value, inputs: dict[str, str]):
    if isinstance(value, list):
        return [fill(v, inputs) for v in value]
    return value.format(**inputs) if isinstance(value, str) else value


def open_page(page: str, params: dict | None = None):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=600)
    at.query_params.update({**LINK, **(params or {})})
    if page != "explore":
        at.switch_page(PAGES[page])
    return at.run()


def run_cli(args: list[str]) -> tuple[int, str]:
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            code = cli.main(args)
        except SystemExit as e:  # argparse's own usage errors
            code = e.code
    return code, err.getvalue()


def run_app(case: App, inputs: dict[str, str]):
    from explorer.ui.sidebar import UPLOAD_DATASET

    params = {k: fill(v, inputs) for k, v in case.params.items()}
    at = open_page(case.page, params)
    if case.upload:
        at.sidebar.selectbox(key="side_dataset").set_value(UPLOAD_DATASET).run()
        data = Path(inputs[case.upload]).read_bytes()
        at.sidebar.file_uploader(key="side_upload").set_value(("x.zip", data, "application/zip"))
        at.run()
    return at


def test_the_table_is_big_enough():
    assert len(CASES) >= 30
    assert sum(isinstance(c, Cli) for c in CASES.values()) >= 15
    assert sum(isinstance(c, App) for c in CASES.values()) >= 15
    assert {c.page for c in CASES.values() if isinstance(c, App)} == set(PAGES), "every page"


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(name, inputs, cache, monkeypatch):
    case = CASES[name]
    for k, v in case.env.items():
        monkeypatch.setenv(k, fill(v, inputs))
    message = fill(case.message, inputs)
    before = snapshot(cache)
    if isinstance(case, Cli):
        code, err = run_cli(fill(case.args, inputs))
        assert code == 2, f"exit status 2 for bad input, got {code}: {err}"
        assert "Traceback" not in err
        last = err.strip().splitlines()[-1]
        assert last.startswith("explorer") or last.startswith("error: "), last
        assert message in last, f"expected {message!r} in the last line, got {last!r}"
        assert sum(line.startswith("error") or ": error:" in line for line in err.splitlines()) == 1
    else:
        at = run_app(case, inputs)
        assert not at.exception, f"no exception: {[e.value for e in at.exception]}"
        errors = [e.value for e in at.error] + [e.value for e in at.sidebar.error]
        if case.where == "toast":
            assert not errors, f"a bad link value is a notice, not an error: {errors}"
            toasts = [t.value for t in at.toast]
            assert any(message in t for t in toasts), f"expected {message!r} in {toasts}"
        else:
            assert len(set(errors)) == 1, f"one error, got {errors}"
            assert message in errors[0], f"expected {message!r} in {errors[0]!r}"
            assert "\n" not in errors[0].strip() and "Traceback" not in errors[0]
    assert snapshot(cache) == before, "no cache entry was created, changed or removed"
