"""4D multi-channel volumes (the Medical Segmentation Decathlon's Task01_BrainTumour layout) split into
one file a sequence, labels converted to BraTS codes (:mod:`app.data.split_channels`)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from app.data.cases import find_case
from app.data.phantom import make_brats_phantom
from app.data.split_channels import brats_label_codes, sequence_order, split_multichannel
from app.errors import InputError
from tests.conftest import SHARED_BRATS

#: Task01_BrainTumour's dataset.json, as the Decathlon ships it (the parts read here)
TASK01 = {"name": "BRATS", "modality": {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"},
          "labels": {"0": "background", "1": "edema", "2": "non-enhancing tumor", "3": "enhancing tumour"}}
ORDER = ("flair", "t1", "t1ce", "t2")  # Task01's channels, in VolSeg's names
TO_TASK01 = np.array([0, 2, 1, 0, 3], dtype=np.uint8)  # BraTS code -> Task01 label (1 NCR/NET -> 2, 2 ED -> 1, 4 ET -> 3)


def as_task01_case(case_dir: Path, images: Path, labels: Path | None, name: str) -> None:
    """Write a BraTS case folder as Task01 does: one 4D image (FLAIR, T1w, t1gd, T2w) and one label map."""
    vols = [nib.load(case_dir / f"{case_dir.name}_{key}.nii.gz") for key in ORDER]
    stacked = np.stack([np.asarray(v.dataobj) for v in vols], axis=-1)
    images.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(stacked, vols[0].affine), images / name)
    if labels is not None:
        labels.mkdir(parents=True, exist_ok=True)
        seg = nib.load(case_dir / f"{case_dir.name}_seg.nii.gz")
        nib.save(nib.Nifti1Image(TO_TASK01[np.asarray(seg.dataobj).astype(np.int64)], seg.affine), labels / name)


@pytest.fixture()
def task(tmp_path: Path) -> tuple[Path, Path]:
    """A Task01-style folder of two phantom cases (one in imagesTr with a label, one in imagesTs), and
    the BraTS-layout originals."""
    originals = tmp_path / "originals"
    task = tmp_path / "Task01_BrainTumour"
    for i, split in enumerate(("Tr", "Ts")):
        case = make_brats_phantom(originals, f"BRATS_{i:03d}", shape=(40, 48, 36), spacing_mm=(1.0, 0.9, 1.5), seed=i)
        as_task01_case(case, task / f"images{split}", task / "labelsTr" if split == "Tr" else None, f"BRATS_{i:03d}.nii.gz")
    (task / "imagesTr" / "._BRATS_000.nii.gz").write_bytes(b"\x00\x05\x16\x07")  # the macOS metadata file the Decathlon tar holds
    (task / "dataset.json").write_text(json.dumps(TASK01), encoding="utf-8")
    return task, originals


def test_a_task01_folder_becomes_brats_case_folders_with_the_same_voxels_and_brats_codes(task: tuple[Path, Path], tmp_path: Path):
    task_dir, originals = task
    out = tmp_path / "cases"
    cases = split_multichannel(task_dir, out)
    assert [c.case_id for c in cases] == ["BRATS_000", "BRATS_001"]
    assert cases[0].label == task_dir / "labelsTr" / "BRATS_000.nii.gz" and cases[1].label is None
    assert [c.folder for c in cases] == [out / "training" / "BRATS_000", out / "test" / "BRATS_001"]  # the Decathlon's imagesTr / imagesTs
    for case in cases:
        found = find_case(case.folder, require_label=case.label is not None)
        for key, path in zip(("t1", "t1ce", "t2", "flair"), found.images):
            original = nib.load(originals / case.case_id / f"{case.case_id}_{key}.nii.gz")
            written = nib.load(path)
            assert written.shape == original.shape and np.allclose(written.affine, original.affine)
            assert np.array_equal(np.asarray(written.dataobj), np.asarray(original.dataobj)), (case.case_id, key)
    seg = np.asarray(nib.load(out / "training" / "BRATS_000" / "BRATS_000_seg.nii.gz").dataobj)
    reference = np.asarray(nib.load(originals / "BRATS_000" / "BRATS_000_seg.nii.gz").dataobj)
    assert set(np.unique(reference)) == {0, 1, 2, 4} and np.array_equal(seg, reference)  # Task01 codes back to BraTS ones
    assert not (out / "test" / "BRATS_001" / "BRATS_001_seg.nii.gz").exists() and not list(out.rglob("._*"))
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.nii.gz")}
    again = split_multichannel(task_dir, out)  # a rerun keeps what is there
    assert all(not c.written for c in again) and {p: p.stat().st_mtime_ns for p in out.rglob("*.nii.gz")} == before


def test_the_channel_order_comes_from_sequences_or_dataset_json_and_is_never_guessed(task: tuple[Path, Path], tmp_path: Path):
    task_dir, _ = task
    image = task_dir / "imagesTr" / "BRATS_000.nii.gz"
    (task_dir / "dataset.json").unlink()
    with pytest.raises(InputError, match="which channel is which sequence.*--sequences flair,t1,t1ce,t2"):
        split_multichannel(image, tmp_path / "a")
    cases = split_multichannel(image, tmp_path / "b", "t2f,t1n,t1c,t2w")  # BraTS 2023+ names work too
    assert sorted(p.name for p in cases[0].written) == ["BRATS_000_flair.nii.gz", "BRATS_000_t1.nii.gz", "BRATS_000_t1ce.nii.gz", "BRATS_000_t2.nii.gz"]
    assert cases[0].label is None  # no dataset.json: the label values have no names, so nothing is converted
    with pytest.raises(InputError, match=r"shape \(40, 48, 36, 4\), expected 4D with 2 channels"):
        split_multichannel(image, tmp_path / "c", "flair,t1ce")
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists()  # checked before anything is written


def test_names_that_match_no_sequence_or_no_brats_region_stop_the_run():
    assert sequence_order(["FLAIR", "T1w", "t1gd", "T2w"], "x") == list(ORDER)
    with pytest.raises(InputError, match="'ADC' name no sequence VolSeg knows"):
        sequence_order(["FLAIR", "ADC"], "dataset.json")
    with pytest.raises(InputError, match="two channels of one sequence"):
        sequence_order(["T1w", "t1"], "--sequences")
    assert brats_label_codes({"background": 0, "necrotic core": 1, "peritumoral edema": 2, "GD-enhancing tumor": 3}, "x") == {0: 0, 1: 1, 2: 2, 3: 4}
    with pytest.raises(InputError, match="label 1 'liver' is none of background, edema"):
        brats_label_codes({"0": "background", "1": "liver"}, "dataset.json")
    with pytest.raises(InputError, match="region-based labels"):
        brats_label_codes({"background": 0, "whole tumor": [1, 2, 3]}, "dataset.json")


def test_a_label_value_that_dataset_json_does_not_name_is_an_error(task: tuple[Path, Path], tmp_path: Path):
    task_dir, _ = task
    label = task_dir / "labelsTr" / "BRATS_000.nii.gz"
    seg = nib.load(label)
    values = np.asarray(seg.dataobj).copy()
    values[0, 0, 0] = 7
    nib.save(nib.Nifti1Image(values, seg.affine), label)
    with pytest.raises(InputError, match=r"BRATS_000.nii.gz': label values \[7\] are not among the labels of .*dataset.json"):
        split_multichannel(task_dir, tmp_path / "out")


def test_volseg_segment_names_the_split_for_a_4d_file_and_the_cli_splits_it(task: tuple[Path, Path], tmp_path: Path):
    from app.cli import app as cli

    task_dir, _ = task
    image = task_dir / "imagesTr" / "BRATS_000.nii.gz"
    result = CliRunner().invoke(cli, ["segment", str(image), "--output", str(tmp_path / "seg")])
    assert result.exit_code == 2
    assert "is a 4D volume of 4 channels, shape (40, 48, 36, 4)" in result.output and f"volseg split-channels {image} --output DIR" in result.output
    from app.inference.segmenter import resolve_inputs

    for folder in (task_dir / "imagesTs", task_dir):  # as volseg segment gets them: the folder of 4D files, the task folder
        with pytest.raises(InputError, match=rf"'{folder}' holds 4D volumes of 4 channels \('.*BRATS_00.\.nii\.gz': shape \(40, 48, 36, 4\)\)"):
            resolve_inputs([folder])
    result = CliRunner().invoke(cli, ["split-channels", str(task_dir), "--output", str(tmp_path / "cases")])
    assert result.exit_code == 0, result.output
    assert f"{tmp_path / 'cases' / 'training'}: 1 case(s), 1 with a label map in BraTS codes" in result.output
    assert f"volseg manifest brats {tmp_path / 'cases' / 'training'} --out" in result.output
    assert f"{tmp_path / 'cases' / 'test'}: 1 case(s), 0 with a label map" in result.output
    assert "BRATS_000: BRATS_000_flair.nii.gz, BRATS_000_seg.nii.gz, BRATS_000_t1.nii.gz" in result.output
    result = CliRunner().invoke(cli, ["split-channels", str(tmp_path / "nope"), "--output", str(tmp_path / "x")])
    assert result.exit_code == 2 and "does not exist" in result.output


@pytest.mark.real_data
@pytest.mark.skipif(not SHARED_BRATS.is_dir(), reason=f"no BraTS data at {SHARED_BRATS}")
def test_a_real_case_stored_as_task01_segments_as_the_case_itself(tmp_path: Path):
    """Brats18_CBICA_AME_1 written as a Task01 4D file and label map, split, then segmented: the same
    voxels, label and Dice as the case folder itself."""
    from app import api
    from app.evaluation import case_metrics

    case_id = "Brats18_CBICA_AME_1"
    task_dir = tmp_path / "Task01_BrainTumour"
    as_task01_case(SHARED_BRATS / case_id, task_dir / "imagesTr", task_dir / "labelsTr", "BRATS_101.nii.gz")
    (task_dir / "dataset.json").write_text(json.dumps(TASK01), encoding="utf-8")
    split_multichannel(task_dir, tmp_path / "cases")
    split = find_case(tmp_path / "cases" / "training" / "BRATS_101", require_label=True)
    original = find_case(SHARED_BRATS / case_id, require_label=True)
    for a, b in zip(split.images + (split.label,), original.images + (original.label,)):
        assert np.array_equal(np.asarray(nib.load(a).dataobj), np.asarray(nib.load(b).dataobj)), a
    label, affine = api.segment(tmp_path / "cases" / "training" / "BRATS_101")
    reference = np.asarray(nib.load(original.label).dataobj).astype(np.uint8)
    assert np.allclose(affine, nib.load(original.images[0]).affine)
    assert case_metrics(label, reference)["WT_dice"] > 0.8


@pytest.fixture()
def nnunet_folder(tmp_path: Path) -> Path:
    """nnU-Net v2's raw layout of two phantom cases: ``Dataset001_BrainTumour/imagesTs/<case>_000X.nii.gz``,
    channels FLAIR, T1w, T1gd, T2w as its dataset.json's ``channel_names`` say."""
    import shutil

    dataset = tmp_path / "Dataset001_BrainTumour"
    (dataset / "imagesTs").mkdir(parents=True)
    for i in range(2):
        case = make_brats_phantom(tmp_path / "originals", f"BRATS_{i:03d}", shape=(40, 48, 36), seed=i)
        for channel, key in enumerate(ORDER):
            shutil.copy(case / f"{case.name}_{key}.nii.gz", dataset / "imagesTs" / f"BRATS_{i:03d}_{channel:04d}.nii.gz")
    (dataset / "dataset.json").write_text(json.dumps({"channel_names": {"0": "FLAIR", "1": "T1w", "2": "T1gd", "3": "T2w"},
                                                      "labels": {"background": 0, "whole tumor": [1, 2, 3]}, "file_ending": ".nii.gz"}))
    return dataset


