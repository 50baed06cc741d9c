"""MONAI's random MRI bias field, computed with torch on the image's device (MONAI's has only a
NumPy backend, so on a GPU it copies every crop to the host and back)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from monai.transforms import RandBiasField, RandBiasFieldd
from monai.data.meta_obj import get_track_meta
from monai.utils import TransformBackends, convert_to_dst_type, convert_to_tensor

__all__ = ["TorchRandBiasField", "TorchRandBiasFieldd", "legendre_field"]


def legendre_field(spatial_shape: Sequence[int], degree: int, coeff: Sequence[float], device: torch.device | str | None = None) -> torch.Tensor:
    """Smooth 3D log bias field: ``sum c_ijk P_i(x) P_j(y) P_k(z)`` over ``i + j + k <= degree``
    (Legendre polynomials ``P`` on ``[-1, 1]`` along each axis), as MONAI's ``RandBiasField``
    builds it with ``numpy.polynomial.legendre.leggrid3d``, in float32 on ``device``.

    Args:
        spatial_shape: ``(H, W, D)`` in voxels.
        degree: highest total degree, at least 1.
        coeff: ``(degree + 1)(degree + 2)(degree + 3) / 6`` coefficients in MONAI's order
            (``i``, then ``j``, then ``k`` ascending, the constant term first).
        device: where to compute (default: the CPU).

    Returns:
        ``(H, W, D)`` float32 tensor (the log of the multiplicative field).

    Raises:
        ValueError: not 3 spatial dimensions, or the wrong number of coefficients.
    """
    if len(spatial_shape) != 3:
        raise ValueError(f"the bias field is 3D; got spatial shape {tuple(spatial_shape)}")
    terms = [(i, j, k) for i in range(degree + 1) for j in range(degree + 1 - i) for k in range(degree + 1 - i - j)]
    if len(coeff) != len(terms):
        raise ValueError(f"degree {degree} needs {len(terms)} coefficients, got {len(coeff)}")
    c = torch.zeros((degree + 1,) * 3, dtype=torch.float32, device=device)
    idx = torch.tensor(terms, device=device)
    c[idx[:, 0], idx[:, 1], idx[:, 2]] = torch.as_tensor(list(coeff), dtype=torch.float32, device=device)
    bases = []
    for n in spatial_shape:  # Legendre recurrence: (m + 1) P_{m+1} = (2m + 1) x P_m - m P_{m-1}
        x = torch.linspace(-1.0, 1.0, n, dtype=torch.float32, device=device)
        p = [torch.ones_like(x), x]
        for m in range(1, degree):
            p.append(((2 * m + 1) * x * p[m] - m * p[m - 1]) / (m + 1))
        bases.append(torch.stack(p[: degree + 1]))  # (degree + 1, n)
    return torch.einsum("ijk,ix,jy,kz->xyz", c, *bases)


class TorchRandBiasField(RandBiasField):
    """MONAI ``RandBiasField`` (random polynomial MRI bias field, Van Leemput et al. 1999, IEEE TMI
    18(10); NiftyNet's augmentation) with the field computed by torch on the image's device.

    Same arguments, random draws and output as MONAI's (to float32 rounding: the field is
    computed in float32, MONAI's in float64), one field for every channel as there; input
    ``(C, H, W, D)`` tensor on any device, output the same shape on the same device, ``dtype``
    (default float32).
    """

    backend = [TransformBackends.TORCH]

    def __call__(self, img: torch.Tensor, randomize: bool = True) -> torch.Tensor:
        img = convert_to_tensor(img, track_meta=get_track_meta())
        if randomize:
            self.randomize(img_size=img.shape[1:])
        if not self._do_transform:
            return img
        field = legendre_field(img.shape[1:], self.degree, self._coeff, device=img.device)
        out = img.to(torch.float32) * torch.exp(field)[None]
        return convert_to_dst_type(out, img, dtype=self.dtype or img.dtype)[0]


class TorchRandBiasFieldd(RandBiasFieldd):
    """Dictionary version of :class:`TorchRandBiasField`; arguments as MONAI ``RandBiasFieldd``
    (all keys share one field). With ``augment_on_device`` the BraTS bundles train with it, so the
    whole augmentation stays on the GPU.

    Example:
        >>> t = TorchRandBiasFieldd("image", coeff_range=(0.0, 0.075), prob=1.0).set_random_state(0)
        >>> t({"image": torch.ones(4, 8, 8, 8)})["image"].shape
        torch.Size([4, 8, 8, 8])
    """

    backend = TorchRandBiasField.backend

    def __init__(self, keys, degree: int = 3, coeff_range: tuple[float, float] = (0.0, 0.1), dtype=np.float32, prob: float = 0.1,
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, degree=degree, coeff_range=coeff_range, dtype=dtype, prob=prob, allow_missing_keys=allow_missing_keys)
        self.rand_bias_field = TorchRandBiasField(degree=degree, coeff_range=coeff_range, dtype=dtype, prob=1.0)
