"""Build hook (setuptools `cmdclass`): ship the app, its Streamlit config, the built-in models,
the warm seed of the default views and the shipped sweep results.

The repository keeps `app.py`, `.streamlit/config.toml` and `assets/` (`models/`, `warm/`,
`results/`) at its top level; a wheel (and the sdist it is built from) carries them as
`explorer/_bundle/...`, where `explorer.paths` looks first, so an installed wheel opens on the
same warm pages and shipped sweep as a clone. Editable installs read them from the clone and
skip this.
"""

from __future__ import annotations

import os
from glob import glob

from setuptools.command.build_py import build_py

BUNDLE_PACKAGE = "explorer._bundle"
# Files of the built-in model folders that are not shipped (training checkpoints, pickles).
EXCLUDE = {"checkpoint.pt"}
# Folders under assets/ shipped whole: the warm seed (explorer.warm), the shipped sweep with its
# provenance sidecar (explorer.shipped) and the app's icons (its favicon: nothing from the network).
SHIPPED_DIRS = ("warm", "results", "icons")


def bundle_files(root: str = ".") -> list[str]:
    """Paths, relative to the project root, of everything the bundle holds."""
    files = ["app.py", os.path.join(".streamlit", "config.toml")]
    for path in sorted(glob(os.path.join(root, "assets", "models", "*", "*"))):
        name = os.path.basename(path)
        if (
            os.path.isfile(path)
            and name not in EXCLUDE
            and not name.endswith((".pt", ".bin", ".pth"))
        ):
            files.append(os.path.relpath(path, root))
    for sub in SHIPPED_DIRS:
        for path in sorted(glob(os.path.join(root, "assets", sub, "**", "*"), recursive=True)):
            if os.path.isfile(path) and not os.path.basename(path).startswith("."):
                files.append(os.path.relpath(path, root))
    return [f for f in files if os.path.isfile(os.path.join(root, f))]


class BuildPy(build_py):
    """`build_py` that adds the bundle to the package data (so sdist and wheel both carry it)."""

    def _bundle(self) -> list[tuple[str, str, str, list[str]]]:
        if getattr(self, "editable_mode", False):
            return []
        target = os.path.join(self.build_lib, *BUNDLE_PACKAGE.split("."))
        return [(BUNDLE_PACKAGE, ".", target, bundle_files())]

    def _get_data_files(self):
        return super()._get_data_files() + self._bundle()

    def get_data_files_without_manifest(self):
        return super().get_data_files_without_manifest() + self._bundle()
