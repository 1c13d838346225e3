"""Uploaded zips: safe extraction into the cache, limits, and loading as an ImageFolder."""

from __future__ import annotations

import io
import stat
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from explorer.data import load_dataset
from explorer.data.folders import load_image_folder
from explorer.data.upload import MANIFEST, extract_zip, upload_limits
from explorer.errors import ExplorerError


@pytest.fixture(autouse=True)
def _hermetic(tmp_path, monkeypatch):
    monkeypatch.setenv("EXPLORER_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("EXPLORER_UPLOAD_MAX_MB", raising=False)
    monkeypatch.delenv("EXPLORER_UPLOAD_MAX_FILES", raising=False)


def png(value: int = 0) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (6, 6), (value, value, value)).save(buf, format="PNG")
    return buf.getvalue()


def make_zip(entries: dict[str, bytes], symlinks: tuple[str, ...] = ()) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
        for name in symlinks:
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, "/etc/passwd")
    return buf.getvalue()


def class_entries(prefix: str = "", per_class: int = 3) -> dict[str, bytes]:
    return {
        f"{prefix}{cls}/{i}.png": png(40 * i) for cls in ("cats", "dogs") for i in range(per_class)
    }


def test_good_zip_extracts_and_loads(tmp_path):
    data = make_zip(
        {**class_entries("animals/"), "animals/README.txt": b"hi", "animals/cats/x.csv": b"1"}
    )
    zpath = tmp_path / "animals.zip"
    zpath.write_bytes(data)
    ds = load_dataset(str(zpath))
    assert ds.name == "animals", f"a zip dataset is named after the zip, got {ds.name}"
    assert ds.class_names == ["cats", "dogs"], (
        f"the single top folder is the root: {ds.class_names}"
    )
    assert len(ds) == 6, f"6 images expected, got {len(ds)}"
    assert ds.images([0])[0].shape == (6, 6, 3), "images read from the extracted copy"
    uploads = tmp_path / "cache" / "uploads"
    assert [p.name for p in uploads.iterdir() if not p.name.startswith(".")], (
        "extracted into cache/uploads"
    )
    assert load_dataset(str(zpath)).fingerprint == ds.fingerprint, (
        "reloading gives the same fingerprint"
    )


def test_extract_counts_and_skips(tmp_path):
    entries = {
        **class_entries(),
        "notes.txt": b"x",
        "cats/meta.json": b"{}",
        "__MACOSX/cats/._0.png": b"junk",
        ".DS_Store": b"junk",
        "dogs/.hidden.png": b"junk",
    }
    root, stats = extract_zip(make_zip(entries), tmp_path / "up")
    assert stats["images"] == 6, f"6 images expected: {stats}"
    assert stats["skipped_non_image"] == 2, (
        f"notes.txt and meta.json are skipped non-images: {stats}"
    )
    assert stats["skipped_hidden"] == 3, f"__MACOSX and dotfiles are skipped: {stats}"
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert files == [MANIFEST] + sorted(class_entries()), (
        f"only images (and the manifest) land: {files}"
    )
    assert len(load_image_folder(root)) == 6, "the extraction loads as an ImageFolder"


def test_same_bytes_reuse_the_extraction(tmp_path, monkeypatch):
    data = make_zip(class_entries("top/"))
    root1, stats1 = extract_zip(data, tmp_path / "up")
    assert root1.name == "top" and root1.parent.parent == tmp_path / "up", (
        f"root is <hash>/top, got {root1}"
    )
    assert len(root1.parent.name) == 16, (
        f"the folder is named by 16 hex of the sha256: {root1.parent.name}"
    )

    def boom(*args, **kwargs):
        raise AssertionError("extraction must not run again")

    monkeypatch.setattr("explorer.data.upload._extract", boom)
    root2, stats2 = extract_zip(io.BytesIO(data), tmp_path / "up")
    assert (root1, stats1) == (root2, stats2), "the same bytes give the same folder and stats"
    leftovers = [p.name for p in (tmp_path / "up").iterdir() if p.name.startswith(".tmp")]
    assert leftovers == [], f"no temporary folders are left behind: {leftovers}"


