"""Fault and fuzz tests of `volseg serve` (issue 14, "never a silent wrong answer").

Each test feeds one hostile or broken input (synthetic, small: the phantoms are (40, 48, 36)
voxels at (1.0, 0.9, 1.5) mm) and asserts the refusal or the recovery that the earlier server
got wrong: body read before the token check, chunked bodies spooled past the cap, gzip bombs,
huge headers, float label codes, detached data files, ids with a trailing newline, links out of
the studies folder, crash-unsafe label replacement, stale temporaries, a stray training child.
"""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import logging
import os
import re
import shutil
import signal
import socket
import sys
import threading
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from fastapi.testclient import TestClient

import app.serve.datastore as datastore_module
from app.serve import Datastore, DatastoreError, ServerConfig, create_app
from app.serve.datastore import check_id
from app.serve.training import TrainingRunner
from tests.conftest import case_files
from tests.serve.live import LiveServer

SECRET = b"TOPSECRET"


@pytest.fixture()
def studies(phantom_root: Path, tmp_path: Path) -> Path:
    root = tmp_path / "studies"
    for case in ("Phantom_000", "Phantom_001"):
        shutil.copytree(phantom_root / case, root / case)
    return root


def _config(tmp_path: Path, studies: Path, **kwargs) -> ServerConfig:
    return ServerConfig(tmp_path / "store", studies, device="cpu", **{"max_upload_mb": 1.0, **kwargs})


@pytest.fixture()
def client(studies: Path, tmp_path: Path) -> TestClient:
    return TestClient(create_app(_config(tmp_path, studies)))


def _reference(studies: Path, case: str = "Phantom_000") -> sitk.Image:
    return sitk.ReadImage(str(case_files(studies / case)[3]))


def _label_image(studies: Path, dtype: type = np.uint8, value: float = 2) -> sitk.Image:
    """A label with the FLAIR's geometry: a cube of ``value`` in zeros."""
    reference = _reference(studies)
    array = np.zeros(sitk.GetArrayViewFromImage(reference).shape, dtype=dtype)
    array[10:20, 10:20, 10:20] = value
    label = sitk.GetImageFromArray(array)
    label.CopyInformation(reference)
    return label


def _encode(image: sitk.Image, suffix: str, tmp_path: Path) -> bytes:
    path = tmp_path / f"encoded{suffix}"
    sitk.WriteImage(image, str(path))
    return path.read_bytes()


def _put_label(client: TestClient, data: bytes, filename: str, image: str = "Phantom_000", tag: str = "final"):
    return client.put(f"/datastore/label?image={image}&tag={tag}", files={"label": (filename, data)})


async def _asgi_request(app, path: str, headers: list[tuple[bytes, bytes]], chunks, query: bytes = b"") -> tuple[list[dict], dict]:
    """Drive the ASGI app by hand with a streamed (chunked) body; counts what the app read."""
    read = {"calls": 0, "bytes": 0}
    chunks = iter(chunks)

    async def receive() -> dict:
        read["calls"] += 1
        chunk = next(chunks, None)
        if chunk is None:
            return {"type": "http.request", "body": b"", "more_body": False}
        read["bytes"] += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": True}

    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "PUT", "scheme": "http", "path": path,
             "raw_path": path.encode(), "query_string": query, "root_path": "", "headers": headers,
             "client": ("127.0.0.1", 1234), "server": ("127.0.0.1", 8000)}
    await app(scope, receive, send)
    return sent, read


