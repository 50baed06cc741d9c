"""Names shared across VolSeg: BraTS modalities and the BraTS models' output channels.

Label values, their names and evaluation regions are owned by :mod:`app.labels`."""

from __future__ import annotations

#: Input channel order of every BraTS model, fixed and documented in the manifests.
MODALITIES: tuple[str, ...] = ("t1", "t1ce", "t2", "flair")

#: Output channel order of every BraTS model (MONAI's ``ConvertToMultiChannelBasedOnBratsClasses``);
#: the label values of each region: :data:`app.labels.BRATS`.
REGIONS: tuple[str, ...] = ("TC", "WT", "ET")

#: Environment variable that points VolSeg at a BraTS-style data folder.
DATA_DIR_ENV = "VOLSEG_BRATS_DIR"
