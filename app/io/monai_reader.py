"""A MONAI ``ImageReader`` backed by SimpleITK, so ``LoadImaged`` reads like the rest of VolSeg.

MONAI reads NIfTI with nibabel and everything else with the ``itk`` package. On 2 CPU cores the
``itk`` package takes 2.4 s to load its IO modules on first use in a process (a 2.6 s first
read of a BraTS case against 0.19 s later), and nibabel decompresses gzipped NIfTI at half the
speed of ITK's reader. SimpleITK wraps the same ITK readers, imports in 0.15 s, and is what
:func:`app.io.read_volume` already uses, with its checks and error messages.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from monai.data import ImageReader
from monai.data.image_reader import _copy_compatible_dict, _stack_images
from monai.data.utils import orientation_ras_lps
from monai.transforms import LoadImaged
from monai.utils import MetaKeys, SpaceKeys, ensure_tuple

from app.errors import InputError
from app.io.readers import read_volume, volume_format


class SimpleITKReader(ImageReader):
    """Read NIfTI, NRRD, MetaImage files and DICOM series folders with SimpleITK for MONAI's
    ``LoadImage(d)``: same arrays and metadata as MONAI's ``ITKReader`` with its defaults.

    Each volume becomes an ``(H, W, D)`` array in ITK's index order (x, y, z), and its affine
    (direction x spacing in mm, origin) is converted from ITK's LPS to RAS. Several files are
    stacked as channels ``(C, H, W, D)`` and must share affine and shape. In a config:
    ``LoadImaged(keys, reader="app.io.SimpleITKReader")``.

    Kept over MONAI's own readers because a benchmark shows it pays (docs/performance.md,
    "read and preprocess"): the 4 files of a BraTS case in 0.16-0.25 s against nibabel's
    0.34-0.40 s (same arrays and affines), without the 2.4 s per process that ``ITKReader``
    spends loading ``itk``'s IO modules, and with the integrity checks below.

    Every file is verified before its voxels are read (:mod:`app.io.integrity`): within the
    ``VOLSEG_MAX_VOXELS`` budget, gzip stream complete with its CRC checked, as long as its
    header says; then no NaN or infinite voxel, and a BraTS-named sequence not all zero.

    Raises:
        app.data.verify.InputError: a file that is missing, unreadable, not 3D, over the voxel
            budget, truncated or corrupt, has NaN or infinite voxels, or is an all-zero sequence
            (see :func:`app.io.read_volume`); the message names the file. ``LoadImage`` wraps it
            in a ``RuntimeError`` that keeps the message.
        RuntimeError: stacked files whose affines or shapes differ (MONAI's message).
    """

    def verify_suffix(self, filename: Sequence[str | Path] | str | Path) -> bool:
        try:
            return all(volume_format(f) for f in ensure_tuple(filename))
        except InputError:
            return False

    def read(self, data: Sequence[str | Path] | str | Path, **kwargs) -> list:
        """Read each file (or DICOM folder) of ``data`` with :func:`app.io.read_volume`.

        Several files are read in parallel threads, one per CPU core this process may use
        (SimpleITK and zlib release the GIL while they decompress): the four gzipped NIfTI files
        of a BraTS case in 0.17 s against 0.31 s one after another on 2 cores. The images are
        the same, in the order given; a file that fails raises the error of the first failing
        file in that order, as a serial read would. DICOM folders are read one after another.
        """
        paths = ensure_tuple(data)
        threads = min(len(paths), usable_cores())
        if threads < 2 or any(Path(path).is_dir() for path in paths):
            return [read_volume(path) for path in paths]
        with ThreadPoolExecutor(threads) as pool:
            return list(pool.map(read_volume, paths))

    def get_data(self, img) -> tuple[np.ndarray, dict]:
        import SimpleITK as sitk

        views, meta = [], {}
        for image in ensure_tuple(img):
            view = sitk.GetArrayViewFromImage(image)  # (z, y, x): ITK's buffer, copied below to (x, y, z)
            affine = np.eye(4)
            affine[:3, :3] = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3) @ np.diag(image.GetSpacing())
            affine[:3, 3] = image.GetOrigin()
            affine = orientation_ras_lps(affine)  # ITK's LPS -> RAS
            header = {MetaKeys.ORIGINAL_AFFINE: affine, MetaKeys.AFFINE: affine.copy(), MetaKeys.SPACE: SpaceKeys.RAS,
                      MetaKeys.SPATIAL_SHAPE: np.asarray(view.shape[::-1]), MetaKeys.ORIGINAL_CHANNEL_DIM: float("nan")}
            _copy_compatible_dict(header, meta)  # raises on a differing affine or shape before any copy
            views.append(view)
        if len(views) < 2 or any(v.ndim != 3 for v in views):
            return _stack_images([_xyz_copy(v) for v in views], meta), meta  # fresh arrays: never a view into SimpleITK's buffer
        # several volumes: each copied straight into its channel of one array, in parallel threads
        # (numpy releases the GIL while it copies); np.stack's dtype and channel metadata
        stacked = np.empty((len(views), *views[0].shape[::-1]), dtype=np.result_type(*views))
        with ThreadPoolExecutor(min(len(views), usable_cores())) as pool:
            list(pool.map(lambda c: _xyz_copy(views[c], out=stacked[c]), range(len(views))))
        meta[MetaKeys.ORIGINAL_CHANNEL_DIM] = 0
        return stacked, meta


def usable_cores() -> int:
    """The CPU cores this process may run on: its affinity mask where the OS has one (a container
    or ``taskset`` limit), else ``os.cpu_count()``; at least 1. Sizes the reader's and N4's thread
    pools (:class:`app.transforms.N4BiasCorrection`)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _xyz_copy(view: np.ndarray, slab: int = 32, out: np.ndarray | None = None) -> np.ndarray:
    """``view.T`` as a new C-contiguous array: ITK's ``(z, y, x)`` voxel buffer in ``(x, y, z)``
    order (``(c, x, y, z)`` for a vector image).

    A 3D volume is copied in slabs of ``slab`` z-slices: each slab's transpose stays in cache,
    4x faster than one strided copy of the whole volume (0.044 s against 0.185 s for the four
    240x240x155 int16 volumes of a BraTS case on 2 Xeon cores; MONAI's ``LoadImage`` would
    otherwise make that strided copy itself, as ``np.ascontiguousarray``). ``out``: a C-contiguous
    array of shape ``view.shape[::-1]`` to copy into (cast to its dtype) instead of a new one.
    """
    if view.ndim != 3:
        return np.array(view.T, order="C")
    if out is None:
        out = np.empty(view.shape[::-1], dtype=view.dtype)
    for z0 in range(0, view.shape[0], slab):
        out[..., z0:z0 + slab] = view[z0:z0 + slab].T
    return out


#: MONAI's logger for its GPU DICOM decoder plugin (nvImageCodec through pydicom, MONAI 1.6)
_NVIMGCODEC_LOGGER = "monai.data.nvimgcodec_pydicom_plugin"
_NVIMGCODEC_NOTICES = ("nvImageCodec is not available", "NvImgCodecPydicomReader: nvImageCodec decoder plugin did not register")


class _DropNotices(logging.Filter):
    """Drops the log records whose message starts with one of ``notices``."""

    def __init__(self, notices: Sequence[str]) -> None:
        super().__init__()
        self.notices = tuple(notices)

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.notices)


