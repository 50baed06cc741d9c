"""Carry BraTS case folders to a GPU machine that takes at most 64 MiB, and unpack them there.

``pack`` crops each case to the bounding box of its non-zero voxels (all sequences together),
quantises each sequence to 7 bits (``1 + round(126 * v / p99.9)`` for ``v > 0``, 0 stays 0, so the
non-zero brain mask and the z-score normalisation see the same voxels) and compresses every
volume with lzma: the 15 shared BraTS 2018 cases (119 MB of .nii.gz) pack into 45 MB. The crop's
affine is the original shifted to the crop's first voxel, so the unpacked cases sit where the
originals did. Labels are kept exactly. ``unpack`` writes ``<out>/<case>/<case>_<seq>.nii.gz``,
the layout of the shipped datalists (``data_manifests/*.json``), in parallel.

The quantisation adds noise of about 1 % of a sequence's brain-intensity spread, well under the
training augmentation's Gaussian noise (0.1 of the z-scored intensity): fine for training runs on
a lent GPU, not for scoring (score on the original files).

    python benchmarks/device_pack.py pack ../shared/data/brats2018 .gpu/data
    python benchmarks/device_pack.py unpack .gpu/data /tmp/brats          # on the GPU machine

Lessons of the first lease (2026-12-04, docs/performance.md): the repository's tracked weights
(about 100 MB) exceed the transfer, so keep ``bundles/*/models`` out of it for the call (``git rm
-r --cached`` them and list them in ``.git/info/exclude``; ``git reset`` afterwards); the GPU image
has torch but not MONAI, Ignite, nibabel or SimpleITK (``pip download`` their wheels; SimpleITK
is 53 MB, so it goes in its own call, installed under /tmp while the machine stays warm).
"""

from __future__ import annotations

import argparse
import json
import lzma
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import nibabel as nib
import numpy as np

SEQUENCES = ("t1", "t1ce", "t2", "flair")
LEVELS = 127


def quantise(volume: np.ndarray, levels: int = LEVELS) -> np.ndarray:
    """``(H, W, D)`` intensities -> uint8: 0 where ``volume <= 0``, else ``1..levels`` linear in
    ``volume`` up to its 99.9th percentile over the positive voxels (brighter voxels clip)."""
    volume = volume.astype(np.float32)
    positive = volume[volume > 0]
    if positive.size == 0:
        return np.zeros(volume.shape, np.uint8)
    top = float(np.percentile(positive, 99.9)) or float(positive.max())
    scaled = 1 + np.rint((levels - 1) * np.clip(volume, 0, top) / top)
    return np.where(volume > 0, np.clip(scaled, 1, levels), 0).astype(np.uint8)


def pack_case(folder: Path, out: Path) -> dict:
    """Pack one case folder (``<case>_{t1,t1ce,t2,flair,seg}.nii.gz``) into ``out``; returns its index entry."""
    case = folder.name
    images = {key: nib.load(folder / f"{case}_{key}.nii.gz") for key in (*SEQUENCES, "seg")}
    arrays = {key: np.asarray(image.dataobj) for key, image in images.items()}
    brain = np.zeros(arrays["t1"].shape, bool)
    for key in SEQUENCES:
        brain |= arrays[key] != 0
    if not brain.any():
        raise ValueError(f"'{folder}': every sequence is zero everywhere")
    nonzero = np.argwhere(brain)
    lo, hi = nonzero.min(0), nonzero.max(0) + 1
    crop = tuple(slice(a, b) for a, b in zip(lo, hi))
    entry = {}
    for key, image in images.items():
        data = arrays[key][crop]
        packed = data.astype(np.uint8) if key == "seg" else quantise(data)
        if key == "seg" and not np.array_equal(packed, data):
            raise ValueError(f"'{folder}': label values outside 0..255")
        affine = image.affine.copy()
        affine[:3, 3] = image.affine[:3, :3] @ lo + image.affine[:3, 3]
        (out / f"{case}_{key}.xz").write_bytes(lzma.compress(np.ascontiguousarray(packed).tobytes(), preset=9))
        entry[key] = {"shape": [int(s) for s in packed.shape], "affine": affine.tolist()}
    return entry


def pack(src: Path, out: Path) -> dict:
    """Pack every case folder of ``src`` into ``out`` (``index.json`` + one ``.xz`` a volume)."""
    out.mkdir(parents=True, exist_ok=True)
    index = {folder.name: pack_case(folder, out) for folder in sorted(p for p in src.iterdir() if p.is_dir())}
    (out / "index.json").write_text(json.dumps(index))
    return index


def _unpack_one(job: tuple[str, str, str, str, dict]) -> None:
    src, dst, case, key, entry = job
    data = np.frombuffer(lzma.decompress((Path(src) / f"{case}_{key}.xz").read_bytes()), np.uint8).reshape(entry["shape"])
    (Path(dst) / case).mkdir(parents=True, exist_ok=True)
    image = nib.Nifti1Image(data, np.array(entry["affine"]))
    image.header.set_xyzt_units("mm")
    nib.save(image, Path(dst) / case / f"{case}_{key}.nii.gz")


def unpack(src: Path, dst: Path, workers: int | None = None) -> list[str]:
    """Write the packed cases of ``src`` as ``dst/<case>/<case>_<key>.nii.gz``; returns the case IDs."""
    index = json.loads((src / "index.json").read_text())
    jobs = [(str(src), str(dst), case, key, entry) for case, keys in index.items() for key, entry in keys.items()]
    with ProcessPoolExecutor(workers or min(16, os.cpu_count() or 1)) as pool:
        list(pool.map(_unpack_one, jobs))
    return list(index)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["pack", "unpack"])
    parser.add_argument("src", type=Path)
    parser.add_argument("dst", type=Path)
    args = parser.parse_args()
    if args.command == "pack":
        index = pack(args.src, args.dst)
        size = sum(p.stat().st_size for p in args.dst.iterdir())
        print(f"packed {len(index)} cases into {args.dst}: {size / 1e6:.1f} MB")
    else:
        print(f"unpacked {len(unpack(args.src, args.dst))} cases into {args.dst}")


if __name__ == "__main__":
    main()
