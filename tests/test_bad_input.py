"""Bad input, counted: one table of CLI and app cases, each with the one-line message expected.

Every case asserts: the exact message (or an exact substring of it), no traceback, and no
cache entry created, changed or removed (the cache is snapshot before and after; it holds
entries computed beforehand, so a case that wrongly wrote or cleared would show). CLI cases
also assert that no warning is printed and that no FIFO was opened (`fifo_guard`).

Below the table: hostile files among good ones (special files, names that are not UTF-8) are
skipped or read and the rest used, a plain run prints no warning, and the checks that refuse
impossible schedules and sizes accept every real one.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import shutil
import socket
import struct
import subprocess
import sys
import threading
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from explorer import cli
from explorer.ui.common import PAGES
from tests.families.tiny import save_family

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
    p.update(_hostile_inputs(w, tiny))
    return p


# --- hostile inputs: special files, odd names, lying headers, impossible numbers --------------


def _png_bytes(side: int = 16) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.full((side, side), 128, np.uint8)).save(out, format="PNG")
    return out.getvalue()


def _png_header(side: int) -> bytes:
    """A tiny PNG whose header claims `side` x `side` pixels (the pixel data is not there)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def _classes(root: Path, make, classes=("a", "b")) -> str:
    """`root/<class>/` for each class, each holding what `make(class_folder)` puts there."""
    for c in classes:
        (root / c).mkdir(parents=True)
        make(root / c)
    return str(root)


def _socket(path: Path) -> None:
    """A Unix socket file at `path` (bound by its bare name: socket paths are short)."""
    s, cwd = socket.socket(socket.AF_UNIX), os.getcwd()
    try:
        os.chdir(path.parent)
        s.bind(path.name)
    finally:
        os.chdir(cwd)
        s.close()


def _cifar(root: Path, data, labels, names=(b"cat", b"dog"), test=None) -> str:
    """A CIFAR-10 python-batch folder: data_batch_1 and test_batch (the same unless `test`)."""
    root.mkdir(parents=True)
    ok = {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]}
    batches = {"data_batch_1": {b"data": data, b"labels": labels}, "test_batch": test or ok}
    for name, batch in batches.items():
        (root / name).write_bytes(pickle.dumps(batch, protocol=4))
    (root / "batches.meta").write_bytes(pickle.dumps({b"label_names": list(names)}, protocol=4))
    return str(root)


def _idx_images(n: int, side: int = 28) -> bytes:
    body = np.zeros((n, side, side), np.uint8).tobytes()
    return b"\0\0\x08\x03" + struct.pack(">III", n, side, side) + body


