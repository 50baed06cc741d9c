"""``TorchRandBiasFieldd``: MONAI ``RandBiasFieldd``'s random bias field computed by torch, on
the image's device. Seeded against MONAI's own transform on the CPU; the CUDA case runs where
there is a GPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import RandBiasFieldd

from app.transforms import TorchRandBiasFieldd, legendre_field


@pytest.mark.parametrize("degree", [1, 2, 3, 4])
@pytest.mark.parametrize("seed", [0, 7])
def test_matches_monai_draw_for_draw(degree: int, seed: int):
    image = MetaTensor(torch.rand(4, 21, 17, 13) * 4 - 1)
    ours = TorchRandBiasFieldd("image", degree=degree, coeff_range=(0.0, 0.5), prob=0.6).set_random_state(seed)
    monai = RandBiasFieldd("image", degree=degree, coeff_range=(0.0, 0.5), prob=0.6).set_random_state(seed)
    fired = 0
    for _ in range(6):  # the same draws: the same samples fire, with the same coefficients
        a, b = monai({"image": image})["image"], ours({"image": image})["image"]
        assert isinstance(b, MetaTensor) and b.dtype == torch.float32 and b.shape == image.shape
        torch.testing.assert_close(b.as_tensor(), a.as_tensor(), rtol=1e-5, atol=1e-5)
        fired += not torch.equal(b.as_tensor(), image.as_tensor())
    assert 0 < fired < 6


def test_field_is_one_smooth_multiplier_shared_by_channels():
    image = torch.ones(3, 32, 32, 32)
    out = TorchRandBiasFieldd("image", coeff_range=(0.0, 0.075), prob=1.0).set_random_state(1)({"image": image})["image"]
    assert torch.equal(out[0], out[1]) and torch.equal(out[1], out[2])  # one field for every sequence
    assert float(out.min()) > 0 and float(out.std()) > 1e-3  # a positive multiplier that varies over the volume
    steps = [float(out[0].diff(dim=d).abs().max()) for d in range(3)]
    assert max(steps) < 0.1 * float(out.max())  # smooth: no jump between neighbouring voxels


def test_legendre_field_against_numpy():
    coeff = np.random.default_rng(0).uniform(-1, 1, 20).tolist()
    terms = [(i, j, k) for i in range(4) for j in range(4 - i) for k in range(4 - i - j)]
    c = np.zeros((4, 4, 4))
    for (i, j, k), v in zip(terms, coeff):
        c[i, j, k] = v
    coords = [np.linspace(-1, 1, n) for n in (9, 7, 5)]
    expected = np.polynomial.legendre.leggrid3d(*coords, c)
    np.testing.assert_allclose(legendre_field((9, 7, 5), 3, coeff).numpy(), expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="degree 3 needs 20 coefficients, got 19"):
        legendre_field((9, 7, 5), 3, coeff[:19])
    with pytest.raises(ValueError, match="the bias field is 3D"):
        legendre_field((9, 7), 3, coeff)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_stays_on_the_gpu_and_matches_the_cpu():
    image = torch.rand(4, 32, 32, 32)
    cpu = TorchRandBiasFieldd("image", prob=1.0).set_random_state(3)({"image": image})["image"]
    gpu = TorchRandBiasFieldd("image", prob=1.0).set_random_state(3)({"image": image.cuda()})["image"]
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-5, atol=1e-5)