def _multipart_stream(total_bytes: int, chunk_bytes: int = 2**18):
    """A multipart upload of ``total_bytes`` zeros in chunks, with no Content-Length (chunked)."""
    yield b'--b\r\nContent-Disposition: form-data; name="label"; filename="l.nii.gz"\r\nContent-Type: application/octet-stream\r\n\r\n'
    for _ in range(total_bytes // chunk_bytes):
        yield bytes(chunk_bytes)


_CHUNKED = [(b"content-type", b"multipart/form-data; boundary=b"), (b"transfer-encoding", b"chunked")]


# 1. token before body ---------------------------------------------------------------------


def test_token_is_checked_before_any_body_byte_is_read(studies: Path, tmp_path: Path):
    api = create_app(_config(tmp_path, studies, token="s3cret"))
    sent, read = asyncio.run(_asgi_request(api, "/datastore/label", _CHUNKED, _multipart_stream(8 * 2**20), b"image=Phantom_000"))
    assert sent[0]["status"] == 401 and read["calls"] == 0  # answered from the headers; the client is still sending
    assert "bearer token" in json.loads(sent[1]["body"])["error"]
    wrong = [*_CHUNKED, (b"authorization", b"Bearer nope")]
    sent, read = asyncio.run(_asgi_request(api, "/datastore/label", wrong, _multipart_stream(2**20), b"image=Phantom_000"))
    assert sent[0]["status"] == 401 and read["calls"] == 0
    assert TestClient(api).get("/auth/").status_code == 200  # how a client learns that a token is needed


def test_unauthenticated_chunked_upload_is_answered_while_the_client_is_still_sending(studies: Path, tmp_path: Path):
    with LiveServer(_config(tmp_path, studies, token="s3cret")) as url, socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=10) as sock:
        sock.sendall(b"PUT /datastore/label?image=Phantom_000 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                     b"Content-Type: multipart/form-data; boundary=b\r\n\r\n")  # headers sent, body not (yet)
        answer = sock.recv(4096)  # the earlier server waited for the body here until the timeout
    assert answer.startswith(b"HTTP/1.1 401")


# 2. sizes: chunked bodies, gzip bombs, header voxel budget -----------------------------------


def test_chunked_upload_is_refused_once_past_the_cap_without_reading_the_rest(client: TestClient, studies: Path, tmp_path: Path):
    api = create_app(_config(tmp_path, studies))  # max_upload_mb=1: a body may be 2 MiB with the envelope
    sent, read = asyncio.run(_asgi_request(api, "/datastore/label", _CHUNKED, _multipart_stream(64 * 2**20), b"image=Phantom_000"))
    assert sent[0]["status"] == 413 and "limit" in json.loads(sent[1]["body"])["error"]
    assert read["bytes"] <= 2 * 2**20 + 2**18 + 2**10  # stopped at the cap, not after spooling 64 MiB
    r = client.put("/datastore/label?image=Phantom_000", content=_multipart_stream(3 * 2**20),
                   headers={"content-type": "multipart/form-data; boundary=b"})  # a generator: sent chunked, no Content-Length
    assert "content-length" not in r.request.headers and r.status_code == 413
    assert client.get("/info/").status_code == 200


def _gzip_bomb(header_and_data: bytes, inflated_bytes: int) -> bytes:
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", compresslevel=9) as stream:
        stream.write(header_and_data)
        for _ in range(inflated_bytes // 2**20):
            stream.write(bytes(2**20))
    return buffer.getvalue()


def test_gzip_upload_inflating_past_the_budget_is_refused(studies: Path, tmp_path: Path):
    client = TestClient(create_app(_config(tmp_path, studies, max_inflated_mb=8.0)))
    label = nib.Nifti1Image(np.zeros(nib.load(case_files(studies / "Phantom_000")[3]).shape, np.uint8), nib.load(case_files(studies / "Phantom_000")[3]).affine)
    bomb = _gzip_bomb(label.to_bytes(), 64 * 2**20)  # a valid label followed by 64 MiB of zeros
    assert len(bomb) < 2**20  # small on the wire
    r = _put_label(client, bomb, "l.nii.gz")
    assert r.status_code == 413 and "inflates to more than 8 MiB" in r.json()["error"]
    study = nib.Nifti1Image(np.zeros((40, 48, 36, 4), np.int16), np.eye(4))
    r = client.put("/datastore/image?image=Bomb_1", files={"file": ("bomb.nii.gz", _gzip_bomb(study.to_bytes(), 64 * 2**20))})
    assert r.status_code == 413 and "bomb.nii.gz" in r.json()["error"]
    assert r.status_code == 413 and client.get("/datastore/?output=stats").json()["total"] == 2


def test_header_claiming_too_many_voxels_is_refused_before_reading(client: TestClient, monkeypatch: pytest.MonkeyPatch):
    def no_voxels(*args, **kwargs):
        raise AssertionError("voxels were read before the header was checked")

    monkeypatch.setattr(sitk.ImageFileReader, "Execute", no_voxels)
    monkeypatch.setattr(nib.arrayproxy.ArrayProxy, "__array__", no_voxels)
    header = nib.Nifti1Header()
    header.set_data_dtype(np.uint8)
    header.set_data_shape((1500, 1500, 1000))
    tiny = gzip.compress(header.binaryblock + bytes(4) + bytes(64))  # a 100-byte file claiming 2.25e9 voxels
    r = _put_label(client, tiny, "l.nii.gz")
    assert r.status_code == 422 and "2,250,000,000 voxels" in r.json()["error"] and "budget" in r.json()["error"]
    header.set_data_shape((1500, 1500, 1000, 4))
    r = client.put("/datastore/image?image=Huge_1", files={"file": ("huge.nii.gz", gzip.compress(header.binaryblock + bytes(68)))})
    assert r.status_code == 422 and "budget" in r.json()["error"]
    mha = b"ObjectType = Image\nNDims = 3\nDimSize = 1500 1500 1000\nElementType = MET_UCHAR\nElementDataFile = LOCAL\n"
    r = _put_label(client, mha, "l.mha")
    assert r.status_code == 422 and "budget" in r.json()["error"]


# 3. label contents and formats ---------------------------------------------------------------


def test_label_codes_must_be_exact_integers(client: TestClient, studies: Path, tmp_path: Path):
    r = _put_label(client, _encode(_label_image(studies, np.float32, 1.7), ".nii.gz", tmp_path), "l.nii.gz")
    assert r.status_code == 422 and "1.7" in r.json()["error"]  # refused, not truncated to code 1
    r = _put_label(client, _encode(_label_image(studies, np.float32, float("nan")), ".nii.gz", tmp_path), "l.nii.gz")
    assert r.status_code == 422 and "NaN" in r.json()["error"]  # not a 500
    r = _put_label(client, _encode(_label_image(studies, np.float32, 4.0), ".nii.gz", tmp_path), "l.nii.gz")
    assert r.status_code == 200, r.text  # integral floats are exact codes
    assert client.get("/datastore/?output=stats").json()["completed"] == 1


def _detached_header(studies: Path, tmp_path: Path, header_suffix: str, data_file: Path) -> bytes:
    """A MetaImage (.mhd) or NRRD (.nhdr) header with the FLAIR's geometry, pointing at ``data_file``."""
    path = tmp_path / f"detached{header_suffix}"
    sitk.WriteImage(_label_image(studies), str(path))  # header + detached.raw
    field = rb"ElementDataFile = " if header_suffix == ".mhd" else rb"data file: "
    header, found = re.subn(field + rb"[^\n]*", field + str(data_file).encode(), path.read_bytes())
    assert found == 1
    return header


def test_label_data_must_be_inside_the_uploaded_file(client: TestClient, studies: Path, tmp_path: Path):
    size = _reference(studies).GetSize()
    secret = tmp_path / "elsewhere" / "secret.raw"
    secret.parent.mkdir()
    secret.write_bytes((SECRET * (int(np.prod(size)) // len(SECRET) + 1))[: int(np.prod(size))])
    r = _put_label(client, _detached_header(studies, tmp_path, ".mhd", secret), "l.mha")
    message = r.json()["error"]
    assert r.status_code == 422 and "ElementDataFile = LOCAL" in message
    assert not any(str(b) in message for b in set(SECRET)) and "secret" not in message  # nothing of the other file is echoed
    r = _put_label(client, _detached_header(studies, tmp_path, ".nhdr", secret), "l.nrrd")
    assert r.status_code == 422 and "detached data file" in r.json()["error"]
    assert not list((tmp_path / "store" / "labels").rglob("Phantom_000*"))
    for suffix in (".mha", ".nrrd", ".nii", ".nii.gz"):  # the same label with its data attached is fine
        r = _put_label(client, _encode(_label_image(studies), suffix, tmp_path), f"l{suffix}")
        assert r.status_code == 200, (suffix, r.text)


# 4. ids matched in full ----------------------------------------------------------------------


def test_ids_and_tags_are_matched_in_full(client: TestClient, studies: Path, tmp_path: Path):
    with pytest.raises(DatastoreError):
        check_id("Phantom_000\n")  # `$` would match before the newline
    assert client.get("/datastore/image?image=Phantom_000%0A").status_code == 400
    r = _put_label(client, _encode(_label_image(studies), ".nii.gz", tmp_path), "l.nii.gz", tag="final%0A")
    assert r.status_code == 400 and "invalid label tag" in r.json()["error"]
    assert client.get("/datastore/label?label=Phantom_000&tag=final%0A").status_code == 400
    assert [p.name for p in (tmp_path / "store" / "labels").iterdir()] == []


# 5. the studies folder -----------------------------------------------------------------------


def test_links_leaving_the_studies_folder_are_not_served(client: TestClient, studies: Path, phantom_root: Path, tmp_path: Path):
    outside = tmp_path / "outside"
    shutil.copytree(phantom_root / "Phantom_002", outside / "Phantom_002")
    os.symlink(outside / "Phantom_002", studies / "Phantom_002")  # a whole study linked from elsewhere
    (studies / "Phantom_003").mkdir()
    for source, target in zip(case_files(phantom_root / "Phantom_003"), case_files(studies / "Phantom_003")):
        os.symlink(source, target)  # every file linked from elsewhere
    shutil.copytree(phantom_root / "Phantom_004", studies / "_kept" / "Phantom_004")
    os.symlink(studies / "_kept" / "Phantom_004", studies / "Phantom_004")  # a link inside the folder is fine
    everything = client.get("/datastore/?output=all")
    assert everything.status_code == 200 and sorted(everything.json()["objects"]) == ["Phantom_000", "Phantom_001", "Phantom_004"]
    assert client.get("/datastore/image?image=Phantom_002").status_code == 404
    assert client.get("/datastore/image?image=Phantom_003").status_code == 422
    assert client.post("/infer/brats_unet3d?image=Phantom_002&output=json").status_code == 404


def test_a_bad_study_is_skipped_with_a_warning(client: TestClient, studies: Path, caplog: pytest.LogCaptureFixture):
    (studies / "Broken_1").mkdir()
    shutil.copy(case_files(studies / "Phantom_000")[3], studies / "Broken_1" / "Broken_1_seg.nii.gz")  # a label, no sequence
    with caplog.at_level(logging.WARNING, logger="app.serve.datastore"):
        everything = client.get("/datastore/?output=all")
    assert everything.status_code == 200 and sorted(everything.json()["objects"]) == ["Phantom_000", "Phantom_001"]
    assert any("skipping study 'Broken_1'" in r.getMessage() and "found none" in r.getMessage() for r in caplog.records)
    assert client.get("/datastore/?output=stats").json()["total"] == 2
    assert client.post("/activelearning/first").json()["id"] == "Phantom_000"


# 6. crash-safe, serialised label replacement -------------------------------------------------


def test_a_failed_replacement_keeps_the_old_label(studies: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    store = Datastore(tmp_path / "store", studies)
    old = store.save_label("Phantom_000", "l.nii.gz", _encode(_label_image(studies), ".nii.gz", tmp_path))

    def disk_full(path, write, suffix=""):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(datastore_module, "atomic_write", disk_full)
    with pytest.raises(OSError):
        store.save_label("Phantom_000", "l.nrrd", _encode(_label_image(studies, value=4), ".nrrd", tmp_path))
    assert store.label_file("Phantom_000") == old and old.is_file()  # the old label survives the failed write


def test_concurrent_replacements_leave_one_label(studies: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    store = Datastore(tmp_path / "store", studies)
    uploads = {suffix: _encode(_label_image(studies), suffix, tmp_path) for suffix in (".nii.gz", ".nrrd", ".mha")}
    slow_write = datastore_module.atomic_write

    def slow(path, write, suffix=""):
        time.sleep(0.2)  # widen the window between removing other labels and writing this one
        return slow_write(path, write, suffix)

    monkeypatch.setattr(datastore_module, "atomic_write", slow)
    barrier = threading.Barrier(len(uploads))

    def put(suffix: str) -> None:
        barrier.wait()
        store.save_label("Phantom_000", f"l{suffix}", uploads[suffix])

    threads = [threading.Thread(target=put, args=(s,)) for s in uploads]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len([p for p in (tmp_path / "store" / "labels" / "final").iterdir() if not p.name.endswith(".json")]) == 1


# 7. stale temporaries ------------------------------------------------------------------------


def test_stale_temporaries_are_removed_on_start(studies: Path, tmp_path: Path):
    store_dir = tmp_path / "store"
    stale = [store_dir / "labels" / "final" / ".Phantom_000.nii.gz.k2j3.tmp.nii.gz", store_dir / ".upload.x81.tmp.nii.gz",
             store_dir / "images" / "Up_1" / ".Up_1_t2.nii.gz.a9.tmp.nii.gz", store_dir / "labels" / "final" / ".Phantom_000.final.json.z.tmp"]
    kept = [store_dir / "labels" / "final" / "Phantom_000.nii.gz", store_dir / "train" / "run" / ".last.pt.q.tmp"]
    for path in stale + kept:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half-written")
    TestClient(create_app(_config(tmp_path, studies)))
    assert [p for p in stale if p.exists()] == [] and all(p.exists() for p in kept)  # train/ may belong to a run still going


# 8. the training child -----------------------------------------------------------------------


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


def _wait_for(predicate, timeout_s: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.fixture()
def fake_training(monkeypatch: pytest.MonkeyPatch):
    """Replace ``volseg train`` by a child that starts a grandchild (like a data-loader worker) and sleeps."""
    script = ("import pathlib, subprocess, sys, time; g = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)']); "
              "pathlib.Path(sys.argv[1]).write_text(str(g.pid)); time.sleep(300)")
    monkeypatch.setattr(TrainingRunner, "_command", lambda self, bundle, manifest, out, max_epochs: [sys.executable, "-c", script, str(out / "worker.pid")])
    started: list[int] = []
    yield started
    for pid in started:  # whatever a failing test left running
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _start_training(client: TestClient, studies: Path, tmp_path: Path, started: list[int]) -> tuple[int, int]:
    assert _put_label(client, _encode(_label_image(studies), ".nii.gz", tmp_path), "l.nii.gz").status_code == 200
    r = client.post("/train/", json={"max_epochs": 1})
    assert r.status_code == 200 and r.json()["status"] == "RUNNING"
    state = json.loads((tmp_path / "store" / "train" / "state.json").read_text())
    pid = state["pid"]
    started.append(pid)
    worker_file = Path(state["run"]["output_dir"]) / "worker.pid"
    assert _wait_for(worker_file.is_file), "the fake training child did not start"
    return pid, int(worker_file.read_text())


def test_training_runs_in_its_own_group_and_stops_with_the_server(studies: Path, tmp_path: Path, fake_training: list[int]):
    with TestClient(create_app(_config(tmp_path, studies))) as client:  # the context runs the app's lifespan
        pid, worker = _start_training(client, studies, tmp_path, fake_training)
        assert os.getpgid(pid) == pid and os.getsid(pid) == pid and os.getpgid(worker) == pid
        assert os.getpgid(pid) != os.getpgid(0)  # a Ctrl-C of the server's group does not reach it
    assert _wait_for(lambda: not _running(worker), 10.0) and not _running(pid)  # the whole group went with the server
    assert json.loads((tmp_path / "store" / "train" / "state.json").read_text())["run"]["status"] == "STOPPED"


def test_restarted_server_finds_and_stops_an_earlier_run(studies: Path, tmp_path: Path, fake_training: list[int]):
    crashed = TestClient(create_app(_config(tmp_path, studies)))  # no lifespan: as if the server had been killed
    pid, worker = _start_training(crashed, studies, tmp_path, fake_training)
    restarted = TestClient(create_app(_config(tmp_path, studies)))
    status = restarted.get("/train/").json()
    assert status["status"] == "RUNNING" and status["pid"] == pid
    assert restarted.post("/train/", json={}).status_code == 409  # no second run
    assert restarted.delete("/train/").json()["status"] == "STOPPED"
    assert _wait_for(lambda: not _running(worker), 10.0) and not _running(pid)
    assert restarted.get("/train/").json()["status"] == "STOPPED"


def _finishing_training(monkeypatch: pytest.MonkeyPatch, weights: bool) -> None:
    """Replace ``volseg train`` by a child that writes a bundle folder (the shipped configs, and
    the shipped weights where ``weights``) into the run's output folder and exits 0."""
    from app.bundles import bundle_path

    src = bundle_path("brats_unet3d")
    script = ("import shutil, sys; src, out = sys.argv[1], sys.argv[2]; shutil.copytree(src + '/configs', out + '/configs'); "
              + ("shutil.copytree(src + '/models', out + '/models', ignore=shutil.ignore_patterns('fold*', '*int8*'))" if weights else "pass"))
    monkeypatch.setattr(TrainingRunner, "_command", lambda self, bundle, manifest, out, max_epochs: [sys.executable, "-c", script, str(src), str(out)])


def test_a_finished_training_run_is_served_without_a_restart(studies: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    _finishing_training(monkeypatch, weights=True)
    client = TestClient(create_app(_config(tmp_path, studies)))
    assert _put_label(client, _encode(_label_image(studies), ".nii.gz", tmp_path), "l.nii.gz").status_code == 200
    run_id = client.post("/train/brats_unet3d", json={"max_epochs": 1}).json()["id"]
    assert _wait_for(lambda: client.get("/train/").json()["status"] != "RUNNING")
    status = client.get("/train/").json()
    name = f"brats_unet3d_{run_id}"
    assert status["status"] == "DONE" and status["served_as"] == name
    assert Path(status["output_dir"]).name == name
    info = client.get("/info/").json()
    assert list(info["models"]) == ["brats_unet3d", name] and name in info["trainers"]
    assert info["models"][name]["labels"] == {"NCR/NET": 1, "ED": 2, "ET": 4}
    r = client.post(f"/infer/{name}?image=Phantom_001&output=json")
    assert r.status_code == 200 and r.json()["label_names"] == {"NCR/NET": 1, "ED": 2, "ET": 4}
    # a server started later serves it too (the run is recorded as DONE in state.json)
    assert name in TestClient(create_app(_config(tmp_path, studies))).get("/info/").json()["models"]


def test_train_stats_show_the_epoch_and_best_metric_of_the_run(studies: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """/info/'s train_stats (what 3D Slicer shows of a run) gave id, model, status and start time only."""
    script = ("import json, pathlib, sys; out = pathlib.Path(sys.argv[1]); "
              "(out / 'progress.json').write_text(json.dumps({'epoch': 3, 'total_epochs': 50, 'best_metric': 0.71, 'best_metric_epoch': 2}))")
    monkeypatch.setattr(TrainingRunner, "_command", lambda self, bundle, manifest, out, max_epochs: [sys.executable, "-c", script, str(out)])
    client = TestClient(create_app(_config(tmp_path, studies)))
    assert _put_label(client, _encode(_label_image(studies), ".nii.gz", tmp_path), "l.nii.gz").status_code == 200
    client.post("/train/brats_unet3d", json={"max_epochs": 50})
    assert _wait_for(lambda: client.get("/train/").json()["status"] != "RUNNING")
    stats = client.get("/info/").json()["train_stats"]
    assert stats["epoch"] == 3 and stats["total_epochs"] == 50 and stats["best_metric"] == 0.71 and stats["best_metric_epoch"] == 2
    assert stats["status"] == "DONE" and stats["total_time"] >= 0


def test_a_finished_run_without_weights_is_not_served(studies: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      caplog: pytest.LogCaptureFixture):
    _finishing_training(monkeypatch, weights=False)
    client = TestClient(create_app(_config(tmp_path, studies)))
    assert _put_label(client, _encode(_label_image(studies), ".nii.gz", tmp_path), "l.nii.gz").status_code == 200
    client.post("/train/brats_unet3d", json={"max_epochs": 1})
    assert _wait_for(lambda: client.get("/train/").json()["status"] != "RUNNING")
    with caplog.at_level(logging.WARNING):
        status = client.get("/train/").json()
        assert status["status"] == "DONE" and "served_as" not in status
        assert list(client.get("/info/").json()["models"]) == ["brats_unet3d"]
    warnings = [r.getMessage() for r in caplog.records if "is not served" in r.getMessage()]
    assert len(warnings) == 1 and "no trained weights" in warnings[0]  # once, naming why
