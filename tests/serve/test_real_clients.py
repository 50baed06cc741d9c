"""Drive a live `volseg serve` with the real clients shipped in the monailabel 0.8.5 wheel.

The wheel is fetched at test time (`pip download --no-deps monailabel==0.8.5`) into a cache; the
two client modules are loaded from it without installing monailabel, and none of its code is kept
in this repository. Skipped, with the reason, where the package registry cannot be reached.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from app.serve import ServerConfig
from tests.conftest import SHARED_BRATS, case_files
from tests.serve.live import LiveServer, free_port

WHEEL = "monailabel==0.8.5"
SLICER_CLIENT = "plugins/slicer/MONAILabel/MONAILabelLib/client.py"
CACHE = Path(os.environ.get("VOLSEG_CACHE", Path.home() / ".cache" / "volseg")) / "wheels"


def _clients() -> tuple[type, type]:
    wheels = sorted(CACHE.glob("monailabel-0.8.5-*.whl"))
    if not wheels:
        CACHE.mkdir(parents=True, exist_ok=True)
        done = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", WHEEL, "-d", str(CACHE)], capture_output=True, encoding="utf-8", errors="replace", timeout=300)
        wheels = sorted(CACHE.glob("monailabel-0.8.5-*.whl"))
        if done.returncode != 0 or not wheels:
            pytest.skip(f"cannot fetch {WHEEL} from the package registry: {done.stderr.strip().splitlines()[-1:] or done.returncode}")
    extracted = CACHE / "monailabel-0.8.5-clients"
    if not extracted.is_dir():
        with zipfile.ZipFile(wheels[0]) as zf:
            for name in zf.namelist():
                if name.endswith(SLICER_CLIENT) or name == "monailabel/client/client.py":
                    target = extracted / ("slicer_client.py" if name.endswith(SLICER_CLIENT) else "monailabel_client.py")
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(zf.read(name))
    loaded = []
    for stem in ("slicer_client", "monailabel_client"):
        spec = importlib.util.spec_from_file_location(f"_volseg_test_{stem}", extracted / f"{stem}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        loaded.append(module.MONAILabelClient)
    return loaded[0], loaded[1]


@pytest.fixture(scope="module")
def client_classes():
    return _clients()


def _slicer_flow(client_cls, url: str, tmp_path: Path, studies: Path) -> str:
    client = client_cls(url, tmpdir=str(tmp_path))
    assert client.auth_enabled() is False
    info = client.info()
    assert info["models"]["brats_unet3d"]["type"] == "segmentation"
    sample = client.next_sample("random", {})
    image_id = sample["id"]
    result_file, params = client.infer("brats_unet3d", image_id, {"result_extension": ".nrrd", "result_dtype": "uint8"})
    assert params["label_names"] == {"NCR/NET": 1, "ED": 2, "ET": 4}
    label, flair = sitk.ReadImage(result_file), sitk.ReadImage(str(case_files(studies / image_id)[3]))
    assert label.GetSize() == flair.GetSize() and label.GetPixelID() == sitk.sitkUInt8
    np.testing.assert_allclose(label.GetOrigin(), flair.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(label.GetDirection(), flair.GetDirection(), atol=1e-6)
    assert set(np.unique(sitk.GetArrayViewFromImage(label))) <= {0, 1, 2, 4}
    saved = client.save_label(image_id, result_file, tag="final", params={"label_info": [{"name": "ET", "id": 4}]})
    assert saved["image"] == image_id
    store = client.datastore()
    assert "final" in store["objects"][image_id]["labels"]
    return image_id


@pytest.mark.slow
def test_slicer_and_python_clients_against_live_server(client_classes, phantom_root: Path, tmp_path: Path):
    slicer_cls, python_cls = client_classes
    studies = tmp_path / "studies"
    for case in ("Phantom_000", "Phantom_001"):
        shutil.copytree(phantom_root / case, studies / case)
    with LiveServer(ServerConfig(tmp_path / "store", studies, device="cpu")) as url:
        first = _slicer_flow(slicer_cls, url, tmp_path, studies)
        second = _slicer_flow(python_cls, url, tmp_path, studies)
    assert {first, second} == {"Phantom_000", "Phantom_001"}  # next_sample skips labelled studies


@pytest.mark.slow
@pytest.mark.real_data
@pytest.mark.skipif(not SHARED_BRATS.is_dir(), reason=f"no BraTS data at {SHARED_BRATS}")
def test_slicer_client_segments_a_real_brats_case(client_classes, tmp_path: Path):
    slicer_cls, _ = client_classes
    studies = tmp_path / "studies"
    shutil.copytree(SHARED_BRATS / "Brats18_CBICA_AME_1", studies / "Brats18_CBICA_AME_1")  # a link out of --studies is not served
    with LiveServer(ServerConfig(tmp_path / "store", studies, device="cpu")) as url:
        image_id = _slicer_flow(slicer_cls, url, tmp_path, studies)
    assert image_id == "Brats18_CBICA_AME_1"


@pytest.mark.slow
def test_volseg_serve_command_starts_and_answers(phantom_root: Path, tmp_path: Path):
    import json
    import urllib.request

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--studies", str(phantom_root), "--store", str(tmp_path / "store"),
                             "--port", str(port), "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline, info = time.time() + 60, None
        while info is None and time.time() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/info/", timeout=2) as r:
                    info = json.loads(r.read())
            except OSError:
                time.sleep(0.2)
        assert info is not None, proc.stdout.read().decode() if proc.poll() is not None else "no answer in 60 s"
        assert info["datastore"]["total"] == 5 and "brats_unet3d" in info["models"]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
