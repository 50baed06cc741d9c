"""Write a SimpleITK volume as a DICOM CT series (test helper, after SimpleITK's DicomSeriesFromArray example)."""

from __future__ import annotations

import time
from pathlib import Path


def write_dicom_series(image, folder: Path, series_uid: str = "1.2.826.0.1.3680043.2.1125.1.1", slope: float = 1.0, intercept: float = -1024.0,
                       description: str = "VolSeg test series", modality: str = "CT") -> list[Path]:
    """Write ``image`` (HU) as one slice file per z index, stored as unsigned 16-bit values
    (HU - intercept) / slope with the rescale tags set, as CT scanners do; ``description`` and
    ``modality`` go to SeriesDescription (0008,103E) and Modality (0008,0060)."""
    import SimpleITK as sitk

    folder.mkdir(parents=True, exist_ok=True)
    stored = sitk.Cast(image, sitk.sitkFloat32)  # GDCM stores (HU - intercept) / slope as unsigned 16-bit
    direction = image.GetDirection()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    date, now = time.strftime("%Y%m%d"), time.strftime("%H%M%S")
    series_tags = [
        ("0008|0031", now), ("0008|0021", date), ("0008|0060", modality), ("0020|000e", series_uid),
        ("0020|000d", series_uid.rsplit(".", 1)[0] + ".9"), ("0020|0052", series_uid + ".99"), ("0008|0016", "1.2.840.10008.5.1.4.1.1.2"), ("0010|0010", "Phantom^Test"), ("0010|0020", "VS0001"),
        ("0020|0037", "\\".join(f"{v:.10f}" for v in (direction[0], direction[3], direction[6], direction[1], direction[4], direction[7]))),
        ("0008|103e", description), ("0028|1052", f"{intercept}"), ("0028|1053", f"{slope}"), ("0028|1054", "HU"),
        ("0028|0100", "16"), ("0028|0101", "16"), ("0028|0102", "15"), ("0028|0103", "0"),
    ]
    paths = []
    for k in range(image.GetDepth()):
        slice_ = stored[:, :, k]
        for tag, value in series_tags:
            slice_.SetMetaData(tag, value)
        slice_.SetMetaData("0008|0012", date)
        slice_.SetMetaData("0008|0013", now)
        slice_.SetMetaData("0020|0032", "\\".join(f"{v:.10f}" for v in image.TransformIndexToPhysicalPoint((0, 0, k))))
        slice_.SetMetaData("0020|0013", str(k + 1))
        slice_.SetMetaData("0008|0018", f"{series_uid}.{k + 1}")
        slice_.SetMetaData("0018|0050", f"{image.GetSpacing()[2]:.6f}")
        path = folder / f"slice_{k:04d}.dcm"
        writer.SetFileName(str(path))
        writer.Execute(slice_)
        paths.append(path)
    return paths
