"""Dictionary transforms that MONAI lacks; everything else comes from ``monai.transforms``."""

from app.transforms.regions import RegionsToBratsLabels, RegionsToBratsLabelsd

__all__ = ["RegionsToBratsLabels", "RegionsToBratsLabelsd"]
