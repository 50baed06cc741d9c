"""MONAI's own bundle checks, offline: verify_metadata against the shipped schema, verify_net_in_out."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from monai.bundle import verify_metadata, verify_net_in_out

from app.bundles import BUNDLES, REPO_ROOT, bundle_dir

SCHEMA = REPO_ROOT / "bundles" / "meta_schema.json"


@pytest.mark.parametrize("name", sorted(BUNDLES))
def test_metadata_matches_schema(name: str):
    verify_metadata(meta_file=str(bundle_dir(name) / "configs" / "metadata.json"), filepath=str(SCHEMA))


def test_schema_rejects_metadata_without_io(tmp_path: Path):
    meta = json.loads((bundle_dir("brats_unet3d") / "configs" / "metadata.json").read_text())
    del meta["network_data_format"]["outputs"]
    bad = tmp_path / "metadata.json"
    bad.write_text(json.dumps(meta))
    shutil.copy(SCHEMA, tmp_path / "schema.json")
    with pytest.raises(ValueError, match="outputs"):
        verify_metadata(meta_file=str(bad), filepath=str(tmp_path / "schema.json"))


@pytest.mark.parametrize("name", sorted(BUNDLES))
def test_net_in_out(name: str):
    root = bundle_dir(name)
    verify_net_in_out(net_id="network_def", meta_file=str(root / "configs" / "metadata.json"), config_file=str(root / "configs" / "inference.yaml"),
                      n=1, device="cpu", bundle_root=str(root))  # n=1, the default of the command the README shows; inference.yaml alone


@pytest.mark.parametrize("name", sorted(n for n, info in BUNDLES.items() if info.ships_weights))
def test_shipped_weights_load_and_fit_the_size_limit(name: str):
    import torch

    from monai.bundle import ConfigParser

    weights = bundle_dir(name) / "models" / "model.pt"
    assert weights.stat().st_size <= 25 * 1024 * 1024
    parser = ConfigParser()
    parser.read_config(str(bundle_dir(name) / "configs" / "common.yaml"))
    parser.read_meta(str(bundle_dir(name) / "configs" / "metadata.json"))
    parser["bundle_root"] = str(bundle_dir(name))
    net = parser.get_parsed_content("network_def")
    net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))


@pytest.mark.parametrize("name", sorted(n for n, info in BUNDLES.items() if info.ships_weights))
def test_monai_ckpt_export_of_shipped_weights(name: str, tmp_path: Path):
    import torch
    from monai.bundle import ckpt_export

    root = bundle_dir(name)
    out = tmp_path / "model.ts"
    ckpt_export(net_id="network_def", filepath=str(out), ckpt_file=str(root / "models" / "model.pt"), meta_file=str(root / "configs" / "metadata.json"),
                config_file=str(root / "configs" / "inference.yaml"), bundle_root=str(root))
    scripted = torch.jit.load(str(out))
    assert scripted(torch.zeros(1, 4, 32, 32, 32)).shape == (1, 3, 32, 32, 32)


#: Packages every bundle's configs need, directly or through the VolSeg code they reach (MONAI
#: engines and handlers: pytorch-ignite; SimpleITK reading, nibabel writing NIfTI; YAML configs).
REQUIRED = {"volseg", "monai", "torch", "numpy", "pytorch-ignite", "nibabel", "SimpleITK", "PyYAML", "tensorboard"}


@pytest.mark.parametrize("name", sorted(BUNDLES))
def test_required_packages_name_volseg_and_every_imported_package(name: str):
    from importlib.metadata import version

    import app

    meta = json.loads((bundle_dir(name) / "configs" / "metadata.json").read_text())
    required = meta["required_packages_version"]
    assert REQUIRED <= set(required), f"missing from required_packages_version: {sorted(REQUIRED - set(required))}"
    assert required["volseg"] == app.__version__ == version("volseg")
    assert (required["monai"], required["torch"], required["numpy"]) == (meta["monai_version"], meta["pytorch_version"], meta["numpy_version"])
    if "RemoveSmallObjectsd" in (bundle_dir(name) / "configs" / "inference.yaml").read_text():
        assert "scikit-image" in required  # MONAI's RemoveSmallObjects runs skimage.morphology
    for package in required:
        version(package)  # installed under that distribution name (raises PackageNotFoundError)


@pytest.mark.parametrize("name", ["brats_unet3d", "brats_deeplab3d"])
def test_roi_size_follows_the_bundle_metadata(name: str):
    """Training crops and inference windows both take the patch the weights were trained on from
    metadata ``training#roi_size``; a run's override still wins."""
    from monai.bundle import ConfigParser

    from app.inference import Segmenter

    root = bundle_dir(name)
    roi = json.loads((root / "configs" / "metadata.json").read_text())["training"]["roi_size"]
    assert len(roi) == 3 and all(s % 16 == 0 for s in roi)  # four stride-2 levels
    parser = ConfigParser()
    parser.read_config([str(root / "configs" / "common.yaml"), str(root / "configs" / "train.yaml")])
    parser.read_meta(str(root / "configs" / "metadata.json"))
    parser["bundle_root"] = str(root)
    assert parser.get_parsed_content("roi_size") == roi
    crops = [t for t in parser.get_parsed_content("train#random_transforms") if type(t).__name__ == "RandCropByPosNegLabeld"]
    assert len(crops) == 1 and list(crops[0].cropper.spatial_size) == roi
    seg = Segmenter(name, device="cpu", backend="torch")
    assert list(seg.parser.get_parsed_content("sliding_window_inferer").roi_size) == roi
    small = Segmenter(name, device="cpu", backend="torch", overrides={"roi_size": [32, 32, 32]})
    assert list(small.parser.get_parsed_content("sliding_window_inferer").roi_size) == [32, 32, 32]
