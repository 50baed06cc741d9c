from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Spacing

from app.transforms import HU_WINDOWS, HUWindow, HUWindowd, N4BiasCorrectiond, is_anisotropic, target_spacing


def test_hu_window_presets_and_explicit_range():
    ct = torch.tensor([[[-2000.0, -150.0, 50.0, 250.0, 4000.0]]])
    out = HUWindow("abdomen")(ct)
    np.testing.assert_allclose(np.asarray(out), [[[0.0, 0.0, 0.5, 1.0, 1.0]]])
    out = HUWindowd("image", window=(0, 100))({"image": ct})["image"]
    np.testing.assert_allclose(np.asarray(out), [[[0.0, 0.0, 0.5, 1.0, 1.0]]])
    assert set(HU_WINDOWS) == {"soft_tissue", "abdomen", "lung", "bone", "brain"}
    with pytest.raises(ValueError, match="unknown HU window 'liver'"):
        HUWindow("liver")
    with pytest.raises(ValueError, match="lower < upper"):
        HUWindow((100, -100))


def test_thick_slice_detection_and_in_plane_only_resampling():
    assert is_anisotropic((0.78, 0.78, 7.5)) and not is_anisotropic((1.0, 1.0, 2.5))
    assert target_spacing((0.78, 0.78, 7.5), (1.5, 1.5, 1.5)) == (1.5, 1.5, 0.0)
    assert target_spacing((0.5, 7.5, 0.5), (1.0, 1.0, 1.0)) == (1.0, 0.0, 1.0)
    assert target_spacing((0.78, 0.78, 7.5), (1.5, 1.5, 1.5), in_plane_only=False) == (1.5, 1.5, 1.5)
    image = MetaTensor(torch.rand(1, 24, 32, 8), affine=torch.diag(torch.tensor([0.78, 0.78, 7.5, 1.0], dtype=torch.float64)))
    out = Spacing(pixdim=target_spacing((0.78, 0.78, 7.5), (1.56, 1.56, 1.5)))(image)
    assert tuple(out.shape[1:]) == (12, 16, 8)  # slices kept, plane halved
    with pytest.raises(ValueError, match="positive"):
        target_spacing((1, 1, 1), (1, 0, 1))


def test_n4_flattens_a_smooth_bias_field():
    rng = np.random.default_rng(0)
    shape = (32, 40, 24)
    grid = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    brain = (grid[0] ** 2 + grid[1] ** 2 + grid[2] ** 2) < 0.8
    truth = np.where(brain, 100.0, 0.0) + rng.normal(0, 1, shape) * brain
    bias = np.exp(0.4 * grid[0])
    out = N4BiasCorrectiond("image", shrink_factor=2, iterations=(20, 20))({"image": torch.from_numpy((truth * bias)[None]).float()})["image"]
    before = np.std((truth * bias)[brain]) / np.mean((truth * bias)[brain])
    after = np.std(np.asarray(out[0])[brain]) / np.mean(np.asarray(out[0])[brain])
    assert out.shape == (1, *shape) and after < 0.5 * before
