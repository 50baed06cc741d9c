"""``augment_on_device``: the BraTS bundles' training crops move to ``@device`` before the
augmentation (MONAI ``ToDeviced``), and a CUDA run with loader worker processes is refused
before it starts. No GPU here: the wiring is checked on the parsed config (a ``torch.device``
names CUDA without one), and the pipeline runs on the CPU."""

from __future__ import annotations

import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, ToDeviced

from app.bundle_config import bundle_parser
from app.engines.preflight import check_augment_device

BRATS = ["brats_unet3d", "brats_deeplab3d"]


def _parser(name: str, device: str, on_device: bool, workers: int = 0):
    parser = bundle_parser(name, "train")
    parser["device"] = f"$torch.device('{device}')"
    parser["augment_on_device"] = on_device
    parser["train#dataloader#num_workers"] = workers
    parser["roi_size"] = [32, 32, 32]
    parser["num_samples"] = 2
    return parser


@pytest.mark.parametrize("name", BRATS)
@pytest.mark.parametrize(("device", "on_device", "expected"), [("cuda", True, "cuda"), ("cuda", False, "cpu"), ("cpu", True, "cpu")])
def test_crops_move_to_the_device_right_after_the_crop(name: str, device: str, on_device: bool, expected: str):
    transforms = _parser(name, device, on_device).get_parsed_content("train#random_transforms", lazy=False)
    names = [type(t).__name__ for t in transforms]
    to_device = names.index("ToDeviced")
    assert names[to_device - 2:to_device] == ["RandCropByPosNegLabeld", "DeleteItemsd"]  # after the crop: the cache stays on the host
    assert names[to_device + 1] == "RandAffined"  # before every augmentation
    t = transforms[to_device]
    assert isinstance(t, ToDeviced) and torch.device(t.converter.device).type == expected


def test_augmentation_runs_with_the_flag_on_a_cpu():
    transforms = _parser("brats_unet3d", "cpu", True).get_parsed_content("train#random_transforms", lazy=False)
    pipeline = Compose(transforms).set_random_state(0)
    label = torch.zeros(3, 40, 40, 40)
    label[:, 12:28, 12:28, 12:28] = 1
    samples = pipeline({"image": MetaTensor(torch.randn(4, 40, 40, 40)), "label": MetaTensor(label)})
    assert len(samples) == 2
    for s in samples:
        assert s["image"].shape == (4, 32, 32, 32) and s["label"].shape == (3, 32, 32, 32)
        assert s["image"].device.type == "cpu" and torch.isfinite(s["image"]).all()
        assert set(torch.unique(s["label"]).tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize(("device", "on_device", "workers", "refused"), [
    ("cuda", True, 2, True),
    ("cuda:0", True, 1, True),
    ("cuda", True, 0, False),
    ("cuda", False, 2, False),
    ("cpu", True, 2, False),
])
def test_cuda_augmentation_with_worker_processes_is_refused(device: str, on_device: bool, workers: int, refused: bool):
    parser = _parser("brats_unet3d", device, on_device, workers)
    if refused:
        with pytest.raises(ValueError, match=f"num_workers is {workers}.*set train#dataloader#num_workers=0"):
            check_augment_device(parser)
    else:
        check_augment_device(parser)  # returns quietly


def test_a_bundle_without_the_flag_is_not_checked():
    parser = bundle_parser("ct_unet3d", "train")
    assert "augment_on_device" not in parser
    check_augment_device(parser)  # no key: nothing to check


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_augmentation_runs_on_the_gpu_with_the_flag():
    transforms = _parser("brats_unet3d", "cuda", True).get_parsed_content("train#random_transforms", lazy=False)
    label = torch.zeros(3, 40, 40, 40)
    label[:, 12:28, 12:28, 12:28] = 1
    for seed in range(4):  # every transform keeps its crops on the GPU, the bias field included
        for s in Compose(transforms).set_random_state(seed)({"image": MetaTensor(torch.randn(4, 40, 40, 40)), "label": MetaTensor(label)}):
            assert s["image"].device.type == "cuda" and s["label"].device.type == "cuda"
            assert torch.isfinite(s["image"]).all()
