"""Seconds of N4 bias-field correction per BraTS case, for several ``n4_params`` in one run.

Reads each case's four sequences once (``app.io.LoadVolumed``), then corrects them
(``app.transforms.N4BiasCorrection``, the channels in parallel threads as ``volseg segment``
does) with each setting in turn, interleaved case by case so that the machine's drift touches
every setting alike. Prints one row per case and setting: seconds (median of --runs) and how far
the corrected intensities lie from the first setting's (mean and largest absolute difference
inside the brain, relative to the first setting's mean brain intensity); then the median over
the cases. The first setting is the reference; by default the bundle's ``accurate_n4_params``
(where it has them), its ``n4_params`` (brats_unet3d >= 0.10.8: T1ce and FLAIR only, so the other
two sequences stay as given and lie far from the reference), and bundle 0.10.2's (the field
evaluated at every voxel, the Otsu mask of the full channel).
Measures only; asserts nothing.

    python benchmarks/n4.py --cases 5
    python benchmarks/n4.py --params '{"shrink_factor": 8, "iterations": [25, 25], "crop_foreground": true}' \\
        --params '{"shrink_factor": 8, "iterations": [15, 15], "crop_foreground": true, "field_spacing": 4}'
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path


def main() -> None:
    import numpy as np

    from app.bundles import REPO_ROOT
    from app.data import default_brats_dir, find_case
    from app.io import LoadVolumed
    from app.transforms import N4BiasCorrection

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", default="brats_unet3d", help="bundle whose configs/common.yaml accurate_n4_params and n4_params are the default first settings")
    parser.add_argument("--params", action="append", type=json.loads, default=[], metavar="JSON",
                        help="an n4_params setting (repeat; the first is the reference); default: the bundle's accurate_n4_params and n4_params, then 0.10.2's")
    parser.add_argument("--data-dir", type=Path, default=default_brats_dir())
    parser.add_argument("--cases", type=int, default=15, help="the first N cases of the shared manifest")
    parser.add_argument("--runs", type=int, default=1, help="timings per case and setting (median), after one warm-up call")
    args = parser.parse_args()

    settings = args.params or [*_bundle_n4_params(REPO_ROOT / "bundles" / args.bundle),
                               {"shrink_factor": 8, "iterations": [25, 25], "crop_foreground": True}]
    correctors = [N4BiasCorrection(**p) for p in settings]
    manifest = json.loads((REPO_ROOT / "data_manifests" / "brats2018_shared.json").read_text())
    case_ids = [item["case_id"] for split in ("training", "validation", "test") for item in manifest.get(split, [])][: args.cases]
    load = LoadVolumed("image", ensure_channel_first=True)

    correctors[0](load({"image": [str(p) for p in find_case(args.data_dir / case_ids[0]).images]})["image"])  # warm-up: imports, thread pools
    rows: list[tuple[str, int, float, float, float]] = []
    for case_id in case_ids:
        image = np.asarray(load({"image": [str(p) for p in find_case(args.data_dir / case_id).images]})["image"])
        brain = image > 0
        reference = None
        for k, corrector in enumerate(correctors):
            seconds = []
            for _ in range(args.runs):
                start = time.perf_counter()
                out = np.asarray(corrector(image))
                seconds.append(time.perf_counter() - start)
            if reference is None:
                reference = out
            scale = float(np.abs(reference[brain]).mean())
            diff = np.abs(out[brain] - reference[brain]) / scale
            rows.append((case_id, k, statistics.median(seconds), float(diff.mean()), float(diff.max())))

    names = [json.dumps(p) for p in settings]
    print(f"N4 of the four sequences per case, {len(case_ids)} cases, median of {args.runs} run(s); differences relative to setting 0")
    for k, name in enumerate(names):
        print(f"  setting {k}: {name}")
    print(f"{'case':26s} {'setting':>7s} {'s':>7s} {'mean diff':>10s} {'max diff':>10s}")
    for case_id, k, sec, mean_diff, max_diff in rows:
        print(f"{case_id:26s} {k:7d} {sec:7.2f} {mean_diff:10.2e} {max_diff:10.2e}")
    for k in range(len(settings)):
        mine = [r for r in rows if r[1] == k]
        print(f"{'median over cases':26s} {k:7d} {statistics.median(r[2] for r in mine):7.2f} "
              f"{statistics.median(r[3] for r in mine):10.2e} {statistics.median(r[4] for r in mine):10.2e}")


def _bundle_n4_params(bundle: Path) -> list[dict]:
    """The bundle's ``accurate_n4_params`` (where it has them) and ``n4_params``, in that order."""
    import yaml

    config = yaml.safe_load((bundle / "configs" / "common.yaml").read_text())
    return [dict(config[key]) for key in ("accurate_n4_params", "n4_params") if key in config]


if __name__ == "__main__":
    main()
