"""app.labels.LabelManager: one owner of label values, names, regions and input channels."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from app.bundles import BUNDLES, bundle_dir, label_names
from app.labels import BRATS, LabelManager, labels_of


@pytest.mark.parametrize("name", sorted(n for n, info in BUNDLES.items() if info.data_kind == "brats"))
def test_brats_bundles_metadata_says_what_the_default_says(name: str):
    labels = LabelManager.from_bundle(name)
    assert labels == BRATS
    assert labels.names_to_values() == {"NCR/NET": 1, "ED": 2, "ET": 4}
    assert labels.region_names == ("WT", "TC", "ET") and labels.hd95_missing_mm == 374.0
    assert labels.channels == ("t1", "t1ce", "t2", "flair") and labels.display_channel == 3


def test_ct_bundle_reads_one_channel_and_writes_spleen():
    labels = labels_of("ct_unet3d")
    assert labels.labels == {1: "spleen"} and labels.regions == {"spleen": (1,)}
    assert labels.channels == ("ct",) and labels.display_channel == 0 and math.isnan(labels.hd95_missing_mm)
    assert label_names("ct_unet3d") == {1: "spleen"} and label_names("no_such_bundle") == {}
    assert labels_of(None) is BRATS


def test_from_metadata_falls_back_to_the_output_channels_of_a_softmax_bundle():
    meta = json.loads((bundle_dir("ct_unet3d") / "configs" / "metadata.json").read_text())
    for key in ("labels", "evaluation_regions"):
        meta.pop(key)
    meta["network_data_format"]["outputs"]["pred"]["channel_def"] = {"0": "background", "1": "liver", "2": "tumour"}
    labels = LabelManager.from_metadata(meta)
    assert labels.labels == {1: "liver", 2: "tumour"} and labels.regions == {"liver": (1,), "tumour": (2,)}


def test_region_bundle_without_labels_and_bad_regions_are_refused():
    meta = json.loads((bundle_dir("brats_unet3d") / "configs" / "metadata.json").read_text())
    meta.pop("labels")
    with pytest.raises(ValueError, match="has no 'labels'"):
        LabelManager.from_metadata(meta)
    with pytest.raises(ValueError, match="region 'TC'.*unknown \\[3\\]"):
        LabelManager({1: "a", 4: "b"}, {"TC": (1, 3)}, ("t1",))
    with pytest.raises(ValueError, match="> 0"):
        LabelManager({0: "background"}, {}, ("ct",))


def test_region_masks_ignore_values_that_are_no_label():
    ref = np.zeros((24, 32, 40), np.uint8)
    ref[2:6, 3:9, 4:12] = 1   # spleen
    ref[10:14, 3:9, 4:12] = 5  # another organ of a multi-organ map
    masks = labels_of("ct_unet3d").region_masks(ref)
    assert list(masks) == ["spleen"] and masks["spleen"].sum() == 4 * 6 * 8


def test_to_metadata_round_trips():
    meta = {**BRATS.to_metadata(), "network_data_format": {"inputs": {"image": {"num_channels": 4, "channel_def": {"0": "T1", "1": "T1ce", "2": "T2", "3": "FLAIR"}}}}}
    assert LabelManager.from_metadata(meta) == BRATS


def test_brats_transforms_agree_with_the_owner():
    """MONAI's labels -> regions transform (training) and VolSeg's regions -> labels (inference)
    hard-code the BraTS codes; both must say what app.labels.BRATS says."""
    from monai.transforms import ConvertToMultiChannelBasedOnBratsClasses

    from app.constants import REGIONS
    from app.transforms.regions import RegionsToBratsLabels

    label = np.zeros((24, 32, 40), np.uint8)
    label[2:20, 3:28, 4:36] = 2
    label[5:15, 6:20, 8:30] = 1
    label[7:12, 9:15, 12:25] = 4
    masks = BRATS.region_masks(label)
    channels = np.asarray(ConvertToMultiChannelBasedOnBratsClasses()(label[None]))
    assert all(np.array_equal(channels[i], masks[name]) for i, name in enumerate(REGIONS))
    assert np.array_equal(RegionsToBratsLabels()(np.stack([masks[name] for name in REGIONS]))[0], label)
