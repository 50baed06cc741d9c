"""MONAI Label protocol of `volseg serve` through FastAPI's test client, bad inputs included."""

from __future__ import annotations

import gzip
import json
from email.parser import BytesParser
from email.policy import default
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.serve import ServerConfig, create_app
from tests.conftest import case_files


@pytest.fixture()
def studies(phantom_root: Path, tmp_path: Path) -> Path:
    root = tmp_path / "studies"
    for case in ("Phantom_000", "Phantom_001"):
        shutil.copytree(phantom_root / case, root / case)
    return root


@pytest.fixture()
def client(studies: Path, tmp_path: Path) -> TestClient:
    return TestClient(create_app(ServerConfig(tmp_path / "store", studies, device="cpu", max_upload_mb=1.0)))


def _parse_multipart(response) -> tuple[dict, dict]:
    message = BytesParser(policy=default).parsebytes(f"Content-Type: {response.headers['content-type']}\r\n\r\n".encode() + response.content)
    form, files = {}, {}
    for part in message.iter_parts():
        if part.get_filename():
            files[part.get_filename()] = part.get_payload(decode=True)
        else:
            form[part.get_param("name", header="content-disposition")] = part.get_content()
    return form, files


def test_info_shape(client: TestClient):
    info = client.get("/info/").json()
    assert "config" not in info
    assert set(info) >= {"name", "description", "version", "labels", "models", "trainers", "strategies", "scoring", "train_stats", "datastore"}
    model = info["models"]["brats_unet3d"]
    assert model["type"] == "segmentation" and model["dimension"] == 3 and model["labels"] == {"NCR/NET": 1, "ED": 2, "ET": 4}
    assert info["datastore"]["total"] == 2


