from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from monai.inferers import SliceInferer

from app.data.verify import InputError
from app.transforms import slabs_to_volume, stack_slices, volume_to_slabs


def test_stack_png_slices_with_spacing(tmp_path: Path):
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 255, (32, 24), dtype=np.uint8) for _ in range(5)]
    files = []
    for i, a in enumerate(arrays):
        image = sitk.GetImageFromArray(a)
        image.SetSpacing((0.7, 0.8))
        files.append(tmp_path / f"s{i:02d}.png")
        sitk.WriteImage(image, str(files[-1]))
    volume = stack_slices(files, slice_spacing_mm=2.5)
    assert volume.GetSize() == (24, 32, 5)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(volume), np.stack(arrays))
    assert volume.GetSpacing()[2] == 2.5
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((10, 10), np.uint8)), str(tmp_path / "odd.png"))
    with pytest.raises(InputError, match=r"odd.png'.*differs"):
        stack_slices([*files, tmp_path / "odd.png"], 2.5)
    with pytest.raises(InputError, match="no slice files"):
        stack_slices([], 2.5)


@pytest.mark.parametrize("axis", [1, 2, 3])
def test_slices_round_trip(axis: int):
    volume = torch.rand(2, 24, 32, 40)
    slices = volume_to_slabs(volume, k=1, axis=axis)
    assert slices.shape[0] == volume.shape[axis] and slices.shape[1] == 2
    assert torch.equal(slabs_to_volume(slices, axis=axis), volume)


def test_slabs_hold_neighbours_and_repeat_edges():
    volume = torch.arange(5, dtype=torch.float32).reshape(1, 1, 1, 5).expand(2, 3, 4, 5).clone()
    volume[1] += 10
    slabs = volume_to_slabs(volume, k=3)
    assert slabs.shape == (5, 6, 3, 4)
    # slice 0: neighbours -1 -> 0 (edge), 0, 1; channels slice-major
    assert slabs[0, :, 0, 0].tolist() == [0, 10, 0, 10, 1, 11]
    assert slabs[4, :, 0, 0].tolist() == [3, 13, 4, 14, 4, 14]
    with pytest.raises(ValueError, match="odd"):
        volume_to_slabs(volume, k=2)


def test_slice_predictions_assemble_like_monai_slice_inferer():
    volume = torch.rand(1, 16, 20, 12)
    net2d = torch.nn.Conv2d(1, 2, 3, padding=1)
    with torch.no_grad():
        ours = slabs_to_volume(net2d(volume_to_slabs(volume, k=1)))
        monai = SliceInferer(roi_size=(16, 20), spatial_dim=2)(volume[None], net2d)[0]
    assert torch.allclose(ours, monai, atol=1e-5)


def test_a_volume_without_its_channel_axis_is_refused_clearly():
    from app.transforms.slices import volume_to_slabs

    with pytest.raises(ValueError, match=r"volume must be \(C, H, W, D\), got shape \(4, 5, 6\); a 3D volume needs its channel axis"):
        volume_to_slabs(torch.zeros(4, 5, 6))
