"""Registry of the bundles VolSeg ships, and where they live on disk."""

from __future__ import annotations

import json
import os
from pathlib import Path

#: Repository root (the folder holding ``app/``, ``bundles/`` and ``data_manifests/``).
REPO_ROOT = Path(__file__).resolve().parents[1]

#: Bundles shipped with VolSeg: name -> one-line description.
BUNDLES: dict[str, str] = {
    "brats_unet3d": "3D residual U-Net, BraTS MRI (T1, T1ce, T2, FLAIR) -> TC, WT, ET",
}

DEFAULT_BUNDLE = "brats_unet3d"


def bundle_dir(name: str) -> Path:
    """Folder of a shipped bundle.

    Raises:
        ValueError: unknown bundle name; the message lists the shipped ones.
    """
    if name not in BUNDLES:
        raise ValueError(f"unknown bundle '{name}'; shipped bundles: {', '.join(sorted(BUNDLES))}")
    return REPO_ROOT / "bundles" / name


def default_root(name: str) -> str:
    """``bundle_root`` for a config that did not get one on the command line.

    The current folder when it is this bundle (Model Zoo habit: run from the bundle folder),
    else the shipped copy, so ``python -m monai.bundle run --config_file bundles/NAME/configs/...``
    also works from the repository root.
    """
    meta = Path(os.getcwd()) / "configs" / "metadata.json"
    if meta.is_file():
        try:
            if json.loads(meta.read_text()).get("name") == name:
                return os.getcwd()
        except (OSError, ValueError):
            pass
    return str(bundle_dir(name))


def config_files(name_or_dir: str | Path, *overlays: str) -> list[str]:
    """``[common.yaml, <overlay>.yaml ...]`` of a bundle, for ``ConfigWorkflow(config_file=...)``.

    Raises:
        FileNotFoundError: an overlay is missing; the message lists the bundle's configs.
    """
    root = Path(name_or_dir) if Path(name_or_dir).is_dir() else bundle_dir(str(name_or_dir))
    files = [root / "configs" / "common.yaml"] + [root / "configs" / f"{o}.yaml" for o in overlays]
    for f in files:
        if not f.is_file():
            have = sorted(p.stem for p in (root / "configs").glob("*.yaml"))
            raise FileNotFoundError(f"bundle '{root.name}' has no config '{f.name}'; it has {', '.join(have)}")
    return [str(f) for f in files]
