"""Bundle folders stand alone: no symbolic links, and the generated config copies
(app.bundle_tools.sync) are what their sources say."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from monai.bundle import ConfigParser

from app.bundle_tools import sync
from app.bundles import BUNDLES, bundle_dir
from tests.conftest import REPO_ROOT

FIX = "run `python -m app.bundle_tools.sync` (after editing a template bundle's configs or a common.yaml)"


def test_no_symbolic_links_in_any_bundle():
    links = [str(Path(folder, n)) for folder, dirs, names in os.walk(REPO_ROOT / "bundles") for n in dirs + names if Path(folder, n).is_symlink()]
    assert not links, f"bundle folders must hold real files (a copied folder loses what a link points to): {links}"


def test_generated_copies_are_in_sync():
    stale = sync.stale_files(REPO_ROOT / "bundles")
    assert not stale, f"stale generated bundle files: {[str(p.relative_to(REPO_ROOT)) for p in stale]}; {FIX}"


@pytest.mark.parametrize("name", sorted(BUNDLES))
def test_inference_config_alone_holds_every_common_key_once(name: str, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("MONAI_FAIL_ON_DUPLICATE_CONFIG", "1")  # a key in both common.yaml and the overlay
    configs = bundle_dir(name) / "configs"
    common = ConfigParser.load_config_file(configs / "common.yaml")
    inference = ConfigParser.load_config_file(configs / "inference.yaml")
    assert {k: inference[k] for k in common} == common
    assert {"network_def", "preprocessing", "inferer", "postprocessing", "evaluator", "run"} <= set(inference)


def test_sync_rewrites_stale_copies_and_keeps_the_network_block(tmp_path: Path):
    root = tmp_path / "bundles"
    for name in ("brats_unet3d", "brats_deeplab3d", "ct_unet3d"):
        shutil.copytree(bundle_dir(name), root / name, ignore=shutil.ignore_patterns("models", "docs"))
    template = root / "brats_unet3d" / "configs" / "common.yaml"
    template.write_text(template.read_text().replace("overlap: 0.5\n", "overlap: 0.625\n"))
    (root / "brats_deeplab3d" / "configs" / "train.yaml").unlink()
    (root / "brats_deeplab3d" / "configs" / "evaluate.yaml").unlink()
    (root / "brats_deeplab3d" / "configs" / "evaluate.yaml").symlink_to(root / "brats_unet3d" / "configs" / "evaluate.yaml")

    stale = {p.relative_to(root).as_posix() for p in sync.stale_files(root)}
    assert stale == {"brats_unet3d/configs/inference.yaml", "brats_deeplab3d/configs/common.yaml", "brats_deeplab3d/configs/inference.yaml",
                     "brats_deeplab3d/configs/train.yaml", "brats_deeplab3d/configs/evaluate.yaml"}
    assert {p.relative_to(root).as_posix() for p in sync.sync(root)} == stale
    assert sync.stale_files(root) == []
    assert not (root / "brats_deeplab3d" / "configs" / "evaluate.yaml").is_symlink()
    assert not (root / "brats_unet3d" / "configs" / "evaluate.yaml").read_text().startswith("# Generated")  # not written through the link
    for name, network in (("brats_unet3d", "unet3d"), ("brats_deeplab3d", "deeplab3d")):
        config = ConfigParser.load_config_file(root / name / "configs" / "inference.yaml")
        assert config["overlap"] == 0.625 and config["network_def"]["name"] == network


def test_sync_refuses_a_copy_without_markers(tmp_path: Path):
    root = tmp_path / "bundles"
    shutil.copytree(bundle_dir("ct_unet3d"), root / "ct_unet3d")
    inference = root / "ct_unet3d" / "configs" / "inference.yaml"
    inference.write_text("".join(line for line in inference.read_text().splitlines(keepends=True) if not line.startswith(sync.COMMON_END)))
    with pytest.raises(ValueError, match=r"inference.yaml: expected one block .* found 1 start and 0 end"):
        sync.stale_files(root)
