"""Hole filling of a label-map region in the slices of all three axes (app.transforms.FillRegionHoles)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from scipy import ndimage

from app.transforms import FillRegionHoles, FillRegionHolesd, fill_holes_in_slices


def _ring_tumour() -> torch.Tensor:
    """(1, 24, 24, 24) BraTS labels: edema around an enhancing shell whose centre (6^3 voxels) the
    network called edema, and a tunnel of edema from that centre out through the shell's top face."""
    label = torch.zeros(1, 24, 24, 24, dtype=torch.uint8)
    label[0, 3:21, 3:21, 3:21] = 2
    label[0, 6:18, 6:18, 6:18] = 4
    label[0, 9:15, 9:15, 9:15] = 2  # the missed necrotic centre
    label[0, 11:13, 11:13, 15:18] = 2  # a tunnel from the centre through the top of the shell
    return label


def test_the_enclosed_centre_becomes_necrotic_core_and_nothing_else_changes():
    label = _ring_tumour()
    out = FillRegionHoles((1, 4), fill_label=1)(MetaTensor(label.clone()))
    assert isinstance(out, MetaTensor) and out.dtype == label.dtype and out.shape == label.shape
    changed = out != label
    assert torch.equal(out[changed], torch.ones(int(changed.sum()), dtype=torch.uint8))  # only NCR is written
    assert torch.all(label[changed] == 2)  # and only where edema was
    assert torch.all(out[0, 9:15, 9:15, 9:15] == 1)  # the whole centre, tunnel mouth included
    assert torch.equal(out == 4, label == 4)  # ET untouched
    assert torch.equal(out[0, :, :, 18:], label[0, :, :, 18:])  # outside the shell untouched


def test_a_hole_open_in_3d_but_closed_in_slices_is_filled():
    """The tunnel joins the centre to the outside in 3D, so a 3D fill leaves it; axial slices
    still enclose the centre (and the tunnel's cross-section), sagittal slices through the tunnel
    do not (they see it open), and the union of the three orientations fills it all."""
    tc = (_ring_tumour()[0] == 4).numpy()
    assert not ndimage.binary_fill_holes(tc)[12, 12, 12]  # scipy's 3D fill: the centre is no hole
    filled = fill_holes_in_slices(tc)
    assert filled[9:15, 9:15, 9:15].all() and filled[11:13, 11:13, 15:18].all()
    assert np.array_equal(filled, tc | fill_holes_in_slices(tc, axes=(2,)))  # here the axial slices do it all
    sagittal = fill_holes_in_slices(tc, axes=(0,))
    assert not sagittal[12, 12, 12] and sagittal[10, 12, 12]  # x = 12 cuts the tunnel, x = 10 does not


def test_concavities_open_in_every_orientation_are_not_filled():
    box = np.zeros((16, 16, 16), dtype=bool)
    box[3:13, 3:13, 3:13] = True
    notched = box.copy()
    notched[3:7, 3:7, 3:7] = False  # a notch at a corner: open to the outside in every slice
    assert np.array_equal(fill_holes_in_slices(notched), notched)
    tube = box.copy()
    tube[5:11, :, 5:11] = False  # a tunnel through the region along y
    assert not fill_holes_in_slices(tube, axes=(0, 2))[7, 7, 7]  # open in x- and z-slices
    assert fill_holes_in_slices(tube, axes=(1,))[7, 7, 7] and not fill_holes_in_slices(tube, axes=(1,))[7, 1, 7]  # closed in y-slices, within the region only


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_flips_permutations_and_zero_padding_commute_with_the_fill(seed: int):
    """What lets the Segmenter fill on the RAS brain crop and then flip and pad back to the input
    grid: the same labels as filling on the input grid."""
    rng = np.random.default_rng(seed)
    label = np.zeros((1, 30, 26, 22), dtype=np.uint8)
    blobs = ndimage.gaussian_filter(rng.standard_normal((30, 26, 22)), 2.0)
    label[0][blobs > 0.02] = 2
    label[0][blobs > 0.05] = 4
    label[0][(blobs > 0.08) & (rng.random((30, 26, 22)) < 0.7)] = 2  # holes of edema inside the core
    fill = FillRegionHoles((1, 4), fill_label=1)
    out = fill(torch.as_tensor(label)).numpy()
    assert (out != label).any()
    flipped = fill(torch.as_tensor(np.ascontiguousarray(label[:, ::-1, :, ::-1]))).numpy()
    assert np.array_equal(flipped, out[:, ::-1, :, ::-1])
    permuted = fill(torch.as_tensor(np.ascontiguousarray(label.transpose(0, 3, 1, 2)))).numpy()
    assert np.array_equal(permuted, out.transpose(0, 3, 1, 2))
    padded = fill(torch.as_tensor(np.pad(label, ((0, 0), (3, 1), (0, 5), (2, 2))))).numpy()
    assert np.array_equal(padded[:, 3:-1, :-5, 2:-2], out) and not padded[:, :3].any()


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_the_same_holes_as_scipys_fill_with_an_in_plane_structure(axis: int):
    rng = np.random.default_rng(axis)
    mask = ndimage.gaussian_filter(rng.standard_normal((28, 24, 20)), 1.5) > 0.05
    structure = ndimage.generate_binary_structure(3, 1)
    structure[(slice(None),) * axis + (0,)] = False
    structure[(slice(None),) * axis + (2,)] = False
    expected = ndimage.binary_fill_holes(mask, structure=structure)
    assert (expected & ~mask).any()
    assert np.array_equal(fill_holes_in_slices(mask, axes=(axis,)), expected)


def test_channels_are_filled_on_their_own_and_nothing_to_fill_returns_the_input():
    label = torch.cat([_ring_tumour(), torch.zeros(1, 24, 24, 24, dtype=torch.uint8)])
    out = FillRegionHolesd("pred", labels=[1, 4], fill_label=1)({"pred": label})["pred"]
    assert int((out[0] != label[0]).sum()) > 0 and torch.equal(out[1], label[1])
    empty = torch.zeros(1, 8, 8, 8)
    assert FillRegionHoles((1, 4))(empty) is empty
    solid = torch.full((1, 8, 8, 8), 4.0)
    assert FillRegionHoles((1, 4))(solid) is solid


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="at least one label"):
        FillRegionHoles([])
    with pytest.raises(ValueError, match="axes are 0, 1 and 2"):
        FillRegionHoles((1, 4), axes=(3,))
    with pytest.raises(ValueError, match=r"\(C, H, W, D\) label map"):
        FillRegionHoles((1, 4))(torch.zeros(8, 8, 8))
    with pytest.raises(ValueError, match="3D mask"):
        fill_holes_in_slices(np.zeros((4, 4), dtype=bool))
