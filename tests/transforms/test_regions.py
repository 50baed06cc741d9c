from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import ConvertToMultiChannelBasedOnBratsClasses

from app.transforms import RegionsToBratsLabels, RegionsToBratsLabelsd


def _random_label(shape=(24, 32, 40), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.choice(np.array([0, 1, 2, 4], dtype=np.uint8), size=shape, p=[0.7, 0.1, 0.1, 0.1])


@pytest.mark.parametrize("as_tensor", [False, True])
def test_round_trip_labels_regions_labels(as_tensor: bool):
    label = _random_label()
    regions = ConvertToMultiChannelBasedOnBratsClasses()(label[None])
    assert regions.shape == (3, 24, 32, 40)
    if as_tensor:
        regions = torch.as_tensor(np.asarray(regions))
    back = RegionsToBratsLabels()(regions)
    back = back.numpy() if isinstance(back, torch.Tensor) else back
    assert back.shape == (1, 24, 32, 40) and back.dtype == np.uint8
    np.testing.assert_array_equal(back[0], label)


def test_inner_region_wins_and_metadata_is_kept():
    regions = torch.zeros(3, 4, 5, 6)
    regions[2, 0, 0, 0] = 1  # ET outside TC and WT
    regions[1, 1] = 1  # WT only -> edema
    regions[0, 2, 0] = 1  # TC only -> core
    meta = MetaTensor(regions, affine=torch.diag(torch.tensor([2.0, 2.0, 3.0, 1.0])))
    out = RegionsToBratsLabels()(meta)
    assert isinstance(out, MetaTensor) and out.dtype == torch.uint8
    assert torch.equal(out.affine, meta.affine)
    assert out[0, 0, 0, 0] == 4 and (out[0, 1] == 2).all() and (out[0, 2, 0] == 1).all()
    assert set(out.unique().tolist()) == {0, 1, 2, 4}


def test_dict_twin_and_bad_channel_count():
    label = _random_label((8, 10, 12), seed=1)
    data = {"pred": ConvertToMultiChannelBasedOnBratsClasses()(label[None]), "other": 1}
    out = RegionsToBratsLabelsd(keys="pred")(data)
    np.testing.assert_array_equal(out["pred"][0], label)
    assert out["other"] == 1
    with pytest.raises(ValueError, match="expected 3 region channels"):
        RegionsToBratsLabels()(np.zeros((2, 4, 4, 4)))



def test_bundle_island_removal_uses_mm3_and_keeps_labels():
    """The inference config's RemoveSmallObjectsd drops islands by volume in mm^3, across labels."""
    from monai.transforms import RemoveSmallObjectsd

    label = np.zeros((1, 24, 32, 40), dtype=np.uint8)
    label[0, 2:12, 2:12, 2:12] = 2  # 1000 voxels
    label[0, 5:8, 5:8, 5:8] = 4
    label[0, 20:22, 20:22, 20:22] = 1  # 8 voxels
    spaced = MetaTensor(torch.from_numpy(label), affine=torch.diag(torch.tensor([2.0, 2.0, 2.0, 1.0])))  # 8 mm^3 voxels
    remove = RemoveSmallObjectsd("pred", min_size=100, by_measure=True, connectivity=3, independent_channels=False)
    out = remove({"pred": spaced})["pred"]  # the 64 mm^3 island goes, the 8000 mm^3 tumour stays whole
    assert out[0, 20:22, 20:22, 20:22].sum() == 0 and (out[0, 2:12, 2:12, 2:12] > 0).all() and out[0, 6, 6, 6] == 4
