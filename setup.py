"""Build hook: ship the repository's ``bundles/`` and ``data_manifests/`` inside the wheel.

Metadata lives in ``pyproject.toml``; this file only adds a ``build_py`` step. The top-level
folders stay the source of truth (no copies or links are committed): at build time every
shipped file is copied into the build tree under ``app/_shipped/bundles/...`` and
``app/_shipped/data_manifests/...``, where :mod:`app.resources` finds them once installed.
Symbolic links are copied as the files they point to, so the wheel holds none. The same file
list goes into an sdist (``get_source_files``), so a wheel built from the sdist ships them too.

Not shipped (they mirror ``.gitignore``): a bundle's ``runs/`` and ``eval/`` outputs, generated
exports ``models/model.{ts,onnx,xml,bin}``, caches, and hidden files (e.g. the temporaries of
:mod:`app.io.atomic` while a checkpoint is being written).
"""

from __future__ import annotations

import os
import shutil

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
SHIPPED_DIR = os.path.join("app", "_shipped")  # app.resources.SHIPPED_DIR
SKIPPED_DIRS = {"runs", "eval", "__pycache__"}
SKIPPED_FILES = {"model.ts", "model.onnx", "model.xml", "model.bin"}


def _skipped(name: str) -> bool:
    return name.startswith(".") or name in SKIPPED_FILES or name.endswith((".pyc", ".tmp"))


def shipped_files(root: str = HERE) -> list[str]:
    """Repository-relative paths of every shipped file: all of ``bundles/`` but the skipped
    names above, and ``data_manifests/*.json``. Empty where ``bundles/`` is absent."""
    found = []
    for folder, dirs, names in os.walk(os.path.join(root, "bundles"), followlinks=True):
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS and not d.startswith("."))
        found += [os.path.join(folder, n) for n in sorted(names) if not _skipped(n)]
    manifests = os.path.join(root, "data_manifests")
    if os.path.isdir(manifests):
        found += [os.path.join(manifests, n) for n in sorted(os.listdir(manifests)) if n.endswith(".json") and not _skipped(n)]
    return [os.path.relpath(f, root) for f in found]


class BuildPyWithBundles(build_py):
    """``build_py`` that also copies :func:`shipped_files` to ``<build_lib>/app/_shipped``.

    An editable install (``pip install -e .``) copies nothing: the checkout's folders are used.
    """

    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        files = shipped_files()
        if not any(f.endswith(os.path.join("configs", "metadata.json")) for f in files):
            raise RuntimeError(f"no bundle found under '{os.path.join(HERE, 'bundles')}': build the wheel from a "
                               "VolSeg source checkout (or its sdist), which holds bundles/ and data_manifests/")
        target = os.path.join(self.build_lib, SHIPPED_DIR)
        shutil.rmtree(target, ignore_errors=True)  # no stale files from an earlier build
        for rel in files:
            dest = os.path.join(target, rel)
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            shutil.copyfile(os.path.join(HERE, rel), dest)  # follows symbolic links: a real file

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        outputs = super().get_outputs(include_bytecode)
        if self.editable_mode:
            return outputs
        return outputs + [os.path.join(self.build_lib, SHIPPED_DIR, rel) for rel in shipped_files()]

    def get_source_files(self) -> list[str]:
        return super().get_source_files() + shipped_files()


setup(cmdclass={"build_py": BuildPyWithBundles})
