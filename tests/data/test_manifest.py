from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from app.data import build_manifest, kfold_splits, load_datalist, scan_brats, split_cases

IDS = [f"case_{i:02d}" for i in range(20)]


def test_split_is_seeded_disjoint_and_70_15_15():
    a = split_cases(IDS, seed=3)
    b = split_cases(list(reversed(IDS)), seed=3)
    assert a == b
    assert [len(a[k]) for k in ("training", "validation", "test")] == [14, 3, 3]
    assert sorted(a["training"] + a["validation"] + a["test"]) == IDS
    assert split_cases(IDS, seed=4) != a


def test_split_rejects_bad_fractions():
    with pytest.raises(ValueError, match="sum to 1"):
        split_cases(IDS, fractions=(0.8, 0.15, 0.15))


def test_kfold_partitions_every_case_once():
    folds = kfold_splits(IDS, k=5, seed=1)
    assert len(folds) == 5 and all(len(f) == 4 for f in folds)
    assert sorted(sum(folds, [])) == IDS
    assert folds == kfold_splits(IDS, k=5, seed=1)
    with pytest.raises(ValueError, match="k-fold"):
        kfold_splits(IDS[:3], k=5)


def test_manifest_paths_are_relative_and_load_against_any_root(phantom_root: Path, tmp_path: Path):
    out = tmp_path / "m.json"
    manifest = build_manifest(phantom_root, out=out, seed=0, folds=2, fractions=(0.6, 0.2, 0.2))
    item = manifest["training"][0]
    assert item["image"][0] == f"{item['case_id']}/{item['case_id']}_t1.nii.gz"
    assert [Path(p).name.split("_")[-1] for p in item["image"]] == ["t1.nii.gz", "t1ce.nii.gz", "t2.nii.gz", "flair.nii.gz"]
    assert {i["fold"] for k in ("training", "validation") for i in manifest[k]} == {0, 1}
    assert all("fold" not in i for i in manifest["test"])
    moved = tmp_path / "moved"
    shutil.copytree(phantom_root, moved)
    items = load_datalist(out, "test", moved)
    assert Path(items[0]["label"]).is_file() and str(moved) in items[0]["label"]
    assert items[0]["case_id"] == manifest["test"][0]["case_id"]
    assert json.loads(out.read_text()) == manifest


def test_a_datalist_whose_files_are_not_under_the_data_root_names_it_before_any_model(phantom_root: Path, tmp_path: Path):
    out = tmp_path / "m.json"
    build_manifest(phantom_root, out=out, seed=0, fractions=(0.6, 0.2, 0.2))
    with pytest.raises(FileNotFoundError, match=r"list 'training': 3 of 3 item\(s\) name files that do not exist \(dataset_dir '.*nowhere' does not exist; first: '.*nowhere/Phantom_00\d/Phantom_00\d_t1.nii.gz'\).*--dataset_dir DIR"):
        load_datalist(out, "training", tmp_path / "nowhere")
    partial = tmp_path / "partial"
    shutil.copytree(phantom_root, partial)
    (partial / "Phantom_004" / "Phantom_004_seg.nii.gz").unlink()
    names = [i["case_id"] for i in json.loads(out.read_text())["training"]]
    key = "training" if "Phantom_004" in names else next(k for k in ("validation", "test") if any(i["case_id"] == "Phantom_004" for i in json.loads(out.read_text())[k]))
    with pytest.raises(FileNotFoundError, match=rf"list '{key}': 1 of \d item\(s\) .*under dataset_dir .*first: '.*Phantom_004_seg.nii.gz'"):
        load_datalist(out, key, partial)


def test_scan_reports_every_incomplete_case(phantom_root: Path, tmp_path: Path):
    root = tmp_path / "data"
    shutil.copytree(phantom_root, root)
    (root / "Phantom_001" / "Phantom_001_t2.nii.gz").unlink()
    (root / "Phantom_003" / "Phantom_003_seg.nii.gz").unlink()
    with pytest.raises(FileNotFoundError) as err:
        scan_brats(root)
    assert "Phantom_001" in str(err.value) and "missing t2" in str(err.value)
    assert "Phantom_003" in str(err.value) and "missing seg" in str(err.value)


def test_shipped_manifest_lists_the_15_shared_cases():
    manifest = json.loads((Path(__file__).resolve().parents[2] / "data_manifests" / "brats2018_shared.json").read_text())
    ids = [i["case_id"] for k in ("training", "validation", "test") for i in manifest[k]]
    assert len(ids) == len(set(ids)) == 15
    assert (manifest["numTraining"], manifest["numValidation"], manifest["numTest"]) == (11, 2, 2)


def test_a_training_run_that_fails_its_checks_leaves_no_empty_output_folder(phantom_root: Path, tmp_path: Path):
    from app import api

    out = tmp_path / "m.json"
    build_manifest(phantom_root, out=out, seed=0, fractions=(0.6, 0.2, 0.2))
    with pytest.raises(FileNotFoundError, match="name files that do not exist"):
        api.train(manifest=out, data_dir=tmp_path / "nowhere", output_dir=tmp_path / "runs" / "new", progress=False, overrides={"max_epochs": 1})
    assert not (tmp_path / "runs" / "new").exists()
    kept = tmp_path / "runs" / "existing"
    kept.mkdir()
    with pytest.raises(FileNotFoundError, match="name files that do not exist"):
        api.train(manifest=out, data_dir=tmp_path / "nowhere", output_dir=kept, progress=False, overrides={"max_epochs": 1})
    assert kept.is_dir()  # a folder the user had is not removed


