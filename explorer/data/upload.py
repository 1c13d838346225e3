"""Safe extraction of an uploaded zip of class folders into a content-addressed cache folder."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import stat
import tempfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from explorer.errors import ExplorerError

DEFAULT_MAX_MB = 200
DEFAULT_MAX_FILES = 20000
MAX_MB_ENV = "EXPLORER_UPLOAD_MAX_MB"
MAX_FILES_ENV = "EXPLORER_UPLOAD_MAX_FILES"
IMAGE_EXTS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
MANIFEST = ".explorer-upload.json"  # a dotfile, so dataset scans ignore it

ZipInput = str | os.PathLike | bytes | bytearray | memoryview | BinaryIO


def upload_limits() -> tuple[int, int]:
    """`(max_bytes, max_files)` for uploads: $EXPLORER_UPLOAD_MAX_MB / $EXPLORER_UPLOAD_MAX_FILES or 200 MB / 20000."""
    try:
        max_mb = float(os.environ.get(MAX_MB_ENV) or DEFAULT_MAX_MB)
        max_files = int(os.environ.get(MAX_FILES_ENV) or DEFAULT_MAX_FILES)
    except ValueError as e:
        raise ExplorerError(
            f"bad upload limit ({e}); set {MAX_MB_ENV} to a number of MB and {MAX_FILES_ENV} to an integer"
        ) from e
    return int(max_mb * 2**20), max_files


def is_image_name(name: str) -> bool:
    return PurePosixPath(name).suffix.lower() in IMAGE_EXTS


def extract_zip(
    zip_path_or_bytes: ZipInput,
    dest_root: Path,
    *,
    max_bytes: int | None = None,
    max_files: int | None = None,
    name: str | None = None,
) -> tuple[Path, dict]:
    """Extract a zip of class folders (`cls/img.png`) into `dest_root/<sha256[:16] of the zip>/`.

    Unsafe zips (`..`, absolute names, symlinks), zips over the limits (default:
    `upload_limits()`) and corrupt files raise a one-line ExplorerError. Non-images,
    `__MACOSX/` and dotfiles are skipped. A single top-level folder becomes the root; without
    one and given the upload's file `name`, the class folders go under a folder named after it
    ("shapes.zip" -> "shapes"), so the dataset is called by its file name, not by the hash.
    Extraction goes to a temporary folder renamed into place, and an existing extraction
    of the same bytes (and name) is reused. Returns `(root, {"images", "skipped_non_image",
    "skipped_hidden"})`.
    """
    env_bytes, env_files = upload_limits()
    max_bytes = env_bytes if max_bytes is None else max_bytes
    max_files = env_files if max_files is None else max_files
    data = _read_input(zip_path_or_bytes)
    folder = dataset_folder_name(name) if name else ""
    digest = hashlib.sha256(data + folder.encode()).hexdigest()[:16]
    dest_root = Path(dest_root)
    final = dest_root / digest
    if (final / MANIFEST).is_file():
        return _from_manifest(final)

    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError) as e:
        raise ExplorerError(
            f"the upload is not a valid zip file ({e}); re-create it as a .zip of class folders"
        ) from e
    with zf:
        plan, stats = _plan(zf, max_bytes, max_files)
        dest_root.mkdir(parents=True, exist_ok=True)
        if final.exists():  # a leftover without a manifest is never a finished extraction
            shutil.rmtree(final, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-upload-", dir=dest_root))
        try:
            parts = [PurePosixPath(info.filename.replace("\\", "/")).parts for info in plan]
            root_rel = _common_top(parts) or folder  # class folders at the top: under the name
            _extract(zf, plan, tmp if _common_top(parts) else tmp / folder, max_bytes)
            (tmp / MANIFEST).write_text(json.dumps({"root": root_rel, **stats}))
            try:
                os.replace(tmp, final)
            except OSError:
                if not (final / MANIFEST).is_file():  # not a concurrent twin: a real failure
                    raise
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        shutil.rmtree(tmp, ignore_errors=True)  # only left when a twin won the rename
    return _from_manifest(final)


def dataset_folder_name(file_name: str | None) -> str:
    """The folder (and so the dataset) name of an upload: its file name without `.zip`, kept
    to letters, digits, `.`, `_` and `-` ("my shapes.zip" -> "my_shapes"), else "upload"."""
    stem = PurePosixPath(str(file_name or "").replace("\\", "/")).name
    stem = stem[:-4] if stem.lower().endswith(".zip") else stem
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in stem).strip("._")
    return safe[:64] or "upload"


def _read_input(src: ZipInput) -> bytes:
    if isinstance(src, bytes | bytearray | memoryview):
        return bytes(src)
    if hasattr(src, "read"):
        if hasattr(src, "seek"):
            src.seek(0)
        return src.read()
    path = Path(src)
    try:
        return path.read_bytes()
    except OSError as e:
        raise ExplorerError(f"cannot read {path}: {e.strerror or e}; check the path") from e


def _plan(
    zf: zipfile.ZipFile, max_bytes: int, max_files: int
) -> tuple[list[zipfile.ZipInfo], dict]:
    """Check every entry; the image entries to extract and the skip counts."""
    plan: list[zipfile.ZipInfo] = []
    skipped_non_image = skipped_hidden = 0
    total = 0
    for info in zf.infolist():
        name = info.filename
        _check_name(name)
        if stat.S_ISLNK(info.external_attr >> 16):
            raise ExplorerError(
                f"zip entry '{name}' is a symbolic link; links are refused, zip the files themselves"
            )
        if info.is_dir():
            continue
        parts = PurePosixPath(name.replace("\\", "/")).parts
        if parts[0] == "__MACOSX" or any(p.startswith(".") for p in parts):
            skipped_hidden += 1
            continue
        if not is_image_name(name):
            skipped_non_image += 1
            continue
        plan.append(info)
        total += info.file_size
    if len(plan) > max_files:
        raise ExplorerError(
            f"the zip holds {len(plan)} images, over the upload limit of {max_files} files; "
            f"set {MAX_FILES_ENV} to raise it"
        )
    if total > max_bytes:
        raise ExplorerError(_size_message(total, max_bytes))
    if not plan:
        raise ExplorerError(
            "the zip holds no images (.png/.jpg/...); upload a zip of class folders of images"
        )
    stats = {
        "images": len(plan),
        "skipped_non_image": skipped_non_image,
        "skipped_hidden": skipped_hidden,
    }
    return plan, stats


def _check_name(name: str) -> None:
    norm = name.replace("\\", "/")
    if norm.startswith("/") or (len(norm) >= 2 and norm[1] == ":" and norm[0].isalpha()):
        raise ExplorerError(
            f"zip entry '{name}' has an absolute path; refusing the whole zip, use relative paths"
        )
    if ".." in norm.split("/"):
        raise ExplorerError(
            f"zip entry '{name}' points outside the archive ('..'); refusing the whole zip"
        )
    if "\x00" in name:
        raise ExplorerError("a zip entry name contains a NUL byte; refusing the whole zip")


def _size_message(total: int, max_bytes: int) -> str:
    return (
        f"the zip expands to more than {max_bytes / 2**20:.0f} MB"
        f" ({total / 2**20:.1f} MB), over the upload limit; set {MAX_MB_ENV} to raise it"
    )


def _extract(zf: zipfile.ZipFile, plan: list[zipfile.ZipInfo], dest: Path, max_bytes: int) -> None:
    """Write the planned entries under `dest`, counting real bytes (headers can lie)."""
    written = 0
    for info in plan:
        target = dest.joinpath(*PurePosixPath(info.filename.replace("\\", "/")).parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            with zf.open(info) as src, open(target, "wb") as out:
                while chunk := src.read(1 << 20):
                    written += len(chunk)
                    if written > max_bytes:
                        raise ExplorerError(_size_message(written, max_bytes))
                    out.write(chunk)
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as e:
            raise ExplorerError(
                f"zip entry '{info.filename}' is corrupt or unsupported ({e}); re-create the zip"
            ) from e


def _common_top(parts: list[tuple[str, ...]]) -> str:
    """The single top-level folder every image sits under (with class folders below), or ''."""
    prefix: list[str] = []
    while True:
        depth = len(prefix)
        if any(len(p) < depth + 3 for p in parts):  # keep at least class/file below the root
            break
        tops = {p[depth] for p in parts}
        if len(tops) != 1:
            break
        prefix.append(tops.pop())
    return "/".join(prefix)


def _from_manifest(folder: Path) -> tuple[Path, dict]:
    meta = json.loads((folder / MANIFEST).read_text())
    rel = meta.pop("root", "")
    return (folder.joinpath(*rel.split("/")) if rel else folder), meta
