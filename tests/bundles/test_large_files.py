"""Each bundle's large_files.yml lists its weights with their SHA-256 (Model Zoo format), and
MONAI's own download_large_files accepts it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from monai.apps.utils import HashCheckError
from monai.bundle import download_large_files

from app.bundle_tools.large_files import FILE_NAME, large_files_text, stale_entries, weight_files, write_large_files
from app.bundles import BUNDLES, bundle_dir


@pytest.mark.parametrize("name", sorted(BUNDLES))
def test_large_files_list_every_weight_with_its_hash(name: str):
    root = bundle_dir(name)
    problems = stale_entries(root)
    assert not problems, f"{root / FILE_NAME} is stale: {problems}; run `python -m app.bundle_tools.large_files bundles/{name}`"
    entries = yaml.safe_load((root / FILE_NAME).read_text())["large_files"]
    assert [e["path"] for e in entries] == [p.relative_to(root).as_posix() for p in weight_files(root)]
    assert all(set(e) == {"path", "url", "hash_val", "hash_type"} and e["hash_type"] == "sha256" for e in entries)
    if BUNDLES[name].ships_weights:
        assert "models/model.pt" in [e["path"] for e in entries]


def test_monai_download_large_files_verifies_the_shipped_weights():
    download_large_files(bundle_path=str(bundle_dir("brats_deeplab3d")))  # present, hash checked: nothing downloaded


def test_a_replaced_weight_file_is_reported_and_rewritten(tmp_path: Path):
    root = tmp_path / "bundle"
    (root / "models").mkdir(parents=True)
    (root / "configs").mkdir()
    (root / "models" / "model.pt").write_bytes(b"weights v1")
    write_large_files(root)
    assert stale_entries(root) == []
    (root / "models" / "model.pt").write_bytes(b"weights v2")
    (root / "models" / "fold0.pt").write_bytes(b"fold")
    problems = stale_entries(root)
    assert any("'models/fold0.pt' is not in large_files.yml" in p for p in problems)
    assert any(p.startswith("'models/model.pt': listed sha256") for p in problems)
    with pytest.raises(HashCheckError, match="sha256 hash check of existing file failed"):
        download_large_files(bundle_path=str(root))
    write_large_files(root)
    assert stale_entries(root) == [] and large_files_text(root) == (root / FILE_NAME).read_text()
    shutil.rmtree(root / "models")
    assert stale_entries(root) == ["'models/fold0.pt' is listed but missing", "'models/model.pt' is listed but missing"]
