"""volseg evaluate: every format segment writes (.nii.gz, .nrrd, .mha), regions named from the
bundle, overlays of single-image (CT) items, and a prediction off its reference's grid."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from typer.testing import CliRunner

from app.cli import app as cli
from app.evaluation import evaluate_predictions
from app.io.writers import write_label_like
from app.labels import labels_of


def _ct_case(root: Path, case: str, fmt: str) -> dict:
    """A CT image and spleen reference in ``fmt`` (shape (24, 32, 40), spacing (0.8, 0.8, 2.5) mm)."""
    hu = np.full((40, 32, 24), -1000, np.int16)  # SimpleITK order (k, j, i)
    hu[5:35, 4:28, 3:21] = 40
    label = np.zeros(hu.shape, np.uint8)
    label[10:20, 8:16, 6:12] = 1
    label[25:30, 8:16, 6:12] = 7  # another organ: no region of the CT bundle
    paths = {}
    for name, array in (("image", hu), ("label", label)):
        image = sitk.GetImageFromArray(array)
        image.SetSpacing((0.8, 0.8, 2.5))
        image.SetOrigin((10.0, -4.0, 30.0))
        paths[name] = root / f"{name}s" / f"{case}{fmt}"
        paths[name].parent.mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(image, str(paths[name]))
    return {"case_id": case, "image": str(paths["image"]), "label": str(paths["label"])}


@pytest.mark.parametrize("fmt", [".nrrd", ".mha", ".nii.gz"])
def test_scores_predictions_in_every_written_format(tmp_path: Path, fmt: str):
    item = _ct_case(tmp_path / "data", "ct_001", fmt)
    ref = sitk.GetArrayFromImage(sitk.ReadImage(item["label"])).transpose(2, 1, 0)
    pred = (ref == 1).astype(np.uint8)
    pred[:, :, 12:14] = 0  # 2 of the 10 spleen slices along k missed
    written = write_label_like(pred, item["image"], tmp_path / "pred" / f"ct_001_seg{fmt}")
    assert written.name == f"ct_001_seg{fmt}"
    rows = evaluate_predictions(tmp_path / "pred", [item], csv_path=tmp_path / "m.csv", png_dir=tmp_path / "pred", labels=labels_of("ct_unet3d"))
    assert rows[0]["case"] == "ct_001" and [k for k in rows[0] if k.endswith("_dice")] == ["spleen_dice"]
    assert rows[0]["spleen_dice"] == pytest.approx(2 * 8 / 18, abs=1e-6)  # |P|=8, |R|=10 slices
    assert (tmp_path / "m.csv").read_text().startswith("case,spleen_dice,spleen_hd95")
    assert (tmp_path / "pred" / "ct_001_overlay.png").read_bytes()[:4] == b"\x89PNG"  # one image path, not its last character


def test_prediction_off_the_reference_grid_is_refused(tmp_path: Path):
    item = _ct_case(tmp_path / "data", "ct_001", ".nii.gz")
    image = sitk.ReadImage(item["label"])
    image.SetSpacing((1.0, 0.8, 2.5))
    (tmp_path / "pred").mkdir()
    sitk.WriteImage(image, str(tmp_path / "pred" / "ct_001_seg.nrrd"))
    with pytest.raises(ValueError, match="not on the grid of its reference"):
        evaluate_predictions(tmp_path / "pred", [item], labels=labels_of("ct_unet3d"))


def test_cli_evaluate_names_regions_from_the_bundle(tmp_path: Path):
    data = tmp_path / "data"
    item = _ct_case(data, "ct_001", ".nii.gz")
    manifest = tmp_path / "m.json"
    rel = {k: str(Path(item[k]).relative_to(data)) for k in ("image", "label")}
    manifest.write_text(json.dumps({"training": [{"case_id": "ct_001", **rel}], "validation": [], "test": []}))
    ref = sitk.GetArrayFromImage(sitk.ReadImage(item["label"])).transpose(2, 1, 0)
    write_label_like((ref == 1).astype(np.uint8), item["image"], tmp_path / "pred" / "ct_001_seg.mha")
    args = ["evaluate", "--pred", str(tmp_path / "pred"), "--manifest", str(manifest), "--data-dir", str(data), "--bundle", "ct_unet3d"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "spleen dice" in result.output and "WT" not in result.output
    empty = CliRunner().invoke(cli, [*args, "--split", "test"])
    assert empty.exit_code == 2 and "hold no case" in empty.output


def test_evaluate_warns_on_unknown_values_missing_predictions_and_undefined_means(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    """A prediction in other label codes was scored as if they were background, cases without a
    prediction left the mean at INFO level (hidden by --quiet), and the mean row's precision left
    out an empty prediction: each is a warning now."""
    labels = labels_of("ct_unet3d")
    items = [_ct_case(tmp_path / "data", case, ".nii.gz") for case in ("ct_001", "ct_002", "ct_003")]
    ref = sitk.GetArrayFromImage(sitk.ReadImage(items[0]["label"])).transpose(2, 1, 0)
    pred = (ref == 1).astype(np.uint8)
    pred[0:2, 0:2, 0:2] = 2  # a code the bundle does not have
    write_label_like(pred, items[0]["image"], tmp_path / "pred" / "ct_001_seg.nii.gz")
    write_label_like(np.zeros_like(ref), items[1]["image"], tmp_path / "pred" / "ct_002_seg.nii.gz")  # empty: precision undefined
    rows = evaluate_predictions(tmp_path / "pred", items, labels=labels)
    text = " ".join(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    assert "case 'ct_001': prediction" in text and "has the value(s) 2, which are no label of the bundle (0, 1); they are scored as background" in text
    assert "1 manifest case(s) have no prediction" in text and "ct_003" in text
    assert "the mean row leaves out cases where a metric is undefined" in text and "spleen_precision over 1 of 2 cases" in text
    assert rows[0]["spleen_dice"] == 1.0 and rows[-1]["case"] == "mean" and rows[-1]["spleen_precision"] == 1.0


def test_the_off_grid_message_names_origin_and_direction(tmp_path: Path):
    item = _ct_case(tmp_path / "data", "ct_001", ".nii.gz")
    image = sitk.ReadImage(item["label"])
    image.SetOrigin((20.0, -4.0, 30.0))  # shifted 10 mm: size and spacing alike
    (tmp_path / "pred").mkdir()
    sitk.WriteImage(image, str(tmp_path / "pred" / "ct_001_seg.nii.gz"))
    with pytest.raises(ValueError, match=r"origin \(20, -4, 30\) mm.*origin \(10, -4, 30\) mm"):
        evaluate_predictions(tmp_path / "pred", [item], labels=labels_of("ct_unet3d"))


def test_one_bad_prediction_does_not_stop_the_others(tmp_path: Path):
    """A prediction off its grid or cut short stopped the whole run: no table, no metrics.csv."""
    from app.evaluation import CasesFailed

    items = [_ct_case(tmp_path / "data", case, ".nii.gz") for case in ("ct_001", "ct_002", "ct_003")]
    ref = sitk.GetArrayFromImage(sitk.ReadImage(items[0]["label"])).transpose(2, 1, 0)
    write_label_like((ref == 1).astype(np.uint8), items[0]["image"], tmp_path / "pred" / "ct_001_seg.nii.gz")
    off = sitk.ReadImage(items[1]["label"])
    off.SetSpacing((1.0, 0.8, 2.5))
    sitk.WriteImage(off, str(tmp_path / "pred" / "ct_002_seg.nii.gz"))
    cut = write_label_like((ref == 1).astype(np.uint8), items[2]["image"], tmp_path / "pred" / "ct_003_seg.nii.gz")
    cut.write_bytes(cut.read_bytes()[:200])
    with pytest.raises(CasesFailed) as failed:
        evaluate_predictions(tmp_path / "pred", items, csv_path=tmp_path / "m.csv", labels=labels_of("ct_unet3d"))
    assert [r["case"] for r in failed.value.rows] == ["ct_001", "mean"] and failed.value.rows[0]["spleen_dice"] == 1.0
    assert len(failed.value.failures) == 2 and "case 'ct_002': prediction" in failed.value.failures[0]
    assert "not on the grid" in failed.value.failures[0] and "ct_003_seg.nii.gz" in failed.value.failures[1]
    assert [line.split(",")[0] for line in (tmp_path / "m.csv").read_text().splitlines()] == ["case", "ct_001", "mean"]
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps({"training": [{"case_id": i["case_id"], "image": i["image"], "label": i["label"]} for i in items], "validation": [], "test": []}))
    result = CliRunner().invoke(cli, ["evaluate", "--pred", str(tmp_path / "pred"), "--manifest", str(manifest), "--bundle", "ct_unet3d",
                                      "--data-dir", str(tmp_path)])
    assert result.exit_code == 1 and "ct_001" in result.output and "2 case(s) could not be scored (the table and the mean leave them out)" in result.output


def test_output_paths_and_prediction_folder_are_checked_before_scoring(tmp_path: Path):
    from app.api import evaluate

    item = _ct_case(tmp_path / "data", "ct_001", ".nii.gz")
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps({"training": [{"case_id": "ct_001", "image": item["image"], "label": item["label"]}]}))
    ref = sitk.GetArrayFromImage(sitk.ReadImage(item["label"])).transpose(2, 1, 0)
    write_label_like((ref == 1).astype(np.uint8), item["image"], tmp_path / "pred" / "ct_001_seg.nii.gz")
    (tmp_path / "afile").write_text("")
    with pytest.raises(ValueError, match="cannot write --csv '.*m.csv': '.*afile' is a file"):
        evaluate(tmp_path / "pred", manifest, tmp_path, ["training"], csv_path=tmp_path / "afile" / "m.csv", bundle="ct_unet3d")
    with pytest.raises(ValueError, match="is a folder; give a file name"):
        evaluate(tmp_path / "pred", manifest, tmp_path, ["training"], csv_path=tmp_path / "pred", bundle="ct_unet3d")
    with pytest.raises(FileNotFoundError, match="prediction folder '.*nosuch' does not exist"):
        evaluate(tmp_path / "nosuch", manifest, tmp_path, ["training"], bundle="ct_unet3d")
    Path(item["image"]).unlink()  # scoring needs the labels only; the overlays need the images
    assert evaluate(tmp_path / "pred", manifest, tmp_path, ["training"], bundle="ct_unet3d")[0]["spleen_dice"] == 1.0
    with pytest.raises(FileNotFoundError, match="name files that do not exist"):
        evaluate(tmp_path / "pred", manifest, tmp_path, ["training"], bundle="ct_unet3d", png_dir=tmp_path / "pred")
    (tmp_path / "pred" / "ct_001_seg.nii.gz").rename(tmp_path / "pred" / "ct_001.nii.gz")  # nnU-Net's names
    with pytest.raises(FileNotFoundError, match="holds 1 label map\\(s\\) such as 'ct_001.nii.gz': name each '<case_id>_seg.nii.gz'"):
        evaluate(tmp_path / "pred", manifest, tmp_path, ["training"], bundle="ct_unet3d")


@pytest.mark.parametrize("stored", ["LPS", "RAS"])
def test_overlay_is_radiological_whatever_the_file_orientation(tmp_path: Path, stored: str):
    """evaluate --png drew BraTS cases (stored L, P, S) with anterior at the bottom."""
    import matplotlib.image

    from app.evaluation.overlay import save_overlay

    lps = np.random.default_rng(0).uniform(50, 150, (10, 40, 30)).astype(np.float32)  # (k, j, i) in LPS: j grows to posterior, i to the patient's left
    label = np.zeros(lps.shape, np.uint8)
    label[5, 2:8, 20:26] = 2  # anterior (small j), on the patient's left (large i)
    image = sitk.GetImageFromArray(lps)
    image.SetSpacing((1.0, 1.0, 3.0))
    lab = sitk.GetImageFromArray(label)
    lab.CopyInformation(image)
    if stored == "RAS":
        image, lab = sitk.DICOMOrient(image, "RAS"), sitk.DICOMOrient(lab, "RAS")
    sitk.WriteImage(image, str(tmp_path / "flair.nii.gz"))
    array = sitk.GetArrayFromImage(lab).transpose(2, 1, 0)  # (i, j, k) of the stored file
    png = save_overlay(tmp_path / "flair.nii.gz", array, None, tmp_path / "o.png", label_names={1: "NCR/NET", 2: "ED"})
    rgb = matplotlib.image.imread(png)[..., :3]
    green = (rgb[..., 1] > rgb[..., 0] + 0.15) & (rgb[..., 1] > rgb[..., 2] + 0.15)  # the ED overlay over grey
    rows, cols = np.nonzero(green)
    image_rows = np.nonzero((rgb.min(axis=2) < 0.9).mean(axis=1) > 0.55)[0]  # rows mostly covered by the image (not titles)
    image_cols = np.nonzero((rgb.min(axis=2) < 0.9)[image_rows].mean(axis=0) > 0.9)[0]
    assert rows.size > 50
    assert rows.mean() < (image_rows.min() + image_rows.max()) / 2  # anterior up
    assert cols.mean() > (image_cols.min() + image_cols.max()) / 2  # the patient's left on the viewer's right


def test_a_prediction_in_another_axis_order_or_a_hair_off_is_scored(tmp_path: Path):
    """A label written as RAS (the reference LPS) or with an origin off by 0.01 mm was refused."""
    item = _ct_case(tmp_path / "data", "ct_001", ".nii.gz")
    ref = sitk.ReadImage(item["label"])
    spleen = sitk.Cast(ref == 1, sitk.sitkUInt8)
    (tmp_path / "ras").mkdir()
    sitk.WriteImage(sitk.DICOMOrient(spleen, "RAS"), str(tmp_path / "ras" / "ct_001_seg.nii.gz"))
    assert evaluate_predictions(tmp_path / "ras", [item], labels=labels_of("ct_unet3d"))[0]["spleen_dice"] == 1.0
    shifted = sitk.Image(spleen)
    shifted.SetOrigin((10.01, -4.0, 30.0))
    (tmp_path / "hair").mkdir()
    sitk.WriteImage(shifted, str(tmp_path / "hair" / "ct_001_seg.nii.gz"))
    assert evaluate_predictions(tmp_path / "hair", [item], labels=labels_of("ct_unet3d"))[0]["spleen_dice"] == 1.0
    shifted.SetOrigin((10.4, -4.0, 30.0))  # half a voxel: another grid, refused with the numbers as they are
    sitk.WriteImage(shifted, str(tmp_path / "hair" / "ct_001_seg.nii.gz"))
    with pytest.raises(ValueError, match=r"origin \(10.4, -4, 30\) mm.*origin \(10, -4, 30\) mm"):
        evaluate_predictions(tmp_path / "hair", [item], labels=labels_of("ct_unet3d"))


def test_reference_codes_and_a_missing_bundle_are_warned_about(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    """A reference in BraTS 2023 codes, or CT items scored as BraTS without --bundle, gave figures without a word."""
    from app.api import evaluate

    item = _ct_case(tmp_path / "data", "ct_001", ".nii.gz")  # its reference holds the codes 1 and 7
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps({"training": [{"case_id": "ct_001", "image": item["image"], "label": item["label"]}], "validation": [], "test": []}))
    ref = sitk.GetArrayFromImage(sitk.ReadImage(item["label"])).transpose(2, 1, 0)
    write_label_like((ref == 1).astype(np.uint8), item["image"], tmp_path / "pred" / "ct_001_seg.nii.gz")
    evaluate(tmp_path / "pred", manifest, tmp_path, ["training"], bundle="ct_unet3d")
    assert "reference '" in caplog.text and "has the value(s) 7, which are no label of the bundle (0, 1)" in caplog.text
    assert "no bundle given" not in caplog.text
    evaluate(tmp_path / "pred", manifest, tmp_path, ["training"])
    assert "no bundle given: scoring the BraTS regions (WT, TC, ET), but the items of" in caplog.text and "1 image(s) each" in caplog.text
