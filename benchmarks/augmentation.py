"""Milliseconds per training batch of a bundle's crop-and-augmentation pipeline, transform by
transform, on the CPU and, where there is one, on the GPU (``augment_on_device``). Measures only;
asserts nothing.

The first GPU lease (docs/performance.md) trained at 2 % GPU use: the augmentation, run on the
CPU in loader workers, set the pace. With ``augment_on_device`` (``configs/train.yaml``) each crop
moves to the GPU right after ``RandCropByPosNegLabeld`` (MONAI ``ToDeviced``) and the spatial and
intensity augmentation runs there, as in MONAI's fast-training recipe. This script times the
bundle's own ``train#random_transforms`` from the first random one on (the transforms before it are
applied once to real cases and cached, as ``CacheDataset`` caches them), ``--batches`` batches of ``batch_size`` cases each
(``num_samples`` crops a case), seeded, with CUDA synchronised around each transform. A
transform that fires with probability p costs its mean over the batches (skips included). Prints
one Markdown table: one row per transform, one column per device, and the total.

    python benchmarks/augmentation.py --cases 4 --batches 10
    python benchmarks/augmentation.py --bundle bundles/brats_deeplab3d --device cpu
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch


def pipeline(bundle: str, device: str):
    """(deterministic preprocessing, random transforms, crops a batch) of a bundle's train config."""
    from app.bundle_config import bundle_parser

    parser = bundle_parser(bundle, "train")
    parser["device"] = f"$torch.device('{device}')"
    parser["augment_on_device"] = device != "cpu"
    pre = parser.get_parsed_content("preprocessing_transforms", lazy=False)
    random = parser.get_parsed_content("train#random_transforms", lazy=False)
    return pre, random, int(parser.get_parsed_content("batch_size", lazy=False))


def time_batches(cached: list[dict], transforms: list, batch_size: int, batches: int, seed: int, device: str) -> list[float]:
    """Mean milliseconds per batch spent in each transform."""
    from monai.transforms import Randomizable
    from monai.utils import set_determinism

    set_determinism(seed)
    for i, t in enumerate(transforms):
        if isinstance(t, Randomizable):
            t.set_random_state(seed + i)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    totals = [0.0] * len(transforms)
    for b in range(batches):
        data = [dict(cached[(b * batch_size + k) % len(cached)]) for k in range(batch_size)]
        for i, t in enumerate(transforms):
            sync()
            start = time.perf_counter()
            out = []
            for d in data:
                r = t(d)
                out.extend(r if isinstance(r, list) else [r])
            sync()
            totals[i] += time.perf_counter() - start
            data = out
    return [1000 * t / batches for t in totals]


def main() -> None:
    from monai.transforms import RandomizableTrait, Transform

    from app.data import default_brats_dir, load_datalist

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", default="brats_unet3d", help="bundle name or folder")
    parser.add_argument("--manifest", type=Path, default=Path("data_manifests/brats2018_cv5.json"))
    parser.add_argument("--data-dir", type=Path, default=None, help="BraTS case folders (default: the shared data)")
    parser.add_argument("--cases", type=int, default=4, help="cases to cache and crop from")
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=1, help="untimed batches first (CUDA kernels, allocator)")
    parser.add_argument("--device", nargs="+", default=None, help="devices to time (default: cpu, and cuda where there is one)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    devices = args.device or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    items = load_datalist(args.manifest, "training", args.data_dir or default_brats_dir())[: args.cases]
    columns, names = {}, None
    for device in devices:
        pre, random, batch_size = pipeline(args.bundle, device)
        first_random = next(i for i, t in enumerate(random) if isinstance(t, RandomizableTrait) or not isinstance(t, Transform))
        pre, random = list(pre) + list(random[:first_random]), list(random[first_random:])  # CacheDataset caches up to here
        cached = []
        for item in items:
            d = dict(item)
            for t in pre:
                d = t(d)
            cached.append(d)
        time_batches(cached, random, batch_size, args.warmup, args.seed, device)
        columns[device] = time_batches(cached, random, batch_size, args.batches, args.seed, device)
        names = [f"{i:02d} {type(t).__name__}" for i, t in enumerate(random)]
        print(f"{device}: {len(cached)} cases cached, batch {batch_size}, {args.batches} batches", flush=True)
    print(f"\n| transform ({args.bundle}) | " + " | ".join(f"{d} ms/batch" for d in columns) + " |")
    print("| --- |" + " --- |" * len(columns))
    for i, name in enumerate(names or []):
        print(f"| {name} | " + " | ".join(f"{columns[d][i]:.1f}" for d in columns) + " |")
    print("| **total** | " + " | ".join(f"**{sum(columns[d]):.1f}**" for d in columns) + " |")
    if len(columns) > 1:
        first = sum(columns[devices[0]])
        print("\n" + ", ".join(f"{d}: {first / max(sum(columns[d]), 1e-9):.1f}x faster than {devices[0]}" for d in devices[1:]))


if __name__ == "__main__":
    main()
