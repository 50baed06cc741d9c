"""BraTS 2023+ lesion-wise metrics through the official `brats-evaluation` package (optional extra)."""

from __future__ import annotations

import csv
import math
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from app.evaluation import lesionwise
from app.evaluation.lesionwise import check_ready, crop_to_foreground, lesion_metrics, to_brats2023
from app.labels import BRATS, labels_of
from tests.conftest import SHARED_BRATS

SPACING = (0.8, 0.9, 2.5)


def _two_lesions(shape=(40, 48, 36)) -> np.ndarray:
    """Reference: two separate tumours, each edema around an enhancing core."""
    ref = np.zeros(shape, dtype=np.uint8)
    ref[4:14, 4:14, 4:12] = 2
    ref[7:11, 7:11, 6:10] = 4
    ref[24:34, 30:40, 20:28] = 2
    ref[27:31, 33:37, 22:26] = 4
    return ref


def test_brats2018_codes_become_2023_codes():
    label = np.array([[[0, 1, 2, 4]]], dtype=np.uint8)
    np.testing.assert_array_equal(to_brats2023(label), [[[0, 1, 2, 3]]])
    with pytest.raises(ValueError, match=r"\[3\] are no BraTS 2018 codes"):
        to_brats2023(np.array([[[3]]], dtype=np.uint8))


def test_crop_keeps_a_margin_and_handles_empty_maps():
    ref = _two_lesions()
    pred, cut = crop_to_foreground(ref, ref, margin=2)
    assert cut.shape == (34, 40, 28)  # rows 2..35, 2..41, 2..29
    assert (cut > 0).sum() == (ref > 0).sum() and not cut[0].any() and not cut[:, :, -1].any()
    empty = np.zeros((5, 6, 7), dtype=np.uint8)
    assert crop_to_foreground(empty, empty)[0].shape == (1, 1, 1)


def test_non_brats_bundle_is_refused_before_any_case():
    with pytest.raises(ValueError, match=r"BraTS label maps \(labels 1, 2, 4\), not labels \[1\]"):
        check_ready(labels_of("ct_unet3d"))


def test_missing_package_says_how_to_install(monkeypatch):
    lesionwise.evaluator.cache_clear()
    monkeypatch.setitem(sys.modules, "brats_evaluation", None)
    try:
        with pytest.raises(ImportError, match=r'pip install "volseg\[lesion\]"'):
            check_ready(BRATS)
    finally:
        lesionwise.evaluator.cache_clear()


def test_detected_missed_and_false_lesions():
    pytest.importorskip("brats_evaluation")
    ref = _two_lesions()
    pred = np.zeros_like(ref)
    pred[5:15, 4:14, 4:12] = 2  # the first tumour, shifted by one voxel; the second one missed
    pred[8:12, 7:11, 6:10] = 4
    pred[30:34, 4:8, 28:32] = 2  # a false positive lesion far from both
    m = lesion_metrics(pred, ref, SPACING)
    # WT: one match (Dice 9/10 along the 10-voxel axis), one miss, one false lesion: F1 2/(2+1+1).
    assert m["WT_dice_lesionwise"] == pytest.approx(0.9) and m["WT_f1_lesionwise"] == pytest.approx(0.5)
    assert m["WT_hd95_lesionwise"] == pytest.approx(0.8)  # one voxel along the 0.8 mm axis
    assert m["ET_dice_lesionwise"] == pytest.approx(0.75) and m["ET_f1_lesionwise"] == pytest.approx(2 / 3)
    assert m["TC_dice_lesionwise"] == m["ET_dice_lesionwise"]  # no necrosis: TC is ET here
    # the BraTS 2023 ranking form: the missed and the false lesion count as Dice 0 and HD95 374 mm
    assert m["WT_dice_lesionwise_brats23"] == pytest.approx(0.9 / 3) and m["WT_hd95_lesionwise_brats23"] == pytest.approx((0.8 + 2 * 374) / 3)
    empty = lesion_metrics(np.zeros_like(ref), np.zeros_like(ref), SPACING)
    assert all(math.isnan(v) for k, v in empty.items() if not k.endswith("_brats23"))  # the package's "no instances" case
    assert all(empty[f"{r}_dice_lesionwise_brats23"] == 1.0 and empty[f"{r}_hd95_lesionwise_brats23"] == 0.0 for r in ("WT", "TC", "ET"))
    missed = lesion_metrics(np.zeros_like(ref), ref, SPACING)
    assert missed["WT_dice_lesionwise"] == 0 and missed["WT_hd95_lesionwise"] == math.inf and missed["WT_f1_lesionwise"] == 0
    assert missed["WT_dice_lesionwise_brats23"] == 0 and missed["WT_hd95_lesionwise_brats23"] == 374.0


