"""Peak resident memory of sliding-window segmentation of a 512 x 512 x 1000 CT-sized volume on CPU.

Each row runs in a fresh process (peak RSS is the kernel's VmHWM of that process): the CT bundle's
network (ct_unet3d: UNet 16..256, 1 channel in, 2 classes out; seeded random weights, since only
memory and agreement are measured), roi 96^3, overlap 0.25, sw_batch_size 4, gaussian blending,
stitched in float16 (VolSeg's ``sliding_window_labels``) or float32 (MONAI's default). The volume
is synthetic (a body-like ellipse of soft tissue with brighter blobs), held as float16 in [0, 1]
after the HU window, as the bundle's preprocessing would give. The last column is the fraction
of voxels whose label agrees with the float32 row on a 256 x 256 x 200 crop. Measures only.

    python benchmarks/memory.py
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch


def phantom(shape: tuple[int, int, int], seed: int = 0) -> torch.Tensor:
    """``(1, H, W, D)`` float16 CT-like volume in [0, 1] (HU window applied), built slab by slab."""
    rng = np.random.default_rng(seed)
    h, w, d = shape
    yy, xx = np.meshgrid(np.linspace(-1, 1, h, dtype=np.float32), np.linspace(-1, 1, w, dtype=np.float32), indexing="ij")
    body = ((yy / 0.9) ** 2 + (xx / 0.7) ** 2 < 1).astype(np.float32)
    out = torch.empty((1, h, w, d), dtype=torch.float16)
    for z in range(d):
        slab = 0.45 * body + 0.25 * body * (((yy - 0.3 * np.sin(z / 90)) ** 2 + (xx - 0.2) ** 2) < 0.04)
        out[0, :, :, z] = torch.from_numpy(np.clip(slab + rng.normal(0, 0.02, slab.shape).astype(np.float32), 0, 1))
    return out


def run_row(stitch: str, shape: tuple[int, int, int], save: str | None) -> dict:
    from app.inference.large import sliding_window_labels
    from app.networks import create_network

    torch.manual_seed(0)
    net = create_network("unet3d", in_channels=1, out_channels=2, channels=(16, 32, 64, 128, 256), num_res_units=2).eval()
    image = phantom(shape)
    start = time.perf_counter()
    labels = sliding_window_labels(image, net, (96, 96, 96), sw_batch_size=4, overlap=0.25,
                                   stitch_dtype=torch.float16 if stitch == "float16" else torch.float32)
    seconds = time.perf_counter() - start
    if save:
        np.save(save, labels)
    peak = next(int(line.split()[1]) for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmHWM:"))
    return {"seconds": seconds, "peak_mib": peak / 1024, "labelled": float((labels > 0).mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", type=int, nargs=3, default=[512, 512, 1000])
    parser.add_argument("--row", choices=["float16", "float32"], help=argparse.SUPPRESS)
    parser.add_argument("--save", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.row:
        print(json.dumps(run_row(args.row, tuple(args.shape), args.save)))
        return

    def child(stitch: str, shape: list[int], save: str | None = None) -> dict:
        cmd = [sys.executable, __file__, "--row", stitch, "--shape", *map(str, shape)] + (["--save", save] if save else [])
        return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])

    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        small = [256, 256, 200]
        child("float32", small, f"{tmp}/f32.npy")
        child("float16", small, f"{tmp}/f16.npy")
        agree = float((np.load(f"{tmp}/f32.npy") == np.load(f"{tmp}/f16.npy")).mean())
    rows = {stitch: child(stitch, args.shape) for stitch in ("float16", "float32")}
    print(f"volume {' x '.join(map(str, args.shape))}, torch {torch.__version__}, {torch.get_num_threads()} threads, roi 96^3, overlap 0.25, sw_batch_size 4")
    print(f"{'stitching':<10} {'seconds':>8} {'peak RSS MiB':>13} {'label agreement with float32 (256x256x200)':>44}")
    for stitch, r in rows.items():
        print(f"{stitch:<10} {r['seconds']:>8.1f} {r['peak_mib']:>13.0f} {agree if stitch == 'float16' else 1.0:>44.6f}")


if __name__ == "__main__":
    main()
