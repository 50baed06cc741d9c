"""The wheel carries every shipped bundle (configs, weights) and datalist as real files.

The wheel is built once per session by the ``volseg_wheel`` fixture (tests/conftest.py).
"""

from __future__ import annotations

import stat
import zipfile
from pathlib import Path

import pytest

from app.bundles import BUNDLES
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow
SHIPPED = "app/_shipped/"
GENERATED = ("model.ts", "model.onnx", "model.xml", "model.bin")


@pytest.fixture(scope="module")
def wheel(volseg_wheel: Path) -> zipfile.ZipFile:
    with zipfile.ZipFile(volseg_wheel) as zf:
        yield zf


def _shipped(wheel: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    return {i.filename[len(SHIPPED):]: i for i in wheel.infolist() if i.filename.startswith(SHIPPED)}


@pytest.mark.parametrize("name", sorted(BUNDLES))
def test_wheel_ships_each_bundle(wheel: zipfile.ZipFile, name: str) -> None:
    files = _shipped(wheel)
    src = REPO_ROOT / "bundles" / name
    wanted = [p for p in src.glob("configs/*") if p.suffix in (".yaml", ".json", ".conf")]
    wanted += [p for p in src.glob("models/*.pt") if not p.name.startswith(".")]  # model.pt and fold<k>.pt
    wanted += [src / "large_files.yml", src / "LICENSE"]
    assert {"configs/common.yaml", "configs/inference.yaml", "configs/metadata.json"} <= {p.relative_to(src).as_posix() for p in wanted}
    missing = [p.relative_to(REPO_ROOT).as_posix() for p in wanted if p.relative_to(REPO_ROOT).as_posix() not in files]
    assert not missing, f"not in the wheel: {missing}"
    if BUNDLES[name].ships_weights:
        assert f"bundles/{name}/models/model.pt" in files
    for p in wanted:  # real files, the content of their link targets, not links
        info = files[p.relative_to(REPO_ROOT).as_posix()]
        assert info.file_size == p.stat().st_size
        if p.suffix != ".pt":
            assert wheel.read(info) == p.read_bytes()


def test_wheel_ships_manifests_beside_bundles(wheel: zipfile.ZipFile) -> None:
    """``data_manifests/`` ships beside ``bundles/``: the configs' default datalists (``app.resources.manifest_path``)."""
    files = _shipped(wheel)
    manifests = sorted((REPO_ROOT / "data_manifests").glob("*.json"))
    assert manifests
    assert all(f"data_manifests/{p.name}" in files for p in manifests)


def test_wheel_has_no_outputs_exports_or_links(wheel: zipfile.ZipFile) -> None:
    names = [i.filename for i in wheel.infolist()]
    assert not [n for n in names if "/runs/" in n or "/eval/" in n or n.endswith(GENERATED) or "/." in n]
    assert not [i.filename for i in wheel.infolist() if stat.S_ISLNK(i.external_attr >> 16)]
    assert "app/resources.py" in names and "app/bundles.py" in names