def test_infer_returns_params_and_label_in_input_geometry(client: TestClient, studies: Path, tmp_path: Path):
    r = client.post("/infer/brats_unet3d?image=Phantom_001", data={"params": json.dumps({"result_extension": ".nrrd", "result_dtype": "uint8"})})
    assert r.status_code == 200 and r.headers["content-type"].startswith("multipart/form-data")
    form, files = _parse_multipart(r)
    params = json.loads(form["params"])
    assert params["label_names"] == {"NCR/NET": 1, "ED": 2, "ET": 4} and params["latencies"]["total"] > 0
    (name, data), = files.items()
    assert name == "Phantom_001_seg.nrrd"
    import SimpleITK as sitk

    (tmp_path / name).write_bytes(data)
    label, flair = sitk.ReadImage(str(tmp_path / name)), sitk.ReadImage(str(case_files(studies / "Phantom_001")[3]))
    assert label.GetSize() == flair.GetSize() and label.GetPixelID() == sitk.sitkUInt8
    np.testing.assert_allclose(label.GetOrigin(), flair.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(label.GetDirection(), flair.GetDirection(), atol=1e-6)
    assert client.post("/infer/brats_unet3d?image=Phantom_001&output=json").json()["label_names"]["ET"] == 4


def test_infer_errors_are_json_and_server_keeps_serving(client: TestClient, studies: Path):
    assert client.post("/infer/nope?image=Phantom_001").status_code == 404
    r = client.post("/infer/brats_unet3d?image=Missing_9")
    assert r.status_code == 404 and "unknown image 'Missing_9'" in r.json()["error"]
    assert client.post("/infer/brats_unet3d?image=..%2F..%2Fetc").status_code == 400
    assert client.post("/infer/brats_unet3d?image=Phantom_001", data={"params": json.dumps({"result_dtype": "float32"})}).status_code == 400
    (studies / "Phantom_000" / "Phantom_000_t2.nii.gz").write_bytes(b"broken")
    r = client.post("/infer/brats_unet3d?image=Phantom_000")
    assert r.status_code == 422 and "Phantom_000_t2.nii.gz" in r.json()["error"]
    assert client.get("/info/").status_code == 200


def test_datastore_image_download_and_head(client: TestClient, studies: Path):
    r = client.get("/datastore/image?image=Phantom_000")
    assert r.status_code == 200 and r.content == case_files(studies / "Phantom_000")[3].read_bytes()
    assert client.head("/datastore/image?image=Phantom_000").status_code == 200
    assert client.get("/datastore/image?image=nope").status_code == 404
    for bad in ("..%2Fsecret", "%2Fetc%2Fpasswd", "a%2Fb"):
        assert client.get(f"/datastore/image?image={bad}").status_code == 400


def _label_bytes(studies: Path, case: str, value: int = 2, shape_cut: int = 0, suffix: str = ".nii.gz", tmp: Path | None = None) -> bytes:
    flair = nib.load(case_files(studies / case)[3])
    data = np.zeros(flair.shape, dtype=np.uint8)
    data[10:20, 10:20, 10:20] = value
    img = nib.Nifti1Image(data[: data.shape[0] - shape_cut], flair.affine)
    path = tmp / f"label{suffix}"
    nib.save(img, path)
    return path.read_bytes()


def test_save_label_then_stats_and_next_sample(client: TestClient, studies: Path, tmp_path: Path):
    data = _label_bytes(studies, "Phantom_000", tmp=tmp_path)
    r = client.put("/datastore/label?image=Phantom_000&tag=final", files={"label": ("Phantom_000.nii.gz", data)},
                   data={"params": json.dumps({"label_info": [{"name": "ED", "id": 2}]})})
    assert r.status_code == 200, r.text
    assert client.get("/datastore/?output=stats").json() == {"total": 2, "completed": 1, "label_tags": {"final": 1}}
    everything = client.get("/datastore/?output=all").json()
    assert everything["objects"]["Phantom_000"]["labels"]["final"]["ext"] == ".nii.gz"
    assert [i["case_id"] for i in client.get("/datastore/?output=train").json()] == ["Phantom_000"]
    assert client.get("/datastore/label?label=Phantom_000&tag=final").content == data
    for strategy in ("first", "random"):
        assert client.post(f"/activelearning/{strategy}", json={}).json()["id"] == "Phantom_001"
    assert client.post("/activelearning/nope").status_code == 404


def test_label_checks(client: TestClient, studies: Path, tmp_path: Path):
    wrong_shape = _label_bytes(studies, "Phantom_000", shape_cut=3, tmp=tmp_path)
    r = client.put("/datastore/label?image=Phantom_000", files={"label": ("l.nii.gz", wrong_shape)})
    assert r.status_code == 422 and "differs from image" in r.json()["error"]
    wrong_code = _label_bytes(studies, "Phantom_000", value=7, tmp=tmp_path)
    r = client.put("/datastore/label?image=Phantom_000", files={"label": ("l.nii.gz", wrong_code)})
    assert r.status_code == 422 and "[7]" in r.json()["error"]
    r = client.put("/datastore/label?image=Phantom_000", files={"label": ("l.png", b"x")})
    assert r.status_code == 400
    r = client.put("/datastore/label?image=Phantom_000&tag=..", files={"label": ("l.nii.gz", wrong_code)})
    assert r.status_code == 400
    assert not list((tmp_path / "store" / "labels").rglob("Phantom_000*"))  # nothing stored


def test_upload_4d_study_and_size_limit(client: TestClient, studies: Path, tmp_path: Path):
    arrays = [np.asarray(nib.load(f).dataobj) for f in case_files(studies / "Phantom_001")]
    affine = nib.load(case_files(studies / "Phantom_001")[0]).affine
    nib.save(nib.Nifti1Image(np.stack(arrays, -1).astype(np.int16), affine), tmp_path / "study.nii.gz")
    r = client.put("/datastore/?image=Uploaded_1", files={"file": ("study.nii.gz", (tmp_path / "study.nii.gz").read_bytes())})
    assert r.status_code == 200, r.text
    assert "Uploaded_1" in client.get("/datastore/?output=all").json()["objects"]
    assert client.put("/datastore/image?image=Uploaded_1", files={"file": ("study.nii.gz", (tmp_path / "study.nii.gz").read_bytes())}).status_code == 409
    nib.save(nib.Nifti1Image(arrays[0], affine), tmp_path / "one.nii.gz")
    r = client.put("/datastore/image?image=Single", files={"file": ("one.nii.gz", (tmp_path / "one.nii.gz").read_bytes())})
    assert r.status_code == 422 and "'one.nii.gz' is one 3D volume" in r.json()["error"] and "4D NIfTI (H, W, D, 4)" in r.json()["error"]
    big = np.random.default_rng(0).integers(0, 2**15, (128, 128, 64, 4), dtype=np.int16)  # > 1 MiB compressed
    nib.save(nib.Nifti1Image(big, affine), tmp_path / "big.nii.gz")
    r = client.put("/datastore/image?image=Big", files={"file": ("big.nii.gz", (tmp_path / "big.nii.gz").read_bytes())})
    assert r.status_code == 413 and "limit" in r.json()["error"] and "MiB, --max-upload-mb)" in r.json()["error"]  # the limit the user set
    assert client.get("/info/").status_code == 200


def test_a_request_without_a_required_field_answers_in_the_documented_error_format(client: TestClient):
    r = client.post("/infer/brats_unet3d")  # no image: FastAPI's own 422 had only "detail"
    assert r.status_code == 422 and r.json()["error"].startswith("bad request: ") and "image" in r.json()["error"] and r.json()["detail"]
    r = client.post("/infer/brats_unet3d?image=Phantom_000", data={"params": json.dumps({"resample": "no"})})  # a string: truthy
    assert r.status_code == 400 and "'resample' must be true or false (JSON), got \"no\"" in r.json()["error"]


def test_auth_token(studies: Path, tmp_path: Path):
    secured = TestClient(create_app(ServerConfig(tmp_path / "s", studies, device="cpu", token="s3cret")))
    assert secured.get("/auth/").json()["enabled"] is True
    assert secured.get("/info/").status_code == 401
    assert secured.get("/info/", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert secured.post("/auth/token", data={"username": "u", "password": "s3cret"}).json()["access_token"] == "s3cret"
    assert secured.post("/auth/token", data={"username": "u", "password": "no"}).status_code == 401


def test_train_endpoints(client: TestClient, studies: Path, tmp_path: Path):
    assert client.get("/train/").json() == {"status": "NONE"}
    assert client.get("/train/?check_if_running=true").status_code == 404
    assert client.post("/train/brats_unet3d", json={"max_epochs": 1}).status_code == 400  # no labels yet
    data = _label_bytes(studies, "Phantom_000", tmp=tmp_path)
    client.put("/datastore/label?image=Phantom_000&tag=final", files={"label": ("Phantom_000.nii.gz", data)})
    started = client.post("/train/brats_unet3d", json={"max_epochs": 1})
    assert started.status_code == 200 and started.json()["status"] == "RUNNING"
    assert client.post("/train/", json={}).status_code == 409
    stopped = client.delete("/train/").json()
    assert stopped["status"] in ("STOPPED", "DONE", "FAILED")


def test_infer_with_uncertainty_serves_the_map_beside_the_label(client: TestClient, studies: Path, tmp_path: Path):
    assert client.get("/datastore/uncertainty?image=Phantom_001").status_code == 404
    r = client.post("/infer/brats_unet3d?image=Phantom_001&output=json", data={"params": json.dumps({"uncertainty": True})})
    assert r.status_code == 200
    unc = r.json()["uncertainty"]
    assert unc["url"] == "/datastore/uncertainty?image=Phantom_001" and 0.0 <= unc["quality"] <= 1.0
    got = client.get(unc["url"])
    assert got.status_code == 200 and 'filename="Phantom_001_uncertainty.nii.gz"' in got.headers["content-disposition"]
    import SimpleITK as sitk

    (tmp_path / "unc.nii.gz").write_bytes(got.content)
    image, flair = sitk.ReadImage(str(tmp_path / "unc.nii.gz")), sitk.ReadImage(str(case_files(studies / "Phantom_001")[3]))
    assert image.GetSize() == flair.GetSize() and image.GetPixelID() == sitk.sitkFloat32
    np.testing.assert_allclose(image.GetOrigin(), flair.GetOrigin(), atol=1e-4)
    values = sitk.GetArrayViewFromImage(image)
    assert values.min() >= 0.0 and values.max() <= 1.0
    assert client.get("/datastore/uncertainty?image=..%2Fx").status_code == 400


def test_infer_answer_carries_the_warning_of_a_study_that_is_not_skull_stripped(client: TestClient, studies: Path):
    skull = lambda answer: [w for w in answer.get("warnings", []) if "does not look skull-stripped" in w]  # noqa: E731 (phantoms are also too small for a brain)
    assert not skull(client.post("/infer/brats_unet3d?image=Phantom_000&output=json").json())
    flair = case_files(studies / "Phantom_001")[3]
    img = nib.load(flair)
    data = np.asarray(img.dataobj, dtype=np.float32)
    data[data == 0] = 5.0  # a background that is not zero, as in a head that was not skull-stripped
    nib.save(nib.Nifti1Image(data, img.affine), flair)
    r = client.post("/infer/brats_unet3d?image=Phantom_001&output=json")
    assert r.status_code == 200, r.text
    [warning] = skull(r.json())
    assert warning.startswith(f"{flair.name}: does not look skull-stripped")


def test_infer_with_resample_segments_a_study_on_different_grids_on_its_finest(client: TestClient, studies: Path):
    import SimpleITK as sitk

    flair = case_files(studies / "Phantom_001")[3]
    image = sitk.ReadImage(str(flair))
    size, spacing = image.GetSize(), image.GetSpacing()
    thick = sitk.Resample(image, [size[0], size[1], size[2] // 3], sitk.Transform(), sitk.sitkLinear,
                          image.TransformContinuousIndexToPhysicalPoint((0.0, 0.0, 1.0)), (spacing[0], spacing[1], spacing[2] * 3), image.GetDirection())
    sitk.WriteImage(thick, str(flair))  # a 2D FLAIR of slices 3x as thick, in the same scanner space
    refused = client.post("/infer/brats_unet3d?image=Phantom_001&output=json")
    assert refused.status_code == 422 and "--resample" in refused.json()["error"]
    r = client.post("/infer/brats_unet3d?image=Phantom_001", data={"params": json.dumps({"resample": True})})
    assert r.status_code == 200, r.text
    form, files = _parse_multipart(r)
    params = json.loads(form["params"])
    assert params["resampled"]["grid"].endswith("Phantom_001_t1.nii.gz") and list(params["resampled"]["resampled"]) == ["flair"]
    (name, data), = files.items()
    label = nib.Nifti1Image.from_bytes(gzip.decompress(data))
    t1 = nib.load(case_files(studies / "Phantom_001")[0])
    assert label.shape == t1.shape and np.allclose(label.affine, t1.affine)


def test_infer_with_label_codes_2023_returns_et_as_3(client: TestClient):
    def label_and_names(params: dict) -> tuple[np.ndarray, dict]:
        r = client.post("/infer/brats_unet3d?image=Phantom_000", data={"params": json.dumps(params)})
        assert r.status_code == 200, r.text
        form, files = _parse_multipart(r)
        (_, data), = files.items()
        return np.asarray(nib.Nifti1Image.from_bytes(gzip.decompress(data)).dataobj), json.loads(form["params"])["label_names"]

    old, old_names = label_and_names({})
    new, new_names = label_and_names({"label_codes": "2023"})
    assert old_names == {"NCR/NET": 1, "ED": 2, "ET": 4} and new_names == {"NCR/NET": 1, "ED": 2, "ET": 3}
    assert (old == 4).any()
    np.testing.assert_array_equal(new, np.where(old == 4, 3, old))
    r = client.post("/infer/brats_unet3d?image=Phantom_000", data={"params": json.dumps({"label_codes": "2021"})})
    assert r.status_code == 400 and "params 'label_codes': label codes must be one of 2018, 2023 (text or number), got '2021'" in r.json()["error"]


def test_a_study_the_model_cannot_read_answers_422_with_the_cause_not_500(studies: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """MONAI wraps a reader's InputError as "applying transform <LoadVolumed object at 0x...>": the
    client got that wrapper with a 500 (a CT model asked to segment a four-sequence study)."""
    from app.errors import InputError
    from app.serve import server

    client = TestClient(create_app(ServerConfig(tmp_path / "store", studies, device="cpu")), raise_server_exceptions=False)  # a 500 as a client sees it

    def refuse(self, model, files, **kwargs):
        try:
            raise InputError("'image': 4 file(s) given, but the bundle reads 1 channel(s) (CT)")
        except InputError as err:
            raise RuntimeError("applying transform <app.io.monai_reader.LoadVolumed object at 0x7f13ec963cd0>") from err

    monkeypatch.setattr(server._Models, "predict", refuse)
    r = client.post("/infer/brats_unet3d?image=Phantom_000&output=json")
    assert r.status_code == 422 and r.json()["error"] == "'image': 4 file(s) given, but the bundle reads 1 channel(s) (CT)"
    monkeypatch.setattr(server._Models, "predict", lambda self, model, files, **kwargs: 1 / 0)
    r = client.post("/infer/brats_unet3d?image=Phantom_000&output=json")
    assert r.status_code == 500 and r.json()["error"].startswith("ZeroDivisionError")  # anything else stays a server error


def test_a_study_with_missing_sequences_is_served_and_the_answer_names_them(client: TestClient, studies: Path, tmp_path: Path,
                                                                          caplog: pytest.LogCaptureFixture):
    import logging

    t1, t1ce, t2, flair = case_files(studies / "Phantom_000")
    (studies / "Partial_1").mkdir()
    shutil.copy(t1ce, studies / "Partial_1" / "Partial_1_t1ce.nii.gz")
    shutil.copy(flair, studies / "Partial_1" / "Partial_1_flair.nii.gz")
    (studies / "T1only_1").mkdir()
    shutil.copy(t1, studies / "T1only_1" / "T1only_1_t1.nii.gz")
    objects = client.get("/datastore/?output=all").json()["objects"]
    assert objects["Partial_1"]["image"]["info"]["missing_sequences"] == ["t1", "t2"]
    assert objects["Partial_1"]["image"]["info"]["modalities"] == ["t1ce", "flair"]
    assert client.get("/datastore/image?image=T1only_1").content == t1.read_bytes()  # no FLAIR: the first sequence is shown
    r = client.post("/infer/brats_unet3d?image=Partial_1", data={"params": json.dumps({"result_extension": ".nii.gz"})})
    assert r.status_code == 200, r.text
    form, files = _parse_multipart(r)
    params = json.loads(form["params"])
    assert params["missing_sequences"] == ["t1", "t2"] and set(params["missing_sequences_cv_dice"]) >= {"WT", "TC", "ET"}
    label = nib.Nifti1Image.from_bytes(gzip.decompress(next(iter(files.values()))))
    assert label.shape == nib.load(flair).shape and np.allclose(label.affine, nib.load(flair).affine)
    assert "missing_sequences" not in client.post("/infer/brats_unet3d?image=Phantom_001&output=json").json()
    for case in ("Partial_1", "Phantom_000"):
        data = _label_bytes(studies, "Phantom_000", tmp=tmp_path)
        assert client.put(f"/datastore/label?image={case}&tag=final", files={"label": (f"{case}.nii.gz", data)}).status_code == 200
    with caplog.at_level(logging.WARNING, logger="app.serve.datastore"):
        trained = client.get("/datastore/?output=train").json()
    assert [i["case_id"] for i in trained] == ["Phantom_000"]  # training needs all four sequences
    assert any("'Partial_1' is not trained on: it lacks t1, t2" in r.getMessage() for r in caplog.records)


def test_labels_numbered_in_slicer_segment_order_are_stored_as_the_model_codes(client: TestClient, studies: Path, tmp_path: Path):
    import SimpleITK as sitk

    flair = nib.load(case_files(studies / "Phantom_000")[3])
    values = np.zeros(flair.shape, dtype=np.uint8)
    values[5:10, 5:10, 5:10], values[10:15, 10:15, 10:15], values[20:25, 20:25, 20:25] = 1, 2, 3
    nib.save(nib.Nifti1Image(values, flair.affine), tmp_path / "slicer.nii.gz")
    data = (tmp_path / "slicer.nii.gz").read_bytes()
    stored = tmp_path / "store" / "labels" / "final" / "Phantom_000.nii.gz"
    as_slicer = [{"name": "NCR/NET", "idx": 1}, {"name": "ED", "idx": 2}, {"name": "ET", "idx": 3}]  # segments 1..N, ET exported as 3
    with_background = [{"name": "NCR/NET", "idx": 2}, {"name": "ED", "idx": 3}, {"name": "ET", "idx": 4}]  # a skipped "background" segment counted
    for label_info in (as_slicer, with_background):
        r = client.put("/datastore/label?image=Phantom_000&tag=final", files={"label": ("/home/me/tmp/x.nii.gz", data)},
                       data={"params": json.dumps({"label_info": label_info})})
        assert r.status_code == 200, r.text
        codes = sitk.GetArrayFromImage(sitk.ReadImage(str(stored)))
        assert sorted(np.unique(codes)) == [0, 1, 2, 4] and (codes == 4).sum() == 125 and (codes == 2).sum() == 125
    info = client.get("/datastore/?output=all").json()["objects"]["Phantom_000"]["labels"]["final"]["info"]
    assert info["remapped"] == {"1": 1, "2": 2, "3": 4} and info["name"] == "x.nii.gz"
    r = client.put("/datastore/label?image=Phantom_000&tag=final", files={"label": ("x.nii.gz", data)},
                   data={"params": json.dumps({"label_info": with_background[:2]})})  # value 3 belongs to no listed segment
    assert r.status_code == 422 and "values [3] that none of the 2 segment(s) of its label_info takes" in r.json()["error"]
    r = client.put("/datastore/label?image=Phantom_000&tag=final", files={"label": ("x.nii.gz", data)})  # no label_info: 3 is no code
    assert r.status_code == 422 and "[3]" in r.json()["error"]


def test_uploads_in_itk_vector_layout_and_with_a_blank_sequence_and_a_label_on_another_grid(client: TestClient, studies: Path, tmp_path: Path):
    arrays = [np.asarray(nib.load(f).dataobj).astype(np.int16) for f in case_files(studies / "Phantom_001")]
    affine = nib.load(case_files(studies / "Phantom_001")[0]).affine
    arrays[2][...] = 0  # no T2
    nib.save(nib.Nifti1Image(np.stack(arrays, -1)[..., None, :], affine), tmp_path / "vector.nii.gz")  # (H, W, D, 1, 4), as SimpleITK Compose writes
    r = client.put("/datastore/?image=Vector_1", files={"file": ("C:\\Users\\me\\vector.nii.gz", (tmp_path / "vector.nii.gz").read_bytes())})
    assert r.status_code == 200, r.text
    assert client.get("/datastore/?output=all").json()["objects"]["Vector_1"]["image"]["info"]["missing_sequences"] == ["t2"]
    assert client.post("/infer/brats_unet3d?image=Vector_1&output=json").json()["missing_sequences"] == ["t2"]
    nib.save(nib.Nifti1Image(np.zeros(arrays[0].shape + (4,), np.int16), affine), tmp_path / "blank.nii.gz")
    r = client.put("/datastore/?image=Blank_1", files={"file": ("/data/blank.nii.gz", (tmp_path / "blank.nii.gz").read_bytes())})
    assert r.status_code == 422 and r.json()["error"] == "upload 'blank.nii.gz' holds zeros only; a study needs at least one sequence"
    shifted = affine.copy()
    shifted[:3, :3] *= 2.0  # twice the spacing
    nib.save(nib.Nifti1Image(np.zeros(arrays[0].shape, np.uint8), shifted), tmp_path / "label.nii.gz")
    r = client.put("/datastore/label?image=Phantom_001", files={"label": ("label.nii.gz", (tmp_path / "label.nii.gz").read_bytes())})
    assert r.status_code == 422 and "geometry differs from image 'Phantom_001' (Phantom_001_flair.nii.gz): spacing (mm) [2.0, 1.8, 3.0] against [1.0, 0.9, 1.5]" in r.json()["error"]


def test_a_server_from_relative_folders_trains_on_absolute_paths_and_refuses_a_studies_folder_that_is_none(
        studies: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from app.serve import Datastore, DatastoreError

    monkeypatch.chdir(tmp_path)
    store = Datastore("store", "studies")  # as `volseg serve --studies studies --store store` in this folder
    label = _label_bytes(studies, "Phantom_000", tmp=tmp_path)
    store.save_label("Phantom_000", "l.nii.gz", label)
    [item] = store.training_items()
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in [*item["image"], item["label"]])  # a training process reads them anywhere
    with pytest.raises(DatastoreError, match="studies folder 'nope' does not exist or is not a folder"):
        Datastore("store2", "nope")
    assert not (tmp_path / "store2").exists()
    assert "it is one case folder; --studies takes the folder that holds the case folders" in Datastore("store3", "studies/Phantom_000").studies_hint()
    assert "--studies takes a folder of BraTS case folders" in Datastore("store4", tmp_path / "store").studies_hint()
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "Phantom_001").symlink_to(studies / "Phantom_001", target_is_directory=True)
    store5 = Datastore("store5", linked)
    assert store5.ids() == []  # not served
    assert ("case folder(s) Phantom_001 link outside it, and the server gives out no file outside --studies; copy the cases in, "
            "or serve the folder the links point into") in store5.studies_hint()


def test_a_bundle_without_weights_is_refused_before_the_server_starts(studies: Path, tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="bundle 'ct_unet3d' has no trained weights.*then serve it with --bundle R"):
        create_app(ServerConfig(tmp_path / "store", studies, bundles=["brats_unet3d", "ct_unet3d"], device="cpu"))


def test_a_port_in_use_is_refused_before_anything_is_built(tmp_path: Path):
    import socket

    from typer.testing import CliRunner

    from app.cli import app as cli
    from app.serve import serve_address

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{port}: .*choose another with --port"):
            serve_address("127.0.0.1", port)
        result = CliRunner().invoke(cli, ["serve", "--port", str(port), "--store", str(tmp_path / "store")])
    assert result.exit_code == 2 and "choose another with --port" in result.output and not (tmp_path / "store").exists()
    result = CliRunner().invoke(cli, ["serve", "--port", "0", "--studies", str(tmp_path / "nope"), "--store", str(tmp_path / "store")])
    assert result.exit_code == 2 and "does not exist or is not a folder" in result.output and not (tmp_path / "store").exists()
