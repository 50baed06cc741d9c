"""--resample: a case whose sequences lie on different grids of one session is segmented on its finest grid."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from typer.testing import CliRunner

from app.cli import app as cli
from app.inference.align import align_case, grid_reference
from tests.conftest import case_files


def _thicken(path: Path, factor: int = 3) -> None:
    """Rewrite ``path`` as a 2D acquisition: slabs of ``factor`` slices, one voxel each."""
    image = sitk.ReadImage(str(path), sitk.sitkFloat32)
    size, spacing = image.GetSize(), image.GetSpacing()
    origin = image.TransformContinuousIndexToPhysicalPoint((0.0, 0.0, (factor - 1) / 2))
    thick = sitk.Resample(sitk.BoxMean(image, [0, 0, factor // 2]), [size[0], size[1], size[2] // factor], sitk.Transform(), sitk.sitkLinear,
                          origin, (spacing[0], spacing[1], spacing[2] * factor), image.GetDirection(), 0.0, sitk.sitkInt16)
    sitk.WriteImage(thick, str(path), True)


@pytest.fixture()
def mixed_case(phantom_root: Path, tmp_path: Path) -> Path:
    """Phantom_000 with T1 and FLAIR as 4.5 mm slices; T1ce and T2 on the 1.5 mm grid."""
    case = tmp_path / "Phantom_000"
    shutil.copytree(phantom_root / "Phantom_000", case)
    for seq in ("t1", "flair"):
        _thicken(case / f"Phantom_000_{seq}.nii.gz")
    return case


def test_the_finest_grid_is_kept_and_the_others_are_resampled_onto_it(mixed_case: Path, phantom_root: Path, tmp_path: Path):
    images = [str(p) for p in case_files(mixed_case)]
    assert grid_reference([str(p) for p in case_files(phantom_root / "Phantom_000")]) is None  # one grid: nothing to do
    reference = grid_reference(images)
    assert reference.endswith("Phantom_000_t1ce.nii.gz")  # the first of the finest, not the first file
    aligned, record = align_case([images[0], images[1], None, images[3]], reference, tmp_path, ("t1", "t1ce", "t2", "flair"))
    assert aligned[1] == reference and aligned[2] is None and all(Path(p).parent == tmp_path for p in (aligned[0], aligned[3]))
    assert record["resampled"] == {"t1": "40 x 48 x 12 voxels of 1 x 0.9 x 4.5 mm", "flair": "40 x 48 x 12 voxels of 1 x 0.9 x 4.5 mm"}
    assert record["grid_size"] == [40, 48, 36] and record["spacing_mm"] == [1.0, 0.9, 1.5]
    shape = nib.load(reference).shape
    assert all(nib.load(p).shape == shape for p in aligned if p is not None)


def test_cli_refuses_mixed_grids_with_the_way_out_and_segments_them_with_resample(mixed_case: Path, tmp_path: Path):
    refused = CliRunner().invoke(cli, ["segment", str(mixed_case), "--output", str(tmp_path / "plain"), "--quiet"])
    assert refused.exit_code == 1 and "Phantom_000_t1.nii.gz" in refused.output and "volseg segment --resample" in refused.output
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["segment", str(mixed_case), "--output", str(out), "--quiet", "--resample", "--report"])
    assert result.exit_code == 0, result.output
    assert "resampled onto the grid of Phantom_000_t1ce.nii.gz (40 x 48 x 36 voxels of 1 x 0.9 x 1.5 mm): t1 (40 x 48 x 12" in result.output
    label, reference = nib.load(out / "Phantom_000_seg.nii.gz"), nib.load(mixed_case / "Phantom_000_t1ce.nii.gz")
    assert label.shape == reference.shape and np.allclose(label.affine, reference.affine)
    assert set(np.unique(np.asarray(label.dataobj))) <= {0, 1, 2, 4}
    entry = json.loads((out / "volseg_run.json").read_text())["cases"][0]
    assert entry["error"] is None and entry["resampled"]["grid"].endswith("Phantom_000_t1ce.nii.gz")
    assert sorted(entry["resampled"]["resampled"]) == ["flair", "t1"] and entry["volumes_ml"]["WT"] >= 0
    assert sorted(p.name for p in out.iterdir()) == ["Phantom_000_seg.nii.gz", "report.html", "volseg_run.json", "volumes.csv"]  # copies not left here
    report = (out / "report.html").read_text(encoding="utf-8")
    assert report.count('<img class="overlay"') == 3 and "no overlay" not in report  # the 4.5 mm FLAIR resampled under the label's grid


def test_api_segment_with_resample_answers_on_the_finest_grid(mixed_case: Path):
    from app.api import segment
    from app.data.verify import InputError

    with pytest.raises(InputError, match="volseg segment --resample"):
        segment(mixed_case, backend="torch")
    label, affine = segment(mixed_case, backend="torch", resample=True)
    reference = nib.load(mixed_case / "Phantom_000_t1ce.nii.gz")
    assert label.shape == reference.shape and np.allclose(affine, reference.affine)
