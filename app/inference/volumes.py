"""Tumour (or organ) volumes in millilitres from a written label map.

A volume is ``voxel count x voxel volume``, with the voxel volume the product of the written
file's spacing (mm^3), divided by 1000 (1 mL = 1 cm^3 = 1000 mm^3). Volumes are read back from
the file ``volseg segment`` wrote, not from the array in memory, so they describe exactly the
label map a user opens. BraTS bundles report the three labels and the two composite regions
used in the BraTS evaluation and in the RANO-style volumetric literature (e.g. Kickingereder
et al., Lancet Oncol 2019, "automated quantitative tumour response assessment of MRI in
neuro-oncology"): NCR (necrotic / non-enhancing core, label 1), ED (peritumoral edema, 2), ET
(enhancing tumour, 4), TC (tumour core, 1 + 4) and WT (whole tumour, 1 + 2 + 4).

Example:
    >>> import numpy as np
    >>> label = np.zeros((24, 32, 40), dtype=np.uint8)
    >>> label[:10, :10, :10] = 2
    >>> label_volumes_ml(label, (0.5, 1.0, 2.5), {"ED": (2,), "WT": (1, 2, 4)})
    {'ED': 1.25, 'WT': 1.25}
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from app.io.atomic import atomic_write_text

logger = logging.getLogger(__name__)

#: The per-batch CSV written beside ``volseg_run.json``.
VOLUMES_CSV = "volumes.csv"


def volume_classes(bundle: str | Path, label_codes: str = "2018") -> dict[str, tuple[int, ...]]:
    """Name -> label values of each volume a bundle reports, in report order.

    Asked of the bundle's :class:`app.labels.LabelManager`: each label by its short name (the
    text before ``/``: BraTS ``NCR``, ``ED``, ``ET``; CT ``spleen``), then each evaluation region
    that is not a single label already listed, fewest labels first (BraTS ``TC``, ``WT``).
    ``label_codes`` ``"2023"``: the values of a BraTS 2023+ map (ET 3; :meth:`app.labels.LabelManager.with_codes`).

    Returns:
        The classes; empty where the bundle has no readable label definition (then
        :func:`case_volumes` names each value found ``label_<value>``).

    Example:
        >>> volume_classes("brats_unet3d")
        {'NCR': (1,), 'ED': (2,), 'ET': (4,), 'TC': (1, 4), 'WT': (1, 2, 4)}
    """
    from app.labels import labels_of

    try:
        manager = labels_of(bundle).with_codes(label_codes)
    except (ValueError, FileNotFoundError) as err:
        logger.warning("bundle '%s' has no label names (%s); volumes are named by label value", bundle, err)
        return {}
    classes = {name.split("/")[0].strip(): (value,) for value, name in sorted(manager.labels.items())}
    for region, codes in sorted(manager.regions.items(), key=lambda item: len(item[1])):
        if tuple(codes) not in classes.values():
            classes[region] = tuple(codes)
    return classes


def label_volumes_ml(label: np.ndarray, spacing_mm: Sequence[float], classes: Mapping[str, Sequence[int]]) -> dict[str, float]:
    """Volume of each class of a label map.

    Args:
        label: integer label map ``(H, W, D)`` (any axis order, as long as ``spacing_mm``
            follows it; the product does not depend on the order).
        spacing_mm: voxel size in mm along the three axes.
        classes: name -> label values counted together (e.g. ``{"WT": (1, 2, 4)}``).

    Returns:
        Name -> volume in mL (``count * prod(spacing_mm) / 1000``), as Python floats.

    Raises:
        ValueError: ``label`` is not 3D or ``spacing_mm`` has not three positive values.
    """
    if label.ndim != 3:
        raise ValueError(f"expected a 3D label map, got shape {label.shape}")
    spacing = [float(s) for s in spacing_mm]
    if len(spacing) != 3 or min(spacing) <= 0:
        raise ValueError(f"spacing_mm must be three positive values in mm, got {tuple(spacing_mm)}")
    voxel_ml = float(np.prod(spacing)) / 1000.0
    counts = np.bincount(np.asarray(label).ravel().astype(np.int64)) if label.size else np.zeros(1, dtype=np.int64)
    return {name: float(sum(int(counts[v]) for v in values if 0 <= v < counts.size)) * voxel_ml for name, values in classes.items()}


def case_volumes(label_path: str | Path, bundle: str | Path, label_codes: str = "2018") -> dict[str, float]:
    """Volumes in mL of a written label map (NIfTI, NRRD or MetaImage), from its own spacing;
    ``label_codes``: the codes it was written in (``"2023"``: BraTS 2023+, ET 3).

    Returns:
        :func:`volume_classes` name -> mL, rounded to 0.001 mL (1 mm^3); for a bundle without
        label names, ``label_<value>`` for each non-zero value in the file.

    Raises:
        app.errors.InputError: the file cannot be read.
    """
    import SimpleITK as sitk

    from app.io.readers import read_volume

    image = read_volume(label_path, check_finite=False, refuse_all_zero=False)
    label = sitk.GetArrayViewFromImage(image)  # (D, W, H): the order does not change a count
    classes = volume_classes(bundle, label_codes) or {f"label_{int(v)}": (int(v),) for v in np.unique(label) if v != 0}
    return {name: round(ml, 3) for name, ml in label_volumes_ml(label, image.GetSpacing()[::-1], classes).items()}


def add_case_volumes(entries: list[dict[str, Any]], bundle: str | Path, out_dir: str | Path) -> Path | None:
    """Add ``volumes_ml`` to each run-record case entry whose ``output`` exists, and write
    ``<out_dir>/volumes.csv``: one row per such case, ``case_id`` then one column per volume.

    A label that cannot be read gets ``volumes_ml: None`` and a logged warning; it never fails
    the batch.

    Args:
        entries: the ``cases`` of a run record (``case_id``, ``output``, and ``settings`` whose
            ``label_codes`` say how the label was written; ``"2018"`` where absent); changed in place.
        bundle: the bundle that wrote the labels (names the volumes).
        out_dir: the batch's output folder.

    Returns:
        The CSV path, or None where no case has a label.
    """
    rows = []
    for entry in entries:
        output = entry.get("output")
        if not output or not Path(output).is_file():
            continue
        try:
            entry["volumes_ml"] = case_volumes(output, bundle, (entry.get("settings") or {}).get("label_codes") or "2018")
        except (ValueError, RuntimeError, OSError) as err:  # InputError is a ValueError
            logger.warning("case '%s': no volumes (%s)", entry.get("case_id"), err)
            entry["volumes_ml"] = None
            continue
        rows.append({"case_id": entry["case_id"], **entry["volumes_ml"]})
    if not rows:
        return None
    columns = ["case_id", *dict.fromkeys(k for row in rows for k in row if k != "case_id")]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns)
    buf.write(",".join(c if c == "case_id" else f"{c}_ml" for c in columns) + "\n")
    writer.writerows(rows)
    return atomic_write_text(Path(out_dir) / VOLUMES_CSV, buf.getvalue())
