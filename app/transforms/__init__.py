"""Dictionary transforms that MONAI lacks; everything else comes from ``monai.transforms``."""

from app.transforms.bias_field import TorchRandBiasField, TorchRandBiasFieldd, legendre_field
from app.transforms.box import InForegroundBox, InForegroundBoxd
from app.transforms.brain import CheckBrainMRI, CheckBrainMRId, tissue_volume_ml
from app.transforms.components import (
    RelabelRelativelySmallComponents,
    RelabelRelativelySmallComponentsd,
    RemoveRelativelySmallComponents,
    RemoveRelativelySmallComponentsd,
)
from app.transforms.holes import FillRegionHoles, FillRegionHolesd, fill_holes_in_slices
from app.transforms.dropout import RandModalityDropoutd, channel_subsets
from app.transforms.ct import HU_WINDOWS, CheckHounsfield, CheckHounsfieldd, HUWindow, HUWindowd
from app.transforms.mri import N4BiasCorrection, N4BiasCorrectiond
from app.transforms.regions import ChannelThreshold, ChannelThresholdd, RegionsToBratsLabels, RegionsToBratsLabelsd, brats2018_codes
from app.transforms.save import SaveLabelMapd
from app.transforms.label_values import CheckLabelValuesd
from app.transforms.skull import CheckSkullStripped, CheckSkullStrippedd, zero_fractions
from app.transforms.slices import slabs_to_volume, stack_slices, volume_to_slabs
from app.transforms.spacing import is_anisotropic, target_spacing
from app.transforms.zscore import NonzeroZScore, NonzeroZScored

__all__ = [
    "CheckLabelValuesd",
    "CheckBrainMRI",
    "CheckBrainMRId",
    "CheckHounsfield",
    "CheckHounsfieldd",
    "CheckSkullStripped",
    "CheckSkullStrippedd",
    "ChannelThreshold",
    "ChannelThresholdd",
    "FillRegionHoles",
    "FillRegionHolesd",
    "HUWindow",
    "HUWindowd",
    "HU_WINDOWS",
    "InForegroundBox",
    "InForegroundBoxd",
    "N4BiasCorrection",
    "N4BiasCorrectiond",
    "NonzeroZScore",
    "NonzeroZScored",
    "RandModalityDropoutd",
    "RegionsToBratsLabels",
    "RelabelRelativelySmallComponents",
    "RelabelRelativelySmallComponentsd",
    "RemoveRelativelySmallComponents",
    "RemoveRelativelySmallComponentsd",
    "RegionsToBratsLabelsd",
    "SaveLabelMapd",
    "TorchRandBiasField",
    "TorchRandBiasFieldd",
    "brats2018_codes",
    "channel_subsets",
    "fill_holes_in_slices",
    "is_anisotropic",
    "legendre_field",
    "slabs_to_volume",
    "tissue_volume_ml",
    "stack_slices",
    "target_spacing",
    "volume_to_slabs",
    "zero_fractions",
]
