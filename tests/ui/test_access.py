"""The access policy of a shared app: path roots, symlinks and `..`, uploads, admin, the CLI flags."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from explorer import cli, exposure
from explorer.errors import ExplorerError
from explorer.exposure import Policy, check_dataset, check_model
from explorer.paths import cache_dir


@pytest.fixture
def roots(tmp_path):
    inside = tmp_path / "data"
    outside = tmp_path / "private"
    (inside / "cifar").mkdir(parents=True)
    (outside / "secrets").mkdir(parents=True)
    return inside, outside


def shared(inside, **kw) -> Policy:
    return Policy(exposed=True, roots=(inside.resolve(),), uploads=cache_dir() / "uploads", **kw)


def test_local_mode_accepts_any_path(roots):
    _, outside = roots
    p = Policy(exposed=False)
    check_model(str(outside / "secrets"), p)
    check_dataset(str(outside / "secrets"), p)
    check_dataset("/etc", p)


def test_exposed_accepts_builtins_random_and_paths_under_a_root(roots):
    inside, _ = roots
    p = shared(inside)
    check_model("ddpm-digits", p)
    check_model("random:ddpm-fashion-mnist", p)
    check_model(str(inside / "cifar"), p)
    check_model("random:" + str(inside / "cifar"), p)
    check_model("encoder:" + str(inside / "cifar"), p)  # a reference encoder under a root
    check_model("random:encoder:" + str(inside / "cifar"), p)
    check_dataset("digits", p, builtins=("digits",))
    check_dataset(str(inside / "cifar"), p)
    check_dataset(str(inside / "not-yet-there"), p)  # inside a root: the loader says it is missing


@pytest.mark.parametrize(
    "spec",
    [
        "{outside}/secrets",
        "{inside}/../private/secrets",  # `..` climbs out of the root
        "{inside}/link-out",  # a symlink inside the root that points outside
        "/etc",
        "~",
        "org/name",  # hub ids would download onto the server
        "random:/etc",
        "encoder:/etc",
        "encoder:{outside}/secrets",
    ],
)
def test_exposed_refuses_paths_outside_the_roots(roots, spec):
    inside, outside = roots
    (inside / "link-out").symlink_to(outside / "secrets")
    p = shared(inside)
    spec = spec.format(inside=inside, outside=outside)
    with pytest.raises(ExplorerError, match="outside the folders this shared app may read"):
        check_dataset(spec, p, builtins=("digits",))
    with pytest.raises(ExplorerError, match="outside the folders"):
        check_model(spec, p)


def test_a_root_that_is_a_symlink_still_matches(tmp_path):
    real = tmp_path / "real"
    (real / "ds").mkdir(parents=True)
    (tmp_path / "alias").symlink_to(real)
    p = Policy(exposed=True, roots=exposure.parse_roots(str(tmp_path / "alias")))
    check_dataset(str(tmp_path / "alias" / "ds"), p)
    check_dataset(str(real / "ds"), p)


def test_uploads_are_always_allowed(roots):
    inside, _ = roots
    p = shared(inside)
    check_dataset(str(cache_dir() / "uploads" / "0123abcd"), p)
    with pytest.raises(ExplorerError):
        check_dataset(str(cache_dir() / "features"), p)  # the rest of the cache is not


@pytest.mark.parametrize("spec", ["a\x00b", "x\ny", "a" * 5000])
def test_crafted_text_is_refused_in_any_mode(spec):
    for p in (Policy(exposed=False), Policy(exposed=True)):
        with pytest.raises(ExplorerError, match="control characters|characters long"):
            check_dataset(spec, p)


def test_policy_from_env(monkeypatch, tmp_path):
    monkeypatch.delenv(exposure.EXPOSED_ENV, raising=False)
    monkeypatch.delenv(exposure.ADMIN_ENV, raising=False)
    assert not Policy.from_env().exposed, "unknown address, no flag: local"
    assert not Policy.from_env("127.0.0.1").exposed and not Policy.from_env("localhost").exposed
    assert Policy.from_env("0.0.0.0").exposed, "all interfaces is exposed"
    assert Policy.from_env("").exposed, "Streamlit's empty address listens everywhere"
    assert Policy.from_env("192.168.1.5").exposed
    monkeypatch.setenv(exposure.EXPOSED_ENV, "1")
    monkeypatch.setenv(exposure.ADMIN_ENV, "1")
    monkeypatch.setenv(exposure.ROOTS_ENV, f"{tmp_path}{os.pathsep}{os.pathsep}~")
    p = Policy.from_env("127.0.0.1")
    assert p.exposed and p.admin and exposure.can_clear(p)
    home = Path(os.path.realpath(os.path.expanduser("~")))
    assert p.roots == (tmp_path.resolve(), home), "empty parts skipped, `~` expanded"
    assert not exposure.can_clear(Policy(exposed=False)), (
        "clearing needs --allow-admin, even locally"
    )


def _run_app(monkeypatch, capsys, *args) -> tuple[list[str], dict, str]:
    """`explorer app ARGS` with the server process replaced: (command, env, stderr)."""
    import subprocess

    seen = {}

    class FakeServer:
        def __init__(self, cmd, cwd=None, env=None):
            seen.update(cmd=cmd, env=env)

        def wait(self):
            return 0

        def poll(self):
            return 0

    monkeypatch.setattr(subprocess, "Popen", FakeServer)
    code = cli.main(["app", *args])
    assert code == 0
    return seen["cmd"], seen["env"], capsys.readouterr().err


def test_explorer_app_binds_to_localhost_by_default(monkeypatch, capsys):
    monkeypatch.setenv(exposure.ADMIN_ENV, "1")  # a stale shell variable does not grant admin
    cmd, env, err = _run_app(monkeypatch, capsys, "--headless")
    assert cmd[cmd.index("--server.address") + 1] == "127.0.0.1"
    assert env[exposure.EXPOSED_ENV] == "0" and env[exposure.ADMIN_ENV] == "0"
    assert "anyone who can reach" not in err, "nothing to warn about locally"


def test_explorer_app_share_exposes_and_says_what_that_allows(monkeypatch, capsys, tmp_path):
    cmd, env, err = _run_app(
        monkeypatch, capsys, "--share", "--data-root", str(tmp_path), "--allow-admin"
    )
    assert cmd[cmd.index("--server.address") + 1] == "0.0.0.0"
    assert env[exposure.EXPOSED_ENV] == "1" and env[exposure.ADMIN_ENV] == "1"
    assert str(tmp_path.resolve()) in env[exposure.ROOTS_ENV].split(os.pathsep)
    assert "anyone who can reach this machine on port 8501" in err
    assert str(tmp_path.resolve()) in err and "can clear the feature cache" in err

    cmd, env, err = _run_app(monkeypatch, capsys, "--host", "192.168.0.7", "--port", "9000")
    assert env[exposure.EXPOSED_ENV] == "1" and "cannot clear the cache" in err
    assert "192.168.0.7:9000" in err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--port", "70000"], "--port must be between 1 and 65535"),
        (["--host", "0.0.0.0", "--share"], "give --host or --share, not both"),
        (["--host", "my host"], "--host 'my host' is not an IP address or host name"),
    ],
)
def test_explorer_app_bad_flags(monkeypatch, capsys, args, message):
    import subprocess

    monkeypatch.setattr(subprocess, "Popen", lambda *a, **k: pytest.fail("must not start"))
    assert cli.main(["app", *args]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"error: {message}"


# --- the app, through AppTest ----------------------------------------------------------------

APP = str(Path(__file__).resolve().parents[2] / "app.py")
LINK = {"model": "ddpm-digits", "dataset": "digits", "train": "300", "test": "100"}


def image_folder(root: Path, classes=("a", "b"), n: int = 4) -> Path:
    """A tiny ImageFolder tree of 16x16 gray PNGs under `root`."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8)).save(
                root / c / f"{i}.png"
            )
    return root


