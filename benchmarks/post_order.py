"""Labels and seconds of the postprocessing in the bundle's configured order against the order the
``Segmenter`` runs where the inverse only flips and pads (label steps on the brain crop, then
``Invertd`` of the uint8 labels; ``Segmenter._postprocessing_order``), on every shared BraTS case.

Runs each case's network once, then both postprocessing orders on copies of the same output, and
prints per case whether the label maps are identical and the seconds of each order. Measures only;
asserts nothing (the test is ``tests/inference/test_postprocessing.py``).

    python benchmarks/post_order.py [--drop 0,2] [--n4]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


def main() -> None:
    import torch

    from app.data import default_brats_dir, find_case
    from app.inference import Segmenter

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", default="brats_unet3d")
    parser.add_argument("--drop", default="", help="channel indices to leave out (0 T1, 1 T1ce, 2 T2, 3 FLAIR), e.g. 0,2")
    parser.add_argument("--n4", action="store_true")
    args = parser.parse_args()

    seg = Segmenter(args.bundle, device="cpu", n4=args.n4 or None)
    drop = {int(i) for i in args.drop.split(",") if i}
    root = default_brats_dir()
    times: dict[str, list[float]] = {"configured": [], "crop first": []}
    print(f"{'case':<24} {'labels':<10} {'configured s':>12} {'crop first s':>12}")
    for case in sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("Brats")):
        images = [None if i in drop else p for i, p in enumerate(find_case(case).images)]
        data = seg.load(images)
        for key in ("shape", "affine", "missing_sequences"):
            data.pop(key)
        with torch.no_grad():
            data["pred"] = seg.inferer(data["image"].unsqueeze(0), seg.network)[0].float()
        labels = []
        for name, order in (("configured", list(seg.postprocessing.transforms)), ("crop first", seg._postprocessing_order(data["image"]))):
            out = {key: value.clone() if hasattr(value, "clone") else value for key, value in data.items()}
            start = time.perf_counter()
            for transform in order:
                out = transform(out)
            times[name].append(time.perf_counter() - start)
            labels.append(np.asarray(out["pred"].cpu().numpy()[0], dtype=np.uint8))
        same = labels[0].shape == labels[1].shape and np.array_equal(*labels)
        print(f"{case.name:<24} {'identical' if same else 'DIFFERENT':<10} {times['configured'][-1]:>12.3f} {times['crop first'][-1]:>12.3f}")
    print(f"{'median':<24} {'':<10} {statistics.median(times['configured']):>12.3f} {statistics.median(times['crop first']):>12.3f}")


if __name__ == "__main__":
    main()
