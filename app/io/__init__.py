"""Reading volumes and writing outputs atomically."""

from app.io.atomic import atomic_save_torch, atomic_write_nifti, atomic_write_text

__all__ = ["atomic_save_torch", "atomic_write_nifti", "atomic_write_text"]
