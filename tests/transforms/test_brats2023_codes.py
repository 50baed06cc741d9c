"""BraTS 2023+ label maps (1 NCR, 2 edema, 3 ET) train and score as BraTS 2012-2021 ones (4 = ET):
MONAI's ``ConvertToMultiChannelBasedOnBratsClassesd`` knows only 4, so a 2023 reference read as it
is trained ET to nothing and scored ET against nothing (MONAI's ``MapLabelValued`` in the bundles'
preprocessing, :func:`app.transforms.brats2018_codes` in evaluation)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from app.bundle_config import bundle_parser
from app.data.phantom import make_brats_phantom
from app.transforms import brats2018_codes


def test_3_becomes_4_and_a_2018_map_keeps_its_values_type_and_dtype():
    out = brats2018_codes(np.array([0, 1, 2, 3], dtype=np.uint8))
    assert out.dtype == np.uint8 and out.tolist() == [0, 1, 2, 4]
    assert brats2018_codes(np.array([0, 1, 2, 4], dtype=np.uint8)).tolist() == [0, 1, 2, 4]
    tensor = MetaTensor(torch.tensor([[0.0, 3.0, 2.0]]), meta={"filename_or_obj": "x-seg.nii.gz"})
    out = brats2018_codes(tensor)
    assert isinstance(out, MetaTensor) and out.dtype == torch.float32 and out.tolist() == [[0.0, 4.0, 2.0]] and out.meta["filename_or_obj"] == "x-seg.nii.gz"


@pytest.mark.parametrize("bundle", ["brats_unet3d", "brats_deeplab3d"])
def test_the_bundles_training_preprocessing_gives_a_2023_reference_the_same_regions(bundle: str, tmp_path: Path):
    case = make_brats_phantom(tmp_path, "Phantom_000", shape=(40, 48, 36), seed=0)
    seg = nib.load(case / "Phantom_000_seg.nii.gz")
    codes = np.asarray(seg.dataobj)
    assert set(np.unique(codes)) == {0, 1, 2, 4}
    nib.save(nib.Nifti1Image(np.where(codes == 4, 3, codes).astype(np.uint8), seg.affine), tmp_path / "brats2023-seg.nii.gz")
    preprocessing = bundle_parser(bundle, "train").get_parsed_content("preprocessing_transforms")
    from monai.transforms import Compose

    images = [str(case / f"Phantom_000_{k}.nii.gz") for k in ("t1", "t1ce", "t2", "flair")]
    regions = {name: Compose(preprocessing)({"image": list(images), "label": str(path)})["label"]
               for name, path in (("2018", case / "Phantom_000_seg.nii.gz"), ("2023", tmp_path / "brats2023-seg.nii.gz"))}
    assert regions["2018"].shape[0] == 3 and regions["2018"][2].sum() > 0  # TC, WT, ET; the phantom has ET
    assert torch.equal(regions["2018"].as_tensor(), regions["2023"].as_tensor())


def test_volseg_evaluate_scores_a_2023_reference_as_the_2018_one(tmp_path: Path):
    from app.evaluation.report import evaluate_predictions

    case = make_brats_phantom(tmp_path / "data", "Phantom_000", shape=(40, 48, 36), seed=0)
    seg = nib.load(case / "Phantom_000_seg.nii.gz")
    codes = np.asarray(seg.dataobj).astype(np.uint8)
    pred = codes.copy()
    pred[(pred == 4) & (np.arange(pred.shape[0])[:, None, None] % 2 == 0)] = 1  # half the ET slices called NCR: ET Dice below 1
    (tmp_path / "pred").mkdir()
    nib.save(nib.Nifti1Image(pred, seg.affine), tmp_path / "pred" / "Phantom_000_seg.nii.gz")
    images = [str(case / f"Phantom_000_{k}.nii.gz") for k in ("t1", "t1ce", "t2", "flair")]
    rows = {}
    for name, ref in (("2018", codes), ("2023", np.where(codes == 4, 3, codes).astype(np.uint8))):
        nib.save(nib.Nifti1Image(ref, seg.affine), tmp_path / f"ref{name}-seg.nii.gz")
        rows[name] = evaluate_predictions(tmp_path / "pred", [{"case_id": "Phantom_000", "image": images, "label": str(tmp_path / f"ref{name}-seg.nii.gz")}])
    case_row = next(r for r in rows["2018"] if r["case"] == "Phantom_000")
    assert 0.3 < case_row["ET_dice"] < 0.9 and case_row["WT_dice"] == pytest.approx(1.0)
    assert rows["2018"] == rows["2023"]  # before: ET Dice 0 and WT below 1 against the 2023 reference
