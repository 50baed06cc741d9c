"""Values of a bundle's own configs, resolved as its workflows resolve them (MONAI ``ConfigParser``).

Used where VolSeg needs a bundle's default for something a command did not get: the datalist
(``data_list_file``) and data folder (``dataset_dir``) of ``volseg evaluate --bundle``.

Example:
    >>> bundle_settings("ct_unet3d", ("dataset_dir",))["dataset_dir"]  # doctest: +SKIP
    '/work/shared/data/msd_spleen'
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["bundle_parser", "bundle_settings"]


def bundle_parser(bundle: str | Path, overlay: str | None = None):
    """A MONAI ``ConfigParser`` over a bundle's ``configs/common.yaml`` (plus ``overlay``, e.g.
    ``"train"`` or ``"inference"``), with its ``configs/metadata.json`` as ``_meta_`` (where there is
    one) and ``bundle_root`` set to the bundle folder: the configs as the bundle's own workflows see them.

    Args:
        bundle: shipped bundle name or bundle folder.
        overlay: a config beside ``common.yaml`` to read over it, or None.

    Raises:
        ValueError: unknown bundle. FileNotFoundError: missing configs.
    """
    from monai.bundle import ConfigParser

    from app.bundles import bundle_path, config_files

    root = bundle_path(bundle)
    parser = ConfigParser()
    parser.read_config(config_files(root, *([overlay] if overlay else [])))
    meta = root / "configs" / "metadata.json"
    if meta.is_file():
        parser.read_meta(str(meta))
    parser["bundle_root"] = str(root)
    return parser


def bundle_settings(bundle: str | Path, keys: Sequence[str], overlay: str | None = None) -> dict[str, Any]:
    """Resolve ``keys`` of a bundle's ``configs/common.yaml`` (plus ``overlay``, e.g. ``"inference"``),
    with its metadata as ``_meta_`` and ``bundle_root`` set to the bundle folder (:func:`bundle_parser`).

    Args:
        bundle: shipped bundle name or bundle folder.
        keys: config keys, e.g. ``("data_list_file", "dataset_dir")``.
        overlay: a config beside ``common.yaml`` to read over it, or None.

    Returns:
        Key -> resolved value, for the keys the configs have.

    Raises:
        ValueError: unknown bundle. FileNotFoundError: missing configs.
    """
    parser = bundle_parser(bundle, overlay)
    return {key: parser.get_parsed_content(key) for key in keys if key in parser}
