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
