"""The BraTS bundles share one pipeline: brats_deeplab3d's configs are generated copies of
brats_unet3d's (app.bundle_tools.sync), and only its network_def block and metadata.json differ."""

from __future__ import annotations

import pytest
from monai.bundle import ConfigParser
from monai.networks.nets import UNet

from app.bundle_tools.sync import COPIED, OWN_BEGIN, OWN_END
from app.bundles import BUNDLES, bundle_dir, config_files
from app.networks.deeplab3d import DeepLab3D
from tests.conftest import REPO_ROOT

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


def test_on_off_keys_are_read_through_flag():
    """`python -m monai.bundle run ... --compile false` passes the text 'false', which Python takes
    as true: a bundle compiled, kept filling holes, ... when told not to. Every on/off key a user
    may set is read through app.bundle_config.flag (is_rank0 is set by the multi-process configs,
    resume by its handler, n4_average by workflow_n4_transforms, which also call flag)."""
    import re

    import yaml

    from app.bundle_config import flag

    assert [flag(v, "k") for v in ("false", "False", "OFF", "0", 0, "true", "Yes", 1, True)] == [False] * 5 + [True] * 4
    with pytest.raises(ValueError, match="compile must be true or false, got 'maybe'"):
        flag("maybe", "compile")
    exempt = {"is_rank0", "resume", "n4_average", "accurate_n4_average"}
    bare = []
    for path in sorted((REPO_ROOT / "bundles").glob("*/configs/*.yaml")):
        text = path.read_text()
        keys = {k for k, v in (yaml.safe_load(text) or {}).items() if isinstance(v, bool) or k in ("amp", "compile", "fill_tc_holes")} - exempt
        for key in keys:
            bare += [f"{path.relative_to(REPO_ROOT)}: @{key}" for m in re.finditer(rf"@{key}\b", text)
                     if not text[max(0, m.start() - 24):m.start()].endswith("app.bundle_config.flag(")]
    assert not bare, bare


def test_a_roi_size_the_network_cannot_take_is_refused_with_the_nearest_sizes():
    """`--roi_size "[100,100,100]"` failed deep inside the U-Net with 'Sizes of tensors must match'."""
    from app.bundle_config import bundle_parser
    from app.networks import checked_roi_size

    assert checked_roi_size([96, 128, 96]) == [96, 128, 96] and checked_roi_size(64) == [64, 64, 64]
    with pytest.raises(ValueError, match=r"roi_size \[100, 100, 100\]: each side must be a multiple of 16 .* e.g. \[96, 96, 96\]"):
        checked_roi_size([100, 100, 100])
    with pytest.raises(ValueError, match="three positive whole numbers"):
        checked_roi_size([96, 96])
    for name in BUNDLES:
        parser = bundle_parser(name, "inference")
        parser["roi_size"] = [100, 100, 100]
        with pytest.raises(Exception) as refused:
            parser.get_parsed_content("sliding_window_inferer")
        assert "each side must be a multiple of 16" in str(refused.value.__cause__), name


@pytest.mark.parametrize("name", BRATS)
def test_inference_loads_ckpt_path_in_fast_mode_only(name: str):
    """Accurate mode runs the fold models (``mode_network``): its handlers load no ``ckpt_path``,
    so the log does not name a model.pt that did not run."""
    from monai.handlers import CheckpointLoader

    def loaders(mode: str) -> list:
        parser = _parser(name, "inference", mode=mode)
        parser["bundle_root"] = str(bundle_dir(name))
        return [h for h in parser.get_parsed_content("handlers") if isinstance(h, CheckpointLoader)]

    fast = loaders("fast")
    assert len(fast) == 1 and fast[0].load_path.endswith("models/model.pt")
    assert loaders("accurate") == []
