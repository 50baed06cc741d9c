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
    # a looser convergence_threshold stops the iterations earlier: another fit, still flattening the field
    loose = N4BiasCorrectiond("image", shrink_factor=2, iterations=(20, 20), convergence_threshold=0.05)({"image": torch.from_numpy((truth * bias)[None]).float()})["image"]
    assert not torch.equal(loose, out) and np.std(np.asarray(loose[0])[brain]) / np.mean(np.asarray(loose[0])[brain]) < before
    with pytest.raises(ValueError, match="convergence_threshold > 0"):
        N4BiasCorrectiond("image", convergence_threshold=0)


@pytest.mark.skipif(not __import__("pathlib").Path("../shared/data/totalseg_refs").is_dir(), reason="needs ../shared/data")
def test_hounsfield_check_warns_on_mri_and_label_maps_not_on_ct(caplog: pytest.LogCaptureFixture):
    """The shared CTs have air (38 % of voxels at or below -500 HU); the shared abdominal MR and the
    label maps have none, and the CT bundle segmented them without a word."""
    from app.io import LoadVolumed
    from app.transforms import CheckHounsfieldd

    check, load = CheckHounsfieldd("image"), LoadVolumed("image", ensure_channel_first=True)
    root = "../shared/data"
    for name, expected in [("msd_spleen/imagesTr/spleen_8.nii.gz", None), ("totalseg_refs/example_ct_sm.nii.gz", None),
                           ("totalseg_refs/example_mr_sm.nii.gz", "it looks like an MRI"),
                           ("totalseg_refs/example_seg.nii.gz", "a label map or mask, not an image ("),
                           ("msd_spleen/labelsTr/spleen_8.nii.gz", "a label map or mask, not an image (2 distinct values)")]:
        caplog.clear()
        img = check(load({"image": f"{root}/{name}"}))["image"]
        warnings = img.meta.get("input_warnings", [])
        if expected is None:
            assert warnings == [] and not caplog.records, name
        else:
            assert len(warnings) == 1 and expected in warnings[0] and name.split("/")[-1] in warnings[0] and "not CT in Hounsfield units" in warnings[0], warnings
            assert caplog.records and caplog.records[0].levelname == "WARNING"


def test_hounsfield_check_can_be_turned_off_and_keeps_the_image():
    from app.transforms import CheckHounsfield

    img = MetaTensor(torch.full((1, 8, 8, 8), 40.0))
    assert torch.equal(CheckHounsfield(air_hu=None)(img), img) and "input_warnings" not in img.meta
    out = CheckHounsfield()(img)
    assert torch.equal(out, torch.full((1, 8, 8, 8), 40.0)) and "values 40 to 40" in out.meta["input_warnings"][0]
    air = MetaTensor(torch.full((1, 8, 8, 8), -1000.0))
    assert "input_warnings" not in CheckHounsfield()(air).meta


def test_in_plane_only_keeps_the_last_of_equally_thick_axes():
    from app.transforms.spacing import target_spacing

    assert target_spacing((3.0, 3.0, 3.0), (1.5, 1.5, 1.5), in_plane_only=True) == (1.5, 1.5, 0.0)
    assert target_spacing((0.8, 5.0, 0.8), (1.0, 1.0, 1.0), in_plane_only=True) == (1.0, 0.0, 1.0)


def test_n4_warns_on_negative_input(caplog: pytest.LogCaptureFixture):
    from app.transforms import N4BiasCorrection

    ct = np.full((1, 16, 16, 16), -1000.0, np.float32)
    ct[0, 4:12, 4:12, 4:12] = 40.0
    N4BiasCorrection(shrink_factor=2, iterations=(2,))(ct)
    assert "N4 bias-field correction of channel(s) 0 with values below 0 (down to -1000)" in caplog.text