@contextlib.contextmanager
def _quiet_default_readers() -> Iterator[None]:
    """Silence what MONAI's unused default readers say while ``LoadImage`` builds them.

    ``LoadImage`` instantiates every reader in MONAI's ``SUPPORTED_READERS`` even when it is
    given its own. Since MONAI 1.6 that includes ``NvImgCodecPydicomReader`` (GPU decoding of
    compressed DICOM through pydicom, MONAI PR #8954), which, on every machine without
    nvImageCodec, CuPy and CUDA, logs "nvImageCodec is not available; skipping pydicom decoder
    plugin registration." and warns "... Falling back to default pydicom decoders." VolSeg never
    reads through those readers (:class:`LoadVolumed` reads with SimpleITK alone, DICOM through
    GDCM), so both lines were noise on every ``volseg`` command and bundle run. Only these two
    notices are dropped, and only while the readers are built: any other warning passes.
    """
    plugin_logger = logging.getLogger(_NVIMGCODEC_LOGGER)
    drop = _DropNotices(_NVIMGCODEC_NOTICES)
    plugin_logger.addFilter(drop)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_NVIMGCODEC_NOTICES[1])
            yield
    finally:
        plugin_logger.removeFilter(drop)


class LoadVolumed(LoadImaged):
    """``LoadImaged`` that reads with :class:`SimpleITKReader` alone: a volume it refuses stops
    the load with its :class:`~app.data.verify.InputError`.

    ``LoadImaged(keys, reader="app.io.SimpleITKReader")`` registers MONAI's own readers too and
    falls back to them when the named reader raises, so a NIfTI with NaN voxels or a blank
    sequence that :mod:`app.io.integrity` refuses is then read by nibabel without a word. In a
    config: ``{_target_: app.io.LoadVolumed, keys: [image, label], ensure_channel_first: true}``.

    A list of files may hold ``None`` for a missing channel (an MRI sequence the case lacks):
    the present files are read and stacked, and each missing channel is filled with zeros in
    its place, the input of a network trained with modality dropout
    (:class:`app.transforms.RandModalityDropoutd`). The missing channel indices are stored in
    the output's metadata under ``"missing_channels"``. Needs ``ensure_channel_first=True``.
    A list of files read as channels is kept in the metadata under ``"channel_files"`` (one path,
    or "" for a missing one, a channel: a DataLoader collates no None; MONAI's ``"filename_or_obj"`` names the first file only).

    Args:
        keys: keys of the data dict holding file paths (one file or a list stacked as channels).
        channels: key -> the number of files a list under it must hold (a bundle's input
            channels: ``{image: 4}`` for BraTS); None: any.
        **kwargs: any other ``LoadImaged`` argument except ``reader``.

    Raises:
        ValueError: every file of a key is ``None``, or ``None`` entries without
            ``ensure_channel_first``.
        app.data.verify.InputError: a list of another length than ``channels`` says, or files of
            one list on different voxel grids (naming the files and their shapes or affines).

    Example:
        >>> data = LoadVolumed("image", ensure_channel_first=True)({"image": files})  # doctest: +SKIP
        >>> data["image"].shape  # (C, H, W, D)  # doctest: +SKIP
    """

    def __init__(self, keys, channels: dict[str, int] | None = None, **kwargs) -> None:
        self.volume_reader = SimpleITKReader()
        self.channels = {str(k): int(v) for k, v in (channels or {}).items()}
        with _quiet_default_readers():  # MONAI also builds its own readers, which this class never uses
            super().__init__(keys, reader=self.volume_reader, **kwargs)

    def __call__(self, data, reader: ImageReader | None = None):
        from app.errors import InputError

        d, missing, given = dict(data), {}, {}
        for key in self.key_iterator(d):
            files = d[key]
            if isinstance(files, (list, tuple)):
                given[key] = ["" if f is None else str(f) for f in files]  # "", not None: a DataLoader collates the metadata
                wanted = self.channels.get(str(key))
                if wanted is not None and len(files) != wanted:
                    hint = ("; give a missing MRI sequence as null (None) in the datalist: it is zero-filled, as the BraTS bundles were trained "
                            "with modality dropout (volseg segment takes any subset)") if wanted > 1 else \
                        "; a one-channel bundle takes one volume a case: make each file an item of its own"
                    raise InputError(f"'{key}': {len(files)} file(s) given ({', '.join(map(str, files))}), the bundle's network takes {wanted}, "
                                     f"one a channel in its order{hint}")
            if isinstance(files, (list, tuple)) and any(f is None for f in files):
                if all(f is None for f in files):
                    raise ValueError(f"'{key}': every channel is missing; VolSeg needs at least one input volume")
                if not self._loader.ensure_channel_first:
                    raise ValueError(f"'{key}': missing channels (None) need ensure_channel_first=True")
                missing[key] = (len(files), [i for i, f in enumerate(files) if f is None])
                d[key] = [f for f in files if f is not None]
        try:
            d = super().__call__(d, reader=reader or self.volume_reader)  # no fallback to other readers
        except RuntimeError:  # MONAI's "affine matrix of all images should be the same ...": which files, then
            for files in (d[k] for k in self.key_iterator(d)):
                if isinstance(files, (list, tuple)) and len(files) > 1:
                    _check_one_grid([f for f in files if f is not None])
            raise
        for key, (n_channels, absent) in missing.items():
            d[key] = _zero_fill(d[key], n_channels, absent)
            _say_missing(d.get("case_id") or next((f for f in given.get(key, []) if f), "a case"), n_channels, absent)
        for key, files in given.items():
            if hasattr(d[key], "meta") and len(files) == d[key].shape[0]:
                d[key].meta["channel_files"] = files
        return d


