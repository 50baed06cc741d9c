"""`volseg segment` on NRRD, MetaImage and DICOM input writes labels in the input geometry."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from typer.testing import CliRunner

from app.bundles import REPO_ROOT
from app.cli import app as cli
from tests.conftest import case_files
from tests.io.dicom_util import write_dicom_series


@pytest.mark.parametrize("fmt", ["nrrd", "mha", "dicom"])
def test_segment_other_formats(fmt: str, phantom_root: Path, tmp_path: Path):
    sources = case_files(phantom_root / "Phantom_002")
    inputs = []
    for i, src in enumerate(sources):
        image = sitk.ReadImage(str(src))
        if fmt == "dicom":
            folder = tmp_path / "Study_7" / f"series_{i}"
            write_dicom_series(image, folder, series_uid=f"1.2.826.0.1.3680043.2.1125.7.{i}", intercept=0.0)
            inputs.append(folder)
        else:
            inputs.append(tmp_path / f"Case7_{src.name.split('_')[-1].split('.')[0]}.{fmt}")
            sitk.WriteImage(image, str(inputs[-1]))
    out = tmp_path / "out"
    args = ["segment", *map(str, inputs), "--output", str(out), "--quiet", "--device", "cpu", "--dicom-seg"]
    if fmt == "dicom":  # series folders named series_0..3 say no sequence: --sequences maps them, in order; the study folder names the case
        args += ["--sequences", "t1,t1ce,t2,flair"]
    if fmt == "dicom":  # the real entry point, which marks Ignite, scikit-learn, matplotlib and scipy.signal absent
        done = subprocess.run([sys.executable, "-m", "app.cli", *args], capture_output=True, encoding="utf-8", errors="replace", cwd=REPO_ROOT, env={**os.environ, "VOLSEG_FULL_IMPORT": "0"})
        assert done.returncode == 0, done.stderr[-2000:]
    else:
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, result.output
    if fmt == "dicom":
        assert (out / "Study_7_seg.dcm").is_file()  # DICOM SEG beside the NIfTI label
        assert f"DICOM SEG: {out / 'Study_7_seg.dcm'}" in done.stdout
    written = [p for p in out.iterdir() if "_seg" in p.name and not p.name.endswith(".dcm")]
    assert len(written) == 1 and written[0].name == ("Study_7_seg.nii.gz" if fmt == "dicom" else f"Case7_seg.{fmt}")
    label, reference = sitk.ReadImage(str(written[0])), sitk.ReadImage(str(sources[0]))
    assert label.GetSize() == reference.GetSize() and label.GetPixelID() == sitk.sitkUInt8
    np.testing.assert_allclose(label.GetSpacing(), reference.GetSpacing(), atol=1e-5)
    np.testing.assert_allclose(label.GetOrigin(), reference.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(label.GetDirection(), reference.GetDirection(), atol=1e-6)
    assert set(np.unique(sitk.GetArrayFromImage(label))) <= {0, 1, 2, 4}
    if fmt == "nrrd":
        again = CliRunner().invoke(cli, ["segment", *map(str, inputs), "--output", str(out), "--quiet", "--output-format", "nifti"])
        assert again.exit_code == 0 and (out / written[0].name.replace(".nrrd", ".nii.gz")).is_file()
