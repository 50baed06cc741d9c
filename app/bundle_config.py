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

__all__ = ["bundle_parser", "bundle_settings", "flag"]

#: Spellings of a boolean that MONAI's command line passes as text (``--compile false``: its parser
#: turns only ``False`` and ``True`` into booleans).
TRUE_TEXT, FALSE_TEXT = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def flag(value: Any, key: str) -> bool:
    """A bundle config's on/off setting as a bool, from a bool or from the text a command line gives.

    ``python -m monai.bundle run ... --compile false`` sets ``compile`` to the *string* ``'false'``,
    which Python treats as true: the bundles read every on/off key through this function, so
    ``false``, ``no``, ``off`` and ``0`` (any case) turn it off and ``true``, ``yes``, ``on``, ``1`` on.

    Args:
        value: the config value (bool, 0/1, or text).
        key: the config key, for the message.

    Raises:
        ValueError: anything else, naming the key and the value.

    Example:
        >>> flag("false", "compile"), flag(True, "amp")
        (False, True)
    """
    if isinstance(value, bool) or (isinstance(value, int) and value in (0, 1)):
        return bool(value)
    if type(value).__name__ == "bool_":  # numpy's bool
        return bool(value)
    text = str(value).strip().lower() if isinstance(value, str) else None
    if text in TRUE_TEXT:
        return True
    if text in FALSE_TEXT:
        return False
    raise ValueError(f"{key} must be true or false, got {value!r} (on the monai.bundle command line: --{key} true / --{key} false)")


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
