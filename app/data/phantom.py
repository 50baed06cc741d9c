"""Synthetic BraTS-like cases: an ellipsoidal 'brain' with a nested tumour, for demos and tests.

The phantom is announced as synthetic wherever it is used; it is no substitute for real MRI.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from app.constants import MODALITIES
from app.io.atomic import atomic_write_nifti

# Mean intensity per tissue and modality (t1, t1ce, t2, flair): brain, edema (2), enhancing (4), necrosis (1).
_INTENSITY = {
    "brain": (500.0, 520.0, 400.0, 350.0),
    2: (430.0, 450.0, 900.0, 950.0),
    4: (480.0, 1300.0, 700.0, 700.0),
    1: (250.0, 300.0, 1100.0, 500.0),
}


def make_brats_phantom(
    out_dir: str | Path,
    case_id: str = "Phantom_001",
    shape: tuple[int, int, int] = (120, 140, 110),
    spacing_mm: tuple[float, float, float] = (1.0, 1.0, 1.0),
    seed: int = 0,
) -> Path:
    """Write ``<out_dir>/<case_id>/<case_id>_{t1,t1ce,t2,flair,seg}.nii.gz``.

    The 'brain' is an ellipsoid filling ~80% of the grid (zero outside, as in skull-stripped
    BraTS); the tumour is a sphere of edema (label 2) around an enhancing shell (4) around a
    necrotic centre (1), placed off-centre from ``seed``. The affine has BraTS's L, P, S axis
    codes, so readers must reorient.

    Args:
        out_dir: parent folder of the case folder.
        case_id: case folder and file prefix.
        shape: voxel grid ``(H, W, D)``.
        spacing_mm: voxel size in mm.
        seed: random seed for the tumour position, size and the noise.

    Returns:
        The case folder.
    """
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij"), axis=-1)
    centre = np.array(shape, dtype=np.float32) / 2
    brain = (((grid - centre) / (0.42 * np.array(shape))) ** 2).sum(-1) <= 1.0
    scale = min(shape) / 100.0
    t_centre = centre + rng.uniform(-0.15, 0.15, 3) * np.array(shape)
    dist = np.sqrt(((grid - t_centre) ** 2).sum(-1)) / scale
    r_whole, r_enh, r_nec = rng.uniform(16, 22), rng.uniform(9, 12), rng.uniform(4, 6)
    label = np.zeros(shape, dtype=np.uint8)
    label[dist <= r_whole] = 2
    label[dist <= r_enh] = 4
    label[dist <= r_nec] = 1
    label[~brain] = 0
    affine = np.diag([-spacing_mm[0], -spacing_mm[1], spacing_mm[2], 1.0])
    case_dir = Path(out_dir) / case_id
    for c, modality in enumerate(MODALITIES):
        volume = np.where(brain, _INTENSITY["brain"][c], 0.0).astype(np.float32)
        for code in (2, 4, 1):
            volume[label == code] = _INTENSITY[code][c]
        volume = np.where(brain, volume + rng.normal(0, 25, shape).astype(np.float32), 0.0)
        atomic_write_nifti(np.clip(volume, 0, None).astype(np.int16), affine, case_dir / f"{case_id}_{modality}.nii.gz")
    atomic_write_nifti(label, affine, case_dir / f"{case_id}_seg.nii.gz")
    return case_dir


def make_ct_phantom(
    out_dir: str | Path,
    case_id: str = "ct_phantom_001",
    shape: tuple[int, int, int] = (64, 56, 24),
    spacing_mm: tuple[float, float, float] = (1.5, 1.5, 5.0),
    seed: int = 0,
) -> Path:
    """Write a Decathlon-style CT case ``imagesTr/<case_id>.nii.gz`` (int16 HU) and
    ``labelsTr/<case_id>.nii.gz`` (uint8, 1 = 'organ').

    Air (-1000 HU) around an elliptical body (fat -100 HU, soft tissue 40 HU) holding an
    ellipsoidal organ (label 1, 120 HU) placed from ``seed``, with noise; the affine has L, A, S
    axis codes like the MSD spleen CT.

    Returns:
        The data folder ``out_dir``.
    """
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij"), axis=-1)
    centre = np.array(shape, dtype=np.float32) / 2
    body = (((grid[..., :2] - centre[:2]) / (0.45 * np.array(shape[:2]))) ** 2).sum(-1) <= 1.0
    organ_centre = centre + rng.uniform(-0.15, 0.15, 3) * np.array(shape)
    radii = np.array(shape) * rng.uniform(0.12, 0.18, 3)
    organ = (((grid - organ_centre) / radii) ** 2).sum(-1) <= 1.0
    hu = np.full(shape, -1000.0, dtype=np.float32)
    hu[body] = 40.0
    hu[body & (rng.random(shape) < 0.1)] = -100.0
    hu[organ & body] = 120.0
    hu += rng.normal(0, 15, shape).astype(np.float32)
    affine = np.diag([-spacing_mm[0], spacing_mm[1], spacing_mm[2], 1.0])
    out = Path(out_dir)
    atomic_write_nifti(hu.astype(np.int16), affine, out / "imagesTr" / f"{case_id}.nii.gz")
    atomic_write_nifti((organ & body).astype(np.uint8), affine, out / "labelsTr" / f"{case_id}.nii.gz")
    return out
