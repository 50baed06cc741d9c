"""MRI bias-field correction (N4, Tustison et al. 2010, IEEE TMI 29(6)) through SimpleITK."""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform
from monai.transforms.utils import generate_spatial_bounding_box
from monai.utils import convert_to_dst_type

from app.io.monai_reader import usable_cores


class N4BiasCorrection(Transform):
    """N4 bias-field correction of each channel (SimpleITK ``N4BiasFieldCorrectionImageFilter``).

    The field is fitted on a copy shrunk by ``shrink_factor`` inside an Otsu foreground mask
    and applied to the full-resolution channel. Seconds per volume (a median 1.08 s for a BraTS
    case's four sequences on 2 AVX2 cores with brats_unet3d's ``accurate_n4_params``, ``benchmarks/n4.py``):
    on in brats_unet3d's ``--mode accurate``; its ``--mode fast --n4`` corrects T1ce and FLAIR only
    (``channels``, shrink 10: 0.36-0.40 s a case on 2 cores, against 1.2 s for all four at shrink 8;
    since 0.10.10 with ``convergence_threshold`` 0.002 on the brain crop, about 0.2 s).

    The channels are fitted in parallel threads (SimpleITK releases the GIL while a filter runs);
    each channel's result is the same as a serial fit's. Each thread writes its channel into one
    output array (a copy of the input), with no stacking afterwards: 0.15 s less a BraTS case
    (1.33 -> 1.17 s, median of 15 runs over 5 shared cases on 2 AVX2 cores, the same output).
    Each N4 filter gets the cores left to its thread (``SetNumberOfThreads``; one each when two
    channels run on 2 cores), so that ITK's own threads do not compete with the channel threads:
    about 10 % less N4 time, the same output.

    Two settings make a case cheaper without fitting differently (1.82 s -> 1.08 s, median of the
    15 shared BraTS cases' four sequences on a 2-core AVX2 CPU; docs/performance.md):
    ``field_spacing`` > 1 evaluates the fitted log field, a cubic B-spline whose knots are tens of
    voxels apart, every ``field_spacing`` voxels (both ends of each axis included) and
    interpolates it trilinearly (``torch.nn.functional.interpolate``, ``align_corners=True``)
    instead of evaluating it at every voxel (relative change of the output about 1e-4 at 4);
    ``mask_shrunk`` takes the Otsu foreground mask of the shrunk copy the fit runs on instead of
    the full-resolution channel (the same voxels up to the histogram of a subsample).

    Args:
        shrink_factor: downsampling for the fit.
        iterations: fitting iterations per level (one level per entry).
        crop_foreground: fit and correct only the bounding box of the positive voxels (a
            skull-stripped brain: about a third of a BraTS volume, so a faster fit); voxels
            outside it are returned unchanged.
        num_threads: channels fitted at once; None: one per CPU core, at most one per channel.
        field_spacing: voxels between the points where the log field is evaluated (1: every
            voxel, SimpleITK's ``GetLogBiasFieldAsImage`` on the full grid).
        mask_shrunk: Otsu mask from the shrunk copy (True) or from the full channel, then shrunk.
        channels: indices of the channels to correct (None: all); the others are returned
            unchanged. Fewer channels, less time: each channel is one fit.
        convergence_threshold: a level's iterations stop once the fit changes by less than
            this (SimpleITK ``SetConvergenceThreshold``; its default 0.001).

    Raises:
        ValueError: ``shrink_factor``, ``iterations``, ``num_threads`` or ``field_spacing`` below 1,
            a ``convergence_threshold`` not above 0, or a negative or repeated index in ``channels``. An index past the input's channels
            raises ``IndexError`` when the transform is called.

    Input ``(C, H, W, D)`` non-negative intensities (negative values are warned about); output the same shape and type. Zero voxels
    stay zero (the field divides), and a channel without a positive voxel (a missing sequence,
    zero-filled by :class:`app.io.LoadVolumed`) is returned unchanged.
    """

    backend = [torch.Tensor, np.ndarray]

    def __init__(self, shrink_factor: int = 4, iterations: tuple[int, ...] = (50, 50, 30), crop_foreground: bool = False,
                 num_threads: int | None = None, field_spacing: int = 1, mask_shrunk: bool = False,
                 channels: Sequence[int] | None = None, convergence_threshold: float = 0.001) -> None:
        if int(shrink_factor) < 1 or not iterations or any(int(i) < 1 for i in iterations):
            raise ValueError(f"N4 needs shrink_factor >= 1 and at least one level of >= 1 iterations, got shrink_factor={shrink_factor}, iterations={list(iterations)}")
        if num_threads is not None and int(num_threads) < 1:
            raise ValueError(f"N4 needs num_threads >= 1 (or None: one per CPU core), got {num_threads}")
        if int(field_spacing) < 1:
            raise ValueError(f"N4 needs field_spacing >= 1 (voxels between field evaluations; 1: every voxel), got {field_spacing}")
        self.shrink_factor = int(shrink_factor)
        self.iterations = [int(i) for i in iterations]
        self.crop_foreground = crop_foreground
        self.num_threads = None if num_threads is None else int(num_threads)
        self.field_spacing = int(field_spacing)
        self.mask_shrunk = bool(mask_shrunk)
        if channels is not None:
            channels = [int(c) for c in channels]
            if any(c < 0 for c in channels) or len(set(channels)) != len(channels):
                raise ValueError(f"N4 channels must be distinct indices >= 0 (None: all channels), got {channels}")
        self.channels = channels
        if not float(convergence_threshold) > 0:
            raise ValueError(f"N4 needs convergence_threshold > 0, got {convergence_threshold}")
        self.convergence_threshold = float(convergence_threshold)

    def _channel(self, array: np.ndarray, out: np.ndarray, itk_threads: int) -> None:
        """Correct one channel ``array`` into ``out`` (float32, same shape, holding ``array``'s values)
        with ``itk_threads`` threads in the N4 filter."""
        if self.crop_foreground:
            start, end = generate_spatial_bounding_box(array[None], select_fn=lambda x: x > 0)  # MONAI's, as CropForeground
            box = tuple(slice(lo, hi) for lo, hi in zip(start, end))
            out[box] = self._fit(array[box], itk_threads)  # voxels outside the box stay as they are
        else:
            out[...] = self._fit(array, itk_threads)

    def _fit(self, array: np.ndarray, itk_threads: int) -> np.ndarray:
        import SimpleITK as sitk

        array = np.ascontiguousarray(array, dtype=np.float32)
        image = sitk.GetImageFromArray(array)
        small = sitk.Shrink(image, [self.shrink_factor] * 3)
        if self.mask_shrunk:
            small_mask = sitk.OtsuThreshold(small, 0, 1, 200)
        else:
            small_mask = sitk.Shrink(sitk.OtsuThreshold(image, 0, 1, 200), [self.shrink_factor] * 3)
        corrector = sitk.N4BiasFieldCorrectionImageFilter()
        corrector.SetMaximumNumberOfIterations(self.iterations)
        corrector.SetNumberOfThreads(itk_threads)
        corrector.SetConvergenceThreshold(self.convergence_threshold)
        corrector.Execute(small, small_mask)
        if self.field_spacing == 1:
            return sitk.GetArrayFromImage(image / sitk.Exp(corrector.GetLogBiasFieldAsImage(image)))
        # the field on a coarse grid that spans the same voxel centres (first and last of each axis)
        shape = np.array(array.shape)  # numpy (z, y, x); SimpleITK sizes and spacings are (x, y, z)
        points = np.maximum(2, -(-(shape - 1) // self.field_spacing) + 1)  # N4 itself refuses an axis of one voxel
        grid = sitk.Image([int(n) for n in points[::-1]], sitk.sitkFloat32)
        grid.SetSpacing([float(sp) for sp in ((shape - 1) / (points - 1))[::-1]])  # the channel's image: origin 0, spacing 1, identity direction
        coarse = torch.from_numpy(sitk.GetArrayFromImage(corrector.GetLogBiasFieldAsImage(grid)))
        log_field = torch.nn.functional.interpolate(coarse[None, None], size=tuple(int(n) for n in shape), mode="trilinear", align_corners=True)[0, 0]
        return (torch.from_numpy(array) * torch.exp(-log_field)).numpy()

    def __call__(self, img: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
        array = img.detach().cpu().numpy() if isinstance(img, torch.Tensor) else np.asarray(img)
        if self.channels is not None and max(self.channels, default=-1) >= len(array):
            raise IndexError(f"N4 channels {self.channels} name a channel past the input's {len(array)}")
        chosen = range(len(array)) if self.channels is None else self.channels
        fit = [c for c in chosen if (array[c] > 0).any()]  # a zero-filled (missing) sequence stays zero
        lowest = {c: float(array[c].min()) for c in fit}
        negative = [c for c in fit if lowest[c] < 0]
        if negative:
            logging.getLogger(__name__).warning(
                "N4 bias-field correction of channel(s) %s with values below 0 (down to %g): N4 models the positive intensities of "
                "MRI; a CT in Hounsfield units or z-scored input is not corrected meaningfully (correct before normalising)",
                ", ".join(map(str, negative)), min(lowest[c] for c in negative))
        threads = min(len(fit), self.num_threads or usable_cores())
        itk_threads = max(1, usable_cores() // max(threads, 1))  # the cores left to each fit: no oversubscription
        out = np.array(array, dtype=np.float32)  # one copy; each fitted channel is corrected in place, in its own thread
        if threads > 1:
            with ThreadPoolExecutor(threads) as pool:
                list(pool.map(lambda c: self._channel(array[c], out[c], itk_threads), fit))
        else:
            for c in fit:
                self._channel(array[c], out[c], itk_threads)
        return convert_to_dst_type(out, img, dtype=torch.float32 if isinstance(img, torch.Tensor) else np.float32)[0]


def checked_n4_params(params: Mapping | None, key: str = "n4_params") -> dict:
    """``params`` as keyword arguments of :class:`N4BiasCorrection`, its keys checked first.

    Raises:
        ValueError: a key the transform does not take, naming the config ``key``, the unknown
            keys and the known ones (``{"shrinkfactor": 6}`` would otherwise fail as a TypeError
            deep in a MONAI config traceback); a value that is not a mapping.
    """
    import inspect

    if params is not None and not isinstance(params, Mapping):
        raise ValueError(f"{key} must be a mapping of N4 settings, got {params!r}")
    params = dict(params or {})
    known = tuple(inspect.signature(N4BiasCorrection).parameters)
    unknown = set(params) - set(known)
    if unknown:
        raise ValueError(f"{key}: unknown key(s) {', '.join(sorted(unknown))}; known: {', '.join(known)}")
    return params


class N4BiasCorrectiond(MapTransform):
    """Dictionary twin of :class:`N4BiasCorrection`, applied to ``keys``."""

    backend = N4BiasCorrection.backend

    def __init__(self, keys: KeysCollection, shrink_factor: int = 4, iterations: tuple[int, ...] = (50, 50, 30), crop_foreground: bool = False,
                 num_threads: int | None = None, field_spacing: int = 1, mask_shrunk: bool = False, channels: Sequence[int] | None = None,
                 convergence_threshold: float = 0.001, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.corrector = N4BiasCorrection(shrink_factor, iterations, crop_foreground, num_threads, field_spacing, mask_shrunk, channels,
                                          convergence_threshold)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.corrector(d[key])
        return d