def test_cropping_does_not_change_the_packages_numbers():
    pytest.importorskip("brats_evaluation")
    ref = _two_lesions()
    pred = np.roll(ref, 2, axis=2)
    pred[1:3, 40:44, 1:3] = 4  # a false lesion touching the box corner
    full = lesionwise.evaluator().evaluate(to_brats2023(pred), to_brats2023(ref), voxelspacing=SPACING, verbose=False)
    ours = lesion_metrics(pred, ref, SPACING)
    for region, group in lesionwise.REGION_GROUPS.items():
        result = full[group].to_dict(True)
        for name, key in lesionwise.LESION_METRICS.items():
            assert ours[f"{region}_{name}"] == result[key], (region, name)


def test_cli_evaluate_lesion_wise(phantom_root: Path, phantom_manifest: Path, tmp_path: Path):
    pytest.importorskip("brats_evaluation")
    from app.cli import app as cli

    pred_dir = tmp_path / "preds"
    pred_dir.mkdir()
    for case in sorted(phantom_root.iterdir())[:2]:
        ref = nib.load(case / f"{case.name}_seg.nii.gz")
        nib.save(nib.Nifti1Image(np.roll(np.asarray(ref.dataobj), 1, axis=0), ref.affine, ref.header), pred_dir / f"{case.name}_seg.nii.gz")
    result = CliRunner().invoke(cli, ["evaluate", "--pred", str(pred_dir), "--manifest", str(phantom_manifest), "--data-dir", str(phantom_root), "--lesion-wise", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "lesion-wise (brats-evaluation " in result.output and "WT dice lesionwise" in result.output
    rows = list(csv.DictReader((pred_dir / "metrics.csv").open()))
    assert [r["case"] for r in rows][-1] == "mean" and len(rows) == 3
    assert all(0.5 < float(r["WT_dice_lesionwise"]) <= 1 and float(r["WT_f1_lesionwise"]) == 1.0 for r in rows[:-1])


#: The package's `brats-evaluate` entry point (``brats_evaluation.evaluation:main``), run as its console
#: script does, with one workaround: with NumPy >= 2.3 (VolSeg's; panoptica pins < 2.3)
#: ``np.count_nonzero`` returns a NumPy integer, which ``json.dump`` of the summary refuses; the
#: encoder is taught to write NumPy scalars as Python numbers. No number is changed by it.
BRATS_EVALUATE = """
import json, sys
import numpy as np
_default = json.JSONEncoder.default
json.JSONEncoder.default = lambda self, o: o.item() if isinstance(o, np.generic) else _default(self, o)
from brats_evaluation.evaluation import main
sys.argv = ["brats-evaluate", *sys.argv[1:]]
main()
"""


def _write_like(label: np.ndarray, like: nib.Nifti1Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(label.astype(np.uint8), like.affine, like.header), path)


@pytest.mark.real_data
@pytest.mark.slow
@pytest.mark.skipif(not SHARED_BRATS.is_dir(), reason=f"no BraTS data at {SHARED_BRATS}")
def test_matches_the_packages_command_line_on_a_real_case(tmp_path: Path):
    """A perturbed reference of a real BraTS 2018 case, scored by `volseg evaluate --lesion-wise`
    and by the package's own `brats-evaluate` + `brats-parse-metrics seg` on 2023-coded copies."""
    pytest.importorskip("brats_evaluation")
    from scipy import ndimage

    from app.evaluation import evaluate_predictions

    case = "Brats18_CBICA_AME_1"
    ref_img = nib.load(SHARED_BRATS / case / f"{case}_seg.nii.gz")
    ref = np.asarray(ref_img.dataobj).astype(np.uint8)
    pred = np.roll(ref, 3, axis=0)  # a 3 mm shift
    pred[ndimage.binary_erosion(pred == 4, iterations=1) & (np.arange(ref.shape[2]) % 7 == 0)[None, None, :]] = 1  # split ET lesions
    pred[60:64, 60:64, 60:64] = 4  # a false enhancing lesion
    _write_like(pred, ref_img, tmp_path / "ours" / f"{case}_seg.nii.gz")
    item = {"case_id": case, "image": [str(SHARED_BRATS / case / f"{case}_{m}.nii.gz") for m in ("t1", "t1ce", "t2", "flair")],
            "label": str(SHARED_BRATS / case / f"{case}_seg.nii.gz")}
    start = time.perf_counter()
    row = evaluate_predictions(tmp_path / "ours", [item], lesion_wise=True)[0]
    print(f"volseg lesion-wise: {time.perf_counter() - start:.1f} s for one case")

    subject = "BraTS-GLI-00001-000.nii.gz"  # the package's CLI pairs files by a BraTS 2023 subject ID
    _write_like(to_brats2023(ref), ref_img, tmp_path / "ref" / subject)
    _write_like(to_brats2023(pred), ref_img, tmp_path / "pred" / subject)
    start = time.perf_counter()
    args = ["--config", "gli", "--ref_path", str(tmp_path / "ref"), "--pred_path", str(tmp_path / "pred"), "--summary_json", str(tmp_path / "summary.json")]
    subprocess.run([sys.executable, "-c", BRATS_EVALUATE, *args], check=True, capture_output=True, timeout=900)
    subprocess.run([str(Path(sys.executable).parent / "brats-parse-metrics"), "seg", "--json_path", str(tmp_path / "summary.json"),
                    "--output_csv_path", str(tmp_path / "official.csv")], check=True, capture_output=True, timeout=300)
    print(f"package command line: {time.perf_counter() - start:.1f} s for one case")
    official = next(csv.DictReader((tmp_path / "official.csv").open()))
    assert official["subject_id"] == subject
    for region, group in lesionwise.REGION_GROUPS.items():
        for ours, theirs in (("dice_lesionwise", "lesionwise_dsc_mean"), ("hd95_lesionwise", "lesionwise_hd95_mean"), ("f1_lesionwise", "all_instance_f1")):
            assert row[f"{region}_{ours}"] == pytest.approx(float(official[f"{theirs}_{group}"]), rel=1e-9, abs=1e-12), (region, ours)
        assert float(official[f"global_dsc_{group}"]) == pytest.approx(row[f"{region}_dice"], abs=1e-6)  # voxel-wise Dice agrees too
    assert 0 < row["ET_dice_lesionwise"] < 1 and row["ET_f1_lesionwise"] < 1  # the perturbation is seen


def test_brats23_lesion_scores_follow_the_challenge_code():
    """The BraTS 2023 ranking form (Saluja et al.'s code, BraTS-GLI): reference components within 3
    voxels are one lesion, lesions of <= 50 mm^3 are left out, false components count as Dice 0 / HD95
    374 mm. Derived from panoptica's counts before, a tumour found exactly beside three reference
    specks scored 0.25."""
    from app.evaluation.lesionwise import brats23_lesion_scores

    ref = np.zeros((60, 60, 40), bool)
    ref[10:30, 10:30, 10:25] = True  # 6,000 voxels of 1 mm^3
    ref[50, 50, 5] = ref[55, 5, 35] = True  # specks far from it
    ref[2:4, 50:55, 30:31] = True  # 10 voxels
    found = brats23_lesion_scores(ref & (np.indices(ref.shape)[0] < 40), ref, (1.0, 1.0, 1.0))  # the tumour, no speck
    assert found == {"dice": 1.0, "hd95": 0.0, "tp": 1, "fn": 0, "fp": 0}
    halves = np.zeros_like(ref)
    halves[10:20, 10:30, 10:25] = halves[22:30, 10:30, 10:25] = True  # two components 2 voxels apart: one lesion
    one_half = np.zeros_like(ref)
    one_half[10:20, 10:30, 10:25] = True
    merged = brats23_lesion_scores(one_half, halves, (1.0, 1.0, 1.0))
    assert merged["tp"] == 1 and merged["fn"] == 0 and merged["dice"] == pytest.approx(2 * 3000 / (3000 + 5400))
    near = one_half.copy()
    near[10:20, 32:34, 10:12] = True  # 2 voxels off the lesion, not touching it: matched through its dilation
    alone = brats23_lesion_scores(near, one_half, (1.0, 1.0, 1.0))
    assert alone["tp"] == 1 and alone["fp"] == 0 and alone["dice"] == pytest.approx(2 * 3000 / (3000 + 3040))
    false = near.copy()
    false[40:44, 40:44, 30:34] = True  # far from the lesion: a false positive
    scored = brats23_lesion_scores(false, one_half, (1.0, 1.0, 1.0))
    assert scored["tp"] == 1 and scored["fp"] == 1
    assert scored["dice"] == pytest.approx(alone["dice"] / 2) and scored["hd95"] == pytest.approx((alone["hd95"] + 374) / 2)
    empty = np.zeros_like(ref)
    assert brats23_lesion_scores(empty, empty) == {"dice": 1.0, "hd95": 0.0, "tp": 0, "fn": 0, "fp": 0}
    speck = np.zeros_like(ref)
    speck[50, 50, 5] = True
    assert brats23_lesion_scores(empty, speck)["dice"] == 1.0  # only a lesion under 50 mm^3: nothing counted
    assert brats23_lesion_scores(empty, ref) == {"dice": 0.0, "hd95": 374.0, "tp": 0, "fn": 1, "fp": 0}
    assert brats23_lesion_scores(speck, empty) == {"dice": 0.0, "hd95": 374.0, "tp": 0, "fn": 0, "fp": 1}
    assert brats23_lesion_scores(empty, ref, (2.0, 2.0, 2.0))["fn"] == 2  # the 10-voxel lesion is 80 mm^3 at 2 mm