def test_a_one_channel_dataset_folder_without_volumes_says_what_to_pass(tmp_path: Path):
    from app.data.folder import folder_datalist

    (tmp_path / "patient" / "study" / "series").mkdir(parents=True)  # a DICOM export without its files
    with pytest.raises(FileNotFoundError, match=r"no volume .* in '.*', nor a DICOM series folder in it or in its sub-folders \(searched 4 levels "
                                                r"deep\); pass a Decathlon folder's imagesTs/ .*volseg segment DIR; --dataset_dir DIR"):
        folder_datalist(tmp_path, 1)


def test_a_pacs_export_of_nested_dicom_series_is_found(tmp_path: Path):
    """patient/study/series: one level deep was searched, and such an export was "no volume"."""
    import SimpleITK as sitk

    from app.data.folder import folder_datalist
    from app.data.single_channel import single_channel_cases
    from tests.io.dicom_util import write_dicom_series

    image = sitk.GetImageFromArray(np.full((4, 6, 5), -1000, dtype=np.int16))
    for patient, uid in (("patientA", "1.2.826.0.1.3680043.2.1125.7.1"), ("patientB", "1.2.826.0.1.3680043.2.1125.7.2")):
        write_dicom_series(image, tmp_path / "export" / patient / "study1" / f"CT_{patient[-1]}", series_uid=uid)
    items = folder_datalist(tmp_path / "export", 1)
    assert [i["case_id"] for i in items] == ["CT_A", "CT_B"] and Path(items[0]["image"]).parent.name == "study1"
    assert [c for c, _ in single_channel_cases([tmp_path / "export"])] == ["CT_A", "CT_B"]


def test_a_renamed_or_linked_case_folder_takes_the_files_of_the_one_case_it_holds(phantom_root: Path, tmp_path: Path):
    from app.data.cases import find_case

    renamed = tmp_path / "study_17"
    shutil.copytree(phantom_root / "Phantom_001", renamed)
    case = find_case(renamed)
    assert case.case_id == "study_17" and [p.name for p in case.images] == [f"Phantom_001_{s}.nii.gz" for s in ("t1", "t1ce", "t2", "flair")]
    link = tmp_path / "linked"
    link.symlink_to(phantom_root / "Phantom_002", target_is_directory=True)
    assert find_case(link).images[3].name == "Phantom_002_flair.nii.gz"
    for f in (phantom_root / "Phantom_003").iterdir():  # a second case's files in the same folder: ambiguous, refused
        shutil.copy(f, renamed / f.name)
    with pytest.raises(FileNotFoundError, match=r"case 'study_17'.*found none.*holds the files of several cases \(Phantom_001, Phantom_003\)"):
        find_case(renamed)


def test_a_dataset_of_linked_case_folders_and_files_gets_a_manifest(phantom_root: Path, tmp_path: Path):
    """Case folders (or files) linked in from elsewhere are listed where they appear under the
    data root, not where the links point (pathlib's relative_to failed on the resolved paths)."""
    data = tmp_path / "linked_data"
    data.mkdir()
    (data / "Phantom_000").symlink_to(phantom_root / "Phantom_000", target_is_directory=True)
    (data / "Phantom_001").mkdir()
    for f in (phantom_root / "Phantom_001").iterdir():
        (data / "Phantom_001" / f.name).symlink_to(f)
    (data / "Phantom_002").symlink_to(phantom_root / "Phantom_002", target_is_directory=True)
    manifest = build_manifest(data, out=tmp_path / "m.json", seed=0, fractions=(1.0, 0.0, 0.0))
    items = {i["case_id"]: i for i in manifest["training"]}
    assert sorted(items) == ["Phantom_000", "Phantom_001", "Phantom_002"]
    assert items["Phantom_000"]["image"][3] == "Phantom_000/Phantom_000_flair.nii.gz"
    assert items["Phantom_001"]["label"] == "Phantom_001/Phantom_001_seg.nii.gz"
    loaded = load_datalist(tmp_path / "m.json", "training", data)
    assert all(Path(p).is_file() for item in loaded for p in item["image"])


def test_an_item_without_image_or_a_training_item_without_label_is_named(phantom_root: Path, phantom_manifest: Path, tmp_path: Path):
    """{"img": [...]} or "label": null stopped a training run inside MONAI's CacheDataset after 360
    lines ("KeyError: Key `image` of transform `CheckSkullStrippedd` was missing")."""
    content = json.loads(phantom_manifest.read_text())
    good = content["training"][0]
    for i, (bad, missing) in enumerate([({"img": good["image"], "label": good["label"]}, "image"), ({"image": good["image"], "label": None}, "label")]):
        path = tmp_path / f"m{i}.json"
        path.write_text(json.dumps({**content, "training": [good, bad]}))
        with pytest.raises(ValueError, match=rf"list 'training': 1 of 2 item\(s\) have no '{missing}' \(missing or null; first: item 1, with the keys"):
            load_datalist(path, "training", phantom_root)
    path = tmp_path / "test.json"  # a test list needs no label
    path.write_text(json.dumps({**content, "test": [{"image": good["image"]}]}))
    assert len(load_datalist(path, "test", phantom_root)) == 1
