"""The BraTS bundles share one pipeline: brats_deeplab3d's configs are brats_unet3d's, and only
metadata.json (name, network_def, training recipe) differs."""

from __future__ import annotations

import filecmp

import pytest
from monai.bundle import ConfigParser
from monai.networks.nets import UNet

from app.bundles import BUNDLES, bundle_dir, config_files
from app.networks.deeplab3d import DeepLab3D

BRATS = sorted(n for n, info in BUNDLES.items() if info.data_kind == "brats")


def _parser(name: str, overlay: str, **overrides) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config(config_files(name, overlay))
    parser.read_meta(str(bundle_dir(name) / "configs" / "metadata.json"))
    parser.update(overrides)
    return parser


def test_deeplab_bundle_reuses_every_unet_config():
    unet, deeplab = bundle_dir("brats_unet3d") / "configs", bundle_dir("brats_deeplab3d") / "configs"
    shared = sorted(p.name for p in unet.iterdir() if p.name != "metadata.json")
    assert {"common.yaml", "train.yaml", "evaluate.yaml", "inference.yaml", "multi_gpu_train.yaml"} <= set(shared)
    for name in shared:
        assert (deeplab / name).is_symlink() and (deeplab / name).resolve() == (unet / name).resolve()
    assert not (deeplab / "metadata.json").is_symlink()
    assert not filecmp.cmp(deeplab / "metadata.json", unet / "metadata.json", shallow=False)


@pytest.mark.parametrize(("name", "cls"), [("brats_unet3d", UNet), ("brats_deeplab3d", DeepLab3D)])
def test_network_name_and_recipe_come_from_metadata(name: str, cls: type):
    parser = _parser(name, "train")
    assert isinstance(parser.get_parsed_content("network_def"), cls)
    assert parser.get_parsed_content("bundle_root") == str(bundle_dir(name))
    assert parser.get_parsed_content("max_epochs") == parser.get_parsed_content("_meta_#training#max_epochs") > 0


def test_network_arguments_override_through_meta():
    net = _parser("brats_deeplab3d", "inference", **{"_meta_#network_def#width": 8}).get_parsed_content("network_def")
    assert isinstance(net, DeepLab3D) and net.stem.conv.out_channels == 8  # stem conv: width channels
