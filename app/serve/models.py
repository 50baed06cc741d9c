"""The bundles a server serves, as MONAI Label models: name, labels and description of each.

A model is a shipped bundle (by name) or a bundle folder, such as the output folder of
``volseg train`` (:mod:`app.engines.trained_bundle`). Its name in the protocol (``/info/``,
``/infer/{model}``) is the bundle name, or the folder's name; its labels come from the bundle's
:class:`app.labels.LabelManager`.

Example:
    >>> served_models(["brats_unet3d"])["brats_unet3d"].labels.names_to_values()  # doctest: +SKIP
    {'NCR/NET': 1, 'ED': 2, 'ET': 4}
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from app.labels import LabelManager

__all__ = ["ServedModel", "served_models"]


@dataclass(frozen=True)
class ServedModel:
    """One served model.

    Attributes:
        name: the model's name in the protocol (no ``/``).
        bundle: what ``Segmenter`` and ``volseg train --bundle`` take: a shipped name or a folder.
        labels: the bundle's label values, names and input channels.
        description: one line for ``/info/``.
    """

    name: str
    bundle: str
    labels: LabelManager
    description: str


def _describe(bundle: str, folder: Path) -> str:
    from app.bundles import BUNDLES

    if bundle in BUNDLES:
        return BUNDLES[bundle].description
    meta = json.loads((folder / "configs" / "metadata.json").read_text())
    return str(meta.get("description") or meta.get("task") or folder.name).split(". ")[0]


def served_models(bundles: Sequence[str | Path]) -> dict[str, ServedModel]:
    """Model name -> :class:`ServedModel`, in the order given.

    Raises:
        ValueError: a bundle that is neither a shipped name nor a bundle folder (the message
            lists the shipped ones), metadata without labels, or two bundles with one name.
    """
    from app.bundles import BUNDLES, bundle_path

    served: dict[str, ServedModel] = {}
    for bundle in map(str, bundles):
        if bundle not in BUNDLES and not (Path(bundle) / "configs" / "metadata.json").is_file():
            raise ValueError(f"unknown bundle '{bundle}': not a bundle folder (with configs/metadata.json) nor a shipped bundle "
                             f"({', '.join(sorted(BUNDLES))})")
        folder = bundle_path(bundle)
        name = bundle if bundle in BUNDLES else folder.resolve().name
        if name in served:
            raise ValueError(f"two served bundles are named '{name}' ({served[name].bundle} and {bundle}); rename one folder")
        served[name] = ServedModel(name, bundle if bundle in BUNDLES else str(folder.resolve()), LabelManager.from_bundle(bundle), _describe(bundle, folder))
    return served
