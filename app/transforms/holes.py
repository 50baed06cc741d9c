"""Fill the holes of a label-map region slice by slice, in the axial, coronal and sagittal planes.

A segmentation network that sees the enhancing rim of a glioma often calls part of the necrotic
centre inside it edema or background, which leaves a hole in the tumour core (TC = necrosis +
enhancing tumour). Filling every hole that the region encloses within a 2D slice, along each of
the three axes in turn (the union of the three fills), closes such holes also where they open
into a neighbouring slice, which a 3D fill (``scipy.ndimage.binary_fill_holes`` on the volume, or
MONAI's ``FillHoles``) leaves open. MONAI's ``FillHoles`` also fills each label with itself, so a
hole in a BraTS ET rim would become ET; here the filled voxels get one chosen label (BraTS NCR).
On the 5-fold CV of ``brats_unet3d`` this raised TC on every subset of sequences and left WT and
ET as they were (bundle README, "Postprocessing").

The holes are scipy's: background regions, 4-connected within the slice (``ndimage.label`` with
an in-plane structuring element), that do not reach the slice's border; the same voxels as
``ndimage.binary_fill_holes`` with that structuring element fills. One pass: a fill in one
orientation can enclose a new hole in another, which a second call would fill (a median of 40
voxels on the 45 int8 CV label maps of the shipped weights, at most 4,602); the rule scored on CV
is the single pass.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform
from scipy import ndimage

__all__ = ["FillRegionHoles", "FillRegionHolesd", "fill_holes_in_slices"]


def _in_plane_structure(axis: int) -> np.ndarray:
    """3x3x3 structuring element connecting each voxel to its 4 neighbours in the plane normal to ``axis``."""
    structure = ndimage.generate_binary_structure(3, 1)
    index = [slice(None)] * 3
    for side in (0, 2):
        index[axis] = side
        structure[tuple(index)] = False
    return structure


def _box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """The bounding box of a 3D ``mask`` plus a one-voxel margin (clipped to the array); None if empty."""
    plane = mask.any(axis=2)  # two passes over the volume instead of three
    box = []
    for dim, along in enumerate((plane.any(axis=1), plane.any(axis=0), mask.any(axis=(0, 1)))):
        hits = np.flatnonzero(along)
        if hits.size == 0:
            return None
        box.append(slice(max(int(hits[0]) - 1, 0), min(int(hits[-1]) + 2, mask.shape[dim])))
    return tuple(box)


def _fill_in_box(sub: np.ndarray, axes: Sequence[int]) -> np.ndarray:
    """``sub`` (3D bool) with its in-slice holes along each of ``axes`` filled: the background
    components, 4-connected within a slice (``ndimage.label`` with an in-plane structure), that do
    not touch the slice's border. The same result as ``ndimage.binary_fill_holes`` with that
    structure, about 2x faster."""
    filled = sub.copy()
    for axis in sorted(set(int(a) for a in axes)):
        components, n = ndimage.label(~sub, structure=_in_plane_structure(axis))
        if n == 0:
            continue
        open_ = np.zeros(n + 1, dtype=bool)  # components that reach a slice border (0: the region itself)
        open_[0] = True
        for dim in range(3):
            if dim != axis:
                for side in (0, -1):
                    face = [slice(None)] * 3
                    face[dim] = side
                    open_[components[tuple(face)]] = True
        filled |= ~open_[components]
    return filled


def fill_holes_in_slices(mask: np.ndarray, axes: Sequence[int] = (0, 1, 2)) -> np.ndarray:
    """``mask`` (3D, bool) with every hole it encloses within a 2D slice normal to one of ``axes`` filled.

    The union of the per-slice fills along each axis, computed on the mask's bounding box plus a
    one-voxel margin (the same result as on the whole array: outside the box is background that
    reaches every slice's border). Returns a new bool array of ``mask``'s shape.

    Raises:
        ValueError: ``mask`` is not 3D, or an axis outside 0-2.
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 3:
        raise ValueError(f"hole filling in slices needs a 3D mask, got shape {mask.shape}")
    if any(a not in (0, 1, 2) for a in axes):
        raise ValueError(f"axes are 0, 1 and 2, got {list(axes)}")
    out = mask.copy()
    box = _box(mask)
    if box is not None:
        out[box] = _fill_in_box(mask[box], axes)
    return out


class FillRegionHoles(Transform):
    """Give ``fill_label`` to every voxel that the region (the voxels whose label is in ``labels``)
    encloses within an axial, coronal or sagittal slice (:func:`fill_holes_in_slices`).

    For BraTS labels, ``labels=(1, 4)`` (the tumour core: necrosis and enhancing tumour) and
    ``fill_label=1`` (necrosis) turn what the core encloses into necrotic core: TC grows, ET is
    unchanged, and WT grows only where background was enclosed.

    Args:
        labels: the label values that form the region.
        fill_label: the value given to the enclosed voxels (one of ``labels`` or any other).
        axes: the axes whose slices are filled (default all three, so the result does not depend on
            the array's orientation).

    Raises:
        ValueError: empty ``labels``, or an axis outside 0-2.

    Example:
        >>> label = torch.zeros(1, 9, 9, 9); label[0, 2:7, 2:7, 2:7] = 4; label[0, 4, 4, 4] = 2
        >>> int(FillRegionHoles((1, 4), fill_label=1)(label)[0, 4, 4, 4])
        1
    """

    def __init__(self, labels: Sequence[int], fill_label: int = 1, axes: Sequence[int] = (0, 1, 2)) -> None:
        if len(labels) == 0:
            raise ValueError("labels must name at least one label value")
        if any(int(a) not in (0, 1, 2) for a in axes):
            raise ValueError(f"axes are 0, 1 and 2, got {list(axes)}")
        self.labels = [int(v) for v in labels]
        self.fill_label = int(fill_label)
        self.axes = tuple(int(a) for a in axes)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        """``img``: ``(C, H, W, D)`` label map(s), each channel filled on its own. Returns a tensor
        (a MetaTensor for a MetaTensor, a torch tensor for a numpy array) of the same shape and dtype:
        ``img`` itself where nothing was enclosed, else a filled copy.

        Raises:
            ValueError: ``img`` is not 4D."""
        array = img.detach().cpu().numpy() if isinstance(img, torch.Tensor) else np.asarray(img)
        if array.ndim != 4:
            raise ValueError(f"FillRegionHoles expects a (C, H, W, D) label map, got shape {array.shape}")
        out = None
        for channel in range(array.shape[0]):
            region = array[channel] == self.labels[0]
            for value in self.labels[1:]:
                region |= array[channel] == value
            box = _box(region)
            if box is None:
                continue
            sub = region[box]
            enclosed = _fill_in_box(sub, self.axes) & ~sub  # only the region's box is looked at again
            if enclosed.any():
                if out is None:
                    out = img.clone() if isinstance(img, torch.Tensor) else torch.as_tensor(array).clone()
                view = out[channel][box]
                view[torch.as_tensor(enclosed, device=out.device)] = self.fill_label
        if out is not None:
            return out
        return img if isinstance(img, torch.Tensor) else torch.as_tensor(array)


class FillRegionHolesd(MapTransform):
    """Dictionary wrapper of :class:`FillRegionHoles`.

    Args:
        keys: label-map keys, ``(C, H, W, D)`` each.
        labels, fill_label, axes: see :class:`FillRegionHoles`.
        allow_missing_keys: skip absent keys instead of raising ``KeyError``.
    """

    def __init__(self, keys: KeysCollection, labels: Sequence[int], fill_label: int = 1, axes: Sequence[int] = (0, 1, 2),
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.filler = FillRegionHoles(labels, fill_label, axes)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.filler(d[key])
        return d