def data_page(**params):
    from streamlit.testing.v1 import AppTest

    from explorer.ui.common import PAGES

    at = AppTest.from_file(APP, default_timeout=300)
    at.query_params.update({**LINK, **params})
    at.switch_page(PAGES["data"])
    return at.run()


def errors(at) -> list[str]:
    return [e.value for e in at.error]


def metric(at, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


@pytest.fixture
def exposed(monkeypatch, roots):
    inside, _ = roots
    monkeypatch.setenv(exposure.EXPOSED_ENV, "1")
    monkeypatch.setenv(exposure.ROOTS_ENV, str(inside))
    monkeypatch.delenv(exposure.ADMIN_ENV, raising=False)
    return roots


@pytest.mark.slow
def test_app_exposed_refuses_a_path_outside_the_roots_in_a_link(exposed):
    _, outside = exposed
    folder = image_folder(outside / "photos")
    at = data_page(dataset=str(folder))
    assert not at.exception
    assert errors(at) == [
        f"dataset '{folder}' is outside the folders this shared app may read; allowed roots: "
        f"{exposed[0].resolve()}. Put it under one of them, or upload a zip"
    ]
    assert not at.metric, "nothing was loaded or shown"
    at = data_page(model=str(outside / "unet"))
    assert (
        not at.exception and "model '" in errors(at)[0] and "outside the folders" in errors(at)[0]
    )
    at = data_page(dataset=f"{exposed[0]}/../private/photos")
    assert not at.exception and "outside the folders" in errors(at)[0], "`..` cannot climb out"


@pytest.mark.slow
def test_app_exposed_refuses_a_typed_path_and_accepts_one_under_a_root(exposed):
    from explorer.ui.sidebar import PATH_DATASET

    inside, outside = exposed
    image_folder(outside / "photos")
    image_folder(inside / "photos", classes=("cat", "dog", "fox"))
    at = data_page()
    assert not at.exception and not errors(at) and metric(at, "Classes") == "10"
    at.sidebar.selectbox(key="side_dataset").set_value(PATH_DATASET).run()
    at.sidebar.text_input(key="side_dataset_path").input(str(outside / "photos")).run()
    assert not at.exception
    assert len(errors(at)) == 1 and "outside the folders this shared app may read" in errors(at)[0]
    assert not at.metric, "nothing was loaded"
    at.sidebar.text_input(key="side_dataset_path").input(str(inside / "photos")).run()
    assert not at.exception and not errors(at), errors(at)
    assert metric(at, "Classes") == "3", "a folder under a data root loads"


@pytest.mark.slow
def test_app_local_mode_accepts_any_path(monkeypatch, roots):
    monkeypatch.delenv(exposure.EXPOSED_ENV, raising=False)
    monkeypatch.delenv(exposure.ROOTS_ENV, raising=False)
    _, outside = roots
    folder = image_folder(outside / "photos")
    at = data_page(dataset=str(folder))
    assert not at.exception and not errors(at), errors(at)
    assert metric(at, "Classes") == "2"


@pytest.mark.slow
def test_app_clearing_the_cache_needs_admin(monkeypatch):
    monkeypatch.delenv(exposure.ADMIN_ENV, raising=False)
    at = data_page()
    assert not at.exception and not errors(at)
    assert not [b for b in at.button if b.key == "data_clear"], "no Clear button without admin"
    assert exposure.CLEAR_NOTE in [c.value for c in at.caption], "the page says how to enable it"
    monkeypatch.setenv(exposure.ADMIN_ENV, "1")
    at = data_page()
    assert at.button(key="data_clear").disabled, "with admin: present, behind the confirmation"