@pytest.mark.parametrize(
    "bad_name",
    [
        "../evil.png",
        "cats/../../evil.png",
        "/abs/evil.png",
        "C:/evil.png",
        "cats\\..\\..\\evil.png",
    ],
)
def test_unsafe_names_reject_the_whole_zip(tmp_path, bad_name):
    data = make_zip({**class_entries(), bad_name: png()})
    with pytest.raises(ExplorerError, match="refusing|absolute") as e:
        extract_zip(data, tmp_path / "up")
    assert "\n" not in str(e.value), "errors are one line"
    assert not (tmp_path / "evil.png").exists() and not (tmp_path / "up").exists(), (
        "nothing was written"
    )


def test_symlink_entry_rejects_the_whole_zip(tmp_path):
    data = make_zip(class_entries(), symlinks=("cats/link.png",))
    with pytest.raises(ExplorerError, match="symbolic link"):
        extract_zip(data, tmp_path / "up")
    assert not (tmp_path / "up").exists(), "nothing was written"


def test_size_limit(tmp_path):
    data = make_zip({**class_entries(), "cats/big.png": b"\0" * 50_000})
    with pytest.raises(ExplorerError, match="EXPLORER_UPLOAD_MAX_MB") as e:
        extract_zip(data, tmp_path / "up", max_bytes=10_000)
    assert "limit" in str(e.value) and "\n" not in str(e.value), (
        f"names the limit, one line: {e.value}"
    )
    root, _ = extract_zip(data, tmp_path / "up", max_bytes=10**6)
    assert (root / "cats" / "big.png").is_file(), "under a larger limit the same zip extracts"


def test_file_count_limit_and_env(tmp_path, monkeypatch):
    data = make_zip(class_entries(per_class=3))
    with pytest.raises(ExplorerError, match="EXPLORER_UPLOAD_MAX_FILES") as e:
        extract_zip(data, tmp_path / "up", max_files=5)
    assert "5 files" in str(e.value), f"the message names the limit: {e.value}"
    monkeypatch.setenv("EXPLORER_UPLOAD_MAX_FILES", "4")
    monkeypatch.setenv("EXPLORER_UPLOAD_MAX_MB", "0.5")
    assert upload_limits() == (2**19, 4), f"env vars set the limits, got {upload_limits()}"
    with pytest.raises(ExplorerError, match="4 files"):
        extract_zip(data, tmp_path / "up")
    monkeypatch.setenv("EXPLORER_UPLOAD_MAX_FILES", "many")
    with pytest.raises(ExplorerError, match="EXPLORER_UPLOAD_MAX_FILES"):
        upload_limits()


def test_default_limits():
    assert upload_limits() == (200 * 2**20, 20000), (
        f"defaults are 200 MB / 20000 files: {upload_limits()}"
    )


def test_corrupt_zip(tmp_path):
    with pytest.raises(ExplorerError, match="not a valid zip") as e:
        extract_zip(np.random.default_rng(0).bytes(500), tmp_path / "up")
    assert "\n" not in str(e.value), "errors are one line"
    p = tmp_path / "fake.zip"
    p.write_bytes(b"PK\x03\x04 this is not really a zip")
    with pytest.raises(ExplorerError, match="not a valid zip"):
        load_dataset(str(p))


def test_zip_without_images(tmp_path):
    with pytest.raises(ExplorerError, match="no images"):
        extract_zip(make_zip({"a.txt": b"x", "b/c.md": b"y"}), tmp_path / "up")


def test_zip_path_input(tmp_path):
    zpath = tmp_path / "in.zip"
    zpath.write_bytes(make_zip(class_entries()))
    root, stats = extract_zip(Path(zpath), tmp_path / "up")
    assert stats["images"] == 6 and (root / "dogs" / "2.png").is_file(), (
        f"a path works too: {stats}"
    )


def test_corrupt_entry_is_an_error_and_cleans_up(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name, data in class_entries().items():
            zf.writestr(name, data)
    raw = bytearray(buf.getvalue())
    at = raw.index(b"IDAT")  # inside the first stored png
    raw[at + 8] ^= 0xFF
    with pytest.raises(ExplorerError, match="corrupt") as e:
        extract_zip(bytes(raw), tmp_path / "up")
    assert "\n" not in str(e.value), "errors are one line"
    assert list((tmp_path / "up").iterdir()) == [], "the temporary folder is removed"
