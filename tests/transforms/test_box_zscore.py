"""InForegroundBox(d) and NonzeroZScore(d): faster twins that must match MONAI's own transforms."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import KeepLargestConnectedComponent, NormalizeIntensity, RemoveSmallObjects, RemoveSmallObjectsd

from app.transforms import InForegroundBox, InForegroundBoxd, NonzeroZScore, NonzeroZScored

SPACING_MM = (0.8, 0.8, 2.5)


def _label(seed: int = 0) -> MetaTensor:
    """Islands of codes 1/2/4 of many sizes, some touching the volume's faces; anisotropic spacing."""
    rng = np.random.default_rng(seed)
    label = np.zeros((1, 24, 32, 40), dtype=np.uint8)
    for _ in range(25):
        corner = rng.integers(0, [24, 32, 40])
        size = rng.integers(1, 7, size=3)
        label[0, corner[0]:corner[0] + size[0], corner[1]:corner[1] + size[1], corner[2]:corner[2] + size[2]] = rng.choice([1, 2, 4])
    return MetaTensor(torch.from_numpy(label), affine=torch.diag(torch.tensor([*SPACING_MM, 1.0])))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_box_gives_the_full_grid_result(seed: int):
    label = _label(seed)
    for inner in (RemoveSmallObjects(min_size=20, by_measure=True, connectivity=3, independent_channels=False),
                  KeepLargestConnectedComponent(independent=False, connectivity=1)):
        expected = inner(label.clone())
        got = InForegroundBox(inner)(label)
        assert 0 < int((got > 0).sum()) < int((label > 0).sum())  # the filter removed something and kept something
        np.testing.assert_array_equal(np.asarray(got), np.asarray(expected))
        assert isinstance(got, MetaTensor) and torch.equal(got.affine, label.affine)


def test_box_keeps_scikit_image_min_size_notice_out_of_the_output():
    """MONAI's RemoveSmallObjects passes scikit-image's deprecated ``min_size``; the bundles run it
    through InForegroundBox, and the notice is no message for a user (``monai.bundle run`` printed it).
    A fresh interpreter, because pytest resets warning filters set while it imports test modules."""
    code = ("import torch; from monai.transforms import RemoveSmallObjects; from app.transforms import InForegroundBox; "
            "x = torch.zeros(1, 20, 20, 20); x[0, 2:5, 2:5, 2:5] = 1; x[0, 10, 10, 10] = 1; "
            "print(int(InForegroundBox(RemoveSmallObjects(min_size=5, connectivity=3))(x).sum()))")
    run = subprocess.run([sys.executable, "-W", "default::FutureWarning", "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["27"]  # the lone voxel went, the 27-voxel cube stayed
    assert "min_size" not in run.stderr


def test_box_dict_twin_and_empty_label():
    label = _label(3)
    remove = RemoveSmallObjectsd("pred", min_size=20, by_measure=True, connectivity=3, independent_channels=False)
    out = InForegroundBoxd("pred", remove)({"pred": label, "other": 1})
    np.testing.assert_array_equal(np.asarray(out["pred"]), np.asarray(remove({"pred": label.clone()})["pred"]))
    assert out["other"] == 1
    empty = torch.zeros(1, 6, 7, 8, dtype=torch.uint8)
    assert torch.equal(InForegroundBox(lambda x: x + 1)(empty), empty)  # nothing to box: input back unchanged


@pytest.mark.parametrize("channels", [1, 4])
def test_zscore_matches_monai(channels: int):
    rng = np.random.default_rng(channels)
    img = rng.normal(300, 80, size=(channels, 24, 32, 40)).astype(np.float32)
    img[:, :5] = 0  # background
    img = MetaTensor(torch.from_numpy(img), affine=torch.diag(torch.tensor([*SPACING_MM, 1.0])))
    expected = NormalizeIntensity(nonzero=True, channel_wise=True)(img.clone())
    got = NonzeroZScore()(img)
    assert isinstance(got, MetaTensor) and got.dtype == torch.float32 and torch.equal(got.affine, img.affine)
    np.testing.assert_allclose(np.asarray(got), np.asarray(expected), atol=1e-5)
    assert (got[:, :5] == 0).all() and abs(float(got[:, 5:].mean())) < 1e-4


def test_zscore_constant_and_empty_channels_and_dict_twin():
    img = np.zeros((3, 4, 5, 6), dtype=np.float32)
    img[1, 1:] = 7.0  # constant: std 0 -> shifted only
    img[2] = np.arange(120, dtype=np.float32).reshape(4, 5, 6)
    out = NonzeroZScored("image")({"image": img})["image"]
    assert isinstance(out, np.ndarray)
    np.testing.assert_array_equal(out[0], 0)  # all-zero channel stays zero
    np.testing.assert_array_equal(out[1], 0)  # constant non-zero voxels become 0, background stays 0
    np.testing.assert_allclose(out, NormalizeIntensity(nonzero=True, channel_wise=True)(img.copy()), atol=1e-5)
