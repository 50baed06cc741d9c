"""Shared fixtures: small synthetic BraTS-like cases with non-cubic shapes and anisotropic spacing."""

from __future__ import annotations

import atexit
import gzip
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from app.constants import MODALITIES
from app.data import build_decathlon_manifest, build_manifest
from app.data.phantom import make_brats_phantom, make_ct_phantom

# Torch unless a test asks for OpenVINO (converting every throwaway network would be slow), and
# converted models in a throwaway cache, not the user's ~/.cache/volseg.
os.environ["VOLSEG_BACKEND"] = "torch"
os.environ["VOLSEG_CACHE"] = tempfile.mkdtemp(prefix="volseg_cache_")
atexit.register(shutil.rmtree, os.environ["VOLSEG_CACHE"], ignore_errors=True)  # it held up to 161 MB a run, left in /tmp
# Eager training (a minute of torch.compile per throwaway run would dominate the suite), except
# in tests/engines/test_compile.py, which runs a bundle's training with compile on.
os.environ["VOLSEG_COMPILE"] = "0"

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_BRATS = REPO_ROOT.parent / "shared" / "data" / "brats2018"


@pytest.fixture(scope="session")
def phantom_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Five phantom cases, shape (40, 48, 36), spacing (1.0, 0.9, 1.5) mm, in one data folder."""
    root = tmp_path_factory.mktemp("brats_phantoms")
    for i in range(5):
        make_brats_phantom(root, f"Phantom_{i:03d}", shape=(40, 48, 36), spacing_mm=(1.0, 0.9, 1.5), seed=i)
    return root


@pytest.fixture(scope="session")
def phantom_manifest(phantom_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Datalist of the phantoms: 3 training, 1 validation, 1 test (fractions 0.6/0.2/0.2)."""
    out = tmp_path_factory.mktemp("manifest") / "phantoms.json"
    build_manifest(phantom_root, out=out, seed=0, fractions=(0.6, 0.2, 0.2))
    assert json.loads(out.read_text())["numTraining"] == 3
    return out


@pytest.fixture(scope="session")
def ct_phantom_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Five Decathlon-style CT phantoms, shape (40, 36, 20), spacing (1.5, 1.5, 4.0) mm."""
    root = tmp_path_factory.mktemp("ct_phantoms")
    for i in range(5):
        make_ct_phantom(root, f"ct_{i:03d}", shape=(40, 36, 20), spacing_mm=(1.5, 1.5, 4.0), seed=i)
    return root


@pytest.fixture(scope="session")
def ct_phantom_manifest(ct_phantom_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Datalist of the CT phantoms: 2 training, 2 validation, 1 test (fractions 0.4/0.4/0.2)."""
    out = tmp_path_factory.mktemp("ct_manifest") / "ct.json"
    build_decathlon_manifest(ct_phantom_root, out=out, seed=0, fractions=(0.4, 0.4, 0.2))
    return out


@pytest.fixture(scope="session")
def bundle_data(phantom_root: Path, phantom_manifest: Path, ct_phantom_root: Path, ct_phantom_manifest: Path):
    """data kind -> (data root, manifest, label values a prediction may hold)."""
    return {"brats": (phantom_root, phantom_manifest, {0, 1, 2, 4}), "ct": (ct_phantom_root, ct_phantom_manifest, {0, 1})}


@pytest.fixture(scope="session")
def volseg_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """VolSeg's wheel, built once per session offline (``pip wheel . --no-deps --no-build-isolation``
    with this environment's setuptools; about 15 s on 2 cores); used by the slow wheel tests."""
    import subprocess
    import sys

    pytest.importorskip("setuptools")
    out = tmp_path_factory.mktemp("wheel")
    cmd = [sys.executable, "-m", "pip", "wheel", str(REPO_ROOT), "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w", str(out)]
    done = subprocess.run(cmd, capture_output=True, encoding="utf-8", errors="replace", cwd=out, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    (path,) = out.glob("volseg-*.whl")
    return path


@pytest.fixture()
def phantom_copies(phantom_root: Path, tmp_path: Path) -> list[Path]:
    """Three writable copies of phantom cases (``tmp_path/data/Phantom_00{0,1,2}``)."""
    root = tmp_path / "data"
    for i in range(3):
        shutil.copytree(phantom_root / f"Phantom_{i:03d}", root / f"Phantom_{i:03d}")
    return [root / f"Phantom_{i:03d}" for i in range(3)]


def write_header_bomb(folder: Path, case_id: str) -> Path:
    """Replace (or create) ``folder``'s four BraTS sequences with ~97-byte gzip NIfTI headers, each
    declaring 1000^3 int16 voxels (issue 14's probe: a tiny file that would need 2 GB to read)."""
    import nibabel as nib
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    header = nib.Nifti1Header()
    header.set_data_shape((1000, 1000, 1000))
    header.set_data_dtype(np.int16)
    header["vox_offset"] = 352
    for seq in MODALITIES:
        (folder / f"{case_id}_{seq}.nii.gz").write_bytes(gzip.compress(header.binaryblock + b"\0" * 4))
    return folder


def case_files(case_dir: Path) -> list[Path]:
    """The four modality files of a case folder, in ``MODALITIES`` order."""
    return [case_dir / f"{case_dir.name}_{m}.nii.gz" for m in MODALITIES]


def loaded_shared_brats_cases():
    """Each shared BraTS case's four sequences as the bundles' reader loads them: ``(case_id, image)``
    with ``image`` ``(4, H, W, D)``, for the real-data tests of the input checks."""
    from app.io import LoadVolumed

    load = LoadVolumed("image", ensure_channel_first=True)
    for folder in sorted(p for p in SHARED_BRATS.iterdir() if p.is_dir()):
        yield folder.name, load({"image": [str(f) for f in case_files(folder)]})["image"]
