"""``--resample``: a case whose sequences lie on different voxel grids, put on one grid first.

The models need the sequences of a case co-registered on one grid, as BraTS provides them.
Clinical MRI of one session often is not: a 1 mm 3D T1ce beside a 2D FLAIR of 5 mm slices. With
``resample``, the finest grid of the case is kept (:func:`app.io.resample.finest_grid`), the other
sequences are resampled onto it in world coordinates (:func:`app.io.resample.resample_onto`; no
registration), and the label map is written on that grid.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from app.errors import InputError

logger = logging.getLogger(__name__)

__all__ = ["align_case", "grid_reference", "load_on_grid"]


def grid_reference(images: Sequence[str | Path | None]) -> str | None:
    """The volume whose grid a case's sequences are resampled onto, or None where they already
    share one grid (nothing to resample).

    Args:
        images: the case's volumes in channel order, None for a missing sequence.

    Raises:
        InputError: a volume that cannot be read, or that is not 3D.
    """
    from app.io.resample import finest_grid, grid_of

    present = [str(p) for p in images if p is not None]
    grids = [grid_of(p) for p in present]
    if all(g.same_as(grids[0]) for g in grids[1:]):
        return None
    return present[finest_grid(grids)]


def align_case(images: Sequence[str | Path | None], reference: str, tmp_dir: str | Path, names: Sequence[str] = ()) -> tuple[list[str | None], dict]:
    """Resample every volume of a case that is not on ``reference``'s grid onto it.

    Args:
        images: the case's volumes in channel order, None for a missing sequence.
        reference: one of ``images``, from :func:`grid_reference`.
        tmp_dir: where the resampled copies go (``<n>_<file name>.nii``, uncompressed); the caller removes them.
        names: the sequence name of each channel, for the record (default: ``channel <n>``).

    Returns:
        ``(aligned, record)``: the case's volumes with resampled copies in place of the
        originals, and ``{"grid": reference, "grid_size": ..., "spacing_mm": ..., "resampled":
        {name: "<size> voxels of <spacing> mm"}}`` for the run record.

    Raises:
        InputError: an unreadable volume, or one that covers less than half of the reference's
            world box (not of one session: register the sequences first).
    """
    from app.io.resample import grid_of, resample_onto

    ref = grid_of(reference)
    aligned: list[str | None] = []
    resampled = {}
    for index, path in enumerate(images):
        name = names[index] if index < len(names) else f"channel {index}"
        if path is None or str(path) == str(reference):
            aligned.append(None if path is None else str(path))
            continue
        grid = grid_of(path)
        if grid.same_as(ref):
            aligned.append(str(path))
            continue
        stem = Path(str(path).rstrip("/")).name.split(".")[0]
        aligned.append(str(resample_onto(path, reference, Path(tmp_dir) / f"{index}_{stem}.nii")))  # read once, at once: no gzip
        resampled[name] = grid.describe()
    record = {"grid": str(reference), "grid_size": list(ref.size), "spacing_mm": [round(s, 4) for s in ref.spacing_mm], "resampled": resampled}
    logger.info("resampled %s onto the grid of %s (%s; no registration)", ", ".join(f"{n} ({g})" for n, g in resampled.items()), reference, ref.describe())
    return aligned, record


def load_on_grid(segmenter: Any, images: Sequence[str | Path | None], grid: str | None) -> tuple[dict, dict | None]:
    """``segmenter.load(images)`` (:meth:`app.inference.Segmenter.load`), the sequences first put on
    ``grid``'s voxel grid where it is given (:func:`align_case`; copies in a temporary folder,
    removed once read). Returns the loaded data and the resampling record, or None.

    Raises:
        InputError: as :func:`align_case` and ``Segmenter.load``.
    """
    if grid is None:
        return segmenter.load(images), None
    import tempfile

    with tempfile.TemporaryDirectory(prefix="volseg_resample_") as tmp:
        aligned, record = align_case(images, grid, tmp, segmenter.channels)
        return segmenter.load(aligned), record