def test_nnunet_channel_files_are_cases_through_the_channel_names_of_dataset_json(nnunet_folder: Path):
    from app.inference.segmenter import resolve_inputs

    images = nnunet_folder / "imagesTs"
    expected = [(f"BRATS_{i:03d}", [images / f"BRATS_{i:03d}_{c:04d}.nii.gz" for c in (1, 2, 3, 0)]) for i in range(2)]  # T1, T1ce, T2, FLAIR
    assert resolve_inputs([images]) == expected  # the folder
    assert resolve_inputs(sorted(images.glob("BRATS_001_*"))) == expected[1:]  # loose files
    (images / "BRATS_001_0004.nii.gz").write_bytes((images / "BRATS_001_0000.nii.gz").read_bytes())
    with pytest.raises(InputError, match="BRATS_001_0004.nii.gz': channel 0004, but .*dataset.json names channels 0000, 0001, 0002, 0003 only"):
        resolve_inputs([images])
    (images / "BRATS_001_0004.nii.gz").unlink()
    (nnunet_folder / "dataset.json").unlink()
    with pytest.raises(InputError, match=r"cannot tell which sequence .*nnU-Net's <case>_0000.nii.gz names are read through the channel_names"):
        resolve_inputs(sorted(images.glob("BRATS_000_*")))


def test_the_monai_runner_reads_an_nnunet_folder_and_refuses_a_task01_one(nnunet_folder: Path, task: tuple[Path, Path]):
    """``python -m monai.bundle run --dataset_dir DIR`` takes its cases from :func:`app.data.folder_datalist`."""
    from app.data.folder import folder_datalist

    images = nnunet_folder / "imagesTs"
    items = folder_datalist(images, 4)
    assert [item["case_id"] for item in items] == ["BRATS_000", "BRATS_001"]
    assert items[0]["image"] == [str((images / f"BRATS_000_{c:04d}.nii.gz").resolve()) for c in (1, 2, 3, 0)]
    for folder in (task[0] / "imagesTr", task[0]):  # the Decathlon's images folder, and the task folder
        with pytest.raises(InputError, match=rf"'{folder}' holds 4D volumes of 4 channels .*`volseg split-channels {folder} --output DIR`"):
            folder_datalist(folder, 4)
    (nnunet_folder / "dataset.json").unlink()
    with pytest.raises(InputError, match="named as nnU-Net names input channels .*no dataset.json"):
        folder_datalist(images, 4)
