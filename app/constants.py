"""Names shared across VolSeg: BraTS modalities, label codes and evaluation regions."""

from __future__ import annotations

#: Input channel order of every BraTS model, fixed and documented in the manifests.
MODALITIES: tuple[str, ...] = ("t1", "t1ce", "t2", "flair")

#: BraTS label codes: 1 necrotic / non-enhancing core (NCR/NET), 2 peritumoral edema (ED),
#: 4 enhancing tumour (ET). There is no label 3 in BraTS 2018.
BRATS_LABELS: dict[int, str] = {0: "background", 1: "NCR/NET", 2: "ED", 4: "ET"}

#: Output channel order of every BraTS model (MONAI's ``ConvertToMultiChannelBasedOnBratsClasses``):
#: TC = {1, 4}, WT = {1, 2, 4}, ET = {4}.
REGIONS: tuple[str, ...] = ("TC", "WT", "ET")

#: Environment variable that points VolSeg at a BraTS-style data folder.
DATA_DIR_ENV = "VOLSEG_BRATS_DIR"
