"""Training on each case as given and N4-corrected: the N4 copies of a datalist's cases and a
datalist that lists both.

A model trained on both can segment either input with one set of weights: the case as given (the
default path) and the N4-corrected case (``--n4``); the measured run is the N4-mixed row of the
ablations in bundles/brats_unet3d/docs/README.md. N4 is
Tustison et al. 2010 (IEEE TMI 29(6)) through SimpleITK (:class:`app.transforms.N4BiasCorrection`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

SPLITS = ("training", "validation", "test")
SUFFIX = "_n4"


def _case_id(item: dict[str, Any]) -> str:
    from app.data import case_id_from_path

    if "case_id" in item:
        return str(item["case_id"])
    return case_id_from_path(item["image"][0] if isinstance(item["image"], list) else item["image"])


def n4_copy(src: Path, dest: Path, corrector: Any) -> Path:
    """Write ``dest``: the volume ``src`` after ``corrector`` (an :class:`app.transforms.N4BiasCorrection`,
    which keeps zero voxels zero; float32 NIfTI, ``src``'s affine and header). Atomic; an existing ``dest`` is kept (so a stopped run resumes).

    Raises:
        FileNotFoundError: ``src`` is missing.
        ValueError: ``src`` is not a 3D volume.
    """
    import nibabel as nib
    import numpy as np
    import torch

    from app.io.atomic import atomic_write_nifti

    if dest.is_file():
        return dest
    if not src.is_file():
        raise FileNotFoundError(f"'{src}': no such image (listed in the datalist)")
    image = nib.load(str(src))
    array = np.asarray(image.get_fdata(dtype=np.float32))
    if array.ndim != 3:
        raise ValueError(f"'{src}': N4 copies need 3D volumes (one file per sequence), got shape {array.shape}")
    out = np.asarray(corrector(torch.from_numpy(array[None])))[0].astype(np.float32)
    dest.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_nifti(out, image.affine, dest, header=image.header)


def n4_mixed_datalist(manifest: str | Path, data_dir: str | Path, out_dir: str | Path, shrink_factor: int = 6, iterations: Sequence[int] = (25, 25),
                      crop_foreground: bool = True, progress: Callable[[Iterable], Iterable] | None = None) -> Path:
    """N4-corrected copies of every labelled case of ``manifest`` and a datalist of both.

    Each image of each case (every list of ``SPLITS``) is corrected
    (:class:`app.transforms.N4BiasCorrection` with ``shrink_factor``, ``iterations`` and
    ``crop_foreground``; the defaults are the ``n4_params`` of bundle brats_unet3d, about 1 s a
    240 x 240 x 155 sequence on 2 cores) into ``out_dir/<case_id>_n4/<file name>``. The datalist
    ``out_dir/<manifest name>_n4mix.json`` lists each case twice: as given (absolute paths) and
    its copy (``case_id`` + ``_n4``; same label, same ``fold``, so a cross-validation fold keeps
    a case and its copy together). Train on it with ``volseg cv train --manifest <it>``; score
    cross-validation on the original manifest.

    Returns:
        The path of the written datalist.

    Raises:
        FileNotFoundError: the manifest or a listed image or label is missing (all checked
            before the first fit).
        ValueError: the manifest lists no case, or an image is not a 3D volume.

    A manifest without ``fold`` keys is warned about: the datalist then keeps none.
    """
    from app.io.atomic import atomic_write_text
    from app.transforms import N4BiasCorrection

    manifest, root, out = Path(manifest), Path(data_dir).resolve(), Path(out_dir).resolve()
    if not manifest.is_file():
        raise FileNotFoundError(f"manifest '{manifest}' does not exist")
    content = json.loads(manifest.read_text())
    if not any(content.get(split) for split in SPLITS):
        raise ValueError(f"manifest '{manifest}' lists no case under {', '.join(SPLITS)}")
    listed = [(item, p) for split in SPLITS for item in content.get(split, [])
              for p in (item["image"] if isinstance(item["image"], list) else [item["image"]]) + ([item["label"]] if "label" in item else [])]
    lacking = [f"{_case_id(item)}: {root / p}" for item, p in listed if not (root / p).exists()]
    if lacking:  # before the first N4 fit, not hours into a cohort
        raise FileNotFoundError(f"manifest '{manifest}': {len(lacking)} listed file(s) do not exist under '{root}' (first: {lacking[0]}); "
                                "nothing was corrected")
    if "training" in content and not any("fold" in item for item in content["training"]):
        logger.warning(f"manifest '{manifest}' has no 'fold' keys: the N4-mixed datalist keeps none, so `volseg cv train` cannot split it; "
                       "make a cross-validation datalist first (volseg cv folds)")
    corrector = N4BiasCorrection(shrink_factor, tuple(iterations), crop_foreground)
    mixed = {key: value for key, value in content.items() if not isinstance(value, list)}
    mixed["description"] = f"{content.get('description', manifest.name)}; each case also N4-corrected ({SUFFIX}; shrink {shrink_factor}, iterations {list(iterations)}, crop_foreground {crop_foreground})"
    for split in SPLITS:
        entries = []
        items = content.get(split, [])
        for item in progress(items) if progress else items:
            case = _case_id(item)
            images = item["image"] if isinstance(item["image"], list) else [item["image"]]
            given = {**item, "image": [str(root / p) for p in images]}
            if "label" in item:
                given["label"] = str(root / item["label"])
            copy = {**given, "case_id": case + SUFFIX, "image": [str(n4_copy(root / p, out / f"{case}{SUFFIX}" / Path(p).name, corrector)) for p in images]}
            entries += [given, copy]
        if split in content:
            mixed[split] = entries
            mixed[f"num{split.capitalize()}"] = len(entries)
    dest = out / f"{manifest.stem}_n4mix.json"
    atomic_write_text(dest, json.dumps(mixed, indent=2) + "\n")
    return dest
