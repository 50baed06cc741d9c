"""Dice versus time of a bundle's inference settings, on the validation (and test) split.

Each configuration is a set of bundle config overrides (`infer_mode`, `roi_size`, `overlap`, ...)
and a backend; every case of the chosen splits of the shared manifest is segmented in process
(load -> segment, after one warm-up case) and scored against its label in the input geometry.
Prints one row per configuration and split: mean Dice per region and median seconds per case.
This is how each bundle's inference defaults (metadata.json "inference") were chosen; see
docs/performance.md. Measures only.

    python benchmarks/dice_vs_time.py --bundle brats_unet3d --splits validation test
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import nibabel as nib
import numpy as np

CONFIGS = {
    "sliding window 96^3, overlap 0.5": ({"infer_mode": "sliding_window", "roi_size": [96, 96, 96], "overlap": 0.5}, "torch"),
    "sliding window 96^3, overlap 0.5, openvino": ({"infer_mode": "sliding_window", "roi_size": [96, 96, 96], "overlap": 0.5}, "openvino"),
    "sliding window 96x112x96, overlap 0.25, openvino": ({"infer_mode": "sliding_window", "roi_size": [96, 112, 96], "overlap": 0.25}, "openvino"),
    "sliding window 96x128x96, overlap 0.25, openvino": ({"infer_mode": "sliding_window", "roi_size": [96, 128, 96], "overlap": 0.25}, "openvino"),
    "whole crop, openvino": ({"infer_mode": "whole_volume"}, "openvino"),
}


def main() -> None:
    from app.bundles import REPO_ROOT
    from app.data import default_brats_dir, find_case
    from app.evaluation import case_metrics
    from app.inference import Segmenter

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", default="brats_unet3d")
    parser.add_argument("--splits", nargs="+", default=["validation", "test"])
    parser.add_argument("--configs", nargs="+", choices=sorted(CONFIGS), default=list(CONFIGS))
    parser.add_argument("--data-dir", type=Path, default=default_brats_dir())
    args = parser.parse_args()
    manifest = json.loads((REPO_ROOT / "data_manifests" / "brats2018_shared.json").read_text())
    cases = {s: [find_case(args.data_dir / item["case_id"], require_label=True) for item in manifest[s]] for s in args.splits}
    print(f"bundle {args.bundle}; mean Dice over each split's cases; seconds: median load -> segment per case")
    print(f"{'configuration':<52} {'split':<11} {'WT':>6} {'TC':>6} {'ET':>6} {'s/case':>7}")
    for name in args.configs:
        overrides, backend = CONFIGS[name]
        segmenter = Segmenter(args.bundle, device="cpu", overrides=overrides, backend=backend)
        segmenter.predict(next(iter(cases.values()))[0].images)  # warm-up (OpenVINO compiles per input size)
        for split, items in cases.items():
            scores, seconds = [], []
            for case in items:
                start = time.perf_counter()
                label, _ = segmenter.predict(case.images)
                seconds.append(time.perf_counter() - start)
                scores.append(case_metrics(label, np.asarray(nib.load(case.label).dataobj).astype(np.uint8)))
            dice = " ".join(f"{statistics.mean(m[f'{r}_dice'] for m in scores):>6.3f}" for r in ("WT", "TC", "ET"))
            print(f"{name:<52} {split:<11} {dice} {statistics.median(seconds):>7.2f}", flush=True)


if __name__ == "__main__":
    main()
