"""Reading volumes and writing outputs atomically."""

from app.io.atomic import atomic_save_torch, atomic_write, atomic_write_nifti, atomic_write_text
from app.io.integrity import max_voxels
from app.io.monai_reader import LoadVolumed, SimpleITKReader
from app.io.readers import dicom_series, read_volume, verify_volume, volume_format
from app.io.writers import output_suffix, save_label_map, write_label_like

__all__ = ["atomic_write", "dicom_series", "output_suffix", "read_volume", "volume_format", "write_label_like", "SimpleITKReader", "save_label_map", "atomic_save_torch", "atomic_write_nifti", "atomic_write_text", "max_voxels", "verify_volume", "LoadVolumed"]