def _idx(root: Path, images: bytes | None = None, test: tuple[int, int] = (2, 28)) -> str:
    """An MNIST-layout IDX folder; `images` replaces the train images file's bytes, `test` is
    the t10k images' (count, side)."""
    root.mkdir(parents=True)
    for part, (n, side) in (("train", (2, 28)), ("t10k", test)):
        (root / f"{part}-images-idx3-ubyte").write_bytes(_idx_images(n, side))
        (root / f"{part}-labels-idx1-ubyte").write_bytes(
            b"\0\0\x08\x01" + struct.pack(">I", n) + bytes([0, 1] * (n // 2))
        )
    if images is not None:
        (root / "train-images-idx3-ubyte").write_bytes(images)
    return str(root)


DROP = object()


def _model(tiny: Path, dest: Path, config=None, scheduler=None) -> str:
    """A copy of the tiny model with `config` / `scheduler` merged into its JSON files
    (a value `DROP` removes the key)."""
    _variant(tiny, dest)
    for name, changes in (("config.json", config), ("scheduler_config.json", scheduler)):
        if changes:
            cfg = json.loads((dest / name).read_text()) | changes
            cfg = {k: v for k, v in cfg.items() if v is not DROP}
            (dest / name).write_text(json.dumps(cfg))
    return str(dest)


def _hostile_inputs(w: Path, tiny: Path) -> dict[str, str]:
    p: dict[str, str] = {}
    # special files where images should be: never opened (a FIFO would block forever)
    p["fifo_imgs"] = _classes(w / "fifo-imgs", lambda d: os.mkfifo(d / "x.png"))
    p["socket_imgs"] = _classes(w / "socket-imgs", lambda d: _socket(d / "s.png"))
    p["device_imgs"] = _classes(w / "device-imgs", lambda d: os.symlink("/dev/zero", d / "z.png"))

    def loop(d: Path) -> None:
        os.symlink(d / "b.png", d / "a.png")
        os.symlink(d / "a.png", d / "b.png")

    p["loop_imgs"] = _classes(w / "loop-imgs", loop)
    os.mkfifo(w / "fifo-dataset")
    p["fifo_dataset"] = str(w / "fifo-dataset")
    # headers that lie (a 20000 x 20000 and a 10000 x 10000 PNG), and files cut short
    p["bomb_imgs"] = _classes(
        w / "bomb-imgs", lambda d: (d / "big.png").write_bytes(_png_header(20000))
    )
    p["warn_bomb_imgs"] = _classes(
        w / "warn-bomb-imgs", lambda d: (d / "big.png").write_bytes(_png_header(10000))
    )
    p["truncated_imgs"] = _classes(
        w / "truncated-imgs", lambda d: (d / "t.png").write_bytes(_png_bytes(64)[:60])
    )
    # one image per class (and a zip renamed .png): nothing is left for the test split
    one = w / "one-per-class"
    _png_folder(one, n=1)
    shutil.copy(_zip(w / "renamed.zip", {"x.txt": b"x"}), one / "a" / "archive.png")
    p["one_per_class"] = str(one)
    # train/ and test/ where every test image is unreadable
    split = w / "bad-test-split"
    _png_folder(split / "train")
    _png_folder(split / "test", corrupt=True)
    p["bad_test_split"] = str(split)
    # CIFAR batches that lie
    zeros = np.zeros((2, 3072), np.uint8)
    p["cifar_huge_label"] = _cifar(w / "cifar-huge-label", zeros, [0, 2**40])
    p["cifar_negative_label"] = _cifar(w / "cifar-negative-label", zeros, [0, -3])
    p["cifar_text_labels"] = _cifar(w / "cifar-text-labels", zeros, ["cat", "dog"])
    p["cifar_float_data"] = _cifar(w / "cifar-float-data", zeros + 0.5, [0, 1])
    p["cifar_wide_data"] = _cifar(w / "cifar-wide-data", zeros.astype(np.int64) + 300, [0, 1])
    p["cifar_short_labels"] = _cifar(w / "cifar-short-labels", zeros, [0])
    p["cifar_empty_test"] = _cifar(
        w / "cifar-empty-test",
        zeros,
        [0, 1],
        test={b"data": np.zeros((0, 3072), np.uint8), b"labels": []},
    )
    fifo_batch = Path(_cifar(w / "cifar-fifo-batch", zeros, [0, 1]))
    os.mkfifo(fifo_batch / "data_batch_2")
    p["cifar_fifo_batch"] = str(fifo_batch)
    # IDX headers
    p["idx_bad_magic"] = _idx(w / "idx-bad-magic", b"\x12\x34\x08\x03" + b"\0" * 1580)
    p["idx_mixed_sizes"] = _idx(w / "idx-mixed-sizes", test=(2, 32))
    p["idx_empty_test"] = _idx(w / "idx-empty-test", test=(0, 28))
    # models: impossible schedules and sizes, special and truncated files
    p["beta_end_2"] = _model(tiny, w / "beta-end-2", scheduler={"beta_end": 2})
    p["beta_negative"] = _model(tiny, w / "beta-negative", scheduler={"beta_start": -0.1})
    p["beta_swapped"] = _model(
        tiny, w / "beta-swapped", scheduler={"beta_start": 0.02, "beta_end": 0.0001}
    )
    p["trained_betas_short"] = _model(
        tiny, w / "trained-betas-short", scheduler={"trained_betas": [0.1, 0.2]}
    )
    p["steps_huge"] = _model(tiny, w / "steps-huge", scheduler={"num_train_timesteps": 10**9})
    p["size_huge"] = _model(tiny, w / "size-huge", config={"sample_size": 100000})
    p["size_zero"] = _model(tiny, w / "size-zero", config={"sample_size": 0})
    p["size_odd"] = _model(tiny, w / "size-odd", config={"sample_size": 15})
    p["size_text"] = _model(tiny, w / "size-text", config={"sample_size": "16"})
    p["size_missing"] = _model(tiny, w / "size-missing", config={"sample_size": DROP})
    p["config_list"] = _model(tiny, w / "config-list")
    (w / "config-list" / "config.json").write_text("[1, 2]")
    p["cut_weights"] = _model(tiny, w / "cut-weights")
    weights = w / "cut-weights" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])  # an interrupted download
    p["fifo_config"] = _model(tiny, w / "fifo-config")
    (w / "fifo-config" / "config.json").unlink()
    os.mkfifo(w / "fifo-config" / "config.json")
    p["fifo_scheduler"] = _model(tiny, w / "fifo-scheduler")
    (w / "fifo-scheduler" / "scheduler_config.json").unlink()
    os.mkfifo(w / "fifo-scheduler" / "scheduler_config.json")
    p["class_cond"] = str(save_family("class-cond", w / "class-cond"))
    p["loop_weights"] = _model(tiny, w / "loop-weights")
    (w / "loop-weights" / "diffusion_pytorch_model.safetensors").unlink()
    os.symlink("x.safetensors", w / "loop-weights" / "diffusion_pytorch_model.safetensors")
    os.symlink("diffusion_pytorch_model.safetensors", w / "loop-weights" / "x.safetensors")
    p["fifo_weights"] = _model(tiny, w / "fifo-weights")
    (w / "fifo-weights" / "diffusion_pytorch_model.safetensors").unlink()
    os.mkfifo(w / "fifo-weights" / "diffusion_pytorch_model.safetensors")
    return p


