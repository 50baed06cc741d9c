"""Thick-slice detection and the target spacing for in-plane-only resampling."""

from __future__ import annotations

from collections.abc import Sequence


def is_anisotropic(spacing_mm: Sequence[float], ratio: float = 3.0) -> bool:
    """True where the largest voxel side is at least ``ratio`` times the smallest
    (e.g. 0.78 x 0.78 x 7.5 mm thick-slice CT; nnU-Net uses 3)."""
    spacing = [float(s) for s in spacing_mm]
    return max(spacing) >= ratio * min(spacing)


def target_spacing(spacing_mm: Sequence[float], target_mm: Sequence[float], in_plane_only: bool | None = None, ratio: float = 3.0) -> tuple[float, ...]:
    """``pixdim`` for MONAI ``Spacingd``: the target spacing, keeping the slice axis as it is
    for thick-slice volumes.

    Args:
        spacing_mm: the volume's spacing.
        target_mm: the wanted spacing.
        in_plane_only: keep the thickest axis unresampled (of equally thick ones, the last); None decides by
            :func:`is_anisotropic`.
        ratio: anisotropy threshold for ``in_plane_only=None``.

    Returns:
        ``target_mm`` with the thickest axis set to 0 (MONAI keeps non-positive components
        at the input spacing) where resampling is in-plane only.

    Raises:
        ValueError: lengths differ or a target component is not positive.
    """
    if len(spacing_mm) != len(target_mm):
        raise ValueError(f"spacing {tuple(spacing_mm)} and target {tuple(target_mm)} have different lengths")
    if any(t <= 0 for t in target_mm):
        raise ValueError(f"target spacing must be positive mm, got {tuple(target_mm)}")
    if in_plane_only is None:
        in_plane_only = is_anisotropic(spacing_mm, ratio)
    out = [float(t) for t in target_mm]
    if in_plane_only:
        out[max(reversed(range(len(spacing_mm))), key=lambda i: spacing_mm[i])] = 0.0  # a tie: the last axis (axial series slice along k)
    return tuple(out)
