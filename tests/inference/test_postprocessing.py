"""BraTS postprocessing chosen by cross-validation: keep the largest tumour component."""

from __future__ import annotations

import pytest
import torch
from monai.data import MetaTensor

from app.inference import Segmenter


def _largest_filter(seg: Segmenter):
    found = [t for t in seg.postprocessing.transforms if type(getattr(t, "transform", None)).__name__ == "KeepLargestConnectedComponentd"]
    return found[0] if found else None


@pytest.fixture(scope="module")
def unet() -> Segmenter:
    return Segmenter("brats_unet3d", device="cpu", backend="torch")


def test_largest_tumour_component_is_kept_with_all_its_labels(unet: Segmenter):
    keep = _largest_filter(unet)
    assert keep is not None  # on by default for brats_unet3d (metadata inference#keep_largest_component)
    label = torch.zeros(1, 40, 40, 40)
    label[0, 5:20, 5:20, 5:20] = 2  # oedema around ...
    label[0, 9:16, 9:16, 9:16] = 1  # ... necrosis ...
    label[0, 16:18, 9:16, 9:16] = 4  # ... and an enhancing rim touching it: one component, 3 labels
    label[0, 28:36, 28:36, 28:36] = 2  # a separate, smaller island (512 voxels)
    label[0, 30:32, 30:32, 30:32] = 4
    out = keep({"pred": MetaTensor(label.clone())})["pred"]
    assert torch.equal(out[0, :22, :22, :22], label[0, :22, :22, :22])  # the largest component, labels unchanged
    assert out[0, 25:, 25:, 25:].abs().sum() == 0  # the island is gone, ET and ED alike


def test_largest_component_filter_follows_the_metadata_switch():
    assert _largest_filter(Segmenter("brats_unet3d", device="cpu", backend="torch", overrides={"keep_largest_component": False})) is None
    assert _largest_filter(Segmenter("brats_deeplab3d", device="cpu", backend="torch")) is None  # not measured on CV for DeepLab