@contextlib.contextmanager
def fifo_guard(root: Path):
    """Yields a list of the FIFOs under `root` that something opened for reading.

    Opening a FIFO for reading blocks until a writer comes: a scan that did so would hang the
    test forever. The guard plays the writer (a non-blocking open succeeds only while a
    reader waits), so the reader gets end-of-file, and records the FIFO: the test then fails
    instead of hanging.
    """
    fifos = [f for f in root.rglob("*") if f.is_fifo()]
    opened: list[str] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(0.05):
            for f in fifos:
                try:
                    fd = os.open(f, os.O_WRONLY | os.O_NONBLOCK)
                except OSError:  # ENXIO: nobody is reading it
                    continue
                opened.append(str(f))
                os.close(fd)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    try:
        yield opened
    finally:
        stop.set()
        t.join()


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
    # CLI: special files, lying headers and odd names in datasets
    "cli-fifo-images": Cli(
        [*EX, "--dataset", "{fifo_imgs}"],
        "no readable images in {fifo_imgs} (2 files skipped, e.g. a/x.png: not a regular file "
        "(a FIFO), never opened)",
    ),
    "cli-socket-images": Cli(
        [*EX, "--dataset", "{socket_imgs}"],
        "(2 files skipped, e.g. a/s.png: not a regular file (a socket), never opened)",
    ),
    "cli-device-symlink-images": Cli(
        [*EX, "--dataset", "{device_imgs}"],
        "(2 files skipped, e.g. a/z.png: not a regular file (a character device), never opened)",
    ),
    "cli-symlink-loop-images": Cli(
        [*EX, "--dataset", "{loop_imgs}"],
        "(4 files skipped, e.g. a/a.png: a symlink loop (too many levels of symbolic links))",
    ),
    "cli-fifo-dataset": Cli(
        [*EX, "--dataset", "{fifo_dataset}"],
        "{fifo_dataset} is a FIFO, not a dataset folder or a .zip; pass the folder of images",
    ),
    "cli-device-dataset": Cli(
        [*EX, "--dataset", "/dev/zero"],
        "/dev/zero is a character device, not a dataset folder or a .zip",
    ),
    "cli-decompression-bomb-header": Cli(
        [*EX, "--dataset", "{bomb_imgs}"],
        "a/big.png: too large, over PIL's decompression-bomb limit (Image size (400000000 "
        "pixels) exceeds limit of 178956970 pixels",
    ),
    "cli-decompression-bomb-warning": Cli(
        [*EX, "--dataset", "{warn_bomb_imgs}"],
        "a/big.png: too large, over PIL's decompression-bomb limit (Image size (100000000 "
        "pixels) exceeds limit of 89478485 pixels",
    ),
    "cli-truncated-png": Cli(
        [*EX, "--dataset", "{truncated_imgs}"], "a/t.png: OSError: Truncated File Read"
    ),
    "cli-one-image-per-class": Cli(
        ["sweep", "--model", "{tiny}", "--dataset", "{one_per_class}", "--timesteps", "10"],
        "the test split of one-per-class has no images: 1 image per class cannot be split "
        "80/20; add images or give train/ and test/ folders",
    ),
    "cli-test-folder-unreadable": Cli(
        [*EX, "--dataset", "{bad_test_split}"],
        "the test split of bad-test-split has no images: all 12 files in test/ are unreadable "
        "(e.g. test/a/0.png: UnidentifiedImageError",
    ),
    "cli-cifar-huge-label": Cli(
        [*EX, "--dataset", "{cifar_huge_label}"],
        "{cifar_huge_label}/data_batch_1: labels out of range (1099511627776); CIFAR-10 labels "
        "are 0 to 9",
    ),
    "cli-cifar-negative-label": Cli(
        [*EX, "--dataset", "{cifar_negative_label}"],
        "{cifar_negative_label}/data_batch_1: labels out of range (-3); CIFAR-10 labels are 0 to 9",
    ),
    "cli-cifar-text-labels": Cli(
        [*EX, "--dataset", "{cifar_text_labels}"],
        "{cifar_text_labels}/data_batch_1: labels must be integers (got <U3 values like 'cat')",
    ),
    "cli-cifar-float-data": Cli(
        [*EX, "--dataset", "{cifar_float_data}"],
        "{cifar_float_data}/data_batch_1: data is float64, expected uint8 pixels (0 to 255)",
    ),
    "cli-cifar-wide-data": Cli(
        [*EX, "--dataset", "{cifar_wide_data}"],
        "{cifar_wide_data}/data_batch_1: data holds values from 300 to 300, outside 0 to 255",
    ),
    "cli-cifar-short-labels": Cli(
        [*EX, "--dataset", "{cifar_short_labels}"],
        "{cifar_short_labels}/data_batch_1: 2 images but 1 labels; the batch is damaged",
    ),
    "cli-cifar-empty-test": Cli(
        [*EX, "--dataset", "{cifar_empty_test}"],
        "the test split of cifar-empty-test has no images: test_batch is empty",
    ),
    "cli-cifar-fifo-batch": Cli(
        [*EX, "--dataset", "{cifar_fifo_batch}"],
        "{cifar_fifo_batch}/data_batch_2 is a FIFO, not a regular file",
    ),
    "cli-idx-bad-magic": Cli(
        [*EX, "--dataset", "{idx_bad_magic}"],
        "{idx_bad_magic}/train-images-idx3-ubyte is not an unsigned-byte IDX file",
    ),
    "cli-idx-mixed-sizes": Cli(
        [*EX, "--dataset", "{idx_mixed_sizes}"],
        "{idx_mixed_sizes}: train images are (28, 28) but t10k images (32, 32); the IDX files "
        "come from different datasets",
    ),
    "cli-idx-empty-test": Cli(
        [*EX, "--dataset", "{idx_empty_test}"],
        "the test split of idx-empty-test has no images: its t10k-*-ubyte IDX files hold no images",
    ),
    # CLI: impossible noise schedules
    "cli-beta-end-2": Cli(
        ["layers", "--model", "{beta_end_2}"],
        "{beta_end_2}/scheduler_config.json is not a valid noise schedule: betas must lie in "
        "(0, 1), but these run from 0.0001 to 2 (beta_start=0.0001, beta_end=2, linear)",
    ),
    "cli-beta-start-negative": Cli(
        ["layers", "--model", "{beta_negative}"],
        "is not a valid noise schedule: betas must lie in (0, 1), but these run from -0.1 to 0.02",
    ),
    "cli-beta-start-above-end": Cli(
        ["layers", "--model", "{beta_swapped}"],
        "is not a valid noise schedule: beta_start (0.02) is above beta_end (0.0001)",
    ),
    "cli-trained-betas-short": Cli(
        ["layers", "--model", "{trained_betas_short}"],
        "is not a valid noise schedule: trained_betas has 2 values for num_train_timesteps=1000",
    ),
    "cli-scheduler-steps-huge": Cli(
        ["layers", "--model", "{steps_huge}"],
        "num_train_timesteps must be at most 100000, got 1000000000",
    ),
    # CLI: impossible sizes and broken files in model folders
    "cli-sample-size-huge": Cli(
        ["layers", "--model", "{size_huge}"],
        "{size_huge}/config.json: sample_size 100000 is out of range; it must be between 1 and 4096",
    ),
    "cli-sample-size-zero": Cli(
        ["layers", "--model", "{size_zero}"],
        "{size_zero}/config.json: sample_size 0 is out of range; it must be between 1 and 4096",
    ),
    "cli-sample-size-odd": Cli(
        ["layers", "--model", "{size_odd}"],
        "{size_odd}/config.json: sample_size 15 is not divisible by 2: the U-Net halves its "
        "input 1 time (2 down blocks)",
    ),
    "cli-sample-size-text": Cli(
        ["layers", "--model", "{size_text}"],
        "{size_text}/config.json: sample_size must be a whole number (or two), not '16'",
    ),
    "cli-sample-size-missing": Cli(
        ["layers", "--model", "{size_missing}"],
        "{size_missing}/config.json has no sample_size (the side of the model's input)",
    ),
    "cli-config-is-a-list": Cli(
        ["layers", "--model", "{config_list}"],
        "{config_list}/config.json is not a model config (not a JSON object)",
    ),
    "cli-truncated-safetensors": Cli(
        ["layers", "--model", "{cut_weights}"],
        "{cut_weights}/diffusion_pytorch_model.safetensors is cut short",
    ),
    "cli-fifo-config": Cli(
        ["layers", "--model", "{fifo_config}"],
        "{fifo_config}/config.json is a FIFO, not a regular file",
    ),
    "cli-fifo-scheduler": Cli(
        ["layers", "--model", "{fifo_scheduler}"],
        "{fifo_scheduler}/scheduler_config.json is a FIFO, not a regular file",
    ),
    "cli-fifo-weights": Cli(
        ["layers", "--model", "{fifo_weights}"],
        "{fifo_weights}/diffusion_pytorch_model.safetensors is a FIFO, not a regular file",
    ),
    "cli-weights-symlink-loop": Cli(
        ["layers", "--model", "{loop_weights}"],
        "cannot read {loop_weights}/diffusion_pytorch_model.safetensors: Too many levels of "
        "symbolic links",
    ),
    "cli-class-label-huge": Cli(
        [*EX, "--model", "{class_cond}", "--class-label", str(10**12)],
        "--class-label 1000000000000 is outside this U-Net's classes 0 to 4",
    ),
    "cli-class-label-unconditional": Cli(
        [*EX, "--class-label", "3"],
        "--class-label was given but this U-Net is not class-conditional",
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
        "data", {"model": "random:{tiny}"}, f"model 'random:{{tiny}}' {OUTSIDE}", env=EXPOSED
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
        with fifo_guard(Path(inputs["w"])) as opened:
            code, err = run_cli(fill(case.args, inputs))
        assert not opened, f"a FIFO was opened for reading (a scan would hang): {opened}"
        assert code == 2, f"exit status 2 for bad input, got {code}: {err}"
        assert "Traceback" not in err and "Warning" not in err, err
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


# --- hostile files among good ones: skipped, logged, the rest used ------------------------------

ROOT = Path(__file__).resolve().parents[1]


def run_cli_out(args: list[str]) -> tuple[int, str, str]:
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        code = cli.main(args)
    return code, out.getvalue(), err.getvalue()


def _extract(model: Path, data: Path | bytes, cache: Path) -> list[str]:
    args = ["extract", "--model", str(model), "--dataset", os.fsdecode(data)]
    return [
        *args,
        "--timesteps",
        "10",
        "--layers",
        "1",
        "--cache-dir",
        str(cache),
        "--workers",
        "0",
    ]


def _skip_log(out: str) -> str:
    line = next(ln for ln in out.splitlines() if "unreadable images were skipped" in ln)
    return Path(line.rsplit(" in ", 1)[1]).read_text(encoding="utf-8")  # the log is UTF-8


def test_special_files_among_images_are_skipped_never_opened(tmp_path, model_factory):
    root = Path(_png_folder(tmp_path / "data"))  # 2 classes x 6 good images
    os.mkfifo(root / "a" / "pipe.png")
    _socket(root / "a" / "sock.png")
    os.symlink("/dev/zero", root / "b" / "zero.png")
    os.symlink(root / "b" / "loop2.png", root / "b" / "loop1.png")
    os.symlink(root / "b" / "loop1.png", root / "b" / "loop2.png")
    (root / "b" / "big.png").write_bytes(_png_header(20000))
    model = model_factory(tmp_path / "tiny")
    with fifo_guard(root) as opened:
        code, out, err = run_cli_out(_extract(model, root, tmp_path / "cache"))
    assert not opened, f"a FIFO was opened for reading: {opened}"
    assert code == 0 and "Traceback" not in err and "Warning" not in err, err
    assert (
        "train: 1 feature sets for 10 images" in out and "test: 1 feature sets for 2 images" in out
    ), out
    assert "6 unreadable images were skipped" in out, out
    log = _skip_log(out).splitlines()
    assert "a/pipe.png: not a regular file (a FIFO), never opened" in log, log
    assert "a/sock.png: not a regular file (a socket), never opened" in log, log
    assert "b/zero.png: not a regular file (a character device), never opened" in log, log
    assert "b/loop1.png: a symlink loop (too many levels of symbolic links)" in log, log
    assert any(ln.startswith("b/big.png: too large, over PIL's decompression-bomb") for ln in log)


def test_file_names_that_are_not_utf8_are_read(tmp_path, model_factory):
    root = tmp_path / "data"
    _png_folder(root)
    raw = os.fsencode(root)
    Path(os.fsdecode(raw + b"/a/\xff\xfe.png")).write_bytes(_png_bytes())  # readable
    Path(os.fsdecode(raw + b"/b/\xfe\xff.png")).write_bytes(b"not an image")  # unreadable
    cafe = Path(os.fsdecode(raw + b"/caf\xe9"))  # a Latin-1 class name
    cafe.mkdir()
    for i in range(3):
        (cafe / f"{i}.png").write_bytes(_png_bytes())
    model = model_factory(tmp_path / "tiny")
    code, out, err = run_cli_out(_extract(model, root, tmp_path / "cache"))
    assert code == 0 and "Traceback" not in err, err
    used = [ln.split(" for ")[1].split()[0] for ln in out.splitlines() if " sets for " in ln]
    assert sum(map(int, used)) == 7 + 6 + 3, f"every readable image is used, odd names too: {out}"
    log = _skip_log(out).splitlines()
    assert len(log) == 1 and log[0].startswith(r"b/\xfe\xff.png: UnidentifiedImageError"), log

    from explorer.data import load_dataset

    first, again = load_dataset(str(root)), load_dataset(str(root))
    assert first.fingerprint == again.fingerprint, "the fingerprint is stable"
    assert first.class_names == ["a", "b", r"caf\xe9"], first.class_names
    odd = Path(os.fsdecode(os.fsencode(tmp_path) + b"/data\xff"))
    named = load_dataset(_png_folder(odd))
    assert named.name == r"data\xff" and len(named) == 12, "a folder's odd name is shown escaped"


@pytest.mark.parametrize("workers", ["0", "default"])
def test_cli_output_on_an_image_folder_has_no_warning(tmp_path, model_factory, workers):
    """A plain run on a folder of images prints no warning (torch's non-writable array one was)."""
    folder = _png_folder(tmp_path / "data")
    model = model_factory(tmp_path / "tiny")
    args = [sys.executable, "-m", "explorer", "extract", "--model", str(model), "--dataset", folder]
    args += ["--timesteps", "10", "--layers", "1", "--device", "cpu"]
    args += ["--workers", workers] if workers != "default" else []
    env = os.environ | {"EXPLORER_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT)}
    env.pop("PYTHONWARNINGS", None)
    r = subprocess.run(args, capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert "train: 1 feature sets for 10 images" in r.stdout, r.stdout
    assert "Warning" not in r.stderr, r.stderr


@pytest.mark.parametrize(
    "cls_name",
    [
        "DDPMScheduler",
        "DDIMScheduler",
        "PNDMScheduler",
        "DPMSolverMultistepScheduler",
        "EulerDiscreteScheduler",
        "EulerAncestralDiscreteScheduler",
        "UniPCMultistepScheduler",
    ],
)
def test_every_real_schedule_passes_the_checks(cls_name):
    """The checks that refuse impossible schedules accept every real one: each class with
    each beta schedule, with and without zero terminal SNR, and 4000 steps (improved DDPM)."""
    from explorer.models.families.schedulers import vp_scheduler

    sd = {"beta_start": 0.00085, "beta_end": 0.012}
    for cfg in (
        {},
        {"beta_schedule": "scaled_linear", **sd},
        {"beta_schedule": "squaredcos_cap_v2"},
    ):
        for zero_snr in (False, True):
            config = {"_class_name": cls_name, **cfg, "rescale_betas_zero_snr": zero_snr}
            vp_scheduler(config, "test")
    vp_scheduler({"_class_name": cls_name, "num_train_timesteps": 4000}, "test")


def test_every_real_sample_size_passes_the_checks():
    """The input-size checks accept every real model: the built-ins, ADM-64/128/256/512 (as
    `explorer convert adm` writes them), SD latents 64/96/128, DiT 32 and 64."""
    from explorer.models.families import check_sample_size
    from explorer.paths import BUILTIN_MODEL_DIRS

    for folder in BUILTIN_MODEL_DIRS.values():
        check_sample_size(json.loads((folder / "config.json").read_text()), "UNet2DModel", "x")
    for size, levels in ((64, 4), (128, 5), (256, 6), (512, 7), (32, 4)):  # ADM, DDPM-CIFAR
        cfg = {"sample_size": size, "down_block_types": ["DownBlock2D"] * levels}
        check_sample_size(cfg, "UNet2DModel", "x")
    for size in (64, 96, 128):  # SD 1.x, 2.x (768), SDXL latents: 4 down blocks by default
        check_sample_size({"sample_size": size}, "UNet2DConditionModel", "x")
    for size in (32, 64):  # DiT-XL/2 256 and 512
        check_sample_size({"sample_size": size, "patch_size": 2}, "DiTTransformer2DModel", "x")
