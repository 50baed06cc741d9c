"""Reading volumes and writing outputs atomically."""

from app.io.atomic import atomic_save_torch, atomic_write_nifti, atomic_write_text
from app.io.save import SaveLabelMapd, save_label_map

__all__ = ["SaveLabelMapd", "save_label_map", "atomic_save_torch", "atomic_write_nifti", "atomic_write_text"]