def _check_one_grid(files: Sequence[str | Path]) -> None:
    """Raise :class:`~app.errors.InputError` naming the first file whose header puts it on another
    voxel grid (size, spacing, origin, direction) than the first file's; headers only."""
    from app.errors import InputError
    from app.io.readers import read_image_information

    def grid(path):
        info = read_image_information(path)
        return (tuple(int(n) for n in info.GetSize()[:3]), tuple(round(float(v), 4) for v in info.GetSpacing()[:3]),
                tuple(round(float(v), 3) for v in info.GetOrigin()[:3]), tuple(round(float(v), 4) for v in info.GetDirection()[:9]))

    first = grid(files[0])
    for path in files[1:]:
        other = grid(path)
        if other[0] != first[0] or any(not np.allclose(a, b, atol=1e-3) for a, b in zip(other[1:], first[1:])):
            raise InputError(f"'{path}' (size {other[0]}, spacing {other[1]} mm, origin {other[2]} mm) is not on the voxel grid of "
                             f"'{files[0]}' (size {first[0]}, spacing {first[1]} mm, origin {first[2]} mm); the sequences of a "
                             "case must be co-registered on one grid (sequences of one session on different grids: volseg segment --resample)")


def _say_missing(case: str, n_channels: int, absent: list[int]) -> None:
    """Under ``python -m monai.bundle run``, a warning naming a case's zero-filled sequences (``volseg
    segment`` says it in its own words, with the subset's CV Dice, so it is not logged there)."""
    from app.errors import under_monai_bundle

    if not under_monai_bundle():
        return
    from app.constants import MODALITIES

    names = [MODALITIES[i] if n_channels == len(MODALITIES) else f"channel {i}" for i in absent]
    logging.getLogger("volseg").warning("%s: no %s: zero-filled, as the bundle was trained (modality dropout); the bundle's docs/README.md "
                                        "gives the cross-validated Dice of such a subset", case, ", ".join(names))


def _zero_fill(img, n_channels: int, absent: list[int]):
    """``(C_present, H, W, D)`` -> ``(n_channels, H, W, D)`` with zero channels at ``absent``."""
    import torch
    from monai.data import MetaTensor

    present = [i for i in range(n_channels) if i not in absent]
    full = torch.zeros((n_channels, *img.shape[1:]), dtype=img.dtype)
    full[present] = img.as_tensor() if isinstance(img, MetaTensor) else torch.as_tensor(img)
    meta = dict(img.meta) if isinstance(img, MetaTensor) else {}
    meta["missing_channels"] = list(absent)
    meta.pop("affine", None)
    return MetaTensor(full, affine=img.affine if isinstance(img, MetaTensor) else None, meta=meta)
