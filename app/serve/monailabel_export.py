"""Export a bundle in the shape MONAI Label's bundle tasks read (single-file configs)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from app.bundles import BUNDLES, bundle_dir, config_files, label_names
from app.io.atomic import atomic_write_text


def export_for_monailabel(bundle: str, dest: str | Path) -> Path:
    """Write a copy of ``bundle`` for MONAI Label's ``monaibundle`` app into ``dest``
    (e.g. ``<app>/model/brats_unet3d``).

    MONAI Label 0.8 reads one inference config (``configs/inference.json``) and one train config,
    while VolSeg bundles keep shared settings in ``common.yaml``. The export writes
    ``configs/inference.json`` (common + inference) and ``configs/train.json`` (common + train),
    merged with MONAI's own ``ConfigParser.load_config_files`` with the ``%_meta_#...`` macros (the
BraTS bundles' network and recipe, kept in ``metadata.json``) resolved, copies ``metadata.json`` with the
    output ``channel_def`` set to the label map's values and names (MONAI Label takes label names
    from it), and copies ``models/``, ``docs/`` and ``LICENSE``. The configs still call ``app``:
    install VolSeg in MONAI Label's environment.

    Returns:
        ``dest``.

    Raises:
        ValueError: unknown bundle.
        FileExistsError: ``dest`` exists and is not empty.
    """
    from monai.bundle import ConfigParser

    if bundle not in BUNDLES:
        raise ValueError(f"unknown bundle '{bundle}'; shipped: {', '.join(sorted(BUNDLES))}")
    src, dest = bundle_dir(bundle), Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise FileExistsError(f"'{dest}' exists and is not empty")
    for sub in ("models", "docs"):
        if (src / sub).is_dir():
            shutil.copytree(src / sub, dest / sub, ignore=shutil.ignore_patterns("*.tmp*"))
    (dest / "configs").mkdir(parents=True, exist_ok=True)
    shutil.copy2(src / "LICENSE", dest / "LICENSE")
    shutil.copy2(src / "configs" / "logging.conf", dest / "configs" / "logging.conf")
    for overlay in ("inference", "train"):
        parser = ConfigParser(ConfigParser.load_config_files(config_files(bundle, overlay)))
        parser.read_meta(str(src / "configs" / "metadata.json"))
        parser.resolve_macro_and_relative_ids()  # "%_meta_#..." macros (name, recipe) become plain config
        merged = {k: v for k, v in parser.get().items() if k != "_meta_"}
        merged.pop("bundle_root", None)  # MONAI Label sets it
        merged["bundle_root"] = "."
        atomic_write_text(dest / "configs" / f"{overlay}.json", json.dumps(merged, indent=2))
    meta = json.loads((src / "configs" / "metadata.json").read_text())
    pred = next(iter(meta["network_data_format"]["outputs"].values()))
    pred["channel_def"] = {"0": "background", **{str(k): v for k, v in sorted(label_names(bundle).items())}}
    meta["description"] += " [MONAI Label export: the output channel_def lists the values of the label map that the inference workflow writes.]"
    atomic_write_text(dest / "configs" / "metadata.json", json.dumps(meta, indent=2))
    return dest
