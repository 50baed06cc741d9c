"""Compatibility: :func:`save_label_map` lives in :mod:`app.io.writers`, the one writer module,
and the bundles' ``SaveLabelMapd`` in :mod:`app.transforms.save` (it names outputs by case,
which :mod:`app.data` owns and :mod:`app.io` does not import)."""

from __future__ import annotations

from app.io.writers import save_label_map

__all__ = ["save_label_map"]
