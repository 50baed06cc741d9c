"""An output folder that is a case's own folder: the case's reference label is never written over,
nor taken as the run's result; a dataset folder used as the output folder resumes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from app.inference.batch import SegmentSettings, plan_batch


def test_the_reference_label_in_the_case_folder_is_neither_overwritten_nor_taken_as_a_result(phantom_root: Path, tmp_path: Path):
    """`volseg segment CASE -o CASE` replaced CASE/<case>_seg.nii.gz (the expert label) with --overwrite, and
    without it skipped the case and reported the expert label's volumes as the model's."""
    case = shutil.copytree(phantom_root / "Phantom_000", tmp_path / "Phantom_000")
    assert (case / "Phantom_000_seg.nii.gz").is_file()
    for overwrite in (True, False):
        [planned] = plan_batch([case], case, SegmentSettings(), overwrite=overwrite).cases
        assert planned.error is not None and not planned.todo
        assert "is a file beside the case's input files that VolSeg did not write" in planned.error
        assert "give an --output folder outside the case folder" in planned.error
    # a label VolSeg wrote there itself (listed in the run record) is resumed as before
    (case / "volseg_run.json").write_text(json.dumps({"cases": [{"case_id": "Phantom_000", "output": str(case / "Phantom_000_seg.nii.gz")}]}))
    [planned] = plan_batch([case], case, SegmentSettings(), overwrite=False).cases
    assert planned.error is None and planned.note.startswith("skipped:")


def test_a_dataset_folder_that_holds_the_labels_of_an_earlier_run_is_still_a_dataset_folder(phantom_root: Path, tmp_path: Path):
    """The second `volseg segment DATA -o DATA` failed: the label maps at the top made DATA look like a case folder."""
    data = tmp_path / "data"
    shutil.copytree(phantom_root / "Phantom_000", data / "Phantom_000")
    shutil.copy(data / "Phantom_000" / "Phantom_000_seg.nii.gz", data / "Phantom_000_seg.nii.gz")  # as a first run leaves it
    (data / "volseg_run.json").write_text(json.dumps({"cases": [{"case_id": "Phantom_000", "output": str(data / "Phantom_000_seg.nii.gz")}]}))
    [planned] = plan_batch([data], data, SegmentSettings(), overwrite=False).cases
    assert planned.case_id == "Phantom_000" and planned.error is None and planned.note.startswith("skipped:")
