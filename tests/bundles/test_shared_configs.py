"""The BraTS bundles share one pipeline: brats_deeplab3d's configs are generated copies of
brats_unet3d's (app.bundle_tools.sync), and only its network_def block and metadata.json differ."""

from __future__ import annotations

import pytest
from monai.bundle import ConfigParser
from monai.networks.nets import UNet

from app.bundle_tools.sync import COPIED, OWN_BEGIN, OWN_END
from app.bundles import BUNDLES, bundle_dir, config_files
from app.networks.deeplab3d import DeepLab3D

BRATS = sorted(n for n, info in BUNDLES.items() if info.data_kind == "brats")


def _parser(name: str, overlay: str, **overrides) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config(config_files(name, overlay))
    parser.read_meta(str(bundle_dir(name) / "configs" / "metadata.json"))
    parser.update(overrides)
    return parser


def _without_network_block(text: str) -> str:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(OWN_BEGIN))
    stop = next(i for i, line in enumerate(lines) if line.startswith(OWN_END))
    return "\n".join(lines[:start] + lines[stop + 1:])


def test_deeplab_bundle_copies_every_unet_config_but_its_network():
    unet, deeplab = bundle_dir("brats_unet3d"), bundle_dir("brats_deeplab3d")
    assert {"configs/common.yaml", "configs/train.yaml", "configs/evaluate.yaml", "configs/inference.yaml"} <= set(COPIED)
    for rel in COPIED:
        assert not (deeplab / rel).is_symlink(), f"{deeplab / rel} is a link"
        ours, theirs = (deeplab / rel).read_text(), (unet / rel).read_text()
        if rel.endswith((".yaml", ".conf")):
            assert ours.startswith("# Generated from brats_unet3d/")
            ours = ours.split("\n", 1)[1]
        if rel in ("configs/common.yaml", "configs/inference.yaml"):
            assert ours != theirs  # its own network_def
            ours, theirs = _without_network_block(ours), _without_network_block(theirs)
        assert ours == theirs, f"{rel} differs from brats_unet3d's beyond the network_def block"
    assert (deeplab / "configs" / "metadata.json").read_text() != (unet / "configs" / "metadata.json").read_text()


@pytest.mark.parametrize(("name", "cls"), [("brats_unet3d", UNet), ("brats_deeplab3d", DeepLab3D)])
@pytest.mark.parametrize("overlay", ["train", "inference"])
def test_network_comes_from_the_configs_and_recipe_from_metadata(name: str, cls: type, overlay: str):
    parser = _parser(name, overlay)
    assert isinstance(parser.get_parsed_content("network_def"), cls)
    assert "network_def" not in parser.get("_meta_")  # one place: the configs
    assert parser.get_parsed_content("bundle_root") == str(bundle_dir(name))
    if overlay == "train":
        assert parser.get_parsed_content("max_epochs") == parser.get_parsed_content("_meta_#training#max_epochs") > 0


@pytest.mark.parametrize("name", BRATS)
def test_inference_config_alone_builds_the_same_network(name: str):
    alone = ConfigParser()
    alone.read_config(str(bundle_dir(name) / "configs" / "inference.yaml"))
    assert alone.get("network_def") == _parser(name, "train").get("network_def")


def test_network_arguments_override_by_config_id():
    net = _parser("brats_deeplab3d", "inference", **{"network_def#width": 8}).get_parsed_content("network_def")
    assert isinstance(net, DeepLab3D) and net.stem.conv.out_channels == 8  # stem conv: width channels
