"""The bundle inference workflow (``python -m monai.bundle run``) goes on past a case it cannot read,
and ends with an error that names it once the other cases are written."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.data.verify import InputError
from app.errors import CasesFailedError
from app.inference.workflow import CaseSkippingDataset


def _fails_on_b(item: dict) -> dict:
    if item["image"][0].startswith("b"):
        raise InputError(f"file '{item['image'][0]}' is truncated")
    return {"image": item["image"][0].upper()}


def test_the_dataset_yields_the_readable_cases_and_names_the_others():
    data = [{"image": ["a/A_001_t1.nii.gz"]}, {"image": ["b/B_002_t1.nii.gz", None]}, {"image": ["c/C_003_t1.nii.gz"]}]
    dataset = CaseSkippingDataset(data, _fails_on_b)
    assert [d["image"] for d in dataset] == ["A/A_001_T1.NII.GZ", "C/C_003_T1.NII.GZ"]
    assert dataset.failed == [("B_002", "b/B_002_t1.nii.gz", "InputError: file 'b/B_002_t1.nii.gz' is truncated")]
    with pytest.raises(CasesFailedError, match=r"^1 of 3 case\(s\) failed and were skipped; the other 2 were segmented and written\. "
                                           r"Failed: B_002: InputError: file 'b/B_002_t1.nii.gz' is truncated \[b/B_002_t1.nii.gz\]$"):
        dataset.raise_failures()
    again = list(dataset)  # a second pass starts a new list
    assert len(again) == 2 and len(dataset.failed) == 1
    CaseSkippingDataset(data[:1], _fails_on_b).raise_failures()  # nothing failed: no error


@pytest.mark.slow
def test_monai_runner_segments_the_other_cases_and_names_the_bad_one(phantom_copies: list[Path], tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture):
    from monai.bundle.scripts import run

    from app.bundles import bundle_dir

    bad = phantom_copies[1] / f"{phantom_copies[1].name}_flair.nii.gz"
    bad.write_bytes(bad.read_bytes()[:2000])  # a truncated gzip stream
    monkeypatch.chdir(bundle_dir("brats_unet3d"))
    out = tmp_path / "out"
    with pytest.raises(Exception) as failed:  # MONAI's runner may wrap the workflow's error
        run(config_file="configs/inference.yaml", meta_file="configs/metadata.json", dataset_dir=str(phantom_copies[0].parent),
            output_dir=str(out), logging_file=False)
    text = f"{failed.value} {failed.value.__cause__}"
    assert "1 of 3 case(s) failed and were skipped; the other 2 were segmented and written" in text
    assert f"Phantom_001: InputError: case 'Phantom_001': FLAIR file '{bad}' is truncated" in text  # the reader's own message, not MONAI's wrapper
    assert sorted(p.name for p in out.iterdir()) == ["Phantom_000_seg.nii.gz", "Phantom_002_seg.nii.gz"]
    assert caplog.text.count("case Phantom_001 failed and is skipped (the other cases go on)") == 1  # read once, not again

    for case in (phantom_copies[0], phantom_copies[2]):  # every case bad: the same error, nothing written
        (case / f"{case.name}_t1.nii.gz").write_bytes(b"not a volume")
    with pytest.raises(Exception) as failed:
        run(config_file="configs/inference.yaml", meta_file="configs/metadata.json", dataset_dir=str(phantom_copies[0].parent),
            output_dir=str(tmp_path / "none"), logging_file=False)
    assert "3 of 3 case(s) failed and were skipped; the other 0 were segmented and written" in f"{failed.value} {failed.value.__cause__}"
    assert not (tmp_path / "none").exists() or not list((tmp_path / "none").iterdir())
