"""Registry of the bundles VolSeg ships, and where they live on disk."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

#: Repository root (the folder holding ``app/``, ``bundles/`` and ``data_manifests/``).
REPO_ROOT = Path(__file__).resolve().parents[1]

@dataclass(frozen=True)
class BundleInfo:
    """What a shipped bundle is: a one-line description, the kind of data it reads
    (``"brats"``: 4 MRI modalities -> TC/WT/ET; ``"ct"``: one CT volume -> organ labels), and
    whether it ships trained weights in ``models/model.pt``, and the names of the label values
    its inference workflow writes."""

    description: str
    data_kind: str
    ships_weights: bool
    label_names: dict[int, str]


#: Bundles shipped with VolSeg: the single table that the CLI, API and tests read.
BUNDLES: dict[str, BundleInfo] = {
    "brats_unet3d": BundleInfo("3D residual U-Net, BraTS MRI (T1, T1ce, T2, FLAIR) -> TC, WT, ET", "brats", True, {1: "NCR/NET", 2: "ED", 4: "ET"}),
    "brats_deeplab3d": BundleInfo("DeepLabV3+-style 3D network (atrous encoder, ASPP), BraTS MRI (T1, T1ce, T2, FLAIR) -> TC, WT, ET; shares brats_unet3d's configs", "brats", True, {1: "NCR/NET", 2: "ED", 4: "ET"}),
    "ct_unet3d": BundleInfo("3D residual U-Net template for single-organ CT (Decathlon format), HU window, 1.5 mm", "ct", False, {1: "spleen"}),
}

DEFAULT_BUNDLE = "brats_unet3d"


def label_names(bundle: str | Path) -> dict[int, str]:
    """Label value -> name for a shipped bundle (by name or folder); ``{v: "label v"}`` style
    names are not invented for unknown bundles: an empty dict is returned."""
    info = BUNDLES.get(Path(bundle).name)
    return dict(info.label_names) if info else {}


def bundle_dir(name: str) -> Path:
    """Folder of a shipped bundle.

    Raises:
        ValueError: unknown bundle name; the message lists the shipped ones.
    """
    if name not in BUNDLES:
        raise ValueError(f"unknown bundle '{name}'; shipped bundles: {', '.join(sorted(BUNDLES))}")
    return REPO_ROOT / "bundles" / name


def bundle_path(name_or_dir: str | Path) -> Path:
    """Folder of a bundle given by shipped name or by folder.

    Raises:
        ValueError: neither a folder nor a shipped bundle name.
    """
    return Path(name_or_dir) if Path(name_or_dir).is_dir() else bundle_dir(str(name_or_dir))


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
    root = bundle_path(name_or_dir)
    files = [root / "configs" / "common.yaml"] + [root / "configs" / f"{o}.yaml" for o in overlays]
    for f in files:
        if not f.is_file():
            have = sorted(p.stem for p in (root / "configs").glob("*.yaml"))
            raise FileNotFoundError(f"bundle '{root.name}' has no config '{f.name}'; it has {', '.join(have)}")
    return [str(f) for f in files]
