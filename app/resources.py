"""Where the shipped bundles and datalists are: inside the installed package or in the checkout.

The repository's top-level ``bundles/`` and ``data_manifests/`` are the source of truth. A wheel
built from it (``pip wheel .``; ``setup.py`` does the copying) carries them as package data under
``app/_shipped/bundles`` and ``app/_shipped/data_manifests``, side by side as in the checkout. The
bundle configs name their default datalist through :func:`manifest_path`, never by a path that
leaves the bundle folder, so a bundle folder copied anywhere finds it too.

Nothing here imports torch or MONAI.

Example:
    >>> from app.resources import bundles_root, manifest_path
    >>> (bundles_root() / "brats_unet3d" / "configs" / "common.yaml").is_file()
    True
    >>> manifest_path("brats2018_cv5").name
    'brats2018_cv5.json'
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

#: Folder inside the package that a wheel build fills with ``bundles/`` and ``data_manifests/``.
SHIPPED_DIR = "_shipped"


def package_dir() -> Path:
    """The installed ``app`` package folder (``importlib.resources``; wheels install unzipped)."""
    return Path(str(files("app")))


def source_root() -> Path | None:
    """The repository root when ``app`` runs from a source checkout (editable install or
    ``PYTHONPATH``): the folder holding ``app/``, ``bundles/``, ``data_manifests/`` and
    ``pyproject.toml``; None when the package was installed from a wheel."""
    root = package_dir().resolve().parent
    marks = ("bundles", "data_manifests", "pyproject.toml")
    return root if all((root / m).exists() for m in marks) else None


def shipped_root() -> Path | None:
    """``app/_shipped`` of an installed wheel, or None where the package has none (a checkout)."""
    root = package_dir() / SHIPPED_DIR
    return root if (root / "bundles").is_dir() else None


def resource_root() -> Path:
    """The folder holding ``bundles/`` and ``data_manifests/``: the wheel's ``app/_shipped``, else
    the source checkout, else (neither found) the folder above the package, so that the error
    raised by :func:`app.bundles.bundle_dir` or :func:`manifest_path` names where it looked."""
    return shipped_root() or source_root() or package_dir().resolve().parent


def bundles_root() -> Path:
    """Folder of the shipped bundles (``<resource root>/bundles``)."""
    return resource_root() / "bundles"


def manifests_root() -> Path:
    """Folder of the shipped datalists (``<resource root>/data_manifests``)."""
    return resource_root() / "data_manifests"


def manifest_path(name: str) -> Path:
    """Path of a shipped datalist, by name with or without ``.json``.

    Args:
        name: e.g. ``"brats2018_cv5"`` or ``"brats2018_shared.json"``.

    Returns:
        The existing JSON file.

    Raises:
        FileNotFoundError: no such datalist; the message lists the shipped ones.
    """
    folder = manifests_root()
    path = folder / (name if name.endswith(".json") else f"{name}.json")
    if not path.is_file():
        have = sorted(p.stem for p in folder.glob("*.json")) if folder.is_dir() else []
        raise FileNotFoundError(
            f"no shipped datalist '{name}' in '{folder}'; shipped: {', '.join(have) or 'none'}"
            " (build one with `volseg manifest brats DATA_DIR --out FILE` and pass its path)"
        )
    return path
